"""What a disko ``format,mount`` script mounts, read from the script text itself (tests only).

Three ways a disko script makes the node mount something, for the types disklet allows:

- ``mount DEVICE "<root><mountpoint>" ...`` lines (filesystems, ZFS datasets);
- ZFS mountpoint properties: ``zfs create ... -o mountpoint=X`` and ``zfs set -u mountpoint=X``
  (mounted by ZFS on import, ``zpool import -R <root>`` in disko's mount step and at boot);
- a pool's root dataset: ``zpool create -f "NAME" -R <root>`` mounts it at ``/NAME`` (and every
  import does again) unless the create line carries ``-O mountpoint=X`` (then at X; ``none``:
  nowhere) or ``-m none``; datasets without a mountpoint inherit ``<root>/<dataset>``.

:func:`script_mounts` returns every such path so a test can hold it to the mountpoint policy.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_MOUNT = re.compile(r'^\s*mount\s+(\S+)\s+"([^"]*)"', re.M)
_ZFS_PROP = re.compile(r"(?:^|\s)(?:-o\s+)?mountpoint=(\S+)")
_ZPOOL_CREATE = re.compile(r'zpool create -f "([^"]+)"(.*?)\$\{topology', re.S)
_ZFS_CREATE = re.compile(r'zfs create -up "([^"]+)"(.*?)(?:\n\s*\n|\n\s*(?:else|fi)\b)', re.S)


@dataclass(frozen=True)
class ScriptMounts:
    mounts: list[str]
    """Targets of ``mount`` lines, with the root mountpoint prefix removed."""
    zfs_mountpoints: list[str]
    """Values of ZFS ``mountpoint=`` properties other than ``none``."""
    pool_roots: list[str]
    """``/NAME`` of every pool created without ``-O mountpoint=...`` / ``-m none``."""
    inherited: list[str]
    """``<pool root>/DATASET`` of datasets created without a mountpoint under a pool whose root is mounted."""

    def all(self) -> list[str]:
        return [*self.mounts, *self.zfs_mountpoints, *self.pool_roots, *self.inherited]


def _strip_root(path: str, root: str) -> str:
    if root != "/" and path.startswith(root.rstrip("/")):
        path = path[len(root.rstrip("/")):]
    while path.startswith("//"):
        path = path[1:]
    return path


def script_mounts(script: str, root: str = "/") -> ScriptMounts:
    mounts = [_strip_root(m.group(2), root) for m in _MOUNT.finditer(script)]
    props: list[str] = []
    for line in script.splitlines():
        if "zfs create" in line or "zfs set" in line or line.strip().startswith("-o mountpoint="):
            props += [v.strip("'\"") for v in _ZFS_PROP.findall(line)]
    zfs_mountpoints = [v for v in props if v != "none"]
    roots: dict[str, str | None] = {}
    open_pools = []
    for m in _ZPOOL_CREATE.finditer(script):
        args = m.group(2)
        given = re.search(r"-O mountpoint=(\S+)", args)
        if "-m none" in args or (given and given.group(1).strip("'\"") == "none"):
            roots[m.group(1)] = None
        elif given:
            roots[m.group(1)] = given.group(1).strip("'\"")
        else:
            open_pools.append(m.group(1))
            roots[m.group(1)] = "/" + m.group(1)
    inherited = []
    for m in _ZFS_CREATE.finditer(script):
        name, args = m.group(1), m.group(2)
        pool_root = roots.get(name.split("/", 1)[0])
        if pool_root is not None and "mountpoint=" not in args:
            inherited.append(pool_root.rstrip("/") + "/" + name.split("/", 1)[1])
    return ScriptMounts(mounts, zfs_mountpoints, ["/" + p for p in open_pools], inherited)
