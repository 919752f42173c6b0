"""Host-side LVM orchestration for LVMVolumeGroups: the engine (``engine.HostLvgEngine``, which
implements the handlers' ``ports.LvgEngine``) and the steps it runs. Import from the module that
holds a name; this package re-exports nothing."""
