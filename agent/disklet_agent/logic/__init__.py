"""Pure logic of the agent (BlockDevice sync plans, LVMVolumeGroup status merging, the Lease body): no I/O."""
