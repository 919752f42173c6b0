"""Host adapters: every command the agent runs on the node (lsblk, LVM, losetup, file operations),
each an argv list through the one runner in :mod:`disklet.hostcmd`."""
