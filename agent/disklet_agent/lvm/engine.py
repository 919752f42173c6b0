"""The host-side LVM engine the agent's Kopf handlers call (sync; run it in a thread).

One reconcile, in steps (each a method below): check (validation, the resolved paths of the file
devices, the node-wide VG name, the selected block devices against this node's live scan) →
provision file devices → plan PVs from a live pvs → pvcreate → vgcreate/vgextend → owner tags →
grow → thin pools → discover into status. Nothing is written on the host before the checks pass.
Every step that creates something records it in a journal so a failure rolls back only this
call's work (docs/design/lvm.md rule 5).

Reads per reconcile: one ``realpath`` of the base and every directory component, one snapshot
(losetup list + ONE ``pvs`` with VG columns, ``lvs`` only when a VG has LVs); a node-wide ``pvs``
for names only when a VG is about to be created, at the start and again next to the live read
before pvcreate; a fresh live read before pvcreate/vgextend and before any teardown; one
snapshot after the last change, which both feeds the later steps and becomes the status. When
this call changed nothing on the host, the start snapshot is that snapshot (no re-read). The
node-wide check runs side by side with the filtered read next to it (:func:`overlapped`): two
reads, two proofs, the wall time of about one.
"""

from __future__ import annotations

import functools
import logging
import posixpath
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import TypeVar

from disklet.api.common import Condition, get_condition, set_condition
from disklet.api.lvm import (
    NAME_MAX,
    ConditionType,
    LVGPhase,
    LVMVolumeGroupSpec,
    LVMVolumeGroupStatus,
    Reason,
    backing_file_name,
    parse_backing_file_name,
)
from disklet.hostcmd import HostRunner
from disklet.lvm.sizing import plan_thin_pool
from disklet.lvm.thinpool import fullness_conditions
from disklet.lvm.validation import (
    component_prefixes,
    escape_through_symlink,
    has_control_chars,
    inside_base,
    validate_lvg,
)

from ..config import AgentConfig
from ..host.files import FileOpError, FileProbe, HostFiles, Presence
from ..host.losetup import Losetup, LosetupError
from ..host.lvm import PV, VG, Lvm, LvmError, owner_tag
from ..host.lvmshell import LvmShell
from .discovery import discover_status, find_vg, status_file_paths
from .filedevices import FileDeviceError, FileDevices
from .planner import Journal, PvPlan, managed_loop, plan_pvs
from .snapshot import LvmSnapshot

Event = tuple[str, str, str]
ALIAS_ROUNDS = 3
log = logging.getLogger(__name__)
T = TypeVar("T")
U = TypeVar("U")


@dataclass(frozen=True)
class LiveDevice:
    """One device as this node's own live scan reports it (the BlockDevice object only selects)."""

    path: str
    consumable: bool
    reason: str | None = None


BlockScan = Callable[[LvmSnapshot], Mapping[str, LiveDevice]]
"""BlockDevice name (the stable identity hash) → the device as scanned now."""


@dataclass
class LvgOutcome:
    """What one engine reconcile of an LVMVolumeGroup did (not the metrics outcome)."""

    status: LVMVolumeGroupStatus
    changed: bool
    events: list[Event] = field(default_factory=list)
    requeue_after: float | None = None
    host_changed: bool = False
    """Something on the host was created, changed or rolled back by this call (status may be equal)."""


@dataclass
class DeleteOutcome:
    done: bool
    status: LVMVolumeGroupStatus
    events: list[Event] = field(default_factory=list)

    def kept(self, why: str) -> DeleteOutcome:
        """The same cleanup, but the finalizer stays for ``why`` (said in the condition and an Event)."""
        status = self.status.model_copy(deep=True)
        status.conditions = set_condition(list(status.conditions or []), ConditionType.VG_CONFIGURATION_APPLIED,
                                          "False", Reason.TERMINATING, why, status.observed_generation)
        return DeleteOutcome(False, status, [*self.events, ("Warning", Reason.TERMINATING, why)])


@dataclass(frozen=True)
class ReattachProblem:
    """A per-file (or per-VG) problem of the startup re-attach, bound to its LVMVolumeGroup."""

    lvg: str
    message: str

    def __str__(self) -> str:
        return self.message


@dataclass
class _Round:
    """Problems found in one reconcile, by condition reason."""

    failures: list[tuple[str, str]] = field(default_factory=list)
    events: list[Event] = field(default_factory=list)

    latest: LvmSnapshot | None = None
    """The last snapshot this call read, while nothing this call did has changed the host since."""
    host_changed: bool = False
    name_checked: bool = False
    """The node-wide VG name check ran after this call's last file/loop change (right before acting)."""
    name_conflict: str | None = None
    """Its answer: why the name cannot be taken, or None when it is free."""

    def changed_host(self) -> None:
        self.latest = None
        self.host_changed = True

    def fail(self, reason: str, message: str) -> None:
        self.failures.append((reason, message))
        self.events.append(("Warning", reason, message))

    def warn(self, reason: str, message: str) -> None:
        self.events.append(("Warning", reason, message))


@dataclass
class _Entries:
    """The file devices this call provisioned, by entry name."""

    loops: dict[str, str] = field(default_factory=dict)
    journals: dict[str, Journal] = field(default_factory=dict)
    paths: dict[str, str] = field(default_factory=dict)
    probes: dict[str, FileProbe | None] = field(default_factory=dict)
    direct_io: set[str] = field(default_factory=set)
    """Entries this call attached with ``--direct-io=on`` (losetup accepted it)."""

    def owner_of(self) -> dict[str, str]:
        return {loop: name for name, loop in self.loops.items()}


def tag_missing(vg: VG, lvg_name: str) -> bool:
    """The VG lacks the enabled tag or this LVMVolumeGroup's owner tag."""
    return owner_tag(lvg_name) not in vg.tags or not vg.managed


def overlapped(first: Callable[[], T], second: Callable[[], U], parallel: bool) -> tuple[T, U]:
    """Two independent READS at once: ``second`` in a helper thread while ``first`` runs here (each
    keeps its own filter, timeout and failure handling; both are complete before this returns).
    An LVM command's wall time is mostly waiting, not CPU (LVM tears down its async I/O context
    at the end of every command, docs/performance.md), so two reads side by side cost about one.
    ``parallel`` False: one after the other, ``first`` first (deterministic order for test doubles)."""
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


class HostLvgEngine:
    def __init__(self, runner: HostRunner, config: AgentConfig, *, block_scan: BlockScan | None = None):
        self.runner = runner
        self.config = config
        timeout = config.command_timeout_seconds
        # The shell replaces the real runner's processes only: a runner whose ``run`` is overridden
        # (a test double, a recorder) sees every command as before.
        real = type(runner).run is HostRunner.run
        self.shell = LvmShell(runner) if config.lvm_shell and real else None
        self.lvm = Lvm(runner, extra_config=config.lvm_extra_config, timeout=timeout, shell=self.shell)
        self.losetup = Losetup(runner, timeout)
        self.files = HostFiles(runner, timeout)
        self.devices = FileDevices(self.files, self.losetup, self.lvm, config.free_space_reserve_percent)
        self.block_scan: BlockScan = block_scan or self._scan_block_devices
        self._alias_rounds: dict[str, int] = {}
        self.parallel_reads = self.shell is not None
        """Independent reads side by side (real host only; a test double sees them in a fixed order).
        False: one after the other (bench/apply_to_ready.py --ab measures the difference)."""

    def close(self) -> None:
        """Stop the lvm shell (a later command starts a new one)."""
        if self.shell is not None:
            self.shell.close()

    # ----------------------------------------------------------------- snapshot
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

    def _live_pvs(self, base_dirs: tuple[str, ...] | None = None) -> dict[str, PV] | None:
        """A fresh pvs keyed by canonical device; None when it cannot be read (then tear nothing down)."""
        snap = self.snapshot(base_dirs)
        if not snap.ok or snap.unresolved():
            return None
        return snap.pvs_by_device()

    # ------------------------------------------------------------- host checks
    def _resolve_dirs(self, directories: Iterable[str]) -> tuple[tuple[str, ...], dict[str, str | None]]:
        """ONE ``realpath`` of the base and of every component of ``directories`` (each lexically
        inside the base): the resolved base dirs, and per directory why it leaves the base through a
        symlink (None when it stays inside). Raises :class:`FileOpError` when it cannot be read."""
        base = self.config.file_devices_dir
        dirs = list(dict.fromkeys(directories))
        prefixes = list(dict.fromkeys([posixpath.normpath(base),
                                       *(p for d in dirs for p in component_prefixes(d, base))]))
        resolved = self.files.realpaths(prefixes)
        base_dirs = tuple(dict.fromkeys((base, resolved[posixpath.normpath(base)])))
        return base_dirs, {d: escape_through_symlink(d, base, resolved) for d in dirs}

    def _confine(self, directory: str) -> None:
        """Right before a host write under ``directory``: it must still resolve inside the base."""
        try:
            _, escapes = self._resolve_dirs([directory])
        except FileOpError as exc:
            raise FileDeviceError(f"cannot resolve {directory} (doing nothing now): {exc}") from exc
        if escapes[directory]:
            raise FileDeviceError(escapes[directory])

    def _name_conflict(self, vg_name: str, own_uuid: str | None) -> str | None:
        """Why ``vg_name`` cannot be used: another VG anywhere on the node (loop-backed ones included)
        carries it. Read node-wide, for the name only; an unreadable node fails closed."""
        try:
            named = self.lvm.node_vg_names()
        except LvmError as exc:
            return f"cannot check that the VG name {vg_name} is free on the node (nothing created): {exc}"
        others = [v for v in named if v.name == vg_name and v.uuid != own_uuid]
        if not others:
            return None
        o = others[0]
        return (f"a volume group named {vg_name} already exists on this node (UUID {o.uuid}, on {o.device}) and is "
                "not this LVMVolumeGroup's: VG names are unique per node, so nothing was created. Choose another "
                "actualVGNameOnTheNode, or rename the other VG (vgrename by UUID)")

    def _scan_block_devices(self, snap: LvmSnapshot) -> dict[str, LiveDevice]:
        from ..host.lsblk import read_block_topology
        from ..logic.blockdevices import desired_block_devices, pv_facts_from_lvm

        topology = read_block_topology(self.runner, timeout=self.config.command_timeout_seconds)
        facts = pv_facts_from_lvm(snap.pvs, snap.vgs, snap.canonical)
        return {d.name: LiveDevice(d.status.path, d.status.consumable, d.status.consumable_reason)
                for d in desired_block_devices(topology, facts, self.config.node_name, None)}

    def _node_devices(self, bds: list[tuple[str, str]], snap: LvmSnapshot, vg: VG | None) -> tuple[
            list[tuple[str, str]], list[str]]:
        """The selected BlockDevices as this node's live scan reports them, matched by the stable name
        (identity hash): [(name, live path)] usable now, and why the others are not. A device becomes a
        PV only if the scan calls it consumable now (or it already is a PV of this VG)."""
        if not bds:
            return [], []
        try:
            live = self.block_scan(snap)
        except Exception as exc:  # lsblk/probe failure: fail closed
            return [], [f"cannot scan this node's block devices (nothing created): {exc}"]
        pvs = snap.pvs_by_device()
        usable: list[tuple[str, str]] = []
        errors: list[str] = []
        for name, api_path in bds:
            dev = live.get(name)
            if dev is None:
                errors.append(f"BlockDevice {name} ({api_path}) is not on this node now (live scan): not used")
                continue
            pv = pvs.get(dev.path)
            member = pv is not None and vg is not None and pv.vg_uuid == vg.uuid
            if not dev.consumable and not member:
                errors.append(f"BlockDevice {name} ({dev.path}) is not consumable now: {dev.reason}")
                continue
            usable.append((name, dev.path))
        return usable, errors

    # ---------------------------------------------------------------- reconcile
    def reconcile(self, lvg_name: str, spec: LVMVolumeGroupSpec, status: LVMVolumeGroupStatus | None,
                  block_devices: list[tuple[str, str]] | None = None,
                  generation: int | None = None) -> LvgOutcome:
        old = status or LVMVolumeGroupStatus()
        rnd = _Round()
        errors = validate_lvg(lvg_name, spec, self.config.file_devices_dir)
        base_dirs: tuple[str, ...] | None = None
        if not errors and spec.file_devices:
            try:
                base_dirs, escapes = self._resolve_dirs(fd.directory for fd in spec.file_devices)
                errors.extend(f"fileDevices[{fd.name}]: {escapes[fd.directory]}" for fd in spec.file_devices
                              if escapes[fd.directory])
            except FileOpError as exc:
                rnd.fail(Reason.UPDATING, f"cannot resolve the file device directories (nothing changed): {exc}")
                return self._finish(lvg_name, spec, old, [], generation, rnd)
        # A status without a VG UUID: most likely a create, which needs the node-wide name check too;
        # both are reads, so they run side by side (the check's answer is unused if the VG exists).
        speculate = not errors and not old.vg_uuid
        snap, early = overlapped(lambda: self.snapshot(base_dirs),
                                 lambda: self._name_conflict(spec.actual_vg_name_on_the_node, None)
                                 if speculate else None, self.parallel_reads)
        bds: list[tuple[str, str]] = []
        if not snap.ok:
            rnd.fail(Reason.UPDATING, f"cannot read LVM state on the node (nothing changed): {snap.error}")
            return self._finish(lvg_name, spec, old, bds, generation, rnd, snap.base_dirs)
        rnd.latest = snap
        lookup = find_vg(snap, lvg_name, spec.actual_vg_name_on_the_node, old.vg_uuid)
        vg = lookup.vg
        if lookup.error:
            errors.append(lookup.error)
        if errors:
            rnd.fail(Reason.VALIDATION_FAILED, "; ".join(errors))
            return self._finish(lvg_name, spec, old, bds, generation, rnd, snap.base_dirs)
        if vg is None and (conflict := early if speculate else
                           self._name_conflict(spec.actual_vg_name_on_the_node, None)):
            rnd.fail(Reason.VG_NAME_CONFLICT, conflict)
            return self._finish(lvg_name, spec, old, bds, generation, rnd, snap.base_dirs)
        bds, device_errors = self._node_devices(list(block_devices or []), snap, vg)
        for msg in device_errors:
            rnd.fail(Reason.VG_EXTEND_FAILED, msg)
        self._apply(lvg_name, spec, old, bds, snap, vg, rnd)
        return self._finish(lvg_name, spec, old, bds, generation, rnd, snap.base_dirs)

    def _apply(self, lvg_name: str, spec: LVMVolumeGroupSpec, old: LVMVolumeGroupStatus,
               bds: list[tuple[str, str]], snap: LvmSnapshot, vg: VG | None, rnd: _Round) -> VG | None:
        journal = Journal()
        try:
            return self._apply_steps(lvg_name, spec, bds, snap, vg, rnd, journal)
        except BaseException:
            # Cancelled or crashed mid-way: undo only what this call created, each step bounded.
            rnd.changed_host()
            self.devices.rollback(journal, lambda: self._live_pvs(snap.base_dirs))
            raise

    def _apply_steps(self, lvg_name: str, spec: LVMVolumeGroupSpec, bds: list[tuple[str, str]],
                     snap: LvmSnapshot, vg: VG | None, rnd: _Round, journal: Journal) -> VG | None:
        vg_name = spec.actual_vg_name_on_the_node
        entries = self._provision_files(lvg_name, spec, snap, rnd, journal)
        planned = self._plan_devices(lvg_name, spec, entries, [p for _, p in bds], snap, vg, rnd)
        if planned is None:
            return vg
        self._check_direct_io(entries, rnd)
        if vg is None and planned.join and rnd.name_checked and rnd.name_conflict:
            # The name was taken while the loops were attached: nothing becomes a PV.
            rnd.fail(Reason.VG_NAME_CONFLICT, rnd.name_conflict)
            self._rollback(journal, rnd, snap.base_dirs)
            return None
        joinable = self._create_pvs(planned, entries, rnd, journal, snap.base_dirs)
        if joinable:
            vg = self._join_vg(lvg_name, vg_name, vg, joinable, rnd, journal, snap.base_dirs)
            if vg is None:
                return None
        if vg is None:
            return self._our_vg(lvg_name, vg_name, snap.base_dirs, rnd)
        self._ensure_tags(vg, lvg_name, rnd)
        grown = self._grow(lvg_name, spec, entries, planned, vg, rnd, snap.base_dirs)
        if grown is None:
            return vg
        fresh, vg = grown
        self._thin_pools(spec, fresh, vg, rnd)
        return vg

    # 1. file devices
    def _provision_files(self, lvg_name: str, spec: LVMVolumeGroupSpec, snap: LvmSnapshot, rnd: _Round,
                         journal: Journal) -> _Entries:
        entries = _Entries()
        for fd in spec.file_devices or []:
            path = fd.file_path(lvg_name)
            basename = backing_file_name(lvg_name, fd.name)
            deleted = [lp for lp in snap.loops if lp.deleted and posixpath.basename(lp.back_file) == basename
                       and managed_loop(lp, snap.base_dirs, lvg_name) is not None]
            j = Journal()
            try:
                got = self.devices.provision(path, fd.bytes(), deleted, j, loops=snap.loops,
                                             guard=functools.partial(self._confine, fd.directory))
            except FileDeviceError as exc:
                rnd.fail(Reason.FILE_DEVICE_NOT_APPLIED, f"fileDevices[{fd.name}]: {exc}")
                if j.steps:
                    rnd.changed_host()  # it changed something before failing
                self._rollback(j, rnd, snap.base_dirs)
                continue
            finally:
                journal.steps.extend(j.steps)
            if got.changed:
                rnd.changed_host()
            entries.probes[fd.name] = got.probe
            if got.direct_io:
                entries.direct_io.add(fd.name)
            for w in got.warnings:
                rnd.warn("DirectIONotEnabled", f"fileDevices[{fd.name}]: {w}")
            entries.loops[fd.name] = got.loop
            entries.paths[fd.name] = path
            entries.journals[fd.name] = j
        return entries

    # 2. which devices need pvcreate / join (decided from a LIVE pvs)
    def _plan_devices(self, lvg_name: str, spec: LVMVolumeGroupSpec, entries: _Entries, block_paths: list[str],
                      snap: LvmSnapshot, vg: VG | None, rnd: _Round) -> PvPlan | None:
        owner = entries.owner_of()
        devices = [*entries.loops.values(), *block_paths]
        vg_uuid = vg.uuid if vg else None
        live = rnd.latest
        plan = plan_pvs(devices, live.pvs_by_device(), vg_uuid, live.unresolved()) if live else None
        if live is None or plan is None or plan.join or plan.errors:
            # Something may be created or joined (or refused): decide from a fresh, live pvs. Only when
            # this call changed nothing and its own start read shows every device already a member of
            # the VG is that read used: it can only lead to creating nothing. A VG about to be created
            # also needs its name checked node-wide now, after every loop is attached and before any
            # PV or VG is made: that read runs side by side with this one.
            fresh: LvmSnapshot
            if vg is None:
                fresh, conflict = overlapped(lambda: self.snapshot(snap.base_dirs),
                                             lambda: self._name_conflict(spec.actual_vg_name_on_the_node, None),
                                             self.parallel_reads)
                rnd.name_checked, rnd.name_conflict = True, conflict
            else:
                fresh = self.snapshot(snap.base_dirs)
            live = fresh
            if not live.ok:
                rnd.fail(Reason.UPDATING, f"cannot list PVs (nothing torn down): {live.error}")
                return None
            rnd.latest = live  # read after every change this call made so far
            plan = plan_pvs(devices, live.pvs_by_device(), vg_uuid, live.unresolved())
        if live.unresolved():
            rounds = self._alias_rounds.get(lvg_name, 0) + 1
            self._alias_rounds[lvg_name] = rounds
            reason = Reason.ALIAS_RESOLUTION_FAILED if rounds >= ALIAS_ROUNDS else Reason.UPDATING
        else:
            self._alias_rounds.pop(lvg_name, None)
            reason = Reason.VG_EXTEND_FAILED
        for dev, msg in plan.errors:
            rnd.fail(reason, f"fileDevices[{owner[dev]}]: {msg}" if dev in owner else msg)
        return plan

    # 3. pvcreate: one invocation for every device the live pvs does not show as a PV; if it fails,
    # ONE further live pvs tells which of them became PVs.
    def _create_pvs(self, plan: PvPlan, entries: _Entries, rnd: _Round, journal: Journal,
                    base_dirs: tuple[str, ...]) -> list[str]:
        owner = entries.owner_of()
        joinable: list[str] = []
        to_create = [dev for dev in plan.join if dev in plan.pvcreate]
        failed: dict[str, str] = {}
        if to_create:
            rnd.changed_host()
            mut = self.lvm.pvcreate(*to_create)
            if not mut.ok:
                after = self._live_pvs(base_dirs)
                failed = {dev: mut.message for dev in to_create if not (after and dev in after)}
        for dev in plan.join:
            if dev in failed:
                rnd.fail(Reason.FILE_DEVICE_NOT_APPLIED if dev in owner else Reason.VG_EXTEND_FAILED, failed[dev])
                if dev in owner:
                    self._rollback(entries.journals[owner[dev]], rnd, base_dirs)
                continue
            if dev in to_create and dev in owner:
                ej = entries.journals[owner[dev]]
                ej.created_pv(dev, entries.paths[owner[dev]])
                journal.steps.append(ej.steps[-1])
            joinable.append(dev)
        return joinable

    # 4. vgcreate / vgextend
    def _join_vg(self, lvg_name: str, vg_name: str, vg: VG | None, joinable: list[str], rnd: _Round,
                 journal: Journal, base_dirs: tuple[str, ...]) -> VG | None:
        if vg is not None:
            rnd.changed_host()
            mut = self.lvm.vgextend(vg.name, joinable)
            if not mut.ok and not self._all_in_vg(joinable, vg.uuid, base_dirs):
                rnd.fail(Reason.VG_EXTEND_FAILED, f"vgextend {vg.name} failed: {mut.message}")
                self._rollback(Journal([s for s in journal.steps if s.kind != "pv" or s.target in joinable]), rnd,
                               base_dirs)
            else:
                rnd.events.append(("Normal", "VGExtended", f"extended {vg.name} with {', '.join(joinable)}"))
            return vg
        # Node-wide, right before the name is taken: the check made next to the live read before
        # pvcreate (nothing but PVs on our own loops was made since), else now.
        conflict = rnd.name_conflict if rnd.name_checked else self._name_conflict(vg_name, None)
        if conflict:
            rnd.fail(Reason.VG_NAME_CONFLICT, conflict)
            self._rollback(journal, rnd, base_dirs)
            return None
        rnd.changed_host()
        mut = self.lvm.vgcreate(vg_name, joinable, lvg_name)
        if not mut.ok:
            vg = self._our_vg(lvg_name, vg_name, base_dirs, rnd)
            if vg is None:
                rnd.fail(Reason.FILE_DEVICE_NOT_APPLIED, f"vgcreate {vg_name} failed: {mut.message}")
                self._rollback(journal, rnd, base_dirs)
                return None
            rnd.warn("LVMReportedFailure", f"vgcreate reported a failure but the VG exists: {mut.message}")
        rnd.events.append(("Normal", "VGCreated", f"created volume group {vg_name} on {', '.join(joinable)}"))
        return vg or self._our_vg(lvg_name, vg_name, base_dirs, rnd)

    def _ensure_tags(self, vg: VG, lvg_name: str, rnd: _Round) -> None:
        if tag_missing(vg, lvg_name):
            rnd.changed_host()
            mut = self.lvm.add_tags(vg.name, lvg_name)
            if not mut.ok:
                rnd.fail(Reason.UPDATING, f"cannot tag {vg.name}: {mut.message}")

    # 5. growth (only entries that were already PVs of the VG before this call)
    def _grow(self, lvg_name: str, spec: LVMVolumeGroupSpec, entries: _Entries, plan: PvPlan, vg: VG,
              rnd: _Round, base_dirs: tuple[str, ...]) -> tuple[LvmSnapshot, VG] | None:
        fresh = rnd.latest or self._read(base_dirs, rnd)
        if not fresh.ok:
            rnd.fail(Reason.UPDATING, f"cannot read LVM state: {fresh.error}")
            return None
        vg = fresh.vg_by_uuid(vg.uuid) or vg
        by_dev = fresh.pvs_by_device()
        grew = False
        for fd in spec.file_devices or []:
            loop = entries.loops.get(fd.name)
            if loop is None or loop not in plan.members:
                continue
            try:
                # The loop and the file's sizes were resolved from the file by this call (provision).
                grew |= self.devices.grow(fd.file_path(lvg_name), fd.bytes(), by_dev.get(loop), vg.extent_size,
                                          loop=loop, probe=entries.probes.get(fd.name),
                                          guard=functools.partial(self._confine, fd.directory))
            except (FileDeviceError, FileOpError, LosetupError) as exc:
                rnd.changed_host()  # a step may have run before the failure
                rnd.fail(Reason.FILE_DEVICE_GROW_FAILED, f"fileDevices[{fd.name}]: {exc}")
        if grew:
            rnd.changed_host()
            rnd.events.append(("Normal", "FileDeviceGrown", "grew file devices of " + vg.name))
            fresh = self._read(base_dirs, rnd)
            vg = fresh.vg_by_uuid(vg.uuid) or vg
        return fresh, vg

    # 6. thin pools
    def _thin_pools(self, spec: LVMVolumeGroupSpec, snap: LvmSnapshot, vg: VG, rnd: _Round) -> None:
        if not spec.thin_pools:
            return
        lvs = snap.lvs_of(vg)
        free = vg.free
        for tp in spec.thin_pools:
            lv = next((x for x in lvs if x.name == tp.name), None)
            if lv is not None and not lv.is_thin_pool:
                rnd.fail(Reason.THIN_POOL_RECONCILE_FAILED, f"thinPools[{tp.name}]: an LV of that name exists "
                                                            "and is not a thin pool")
                continue
            action = plan_thin_pool(tp.size, vg_size=vg.size, vg_free=free, extent=vg.extent_size,
                                    current_size=lv.size if lv else None)
            if action.kind == "none":
                continue
            if action.kind == "error":
                rnd.fail(Reason.THIN_POOL_RECONCILE_FAILED, f"thinPools[{tp.name}]: {action.message}")
                continue
            rnd.changed_host()
            if action.kind == "create":
                mut = self.lvm.lvcreate_thin_pool(vg.name, tp.name, action.extents)
            else:
                mut = self.lvm.lvextend(vg.name, tp.name, action.extents)
            if not mut.ok:
                rnd.fail(Reason.THIN_POOL_RECONCILE_FAILED, f"thinPools[{tp.name}]: {mut.message}")
            else:
                rnd.events.append(("Normal", "ThinPoolReconciled", f"thin pool {tp.name}: {action.kind}"))
                free = 0 if action.extents is None else max(
                    free - (action.extents - (lv.size // vg.extent_size if lv else 0)) * vg.extent_size, 0)

    def _rollback(self, journal: Journal, rnd: _Round, base_dirs: tuple[str, ...] | None = None) -> None:
        if journal.steps:
            rnd.changed_host()
        for problem in self.devices.rollback(journal, lambda: self._live_pvs(base_dirs)):
            rnd.warn("RollbackIncomplete", problem)
        journal.steps.clear()

    def _check_direct_io(self, entries: _Entries, rnd: _Round) -> None:
        """A loop this call attached with ``--direct-io=on`` that the kernel runs with buffered I/O
        anyway (it may fall back without an error): a warning, from the losetup list the live read took."""
        live = rnd.latest
        if live is None or not entries.direct_io:
            return
        for name in sorted(entries.direct_io):
            loop = live.loop(entries.loops[name])
            if loop is not None and loop.direct_io is False:
                msg = (f"fileDevices[{name}]: {loop.name} was attached with direct I/O on, but the kernel uses "
                       "buffered I/O for it (the backing filesystem or its block size does not allow direct I/O): "
                       "the page cache holds a second copy of the data")
                log.warning("direct I/O not in effect: %s", msg, extra={"loop": loop.name})
                rnd.warn("DirectIONotEnabled", msg)

    def _all_in_vg(self, devs: list[str], vg_uuid: str, base_dirs: tuple[str, ...]) -> bool:
        live = self._live_pvs(base_dirs)
        return live is not None and all(d in live and live[d].vg_uuid == vg_uuid for d in devs)

    def _read(self, base_dirs: tuple[str, ...], rnd: _Round) -> LvmSnapshot:
        """A fresh snapshot; it stands for the host until this call changes something again."""
        snap = self.snapshot(base_dirs)
        rnd.latest = snap if snap.ok else None
        return snap

    def _our_vg(self, lvg_name: str, vg_name: str, base_dirs: tuple[str, ...] | None = None,
                rnd: _Round | None = None) -> VG | None:
        snap = self._read(base_dirs, rnd) if rnd is not None and base_dirs is not None else self.snapshot(base_dirs)
        return find_vg(snap, lvg_name, vg_name, None).vg if snap.ok else None

    # ------------------------------------------------------------------- status
    def _finish(self, lvg_name: str, spec: LVMVolumeGroupSpec, old: LVMVolumeGroupStatus,
                bds: list[tuple[str, str]], generation: int | None, rnd: _Round,
                base_dirs: tuple[str, ...] = ()) -> LvgOutcome:
        # The status comes from the snapshot read after this call's last change (or at its start when
        # it changed nothing); only if there is none is the host read again.
        snap = rnd.latest or self.snapshot(base_dirs or None)
        discovered: LVMVolumeGroupStatus | None = None
        vg: VG | None = None
        if snap.ok:
            vg = find_vg(snap, lvg_name, spec.actual_vg_name_on_the_node, old.vg_uuid).vg
            if vg is not None:
                discovered = discover_status(lvg_name, spec, snap, self.config.node_name, vg,
                                             {p: n for n, p in bds})
        new = old.model_copy(deep=True)
        if discovered is not None:
            for name in ("nodes", "vg_uuid", "vg_size", "vg_free", "allocated_size", "extent_size", "thin_pools",
                         "thin_pool_ready"):
                setattr(new, name, getattr(discovered, name))
            self._drift(lvg_name, spec, old, discovered, rnd)
        conditions: list[Condition] = list(old.conditions or [])
        gen = generation
        if rnd.failures:
            reason, _ = rnd.failures[0]
            msg = "; ".join(m for _, m in rnd.failures)
            conditions = set_condition(conditions, ConditionType.VG_CONFIGURATION_APPLIED, "False", reason, msg, gen)
        else:
            conditions = set_condition(conditions, ConditionType.VG_CONFIGURATION_APPLIED, "True", Reason.APPLIED,
                                       "the spec is applied on the node", gen)
        if vg is not None and vg.missing_pv_count == 0:
            conditions = set_condition(conditions, ConditionType.VG_READY, "True", Reason.APPLIED,
                                       f"volume group {vg.name} is present with all its PVs", gen)
            phase = LVGPhase.READY
        elif vg is not None:
            conditions = set_condition(conditions, ConditionType.VG_READY, "False", Reason.FILE_DEVICE_DRIFT,
                                       f"volume group {vg.name} is missing {vg.missing_pv_count} PV(s)", gen)
            phase = LVGPhase.NOT_READY
        else:
            reason = rnd.failures[0][0] if rnd.failures else Reason.CREATING
            conditions = set_condition(conditions, ConditionType.VG_READY, "False", reason,
                                       "the volume group does not exist on the node yet", gen)
            phase = LVGPhase.NOT_READY if rnd.failures else LVGPhase.PENDING
        conditions = fullness_conditions(conditions, new.thin_pools, self.config.thin_pool_thresholds(), gen)
        new.conditions = conditions
        new.phase = phase
        new.configuration_applied = not rnd.failures
        if generation is not None:
            new.observed_generation = generation
        changed = new.to_wire() != old.to_wire()
        requeue = self.config.refused_retry_seconds if rnd.failures or not snap.ok else None
        # One Event per transition: a refusal repeated with the same status posts nothing new.
        return LvgOutcome(status=new, changed=changed, events=rnd.events if changed or rnd.host_changed else [],
                          requeue_after=requeue, host_changed=rnd.host_changed)

    def _drift(self, lvg_name: str, spec: LVMVolumeGroupSpec, old: LVMVolumeGroupStatus,
               discovered: LVMVolumeGroupStatus, rnd: _Round) -> None:
        """An entry that was a PV earlier but is gone from the spec or the VG: report, destroy nothing."""
        spec_names = {fd.name for fd in spec.file_devices or []}
        now = {fd.name for n in discovered.nodes or [] for fd in n.file_devices or []}
        before = {fd.name for n in old.nodes or [] if n.name == self.config.node_name for fd in n.file_devices or []}
        gone_from_spec = sorted(now - spec_names)
        gone_from_vg = sorted((before & spec_names) - now)
        if gone_from_spec:
            rnd.fail(Reason.FILE_DEVICE_DRIFT, f"file devices {', '.join(gone_from_spec)} are PVs of the VG but no "
                                               "longer in spec.fileDevices; nothing was removed")
        if gone_from_vg:
            rnd.fail(Reason.FILE_DEVICE_DRIFT, f"file devices {', '.join(gone_from_vg)} are no longer PVs of the VG")

    # ----------------------------------------------------------------- discover
    def discover(self, lvgs: list[tuple[str, LVMVolumeGroupSpec]],
                 snapshot: LvmSnapshot | None = None) -> dict[str, LVMVolumeGroupStatus | None]:
        """Discovered status fields per LVG (no phase/conditions); None = skip writing this cycle."""
        snap = snapshot or self.snapshot()
        out: dict[str, LVMVolumeGroupStatus | None] = {}
        for name, spec in lvgs:
            if not snap.ok:
                out[name] = None
                continue
            vg = find_vg(snap, name, spec.actual_vg_name_on_the_node, None).vg
            out[name] = discover_status(name, spec, snap, self.config.node_name, vg) if vg else None
        return out

    # ------------------------------------------------------------------- delete
    def delete(self, lvg_name: str, spec: LVMVolumeGroupSpec, status: LVMVolumeGroupStatus | None) -> DeleteOutcome:
        """Undo exactly what exists on the host and is ours; an object that never created anything is
        released at once (refused objects included)."""
        old = status or LVMVolumeGroupStatus()
        events: list[Event] = []
        problems: list[str] = []
        snap = self.snapshot()
        if not snap.ok:
            return self._delete_outcome(old, False, [f"cannot read LVM state (finalizer kept): {snap.error}"], events)
        lookup = find_vg(snap, lvg_name, spec.actual_vg_name_on_the_node, old.vg_uuid)
        vg = lookup.vg
        if vg is not None:
            lvs = snap.lvs_of(vg)
            pools = {lv.name for lv in lvs if lv.is_thin_pool}
            others = sorted(lv.name for lv in lvs if not lv.is_thin_pool)
            if others:
                msg = (f"volume group {vg.name} still holds logical volumes {', '.join(others)}: delete them "
                       "(their PVCs/LVMLogicalVolumes) first; nothing was removed")
                return self._delete_outcome(old, False, [msg], events)
            pv_devs = [snap.canonical(p.name) or p.name for p in snap.pvs_of(vg)]
            for pool in sorted(pools):
                mut = self.lvm.lvremove(vg.name, pool)
                if not mut.ok:
                    problems.append(f"cannot remove thin pool {pool}: {mut.message}")
            if not problems:
                mut = self.lvm.vgremove(vg.name)
                if not mut.ok:
                    problems.append(f"vgremove {vg.name} failed: {mut.message}")
                else:
                    events.append(("Normal", "VGRemoved", f"removed volume group {vg.name}"))
                    if pv_devs:
                        mut = self.lvm.pvremove(*pv_devs)
                        if not mut.ok:
                            problems.append(f"pvremove {', '.join(pv_devs)} failed: {mut.message}")
            if problems:
                return self._delete_outcome(old, False, problems, events)
        problems.extend(self._delete_files(lvg_name, spec, old, events, snap if vg is None else None))
        return self._delete_outcome(old, not problems, problems, events)

    def _candidates(self, lvg_name: str, spec: LVMVolumeGroupSpec,
                    status: LVMVolumeGroupStatus | None) -> dict[str, list[str]]:
        """basename → candidate paths from this node's status ∪ spec, keeping only what this agent
        could ever have created: our name for this LVMVolumeGroup (within NAME_MAX), no control
        characters, a directory lexically inside a base directory. Anything else never existed as ours."""
        targets: dict[str, list[str]] = {}
        for fd in spec.file_devices or []:
            targets.setdefault(backing_file_name(lvg_name, fd.name), []).append(fd.file_path(lvg_name))
        for base, path in status_file_paths(status, self.config.node_name).items():
            targets.setdefault(base, []).append(path)
        out: dict[str, list[str]] = {}
        for basename, paths in targets.items():
            parsed = parse_backing_file_name(basename)
            if parsed is None or parsed[0] != lvg_name or len(basename.encode()) > NAME_MAX:
                continue
            keep = [p for p in dict.fromkeys(paths) if not has_control_chars(p) and p.startswith("/")]
            if keep:
                out[basename] = keep
        return out

    def _confined_files(self, paths: Iterable[str], base_dirs: tuple[str, ...]) -> dict[str, str | None]:
        """path → None when its directory lies inside a base directory once every symlink is resolved,
        else why not. Paths are checked against the base they lexically lie in (status paths are
        kernel-resolved, so they lie in the resolved base)."""
        out: dict[str, str | None] = {}
        by_base: dict[str, list[str]] = {}
        for p in paths:
            d = posixpath.dirname(posixpath.normpath(p))
            base = next((b for b in base_dirs if inside_base(d, b)), None)
            if base is None or any(seg in (".", "..") for seg in p.split("/")):
                out[p] = f"{p} is not inside the base directory"
            else:
                by_base.setdefault(base, []).append(p)
        for base, ps in by_base.items():
            dirs = {p: posixpath.dirname(posixpath.normpath(p)) for p in ps}
            prefixes = list(dict.fromkeys(x for d in dirs.values() for x in component_prefixes(d, base)))
            resolved = self.files.realpaths(prefixes)  # FileOpError: caller keeps the finalizer
            for p, d in dirs.items():
                out[p] = escape_through_symlink(d, base, resolved)
        return out

    def _delete_files(self, lvg_name: str, spec: LVMVolumeGroupSpec, status: LVMVolumeGroupStatus,
                      events: list[Event], snap: LvmSnapshot | None = None) -> list[str]:
        """Detach the loops and remove the files of this LVMVolumeGroup that exist and are ours:
        a loop only if its (kernel-resolved) backing file carries our name inside a base directory
        and it is not a PV; a file only if it is a regular file (never a symlink) whose directory
        resolves inside the base. ``snap``: a live read taken after the last LVM change, if any."""
        snap = snap or self.snapshot()  # LIVE: after the VG/PV removals
        if not snap.ok or snap.unresolved():
            return [f"cannot list PVs (finalizer kept): {snap.error or 'unresolved device aliases'}"]
        problems: list[str] = []
        pv_devs = snap.pvs_by_device()
        candidates = self._candidates(lvg_name, spec, status)
        try:
            confined = self._confined_files({p for ps in candidates.values() for p in ps}, snap.base_dirs)
        except FileOpError as exc:
            return [f"cannot resolve the backing file directories (finalizer kept): {exc}"]
        for basename, paths in sorted(candidates.items()):
            loops = {lp.name for lp in snap.loops if posixpath.basename(lp.back_file) == basename
                     and managed_loop(lp, snap.base_dirs, lvg_name) is not None}
            # An orphan PV on our own file (an interrupted create: pvcreate done, no VG yet) holds no
            # data of any VG: its label goes with the object.
            orphans = sorted(lp for lp in loops if lp in pv_devs and not pv_devs[lp].vg_uuid)
            if orphans:
                mut = self.lvm.pvremove(*orphans)
                if not mut.ok:
                    problems.append(f"pvremove {', '.join(orphans)} failed: {mut.message}")
                    continue
            busy = sorted(lp for lp in loops if lp in pv_devs and lp not in orphans)
            if busy:
                problems.append(f"{', '.join(busy)} (backing file {basename}) is still a PV of volume group "
                                f"{pv_devs[busy[0]].vg_name or '(none)'}: not detached")
                continue
            detached = True
            for loop in sorted(loops):
                try:
                    self.losetup.detach(loop)
                    events.append(("Normal", "LoopDetached", f"detached {loop} ({basename})"))
                except LosetupError as exc:
                    problems.append(f"cannot detach {loop}: {exc}")
                    detached = False
            if not detached:
                continue
            for path in paths:
                if confined.get(path) is not None:
                    continue  # outside the resolved base: nothing there was ever ours
                probe = self.files.probe(path)
                if probe.presence is Presence.ABSENT:
                    continue
                if probe.presence is Presence.UNKNOWN:
                    if "symbolic link" in probe.error:
                        continue  # we never create symlinks: not ours, left alone
                    problems.append(f"cannot tell whether {path} exists (finalizer kept): {probe.error}")
                    continue
                try:
                    self.files.rm_f(path)
                    events.append(("Normal", "BackingFileRemoved", f"removed {path}"))
                except FileOpError as exc:
                    problems.append(f"cannot remove {path}: {exc}")
        return problems

    def _delete_outcome(self, old: LVMVolumeGroupStatus, done: bool, problems: list[str],
                        events: list[Event]) -> DeleteOutcome:
        new = old.model_copy(deep=True)
        msg = "; ".join(problems) if problems else "removed from the node"
        new.conditions = set_condition(list(old.conditions or []), ConditionType.VG_CONFIGURATION_APPLIED,
                                       "False", Reason.TERMINATING, msg, old.observed_generation)
        new.phase = LVGPhase.TERMINATING
        if problems:
            events.append(("Warning", Reason.TERMINATING, msg))
        return DeleteOutcome(done=done, status=new, events=events)

    # ----------------------------------------------------------------- reattach
    def reattach(self, lvgs: list[tuple[str, LVMVolumeGroupSpec, LVMVolumeGroupStatus | None]]
                 ) -> list[ReattachProblem]:
        """Attach every managed file (status ∪ spec) that has no loop; never create files; then activate.
        Only regular files whose directory resolves inside the base directory are attached."""
        problems: list[ReattachProblem] = []
        base = self.config.file_devices_dir
        try:
            real = self.files.realpath(base)
        except FileOpError as exc:
            return [ReattachProblem(name, f"cannot resolve the base directory {base}: {exc}") for name, _, _ in lvgs]
        base_dirs = tuple(dict.fromkeys((base, real)))
        for lvg_name, spec, status in lvgs:
            candidates = self._candidates(lvg_name, spec, status)
            try:
                confined = self._confined_files({p for ps in candidates.values() for p in ps}, base_dirs)
            except FileOpError as exc:
                problems.append(ReattachProblem(lvg_name, f"cannot resolve backing file directories: {exc}"))
                continue
            recorded = status_file_paths(status, self.config.node_name)
            for basename, paths in sorted(candidates.items()):
                path = next((p for p in paths if confined.get(p) is None), None)
                if path is None:
                    problems.append(ReattachProblem(lvg_name, f"{paths[0]}: {confined[paths[0]]}; skipped"))
                    continue
                try:
                    if self.losetup.find(path):
                        continue
                    probe = self.files.probe(path)
                    if probe.presence is Presence.ABSENT:
                        if basename in recorded:
                            problems.append(ReattachProblem(lvg_name, f"{path}: backing file is missing; not recreated"))
                        continue
                    if probe.presence is Presence.UNKNOWN:
                        problems.append(ReattachProblem(lvg_name, f"{path}: cannot read backing file: {probe.error}"))
                        continue
                    loop, _ = self.losetup.attach_direct(path)  # direct I/O is best effort here
                    self.lvm.owned_loops.add(loop)
                except LosetupError as exc:
                    problems.append(ReattachProblem(lvg_name, f"{path}: {exc}"))
        snap = self.snapshot(base_dirs)
        names = {spec.actual_vg_name_on_the_node: name for name, spec, _ in lvgs}
        if not snap.ok:
            return [*problems, *(ReattachProblem(name, f"cannot list volume groups for activation: {snap.error}")
                                 for name, _, _ in lvgs)]
        for vg in snap.vgs:
            if vg.managed and names.get(vg.name) == vg.owner:
                mut = self.lvm.vgchange_activate(vg.name)
                if not mut.ok:
                    problems.append(ReattachProblem(names[vg.name], f"cannot activate {vg.name}: {mut.message}"))
        return problems


__all__ = ["DeleteOutcome", "HostLvgEngine", "LvgOutcome", "LvmSnapshot", "ReattachProblem", "get_condition"]
