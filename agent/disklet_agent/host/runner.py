"""The agent's host command runner is the shared one in :mod:`disklet.hostcmd` (the operator and
kctl also run ``nix-instantiate``)."""

from disklet.hostcmd import (
    BENIGN_STDERR_PATTERNS,
    NSENTER_PREFIX,
    CommandError,
    CommandResult,
    HostRunner,
    filter_stderr,
)

__all__ = ["BENIGN_STDERR_PATTERNS", "NSENTER_PREFIX", "CommandError", "CommandResult", "HostRunner", "filter_stderr"]
