"""Host adapters: every command the agent runs on the node (lsblk, LVM, losetup, file operations,
the DiskLayout reads, disko and nixos-rebuild), each an argv list through the one runner in
:mod:`disklet.hostcmd`. No module outside this package starts a process
(tests/unit/test_process_boundary.py)."""
