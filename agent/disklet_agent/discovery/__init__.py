"""Pure discovery logic of the agent (BlockDevices, LVMVolumeGroup status merging): no I/O."""
