"""disklet node agent: discovery, LVM reconcile, DiskLayout apply, all behind the safety classifier."""
