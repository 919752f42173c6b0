"""The host-side LVM engine the agent's Kopf handlers call (sync; run it in a thread).

One reconcile: validate → provision file devices → pvcreate (only devices a live pvs does not show)
→ vgcreate/vgextend → grow → thin pools → discover into status. Every step that creates something
records it in a journal so a failure rolls back only this call's work (LVM.md rule 5).

Reads per reconcile: one snapshot at the start (losetup list + ONE ``pvs`` with VG columns, ``lvs``
only when a VG has LVs); a fresh live read before pvcreate/vgextend and before any teardown; one
snapshot after the last change, which both feeds the later steps and becomes the status. When this
call changed nothing on the host, the start snapshot is that snapshot (no re-read).
"""

from __future__ import annotations

import posixpath
from dataclasses import dataclass, field

from disklet.api.common import Condition, get_condition, set_condition
from disklet.api.lvm import (
    ConditionType,
    LVGPhase,
    LVMVolumeGroupSpec,
    LVMVolumeGroupStatus,
    Reason,
    backing_file_name,
    parse_backing_file_name,
)
from disklet.hostcmd import HostRunner
from disklet.thinpool import fullness_conditions

from ..config import AgentConfig
from .discovery import discover_status, find_vg, status_file_paths
from .filedevices import FileDeviceError, FileDevices
from .files import FileOpError, FileProbe, HostFiles, Presence
from .losetup import Losetup, LosetupError
from .lvm import PV, VG, Lvm, LvmError, owner_tag
from .planner import Journal, managed_loop, plan_pvs
from .sizing import plan_thin_pool
from .snapshot import LvmSnapshot
from .validation import inside_base, validate_lvg

Event = tuple[str, str, str]
ALIAS_ROUNDS = 3


@dataclass
class ReconcileOutcome:
    status: LVMVolumeGroupStatus
    changed: bool
    events: list[Event] = field(default_factory=list)
    requeue_after: float | None = None


@dataclass
class DeleteOutcome:
    done: bool
    status: LVMVolumeGroupStatus
    events: list[Event] = field(default_factory=list)


@dataclass
class _Round:
    """Problems found in one reconcile, by condition reason."""

    failures: list[tuple[str, str]] = field(default_factory=list)
    events: list[Event] = field(default_factory=list)

    latest: LvmSnapshot | None = None
    """The last snapshot this call read, while nothing this call did has changed the host since."""

    def changed_host(self) -> None:
        self.latest = None

    def fail(self, reason: str, message: str) -> None:
        self.failures.append((reason, message))
        self.events.append(("Warning", reason, message))

    def warn(self, reason: str, message: str) -> None:
        self.events.append(("Warning", reason, message))


class LVMEngine:
    def __init__(self, runner: HostRunner, config: AgentConfig):
        self.runner = runner
        self.config = config
        timeout = config.command_timeout_seconds
        self.lvm = Lvm(runner, extra_config=config.lvm_extra_config, timeout=timeout)
        self.losetup = Losetup(runner, timeout)
        self.files = HostFiles(runner, timeout)
        self.devices = FileDevices(self.files, self.losetup, self.lvm, config.free_space_reserve_percent)
        self._alias_rounds: dict[str, int] = {}

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

    # ---------------------------------------------------------------- reconcile
    def reconcile(self, lvg_name: str, spec: LVMVolumeGroupSpec, status: LVMVolumeGroupStatus | None,
                  block_devices: list[tuple[str, str]] | None = None,
                  generation: int | None = None) -> ReconcileOutcome:
        old = status or LVMVolumeGroupStatus()
        rnd = _Round()
        bds = list(block_devices or [])
        errors = validate_lvg(lvg_name, spec, self.config.file_devices_dir)
        snap = self.snapshot()
        vg: VG | None = None
        if snap.ok:
            rnd.latest = snap
        if not snap.ok:
            rnd.fail(Reason.UPDATING, f"cannot read LVM state on the node (nothing changed): {snap.error}")
        else:
            lookup = find_vg(snap, lvg_name, spec.actual_vg_name_on_the_node, old.vg_uuid)
            vg = lookup.vg
            if lookup.error:
                errors.append(lookup.error)
            if errors:
                rnd.fail(Reason.VALIDATION_FAILED, "; ".join(errors))
            else:
                vg = self._apply(lvg_name, spec, old, bds, snap, vg, rnd)
        return self._finish(lvg_name, spec, old, bds, generation, rnd, snap.base_dirs)

    def _apply(self, lvg_name: str, spec: LVMVolumeGroupSpec, old: LVMVolumeGroupStatus,
               bds: list[tuple[str, str]], snap: LvmSnapshot, vg: VG | None, rnd: _Round) -> VG | None:
        journal = Journal()
        try:
            return self._apply_inner(lvg_name, spec, old, bds, snap, vg, rnd, journal)
        except BaseException:
            # Cancelled or crashed mid-way: undo only what this call created, each step bounded.
            rnd.changed_host()
            self.devices.rollback(journal, lambda: self._live_pvs(snap.base_dirs))
            raise

    def _apply_inner(self, lvg_name: str, spec: LVMVolumeGroupSpec, old: LVMVolumeGroupStatus,
                     bds: list[tuple[str, str]], snap: LvmSnapshot, vg: VG | None, rnd: _Round,
                     journal: Journal) -> VG | None:
        vg_name = spec.actual_vg_name_on_the_node
        # 1. file devices
        entry_loops: dict[str, str] = {}
        entry_journal: dict[str, Journal] = {}
        entry_paths: dict[str, str] = {}
        entry_probes: dict[str, FileProbe | None] = {}
        for fd in spec.file_devices or []:
            path = fd.file_path(lvg_name)
            basename = backing_file_name(lvg_name, fd.name)
            deleted = [lp for lp in snap.loops if lp.deleted and posixpath.basename(lp.back_file) == basename
                       and managed_loop(lp, snap.base_dirs, lvg_name) is not None]
            j = Journal()
            try:
                got = self.devices.provision(path, fd.bytes(), deleted, j, loops=snap.loops)
            except FileDeviceError as exc:
                rnd.fail(Reason.FILE_DEVICE_NOT_APPLIED, f"fileDevices[{fd.name}]: {exc}")
                rnd.changed_host()  # it may have changed something before failing
                self._rollback(j, rnd, snap.base_dirs)
                continue
            finally:
                journal.steps.extend(j.steps)
            if got.changed:
                rnd.changed_host()
            entry_probes[fd.name] = got.probe
            for w in got.warnings:
                rnd.warn("DirectIONotEnabled", f"fileDevices[{fd.name}]: {w}")
            entry_loops[fd.name] = got.loop
            entry_paths[fd.name] = path
            entry_journal[fd.name] = j
        # 2. which devices need pvcreate / join (decided from a LIVE pvs)
        device_owner: dict[str, str] = {loop: name for name, loop in entry_loops.items()}
        block_paths = [p for _, p in bds]
        devices = [*entry_loops.values(), *block_paths]
        vg_uuid = vg.uuid if vg else None
        live = rnd.latest
        plan = plan_pvs(devices, live.pvs_by_device(), vg_uuid, live.unresolved()) if live else None
        if live is None or plan is None or plan.join or plan.errors:
            # Something may be created or joined (or refused): decide from a fresh, live pvs. Only when
            # this call changed nothing and its own start read shows every device already a member of
            # the VG is that read used: it can only lead to creating nothing.
            live = self.snapshot(snap.base_dirs)
            if not live.ok:
                rnd.fail(Reason.UPDATING, f"cannot list PVs (nothing torn down): {live.error}")
                return vg
            rnd.latest = live  # read after every change this call made so far
            plan = plan_pvs(devices, live.pvs_by_device(), vg_uuid, live.unresolved())
        unresolved = live.unresolved()
        if unresolved:
            rounds = self._alias_rounds.get(lvg_name, 0) + 1
            self._alias_rounds[lvg_name] = rounds
            reason = Reason.ALIAS_RESOLUTION_FAILED if rounds >= ALIAS_ROUNDS else Reason.UPDATING
        else:
            self._alias_rounds.pop(lvg_name, None)
            reason = Reason.VG_EXTEND_FAILED
        for dev, msg in plan.errors:
            rnd.fail(reason, f"fileDevices[{device_owner[dev]}]: {msg}" if dev in device_owner else msg)
        # 3. pvcreate: one invocation for every device the live pvs does not show as a PV; if it
        # fails, ONE further live pvs tells which of them became PVs.
        joinable: list[str] = []
        to_create = [dev for dev in plan.join if dev in plan.pvcreate]
        failed: dict[str, str] = {}
        if to_create:
            rnd.changed_host()
            mut = self.lvm.pvcreate(*to_create)
            if not mut.ok:
                after = self._live_pvs(snap.base_dirs)
                failed = {dev: mut.message for dev in to_create if not (after and dev in after)}
        for dev in plan.join:
            if dev in failed:
                rnd.fail(Reason.FILE_DEVICE_NOT_APPLIED if dev in device_owner else Reason.VG_EXTEND_FAILED,
                         failed[dev])
                if dev in device_owner:
                    self._rollback(entry_journal[device_owner[dev]], rnd, snap.base_dirs)
                continue
            if dev in to_create and dev in device_owner:
                ej = entry_journal[device_owner[dev]]
                ej.created_pv(dev, entry_paths[device_owner[dev]])
                journal.steps.append(ej.steps[-1])
            joinable.append(dev)
        # 4. vgcreate / vgextend
        if joinable:
            rnd.changed_host()
            if vg is None:
                mut = self.lvm.vgcreate(vg_name, joinable, lvg_name)
                if not mut.ok:
                    vg = self._our_vg(lvg_name, vg_name, snap.base_dirs, rnd)
                    if vg is None:
                        rnd.fail(Reason.FILE_DEVICE_NOT_APPLIED, f"vgcreate {vg_name} failed: {mut.message}")
                        self._rollback(journal, rnd, snap.base_dirs)
                        return None
                    rnd.warn("LVMReportedFailure", f"vgcreate reported a failure but the VG exists: {mut.message}")
                rnd.events.append(("Normal", "VGCreated", f"created volume group {vg_name} on {', '.join(joinable)}"))
            else:
                mut = self.lvm.vgextend(vg.name, joinable)
                if not mut.ok and not self._all_in_vg(joinable, vg.uuid, snap.base_dirs):
                    rnd.fail(Reason.VG_EXTEND_FAILED, f"vgextend {vg.name} failed: {mut.message}")
                    self._rollback(Journal([s for s in journal.steps
                                            if s.kind != "pv" or s.target in joinable]), rnd, snap.base_dirs)
                else:
                    rnd.events.append(("Normal", "VGExtended", f"extended {vg.name} with {', '.join(joinable)}"))
        if vg is None:
            return self._our_vg(lvg_name, vg_name, snap.base_dirs, rnd)
        if TAG_MISSING(vg, lvg_name):
            rnd.changed_host()
            mut = self.lvm.add_tags(vg.name, lvg_name)
            if not mut.ok:
                rnd.fail(Reason.UPDATING, f"cannot tag {vg.name}: {mut.message}")
        # 5. growth (only entries that were already PVs of the VG before this call)
        fresh = rnd.latest or self._read(snap.base_dirs, rnd)
        if not fresh.ok:
            rnd.fail(Reason.UPDATING, f"cannot read LVM state: {fresh.error}")
            return vg
        vg = fresh.vg_by_uuid(vg.uuid) or vg
        by_dev = fresh.pvs_by_device()
        grew = False
        for fd in spec.file_devices or []:
            loop = entry_loops.get(fd.name)
            if loop is None or loop not in plan.members:
                continue
            try:
                # The loop and the file's sizes were resolved from the file by this call (provision).
                grew |= self.devices.grow(fd.file_path(lvg_name), fd.bytes(), by_dev.get(loop), vg.extent_size,
                                          loop=loop, probe=entry_probes.get(fd.name))
            except (FileDeviceError, FileOpError, LosetupError) as exc:
                rnd.changed_host()  # a step may have run before the failure
                rnd.fail(Reason.FILE_DEVICE_GROW_FAILED, f"fileDevices[{fd.name}]: {exc}")
        if grew:
            rnd.changed_host()
            rnd.events.append(("Normal", "FileDeviceGrown", "grew file devices of " + vg.name))
            fresh = self._read(snap.base_dirs, rnd)
            vg = fresh.vg_by_uuid(vg.uuid) or vg
        # 6. thin pools
        self._thin_pools(spec, fresh, vg, rnd)
        return vg

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
                base_dirs: tuple[str, ...] = ()) -> ReconcileOutcome:
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
        return ReconcileOutcome(status=new, changed=changed, events=rnd.events if changed or rnd.failures else [],
                                requeue_after=requeue)

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
        problems.extend(self._delete_files(lvg_name, spec, old, events, snap.base_dirs))
        return self._delete_outcome(old, not problems, problems, events)

    def _delete_targets(self, lvg_name: str, spec: LVMVolumeGroupSpec,
                        status: LVMVolumeGroupStatus | None) -> dict[str, list[str]]:
        """basename → candidate paths from this node's status ∪ spec (rule 8)."""
        targets: dict[str, list[str]] = {}
        for fd in spec.file_devices or []:
            targets.setdefault(backing_file_name(lvg_name, fd.name), []).append(fd.file_path(lvg_name))
        for base, path in status_file_paths(status, self.config.node_name).items():
            targets.setdefault(base, []).append(path)
        return targets

    def _delete_files(self, lvg_name: str, spec: LVMVolumeGroupSpec, status: LVMVolumeGroupStatus,
                      events: list[Event], base_dirs: tuple[str, ...] | None = None) -> list[str]:
        problems: list[str] = []
        snap = self.snapshot(base_dirs)  # LIVE (rule 8): after the VG/PV removals above
        if not snap.ok or snap.unresolved():
            return [f"cannot list PVs (finalizer kept): {snap.error or 'unresolved device aliases'}"]
        pv_devs = snap.pvs_by_device()
        for basename, paths in sorted(self._delete_targets(lvg_name, spec, status).items()):
            parsed = parse_backing_file_name(basename)
            if parsed is None or parsed[0] != lvg_name:
                problems.append(f"refusing to delete {basename}: not a backing file of {lvg_name}")
                continue
            paths = [p for p in dict.fromkeys(paths)
                     if any(inside_base(posixpath.dirname(p), b) for b in snap.base_dirs)]
            if not paths:
                problems.append(f"refusing to delete {basename}: not inside the base directory")
                continue
            loops = {lp.name for lp in snap.loops if posixpath.basename(lp.back_file) == basename
                     and managed_loop(lp, snap.base_dirs, lvg_name) is not None}
            busy = sorted(lp for lp in loops if lp in pv_devs)
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
                try:
                    self.files.rm_f(path)
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
    def reattach(self, lvgs: list[tuple[str, LVMVolumeGroupSpec, LVMVolumeGroupStatus | None]]) -> list[str]:
        """Rule 9: attach every managed file (status ∪ spec) that has no loop; never create files; then activate."""
        errors: list[str] = []
        for lvg_name, spec, status in lvgs:
            for basename, paths in sorted(self._delete_targets(lvg_name, spec, status).items()):
                path = paths[0]
                if not any(inside_base(posixpath.dirname(p), self.config.file_devices_dir) for p in paths[:1]) \
                        and not self._inside_real_base(path):
                    errors.append(f"{path}: not inside the base directory {self.config.file_devices_dir}; skipped")
                    continue
                try:
                    if self.losetup.find(path):
                        continue
                    probe = self.files.probe(path)
                    if probe.presence is Presence.ABSENT:
                        if basename in status_file_paths(status, self.config.node_name):
                            errors.append(f"{path}: backing file is missing; not recreated")
                        continue
                    if probe.presence is Presence.UNKNOWN:
                        errors.append(f"{path}: cannot read backing file: {probe.error}")
                        continue
                    loop = self.losetup.attach(path)
                    self.lvm.owned_loops.add(loop)
                    self.losetup.set_direct_io(loop)
                except LosetupError as exc:
                    errors.append(f"{path}: {exc}")
        snap = self.snapshot()
        if not snap.ok:
            errors.append(f"cannot list volume groups for activation: {snap.error}")
            return errors
        names = {spec.actual_vg_name_on_the_node: name for name, spec, _ in lvgs}
        for vg in snap.vgs:
            if vg.managed and names.get(vg.name) == vg.owner:
                mut = self.lvm.vgchange_activate(vg.name)
                if not mut.ok:
                    errors.append(f"cannot activate {vg.name}: {mut.message}")
        return errors

    def _inside_real_base(self, path: str) -> bool:
        try:
            real = self.files.realpath(posixpath.dirname(path))
            base = self.files.realpath(self.config.file_devices_dir)
        except FileOpError:
            return False
        return inside_base(real, base)


def TAG_MISSING(vg: VG, lvg_name: str) -> bool:  # noqa: N802 - reads as a predicate in the flow above
    return owner_tag(lvg_name) not in vg.tags or not vg.managed


__all__ = ["DeleteOutcome", "LVMEngine", "LvmSnapshot", "ReconcileOutcome", "get_condition"]
