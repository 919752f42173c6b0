"""The LVM rules the agent, the operator and kctl share, pure (no I/O): sizing of thin pools and file
devices, validation of an LVMVolumeGroup for a node, the spec's transition rules, the names of an
LVMVolumeGroupSet's children, and thin-pool health. Each rule has one home here; callers import the
module that holds it (``disklet.lvm.sizing``, ...), there are no re-exports."""
