"""The node reads of the DiskLayout path: target and mountpoint resolution (``realpath``), live mounts
(``findmnt``), ZFS pools (``zpool``), volume groups and PV membership (through :class:`Lvm`, so
the same per-command LVM configuration as the LVMVolumeGroup engine), and the block topology.

:class:`HostLayoutReader` bundles them for the gate and the apply pipeline
(``disklayout.gate.LayoutReader`` is the Protocol they ask for). Every read fails closed: a command
that fails or prints something unreadable raises :class:`ProbeFailed`, never "nothing there".
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass

from disklet.hostcmd import HostRunner

from ..logic.topology import BlockTopology
from .lsblk import ProbeFailed, read_block_topology
from .lvm import Lvm, LvmError

RESOLVE_TIMEOUT = 15.0
ZFS_TIMEOUT = 60.0
COMMAND_NOT_FOUND = 127


def resolve_targets(runner: HostRunner, targets: Sequence[str]) -> dict[str, str | None]:
    """``realpath -e`` each target on the host (by-id/by-path/by-partlabel → kernel name); None = missing."""
    out: dict[str, str | None] = {}
    for t in targets:
        if t in out:
            continue
        res = runner.run(["realpath", "-e", "--", t], timeout=RESOLVE_TIMEOUT)
        path = res.stdout.strip() if res.ok else ""
        out[t] = path if path.startswith("/") and "\n" not in path else None
    return out


def resolve_paths(runner: HostRunner, paths: Sequence[str]) -> dict[str, str]:
    """``realpath -m`` of each path on the host, in the host's mount namespace: every symbolic link
    in every existing component followed, missing components kept as written. One command.

    The mountpoint policy judges the text of a path, but ``mount -o X-mount.mkdir`` (what disko
    runs) follows links: ``/data/db -> /etc`` planted under an allowed root (by anything that can
    write there, e.g. a pod with a hostPath volume) would redirect the mount. The gate judges the
    resolved paths too (docs/layouts.md, "Mountpoints")."""
    unique = list(dict.fromkeys(paths))
    if not unique:
        return {}
    if any(not p.startswith("/") or any(c in p for c in "\n\r\x00") for p in unique):
        raise ProbeFailed("refusing to resolve a path that is not absolute or holds a line break")
    res = runner.run(["realpath", "-m", "--", *unique], timeout=RESOLVE_TIMEOUT)
    if not res.ok:
        raise ProbeFailed(f"cannot resolve the mountpoints on the node: {res.describe()}")
    lines = res.stdout.splitlines()
    if len(lines) != len(unique) or any(not line.startswith("/") for line in lines):
        raise ProbeFailed(f"realpath printed {len(lines)} line(s) for {len(unique)} path(s): {res.stdout[:200]!r}")
    return dict(zip(unique, lines, strict=True))


def read_live_mounts(runner: HostRunner) -> list[tuple[str, str]]:
    """(mount target, source) of every mount on the host (``findmnt``: all types, not only block)."""
    res = runner.run(["findmnt", "--json", "--list", "--output", "TARGET,SOURCE"], timeout=RESOLVE_TIMEOUT)
    if not res.ok:
        raise ProbeFailed(f"cannot list the node's mounts: {res.describe()}")
    try:
        data = json.loads(res.stdout)
        return [(str(f.get("target") or ""), str(f.get("source") or "")) for f in data["filesystems"]]
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise ProbeFailed(f"findmnt printed unreadable JSON: {exc}") from exc


def imported_zpools(runner: HostRunner) -> set[str] | None:
    """Pools imported on the node (``zpool list``); None when the ZFS tools are not installed."""
    res = runner.run(["zpool", "list", "-H", "-o", "name"], timeout=ZFS_TIMEOUT)
    if res.returncode == COMMAND_NOT_FOUND:
        return None
    if not res.ok:
        raise ProbeFailed(f"cannot list the node's ZFS pools: {res.describe()}")
    return {line.strip() for line in res.stdout.splitlines() if line.strip()}


def read_zpools(runner: HostRunner) -> set[str]:
    """Pools imported (``zpool list``) or importable (``zpool import``) on the node; empty without ZFS."""
    names = imported_zpools(runner)
    if names is None:
        return set()  # no ZFS tools: no pool can exist (and disko could not create one either)
    res = runner.run(["zpool", "import"], timeout=ZFS_TIMEOUT)
    if not res.ok and "no pools available" not in (res.stdout + res.stderr):
        raise ProbeFailed(f"cannot list the node's importable ZFS pools: {res.describe()}")
    return names | {m.group(1) for m in re.finditer(r"^\s*pool:\s*(\S+)\s*$", res.stdout, re.M)}


@dataclass
class HostLayoutReader:
    """The DiskLayout path's reads on this node (implements ``disklayout.gate.LayoutReader``)."""

    runner: HostRunner
    lvm_extra_config: str = ""

    def topology(self) -> BlockTopology:
        return read_block_topology(self.runner)

    def resolve(self, targets: Sequence[str]) -> dict[str, str | None]:
        return resolve_targets(self.runner, targets)

    def mounts(self) -> list[tuple[str, str]]:
        return read_live_mounts(self.runner)

    def real_paths(self, paths: Sequence[str]) -> dict[str, str]:
        return resolve_paths(self.runner, paths)

    def _lvm(self) -> Lvm:
        return Lvm(self.runner, self.lvm_extra_config)

    def volume_groups(self) -> set[str]:
        """Every VG name on the node (the node-wide LVM read: names are unique per node)."""
        try:
            return {vg.name for vg in self._lvm().node_vg_names()}
        except LvmError as exc:
            raise ProbeFailed(f"cannot list the node's volume groups: {exc}") from exc

    def pv_members(self) -> list[tuple[str, str]]:
        """(PV device, VG name) of every PV on the node (the VG name is empty for an orphan PV)."""
        try:
            return [(row.device, row.name) for row in self._lvm().node_pv_rows()]
        except LvmError as exc:
            raise ProbeFailed(f"cannot list LVM PVs: {exc}") from exc

    def zpools(self) -> set[str]:
        return read_zpools(self.runner)

    def imported_zpools(self) -> set[str] | None:
        return imported_zpools(self.runner)
