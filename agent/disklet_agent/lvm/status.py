"""The LVMVolumeGroup status the engine reports, built from one snapshot (pure: no reads).

After a reconcile: the discovered facts (:mod:`.discovery`), ``VGConfigurationApplied`` from the
failures of the call, ``VGReady`` from the VG's presence and its missing PVs, the thin-pool fill
conditions, the phase, and drift (a PV that left the spec or the VG is reported, never removed).
After a delete: phase ``Terminating`` with what is still in the way.
"""

from __future__ import annotations

from disklet.api.common import Condition, set_condition
from disklet.api.lvm import ConditionType, LVGPhase, LVMVolumeGroupSpec, LVMVolumeGroupStatus, Reason
from disklet.lvm.thinpool import fullness_conditions

from ..config import AgentConfig
from ..host.lvm import VG
from .discovery import discover_status, find_vg, name_ambiguity
from .outcomes import DeleteOutcome, Event, LvgOutcome, ReconcileState
from .snapshot import LvmSnapshot

DISCOVERED_FIELDS = ("nodes", "vg_uuid", "vg_size", "vg_free", "allocated_size", "extent_size", "thin_pools",
                     "thin_pool_ready")


def drift_failures(spec: LVMVolumeGroupSpec, old: LVMVolumeGroupStatus, discovered: LVMVolumeGroupStatus,
                   node_name: str) -> list[tuple[str, str]]:
    """An entry that was a PV earlier but is gone from the spec or the VG: report, destroy nothing."""
    spec_names = {fd.name for fd in spec.file_devices or []}
    now = {fd.name for n in discovered.nodes or [] for fd in n.file_devices or []}
    before = {fd.name for n in old.nodes or [] if n.name == node_name for fd in n.file_devices or []}
    gone_from_spec = sorted(now - spec_names)
    gone_from_vg = sorted((before & spec_names) - now)
    out: list[tuple[str, str]] = []
    if gone_from_spec:
        out.append((Reason.FILE_DEVICE_DRIFT, f"file devices {', '.join(gone_from_spec)} are PVs of the VG but no "
                                              "longer in spec.fileDevices; nothing was removed"))
    if gone_from_vg:
        out.append((Reason.FILE_DEVICE_DRIFT, f"file devices {', '.join(gone_from_vg)} are no longer PVs of the VG"))
    return out


def reconcile_outcome(lvg_name: str, spec: LVMVolumeGroupSpec, old: LVMVolumeGroupStatus,
                      bds: list[tuple[str, str]], generation: int | None, state: ReconcileState,
                      snap: LvmSnapshot, config: AgentConfig) -> LvgOutcome:
    """The status after a reconcile, from ``snap`` (read after the call's last change, or at its
    start when it changed nothing); drift found here is added to ``state``'s failures."""
    discovered: LVMVolumeGroupStatus | None = None
    vg: VG | None = None
    if snap.ok:
        vg = find_vg(snap, lvg_name, spec.actual_vg_name_on_the_node, old.vg_uuid).vg
        if vg is not None:
            discovered = discover_status(lvg_name, spec, snap, config.node_name, vg, {p: n for n, p in bds})
    new = old.model_copy(deep=True)
    if discovered is not None:
        for name in DISCOVERED_FIELDS:
            setattr(new, name, getattr(discovered, name))
        for reason, message in drift_failures(spec, old, discovered, config.node_name):
            state.fail(reason, message)
    conditions: list[Condition] = list(old.conditions or [])
    gen = generation
    if state.failures:
        reason, _ = state.failures[0]
        msg = "; ".join(m for _, m in state.failures)
        conditions = set_condition(conditions, ConditionType.VG_CONFIGURATION_APPLIED, "False", reason, msg, gen)
    else:
        conditions = set_condition(conditions, ConditionType.VG_CONFIGURATION_APPLIED, "True", Reason.APPLIED,
                                   "the spec is applied on the node", gen)
    ambiguous = state.ambiguous or (name_ambiguity(snap, vg) if vg is not None and snap.ok else None)
    if ambiguous and not state.ambiguous:
        state.fail(Reason.VG_NAME_CONFLICT, ambiguous)
        reason, msg = state.failures[0][0], "; ".join(m for _, m in state.failures)
        conditions = set_condition(conditions, ConditionType.VG_CONFIGURATION_APPLIED, "False", reason, msg, gen)
    if vg is not None and ambiguous:
        conditions = set_condition(conditions, ConditionType.VG_READY, "False", Reason.VG_NAME_CONFLICT, ambiguous,
                                   gen)
        phase = LVGPhase.NOT_READY
    elif vg is not None and vg.missing_pv_count == 0:
        conditions = set_condition(conditions, ConditionType.VG_READY, "True", Reason.APPLIED,
                                   f"volume group {vg.name} is present with all its PVs", gen)
        phase = LVGPhase.READY
    elif vg is not None:
        conditions = set_condition(conditions, ConditionType.VG_READY, "False", Reason.FILE_DEVICE_DRIFT,
                                   f"volume group {vg.name} is missing {vg.missing_pv_count} PV(s)", gen)
        phase = LVGPhase.NOT_READY
    else:
        reason = state.failures[0][0] if state.failures else Reason.CREATING
        conditions = set_condition(conditions, ConditionType.VG_READY, "False", reason,
                                   "the volume group does not exist on the node yet", gen)
        phase = LVGPhase.NOT_READY if state.failures else LVGPhase.PENDING
    conditions = fullness_conditions(conditions, new.thin_pools, config.thin_pool_thresholds(), gen)
    new.conditions = conditions
    new.phase = phase
    new.configuration_applied = not state.failures
    if generation is not None:
        new.observed_generation = generation
    changed = new.to_wire() != old.to_wire()
    requeue = config.refused_retry_seconds if state.failures or not snap.ok else None
    # One Event per transition: a refusal repeated with the same status posts nothing new.
    return LvgOutcome(status=new, changed=changed, events=state.events if changed or state.host_changed else [],
                      requeue_after=requeue, host_changed=state.host_changed)


def delete_outcome(old: LVMVolumeGroupStatus, done: bool, problems: list[str], events: list[Event]) -> DeleteOutcome:
    """Phase ``Terminating``: removed from the node, or what is still in the way (finalizer kept)."""
    new = old.model_copy(deep=True)
    msg = "; ".join(problems) if problems else "removed from the node"
    new.conditions = set_condition(list(old.conditions or []), ConditionType.VG_CONFIGURATION_APPLIED,
                                   "False", Reason.TERMINATING, msg, old.observed_generation)
    new.phase = LVGPhase.TERMINATING
    if problems:
        events.append(("Warning", Reason.TERMINATING, msg))
    return DeleteOutcome(done=done, status=new, events=events)
