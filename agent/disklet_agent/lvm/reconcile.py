"""One reconcile of an LVMVolumeGroup on this node, in steps (each a method below): check
(validation, the resolved paths of the file devices, the node-wide VG name, the selected block
devices against this node's live scan) → provision file devices → plan PVs from a live pvs →
pvcreate → vgcreate/vgextend → owner tags → grow → thin pools → status (:mod:`.status`). Nothing is
written on the host before the checks pass. Every step that creates something records it in a
journal so a failure rolls back only this call's work (docs/design/lvm.md rule 5).

Reads per reconcile: one ``realpath`` of the base and every directory component, one snapshot
(losetup list + ONE ``pvs`` with VG columns, ``lvs`` only when a VG has LVs); a node-wide ``pvs``
for names only when a VG is about to be created, at the start and again next to the live read
before pvcreate; a fresh live read before pvcreate/vgextend and before any teardown; one
snapshot after the last change, which both feeds the later steps and becomes the status. When
this call changed nothing on the host, the start snapshot is that snapshot (no re-read). The
node-wide check runs side by side with the filtered read next to it (:func:`.reads.overlapped`):
two reads, two proofs, the wall time of about one.
"""

from __future__ import annotations

import functools
import logging
import posixpath
from dataclasses import dataclass, field

from disklet.api.lvm import LVMVolumeGroupSpec, LVMVolumeGroupStatus, Reason, backing_file_name
from disklet.lvm.sizing import plan_thin_pool
from disklet.lvm.validation import validate_lvg

from ..config import AgentConfig
from ..host.files import FileOpError, FileProbe
from ..host.losetup import LosetupError
from ..host.lvm import VG, LvmError, NamedVG, owner_tag
from .confinement import confine, resolve_dirs
from .discovery import find_vg, name_ambiguity
from .filedevices import FileDeviceError, FileDevices
from .outcomes import LvgOutcome, ReconcileState
from .planner import Journal, PvPlan, managed_loop, plan_pvs
from .ports import FileCommands, LvmCommands
from .reads import LvmReads
from .snapshot import LvmSnapshot
from .status import reconcile_outcome

ALIAS_ROUNDS = 3
log = logging.getLogger(__name__)


@dataclass
class ProvisionedFiles:
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


class LvgReconciler:
    """The reconcile steps over the engine's adapters; keeps, per LVMVolumeGroup, how many rounds in
    a row a PV alias stayed unresolved."""

    def __init__(self, reads: LvmReads, lvm: LvmCommands, files: FileCommands, devices: FileDevices,
                 config: AgentConfig):
        self.reads = reads
        self.lvm = lvm
        self.files = files
        self.devices = devices
        self.config = config
        self.alias_rounds: dict[str, int] = {}

    def confine(self, directory: str) -> None:
        confine(self.files, self.config.file_devices_dir, directory)

    def node_devices(self, bds: list[tuple[str, str]], snap: LvmSnapshot, vg: VG | None) -> tuple[
            list[tuple[str, str]], list[str]]:
        """The selected BlockDevices as this node's live scan reports them, matched by the stable name
        (identity hash): [(name, live path)] usable now, and why the others are not. A device becomes a
        PV only if the scan calls it consumable now (or it already is a PV of this VG)."""
        if not bds:
            return [], []
        try:
            live = self.reads.block_scan(snap)
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

    # ---------------------------------------------------------------- the run
    def run(self, lvg_name: str, spec: LVMVolumeGroupSpec, status: LVMVolumeGroupStatus | None,
            block_devices: list[tuple[str, str]] | None = None, generation: int | None = None) -> LvgOutcome:
        old = status or LVMVolumeGroupStatus()
        state = ReconcileState()
        errors = validate_lvg(lvg_name, spec, self.config.file_devices_dir)
        base_dirs: tuple[str, ...] | None = None
        if not errors and spec.file_devices:
            try:
                base_dirs, escapes = resolve_dirs(self.files, self.config.file_devices_dir,
                                                  (fd.directory for fd in spec.file_devices))
                errors.extend(f"fileDevices[{fd.name}]: {escapes[fd.directory]}" for fd in spec.file_devices
                              if escapes[fd.directory])
            except FileOpError as exc:
                state.fail(Reason.UPDATING, f"cannot resolve the file device directories (nothing changed): {exc}")
                return self.finish(lvg_name, spec, old, [], generation, state)
        # The node-wide read (VG names only, no device filter) runs side by side with the filtered
        # start read: a create needs the name free on the node, an existing VG needs its name to be
        # its own alone (another VG that took it later makes the name ambiguous: VGNameConflict).
        named: list[NamedVG] | LvmError | None
        snap, named = self.reads.both(lambda: self.reads.snapshot(base_dirs),
                                      self.reads.node_vgs if not errors else lambda: None)
        if isinstance(named, list):
            snap.node_vgs = named
        bds: list[tuple[str, str]] = []
        if not snap.ok:
            state.fail(Reason.UPDATING, f"cannot read LVM state on the node (nothing changed): {snap.error}")
            return self.finish(lvg_name, spec, old, bds, generation, state, snap.base_dirs)
        state.latest = snap
        lookup = find_vg(snap, lvg_name, spec.actual_vg_name_on_the_node, old.vg_uuid)
        vg = lookup.vg
        if lookup.error:
            errors.append(lookup.error)
        if errors:
            state.fail(Reason.VALIDATION_FAILED, "; ".join(errors))
            return self.finish(lvg_name, spec, old, bds, generation, state, snap.base_dirs)
        if vg is None and (conflict := self.reads.name_conflict(spec.actual_vg_name_on_the_node, None, named)):
            state.fail(Reason.VG_NAME_CONFLICT, conflict)
            return self.finish(lvg_name, spec, old, bds, generation, state, snap.base_dirs)
        if vg is not None and (ambiguous := name_ambiguity(snap, vg)):
            # Fail closed: nothing is changed on a VG whose name another VG carries (LVM refuses the
            # name itself when it sees both; behind the filter, the other owner cannot address theirs).
            state.ambiguous = ambiguous
            state.fail(Reason.VG_NAME_CONFLICT, ambiguous)
            return self.finish(lvg_name, spec, old, bds, generation, state, snap.base_dirs)
        bds, device_errors = self.node_devices(list(block_devices or []), snap, vg)
        for msg in device_errors:
            state.fail(Reason.VG_EXTEND_FAILED, msg)
        self.apply(lvg_name, spec, bds, snap, vg, state)
        return self.finish(lvg_name, spec, old, bds, generation, state, snap.base_dirs)

    def finish(self, lvg_name: str, spec: LVMVolumeGroupSpec, old: LVMVolumeGroupStatus,
               bds: list[tuple[str, str]], generation: int | None, state: ReconcileState,
               base_dirs: tuple[str, ...] = ()) -> LvgOutcome:
        # The status comes from the snapshot read after this call's last change (or at its start when
        # it changed nothing); only if there is none is the host read again.
        snap = state.latest or self.reads.snapshot(base_dirs or None)
        return reconcile_outcome(lvg_name, spec, old, bds, generation, state, snap, self.config)

    def apply(self, lvg_name: str, spec: LVMVolumeGroupSpec, bds: list[tuple[str, str]], snap: LvmSnapshot,
              vg: VG | None, state: ReconcileState) -> VG | None:
        journal = Journal()
        try:
            return self.apply_steps(lvg_name, spec, bds, snap, vg, state, journal)
        except BaseException:
            # Cancelled or crashed mid-way: undo only what this call created, each step bounded.
            state.changed_host()
            self.devices.rollback(journal, lambda: self.reads.live_pvs(snap.base_dirs))
            raise

    def apply_steps(self, lvg_name: str, spec: LVMVolumeGroupSpec, bds: list[tuple[str, str]],
                    snap: LvmSnapshot, vg: VG | None, state: ReconcileState, journal: Journal) -> VG | None:
        vg_name = spec.actual_vg_name_on_the_node
        entries = self.provision_files(lvg_name, spec, snap, state, journal)
        planned = self.plan_devices(lvg_name, spec, entries, [p for _, p in bds], snap, vg, state)
        if planned is None:
            return vg
        self.check_direct_io(entries, state)
        if vg is None and planned.join and state.name_checked and state.name_conflict:
            # The name was taken while the loops were attached: nothing becomes a PV.
            state.fail(Reason.VG_NAME_CONFLICT, state.name_conflict)
            self.rollback(journal, state, snap.base_dirs)
            return None
        joinable = self.create_pvs(planned, entries, state, journal, snap.base_dirs)
        if joinable:
            vg = self.join_vg(lvg_name, vg_name, vg, joinable, state, journal, snap.base_dirs)
            if vg is None:
                return None
        if vg is None:
            return self.our_vg(lvg_name, vg_name, snap.base_dirs, state)
        self.ensure_tags(vg, lvg_name, state)
        grown = self.grow(lvg_name, spec, entries, planned, vg, state, snap.base_dirs)
        if grown is None:
            return vg
        fresh, vg = grown
        self.thin_pools(spec, fresh, vg, state)
        return vg

    # 1. file devices
    def provision_files(self, lvg_name: str, spec: LVMVolumeGroupSpec, snap: LvmSnapshot, state: ReconcileState,
                        journal: Journal) -> ProvisionedFiles:
        entries = ProvisionedFiles()
        for fd in spec.file_devices or []:
            path = fd.file_path(lvg_name)
            basename = backing_file_name(lvg_name, fd.name)
            deleted = [lp for lp in snap.loops if lp.deleted and posixpath.basename(lp.back_file) == basename
                       and managed_loop(lp, snap.base_dirs, lvg_name) is not None]
            j = Journal()
            try:
                got = self.devices.provision(path, fd.bytes(), deleted, j, loops=snap.loops,
                                             guard=functools.partial(self.confine, fd.directory))
            except FileDeviceError as exc:
                state.fail(Reason.FILE_DEVICE_NOT_APPLIED, f"fileDevices[{fd.name}]: {exc}")
                if j.steps:
                    state.changed_host()  # it changed something before failing
                self.rollback(j, state, snap.base_dirs)
                continue
            finally:
                journal.steps.extend(j.steps)
            if got.changed:
                state.changed_host()
            entries.probes[fd.name] = got.probe
            if got.direct_io:
                entries.direct_io.add(fd.name)
            for w in got.warnings:
                state.warn("DirectIONotEnabled", f"fileDevices[{fd.name}]: {w}")
            entries.loops[fd.name] = got.loop
            entries.paths[fd.name] = path
            entries.journals[fd.name] = j
        return entries

    # 2. which devices need pvcreate / join (decided from a LIVE pvs)
    def plan_devices(self, lvg_name: str, spec: LVMVolumeGroupSpec, entries: ProvisionedFiles,
                     block_paths: list[str], snap: LvmSnapshot, vg: VG | None, state: ReconcileState) -> PvPlan | None:
        owner = entries.owner_of()
        devices = [*entries.loops.values(), *block_paths]
        vg_uuid = vg.uuid if vg else None
        live = state.latest
        plan = plan_pvs(devices, live.pvs_by_device(), vg_uuid, live.unresolved()) if live else None
        if live is None or plan is None or plan.join or plan.errors:
            # Something may be created or joined (or refused): decide from a fresh, live pvs. Only when
            # this call changed nothing and its own start read shows every device already a member of
            # the VG is that read used: it can only lead to creating nothing. A VG about to be created
            # also needs its name checked node-wide now, after every loop is attached and before any
            # PV or VG is made: that read runs side by side with this one.
            fresh: LvmSnapshot
            if vg is None:
                fresh, conflict = self.reads.both(
                    lambda: self.reads.snapshot(snap.base_dirs),
                    lambda: self.reads.name_conflict(spec.actual_vg_name_on_the_node, None))
                state.name_checked, state.name_conflict = True, conflict
            else:
                fresh = self.reads.snapshot(snap.base_dirs)
            live = fresh
            if not live.ok:
                state.fail(Reason.UPDATING, f"cannot list PVs (nothing torn down): {live.error}")
                return None
            state.latest = live  # read after every change this call made so far
            plan = plan_pvs(devices, live.pvs_by_device(), vg_uuid, live.unresolved())
        if live.unresolved():
            rounds = self.alias_rounds.get(lvg_name, 0) + 1
            self.alias_rounds[lvg_name] = rounds
            reason = Reason.ALIAS_RESOLUTION_FAILED if rounds >= ALIAS_ROUNDS else Reason.UPDATING
        else:
            self.alias_rounds.pop(lvg_name, None)
            reason = Reason.VG_EXTEND_FAILED
        for dev, msg in plan.errors:
            state.fail(reason, f"fileDevices[{owner[dev]}]: {msg}" if dev in owner else msg)
        return plan

    # 3. pvcreate: one invocation for every device the live pvs does not show as a PV; if it fails,
    # ONE further live pvs tells which of them became PVs.
    def create_pvs(self, plan: PvPlan, entries: ProvisionedFiles, state: ReconcileState, journal: Journal,
                   base_dirs: tuple[str, ...]) -> list[str]:
        owner = entries.owner_of()
        joinable: list[str] = []
        to_create = [dev for dev in plan.join if dev in plan.pvcreate]
        failed: dict[str, str] = {}
        if to_create:
            state.changed_host()
            mut = self.lvm.pvcreate(*to_create)
            if not mut.ok:
                after = self.reads.live_pvs(base_dirs)
                failed = {dev: mut.message for dev in to_create if not (after and dev in after)}
        for dev in plan.join:
            if dev in failed:
                state.fail(Reason.FILE_DEVICE_NOT_APPLIED if dev in owner else Reason.VG_EXTEND_FAILED, failed[dev])
                if dev in owner:
                    self.rollback(entries.journals[owner[dev]], state, base_dirs)
                continue
            if dev in to_create and dev in owner:
                ej = entries.journals[owner[dev]]
                ej.created_pv(dev, entries.paths[owner[dev]])
                journal.steps.append(ej.steps[-1])
            joinable.append(dev)
        return joinable

    # 4. vgcreate / vgextend
    def join_vg(self, lvg_name: str, vg_name: str, vg: VG | None, joinable: list[str], state: ReconcileState,
                journal: Journal, base_dirs: tuple[str, ...]) -> VG | None:
        if vg is not None:
            state.changed_host()
            mut = self.lvm.vgextend(vg.name, joinable)
            if not mut.ok and not self.all_in_vg(joinable, vg.uuid, base_dirs):
                state.fail(Reason.VG_EXTEND_FAILED, f"vgextend {vg.name} failed: {mut.message}")
                self.rollback(Journal([s for s in journal.steps if s.kind != "pv" or s.target in joinable]), state,
                              base_dirs)
            else:
                state.events.append(("Normal", "VGExtended", f"extended {vg.name} with {', '.join(joinable)}"))
            return vg
        # Node-wide, right before the name is taken: the check made next to the live read before
        # pvcreate (nothing but PVs on our own loops was made since), else now.
        conflict = state.name_conflict if state.name_checked else self.reads.name_conflict(vg_name, None)
        if conflict:
            state.fail(Reason.VG_NAME_CONFLICT, conflict)
            self.rollback(journal, state, base_dirs)
            return None
        state.changed_host()
        mut = self.lvm.vgcreate(vg_name, joinable, lvg_name)
        if not mut.ok:
            vg = self.our_vg(lvg_name, vg_name, base_dirs, state)
            if vg is None:
                state.fail(Reason.FILE_DEVICE_NOT_APPLIED, f"vgcreate {vg_name} failed: {mut.message}")
                self.rollback(journal, state, base_dirs)
                return None
            state.warn("LVMReportedFailure", f"vgcreate reported a failure but the VG exists: {mut.message}")
        state.events.append(("Normal", "VGCreated", f"created volume group {vg_name} on {', '.join(joinable)}"))
        return vg or self.our_vg(lvg_name, vg_name, base_dirs, state)

    def ensure_tags(self, vg: VG, lvg_name: str, state: ReconcileState) -> None:
        if tag_missing(vg, lvg_name):
            state.changed_host()
            mut = self.lvm.add_tags(vg.name, lvg_name)
            if not mut.ok:
                state.fail(Reason.UPDATING, f"cannot tag {vg.name}: {mut.message}")

    # 5. growth (only entries that were already PVs of the VG before this call)
    def grow(self, lvg_name: str, spec: LVMVolumeGroupSpec, entries: ProvisionedFiles, plan: PvPlan, vg: VG,
             state: ReconcileState, base_dirs: tuple[str, ...]) -> tuple[LvmSnapshot, VG] | None:
        fresh = state.latest or self.read(base_dirs, state)
        if not fresh.ok:
            state.fail(Reason.UPDATING, f"cannot read LVM state: {fresh.error}")
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
                                          guard=functools.partial(self.confine, fd.directory))
            except (FileDeviceError, FileOpError, LosetupError) as exc:
                state.changed_host()  # a step may have run before the failure
                state.fail(Reason.FILE_DEVICE_GROW_FAILED, f"fileDevices[{fd.name}]: {exc}")
        if grew:
            state.changed_host()
            state.events.append(("Normal", "FileDeviceGrown", "grew file devices of " + vg.name))
            fresh = self.read(base_dirs, state)
            vg = fresh.vg_by_uuid(vg.uuid) or vg
        return fresh, vg

    # 6. thin pools
    def thin_pools(self, spec: LVMVolumeGroupSpec, snap: LvmSnapshot, vg: VG, state: ReconcileState) -> None:
        if not spec.thin_pools:
            return
        lvs = snap.lvs_of(vg)
        free = vg.free
        for tp in spec.thin_pools:
            lv = next((x for x in lvs if x.name == tp.name), None)
            if lv is not None and not lv.is_thin_pool:
                state.fail(Reason.THIN_POOL_RECONCILE_FAILED, f"thinPools[{tp.name}]: an LV of that name exists "
                                                              "and is not a thin pool")
                continue
            action = plan_thin_pool(tp.size, vg_size=vg.size, vg_free=free, extent=vg.extent_size,
                                    current_size=lv.size if lv else None)
            if action.kind == "none":
                continue
            if action.kind == "error":
                state.fail(Reason.THIN_POOL_RECONCILE_FAILED, f"thinPools[{tp.name}]: {action.message}")
                continue
            state.changed_host()
            if action.kind == "create":
                mut = self.lvm.lvcreate_thin_pool(vg.name, tp.name, action.extents)
            else:
                mut = self.lvm.lvextend(vg.name, tp.name, action.extents)
            if not mut.ok:
                state.fail(Reason.THIN_POOL_RECONCILE_FAILED, f"thinPools[{tp.name}]: {mut.message}")
            else:
                state.events.append(("Normal", "ThinPoolReconciled", f"thin pool {tp.name}: {action.kind}"))
                free = 0 if action.extents is None else max(
                    free - (action.extents - (lv.size // vg.extent_size if lv else 0)) * vg.extent_size, 0)

    def rollback(self, journal: Journal, state: ReconcileState, base_dirs: tuple[str, ...] | None = None) -> None:
        if journal.steps:
            state.changed_host()
        for problem in self.devices.rollback(journal, lambda: self.reads.live_pvs(base_dirs)):
            state.warn("RollbackIncomplete", problem)
        journal.steps.clear()

    def check_direct_io(self, entries: ProvisionedFiles, state: ReconcileState) -> None:
        """A loop this call attached with ``--direct-io=on`` that the kernel runs with buffered I/O
        anyway (it may fall back without an error): a warning, from the losetup list the live read took."""
        live = state.latest
        if live is None or not entries.direct_io:
            return
        for name in sorted(entries.direct_io):
            loop = live.loop(entries.loops[name])
            if loop is not None and loop.direct_io is False:
                msg = (f"fileDevices[{name}]: {loop.name} was attached with direct I/O on, but the kernel uses "
                       "buffered I/O for it (the backing filesystem or its block size does not allow direct I/O): "
                       "the page cache holds a second copy of the data")
                log.warning("direct I/O not in effect: %s", msg, extra={"loop": loop.name})
                state.warn("DirectIONotEnabled", msg)

    def all_in_vg(self, devs: list[str], vg_uuid: str, base_dirs: tuple[str, ...]) -> bool:
        live = self.reads.live_pvs(base_dirs)
        return live is not None and all(d in live and live[d].vg_uuid == vg_uuid for d in devs)

    def read(self, base_dirs: tuple[str, ...], state: ReconcileState) -> LvmSnapshot:
        """A fresh snapshot; it stands for the host until this call changes something again."""
        snap = self.reads.snapshot(base_dirs)
        state.latest = snap if snap.ok else None
        return snap

    def our_vg(self, lvg_name: str, vg_name: str, base_dirs: tuple[str, ...] | None = None,
               state: ReconcileState | None = None) -> VG | None:
        snap = (self.read(base_dirs, state) if state is not None and base_dirs is not None
                else self.reads.snapshot(base_dirs))
        return find_vg(snap, lvg_name, vg_name, None).vg if snap.ok else None
