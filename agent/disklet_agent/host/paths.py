"""Paths as the host sees them: ``realpath`` run through the agent's host runner, so in the host's
mount namespace (with nsenter), right before disko mounts anything there.

The mountpoint policy judges the text of a path. ``mount -o X-mount.mkdir`` (what disko runs)
follows symbolic links in every component, so a link planted under an allowed root
(``/data/db -> /etc``, by anything that can write there, e.g. a pod with a hostPath volume)
would redirect the mount. The gate resolves every path the layout mounts with this module and
judges the resolved path too (docs/layouts.md, "Mountpoints").
"""

from __future__ import annotations

from collections.abc import Sequence

from disklet.hostcmd import HostRunner

RESOLVE_TIMEOUT = 15.0


class ResolveFailed(RuntimeError):
    """The host could not resolve the paths (the gate refuses: fail closed)."""


def resolve_paths(runner: HostRunner, paths: Sequence[str]) -> dict[str, str]:
    """``realpath -m`` of each path on the host: every symbolic link in every existing component
    followed, missing components kept as written. One command for all paths."""
    unique = list(dict.fromkeys(paths))
    if not unique:
        return {}
    if any(not p.startswith("/") or "\n" in p or "\r" in p or "\x00" in p for p in unique):
        raise ResolveFailed("refusing to resolve a path that is not absolute or holds a line break")
    res = runner.run(["realpath", "-m", "--", *unique], timeout=RESOLVE_TIMEOUT)
    if not res.ok:
        raise ResolveFailed(f"cannot resolve the mountpoints on the node: {res.describe()}")
    lines = res.stdout.splitlines()
    if len(lines) != len(unique) or any(not line.startswith("/") for line in lines):
        raise ResolveFailed(f"realpath printed {len(lines)} line(s) for {len(unique)} path(s): {res.stdout[:200]!r}")
    return dict(zip(unique, lines, strict=True))
