"""The LVM engine's reads of the node: one snapshot (loops, PVs with their VGs, LVs), a fresh
"which devices are PVs", the node-wide VG name check, and this node's block-device scan. Reads
only; every decision made from them is in :mod:`.reconcile`, :mod:`.removal` and :mod:`.status`.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import TypeVar

from disklet.hostcmd import HostRunner

from ..config import AgentConfig
from ..host.files import FileOpError
from ..host.losetup import LosetupError
from ..host.lvm import PV, LvmError, NamedVG
from .outcomes import BlockScan, LiveDevice
from .ports import FileCommands, LoopCommands, LvmCommands
from .snapshot import LvmSnapshot

T = TypeVar("T")
U = TypeVar("U")


def overlapped(first: Callable[[], T], second: Callable[[], U], parallel: bool) -> tuple[T, U]:
    """Two independent READS at once: ``second`` in a helper thread while ``first`` runs here (each
    keeps its own filter, timeout and failure handling; both are complete before this returns).
    An LVM command's wall time is mostly waiting, not CPU (LVM tears down its async I/O context
    at the end of every command, docs/performance.md), so two reads side by side cost about one.
    ``parallel`` False: one after the other, ``first`` first."""
    if not parallel:
        a = first()
        return a, second()
    box: dict[str, U] = {}
    failure: list[BaseException] = []

    def run() -> None:
        try:
            box["v"] = second()
        except BaseException as exc:  # noqa: BLE001 - re-raised in the caller's thread
            failure.append(exc)

    helper = threading.Thread(target=run, name="lvm-read", daemon=True)
    helper.start()
    try:
        a = first()
    finally:
        helper.join()  # never leave a read running behind the caller's back
    if failure:
        raise failure[0]
    return a, box["v"]


class LvmReads:
    """The reads, over the host adapters the engine was built with."""

    def __init__(self, runner: HostRunner, config: AgentConfig, lvm: LvmCommands, losetup: LoopCommands,
                 files: FileCommands, *,
                 block_scan: BlockScan | None = None, parallel: bool = False):
        self.runner = runner
        self.config = config
        self.lvm = lvm
        self.losetup = losetup
        self.files = files
        self.block_scan: BlockScan = block_scan or self.scan_block_devices
        self.parallel = parallel
        """Independent reads side by side (:func:`overlapped`); False: one after the other."""

    def both(self, first: Callable[[], T], second: Callable[[], U]) -> tuple[T, U]:
        return overlapped(first, second, self.parallel)

    def snapshot(self, base_dirs: tuple[str, ...] | None = None) -> LvmSnapshot:
        """One losetup list + ONE pvs (with the VG columns) + lvs only when some VG has LVs (an LVM
        command costs tens of ms). LVM sees exactly the loops whose files carry our marker.
        ``base_dirs``: the base directory as this same call already resolved it (saves a realpath)."""
        snap = LvmSnapshot()
        base = self.config.file_devices_dir
        try:
            if base_dirs is None:
                real = self.files.realpath(base)
                base_dirs = tuple(dict.fromkeys((base, real)))
            snap.base_dirs = base_dirs
            snap.loops = self.losetup.list_all()
        except (FileOpError, LosetupError) as exc:
            snap.base_dirs = (base,)
            snap.error = f"cannot list loop devices: {exc}"
            return snap
        self.lvm.owned_loops = {lp.name for lp in snap.owned_loops()}
        try:
            snap.pvs, snap.vgs = self.lvm.pvs_vgs()
            # lv_count counts the LVs a plain lvs lists: none anywhere → lvs has nothing to say.
            snap.lvs = self.lvm.lvs() if any(v.lv_count for v in snap.vgs) else []
        except LvmError as exc:
            snap.error = str(exc)
            return snap
        majmin = snap.loops_by_majmin()
        for pv in snap.pvs:
            if pv.name.startswith(("/dev/disk/", "/dev/block/")) and not (
                    pv.name.startswith("/dev/block/") and pv.name[len("/dev/block/"):] in majmin):
                try:
                    snap.aliases[pv.name] = self.files.realpath(pv.name, must_exist=True)
                except FileOpError:
                    pass  # stays unresolved: callers fail closed
        return snap

    def live_pvs(self, base_dirs: tuple[str, ...] | None = None) -> dict[str, PV] | None:
        """A fresh pvs keyed by canonical device; None when it cannot be read (then tear nothing down)."""
        snap = self.snapshot(base_dirs)
        if not snap.ok or snap.unresolved():
            return None
        return snap.pvs_by_device()

    def node_vgs(self) -> list[NamedVG] | LvmError:
        """Every VG of the node, read node-wide (names only), or why it could not be read."""
        try:
            return self.lvm.node_vg_names()
        except LvmError as exc:
            return exc

    def name_conflict(self, vg_name: str, own_uuid: str | None,
                      named: list[NamedVG] | LvmError | None = None) -> str | None:
        """Why ``vg_name`` cannot be used: another VG anywhere on the node (loop-backed ones included)
        carries it. Read node-wide (``named``: that read, already made), for the name only; an
        unreadable node fails closed."""
        if named is None:
            named = self.node_vgs()
        if isinstance(named, LvmError):
            return f"cannot check that the VG name {vg_name} is free on the node (nothing created): {named}"
        others = [v for v in named if v.name == vg_name and v.uuid != own_uuid]
        if not others:
            return None
        o = others[0]
        return (f"a volume group named {vg_name} already exists on this node (UUID {o.uuid}, on {o.device}) and is "
                "not this LVMVolumeGroup's: VG names are unique per node, so nothing was created. Choose another "
                "actualVGNameOnTheNode, or rename the other VG (vgrename by UUID)")

    def scan_block_devices(self, snap: LvmSnapshot) -> dict[str, LiveDevice]:
        from ..host.lsblk import read_block_topology
        from ..logic.blockdevices import desired_block_devices, pv_facts_from_lvm

        topology = read_block_topology(self.runner, timeout=self.config.command_timeout_seconds)
        facts = pv_facts_from_lvm(snap.pvs, snap.vgs, snap.canonical)
        return {d.name: LiveDevice(d.status.path, d.status.consumable, d.status.consumable_reason)
                for d in desired_block_devices(topology, facts, self.config.node_name, None)}
