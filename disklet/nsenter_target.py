"""The agent's nsenter target setting (pure: no I/O): which host process's namespaces host commands
enter. Resolving it to a PID is :func:`disklet.hostcmd.resolve_nsenter_target`."""

from __future__ import annotations

__all__ = ["DEFAULT_NSENTER_TARGET", "NSENTER_TARGET_HELP", "check_nsenter_target"]

DEFAULT_NSENTER_TARGET = "1"
NSENTER_TARGET_HELP = ("the host process whose namespaces host commands enter: a PID, or name:<process name> "
                       "(the oldest process of that name in the host PID namespace); default 1, the host's init")


def check_nsenter_target(spec: str) -> str:
    """``spec`` if it is a valid target (a positive PID, or ``name:<process name>``), else ValueError."""
    spec = spec.strip()
    if spec.isdigit() and int(spec) > 0:
        return str(int(spec))
    name = spec[5:] if spec.startswith("name:") else None
    # A process name (/proc/PID/comm) is at most 15 bytes; no slash, no whitespace.
    if name and len(name) <= 15 and not any(c in name for c in "/ \t\n"):
        return spec
    raise ValueError(f"nsenter target must be a PID or name:<process name> (at most 15 characters), not {spec!r}")
