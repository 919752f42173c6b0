"""disklet operator: DiskLayout pre-flight and bookkeeping, LVMVolumeGroupSet fan-out. Never touches a node."""
