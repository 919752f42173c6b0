"""The status of an LVMVolumeGroupSet after a plan was executed: counts, the attention list, the
template revisions, the ``Ready`` and ``Progressing`` conditions, and the merge patch that writes
only what changed. Pure (no I/O); the plan itself is :mod:`.lvgset_plan`."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import ValidationError

from disklet.api.common import Condition, ConditionStatus, get_condition, set_condition
from disklet.api.lvm import (
    MAX_ATTENTION,
    MAX_REVISIONS,
    AttentionChild,
    AttentionReason,
    CreatedLVG,
    LVMVolumeGroupSetStatus,
    ProgressReason,
    SetConditionType,
    SetPhase,
    SetReason,
    TemplateRevision,
)
from disklet.kube.patch import owned_keys_patch

from .lvgset_plan import ATTENTION_MESSAGE, ChildProblem, Health, Outcome, Plan

MAX_LISTED_ERRORS = 5


def invalid_set_status(old: Mapping[str, Any] | None, generation: int | None, message: str,
                       now: str | None = None) -> LVMVolumeGroupSetStatus:
    """Status of a set whose spec fails the model: nothing is written to any child."""
    prev = LVMVolumeGroupSetStatus.model_validate(dict(old or {}))
    conds = set_condition(list(prev.conditions or []), SetConditionType.READY, "False", SetReason.VALIDATION_FAILED, message[:32000],
                          generation, now=now)
    conds = set_condition(conds, SetConditionType.PROGRESSING, "False", ProgressReason.BLOCKED, "the spec is invalid: no child is written",
                          generation, now=now)
    current = prev.current_lvm_volume_groups_count or 0
    return prev.model_copy(update={"phase": SetPhase.NOT_CREATED if current == 0 else SetPhase.PENDING,
                                   "reason": SetReason.VALIDATION_FAILED, "observed_generation": generation,
                                   "conditions": conds})


def _short(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= ATTENTION_MESSAGE else text[: ATTENTION_MESSAGE - 1] + "…"


def _attention(result: Plan, outcome: Outcome) -> tuple[list[AttentionChild], int]:
    """Children needing a look, most urgent first: failed/refused/conflicting, orphaned, not Ready.
    Returns (at most MAX_ATTENTION of them, how many there are in all)."""
    urgent: list[AttentionChild] = []
    seen: set[str] = set()
    problems = [(p.name, p.node, p.reason, p.message) for p in result.failed + result.problems]
    problems += [(n, result.slot_node(n), SetReason.CREATE_FAILED, m) for n, m in sorted(outcome.create_errors.items())]
    problems += [(n, result.slot_node(n), SetReason.UPDATE_FAILED, m) for n, m in sorted(outcome.update_errors.items())]
    for name, node, reason, message in problems:
        if name in seen:
            continue
        seen.add(name)
        urgent.append(AttentionChild(name=name, node_name=node, reason=reason, message=_short(message),
                                     revision=result.slot_revision(name)))
    for orphan in result.orphans:
        seen.add(orphan.lvm_volume_group_name)
        child = result.orphan_children.get(orphan.lvm_volume_group_name)
        urgent.append(AttentionChild(name=orphan.lvm_volume_group_name, node_name=orphan.node_name, reason=AttentionReason.ORPHANED,
                                     message="node no longer matches spec.nodeSelector: kept, no longer updated",
                                     revision=child.revision if child else None))
    for slot in result.slots:
        child = slot.child
        if slot.name in seen:
            continue
        if slot.spec_write and slot.updated_after(outcome):
            urgent.append(AttentionChild(name=slot.name, node_name=slot.node, reason=AttentionReason.UPDATING,
                                         message="the agent has not reported this generation yet",
                                         revision=result.revision))
            continue
        if child is None or child.deleting:
            continue
        if slot.updated and child.converged():
            continue
        if not slot.updated and child.ready():
            continue
        h = child.health or Health()
        if slot.updated and not h.observed_current:
            reason, message = AttentionReason.UPDATING, "the agent has not reported this generation yet"
        else:
            reason, message = AttentionReason.NOT_READY, f"Ready is not True ({h.ready_reason or 'no condition'})"
            if h.applied is not None and h.applied != "True":
                message += f"; VGConfigurationApplied {h.applied} ({h.applied_reason})"
        urgent.append(AttentionChild(name=slot.name, node_name=slot.node, reason=reason, message=message,
                                     revision=child.revision))
    return urgent[:MAX_ATTENTION], len(urgent)


def _revisions(result: Plan, prev: LVMVolumeGroupSetStatus) -> list[TemplateRevision]:
    """The current template first, then the newest older one (what ``kctl rollout undo`` restores)."""
    current = TemplateRevision(revision=result.revision, template=result.template)
    older = [r for r in prev.revisions or () if r.revision != result.revision]
    return [current, *older][:MAX_REVISIONS]


def _halted_by(result: Plan, outcome: Outcome) -> ChildProblem | None:
    """The failed child that halts the rollout: found by the plan, or refused by the server this pass."""
    if result.rollout.halted_by is not None or result.failure_policy != "Halt" or not outcome.refused:
        return result.rollout.halted_by
    for slot in result.slots:  # rollout order: the first refused child
        if slot.name in outcome.refused:
            message = outcome.update_errors.get(slot.name) or outcome.create_errors.get(slot.name) or "refused"
            return ChildProblem(slot.name, slot.node, SetReason.UPDATE_FAILED, message)
    return None


def _progressing(result: Plan, outcome: Outcome, counts: dict[str, int]) -> tuple[ConditionStatus, str, str]:
    """(status, reason, message) of the Progressing condition."""
    r = result.rollout
    halted = _halted_by(result, outcome)
    desired = counts["desired"]
    line = (f"{counts['updated_ready']} of {desired} updated and Ready, {counts['updated']} updated, "
            f"revision {result.revision}")
    if result.validation_failed:
        return "False", ProgressReason.BLOCKED, "a child spec fails validation: no child is written (see Ready)"
    if halted is not None:
        p = halted
        return "False", ProgressReason.CHILD_FAILED, _short(f"halted: LVMVolumeGroup {p.name} on node {p.node} failed: {p.message}") + f" ({line})"
    if desired and counts["updated_ready"] == desired:
        return "True", ProgressReason.COMPLETE, f"rollout complete: {line}"
    if r.paused:
        return "False", ProgressReason.PAUSED, f"paused (spec.rollout.paused): {line}"
    if desired == 0:
        return "True", ProgressReason.COMPLETE, "no node matches"
    return "True", ProgressReason.ROLLING_OUT, line + (", waiting for the canary" if r.canary_pending else "")


Problem = tuple[str, str, str]
"""(child name, reason, message)."""


def _counts(result: Plan, outcome: Outcome) -> dict[str, int]:
    existing = set(result.managed_existing) | outcome.created
    return {
        "desired": len(result.desired),
        "current": len(existing),
        "updated": len({s.name for s in result.slots if s.updated_after(outcome)}),
        "ready": sum(1 for s in result.slots if s.child is not None and s.name in existing and s.child.ready()),
        "updated_ready": sum(1 for s in result.slots if s.updated and not s.spec_write and s.child is not None
                             and s.child.converged()),
    }


def _problems(result: Plan, outcome: Outcome) -> list[Problem]:
    problems = [(p.name, p.reason, p.message) for p in result.problems + result.failed]
    problems += [(n, SetReason.CREATE_FAILED, m) for n, m in sorted(outcome.create_errors.items())]
    problems += [(n, SetReason.UPDATE_FAILED, m) for n, m in sorted(outcome.update_errors.items())]
    return list(dict.fromkeys(problems))  # a remembered refusal is both a failed child and an outcome


def _phase(desired: int, current: int, problems: list[Problem]) -> tuple[SetPhase, str | None]:
    """The set's phase, and its reason (every problem reason, comma-separated, when there are any)."""
    reason: str | None
    if desired == 0:
        phase, reason = SetPhase.NOT_CREATED, SetReason.NO_MATCHING_NODES
    elif current == desired:
        phase, reason = SetPhase.CREATED, None
    elif current == 0 and problems:
        phase, reason = SetPhase.NOT_CREATED, problems[0][1]
    else:
        phase, reason = SetPhase.PENDING, SetReason.CREATING
    if problems:
        reasons = sorted({p[1] for p in problems})
        reason = reasons[0] if len(reasons) == 1 else ",".join(reasons)
    return phase, reason


def _ready_message(result: Plan, problems: list[Problem], counts: dict[str, int]) -> str:
    lines = [f"{n}: {m}" for n, _, m in problems[:MAX_LISTED_ERRORS]]
    if len(problems) > MAX_LISTED_ERRORS:
        lines.append(f"... and {len(problems) - MAX_LISTED_ERRORS} more")
    if result.orphans:
        lines.append(f"{len(result.orphans)} LVMVolumeGroup(s) kept for nodes that no longer match "
                     f"(status.attention, reason Orphaned); delete them deliberately to remove the VGs")
    if not lines:
        lines.append(f"{counts['current']}/{counts['desired']} LVMVolumeGroups created")
    return "\n".join(lines)[:32000]


def build_status(result: Plan, outcome: Outcome, old: Mapping[str, Any] | None,
                 now: str | None = None) -> LVMVolumeGroupSetStatus:
    """The set's status after a pass (lastTransitionTime kept unless a condition flips)."""
    prev = LVMVolumeGroupSetStatus.model_validate(dict(old or {}))
    counts = _counts(result, outcome)
    failed = {p.name for p in result.failed} | set(outcome.create_errors) | set(outcome.update_errors)
    problems = _problems(result, outcome)
    phase, reason = _phase(counts["desired"], counts["current"], problems)
    ready = phase == SetPhase.CREATED and not problems
    cond_reason = SetReason.ALL_CREATED if ready else (reason.split(",")[0] if reason else SetReason.CREATING)
    gen = result.set_ref.generation
    conds: list[Condition] = set_condition(list(prev.conditions or []), SetConditionType.READY,
                                           "True" if ready else "False", cond_reason,
                                           _ready_message(result, problems, counts), gen, now=now)
    p_status, p_reason, p_message = _progressing(result, outcome, counts)
    conds = set_condition(conds, SetConditionType.PROGRESSING, p_status, p_reason, p_message, gen, now=now)
    attention, _ = _attention(result, outcome)
    return LVMVolumeGroupSetStatus(
        current_lvm_volume_groups_count=counts["current"], desired_lvm_volume_groups_count=counts["desired"],
        updated_count=counts["updated"], ready_count=counts["ready"], updated_ready_count=counts["updated_ready"],
        failed_count=len(failed), orphaned_count=len(result.orphans), current_revision=result.revision,
        attention=attention or None, revisions=_revisions(result, prev), phase=phase,
        reason=reason, observed_generation=gen, conditions=conds)


STATUS_KEYS = ("currentLVMVolumeGroupsCount", "desiredLVMVolumeGroupsCount", "updatedCount", "readyCount",
               "updatedReadyCount", "failedCount", "orphanedCount", "currentRevision", "attention", "revisions",
               "phase", "reason", "observedGeneration", "conditions")
_UNREADABLE = object()
"""Stands for every owned key of a status the model cannot read: unequal to any value."""
LEGACY_STATUS_KEYS = ("createdLVMVolumeGroups", "orphanedLVMVolumeGroups")
"""Unbounded lists of earlier versions: cleared by the first status write."""


def status_patch(old: Mapping[str, Any] | None, new: LVMVolumeGroupSetStatus) -> dict[str, Any] | None:
    """The merge patch for ``status`` (None keys clear fields), or None when nothing changed: the
    project's one owned-keys diff (:func:`disklet.kube.patch.owned_keys_patch`) over the status as
    the model reads it. A status the model cannot read is rewritten whole; the unbounded lists of
    earlier versions are cleared."""
    old = dict(old or {})
    old_wire = {k: v for k, v in old.items() if k in STATUS_KEYS}
    try:
        old_norm: dict[str, Any] | None = LVMVolumeGroupSetStatus.model_validate(old_wire).to_wire()
    except ValidationError:
        old_norm = None  # unreadable: every owned key is written
    out = owned_keys_patch(old_norm if old_norm is not None else {k: _UNREADABLE for k in STATUS_KEYS},
                           new.to_wire(), STATUS_KEYS)
    out.update({k: None for k in LEGACY_STATUS_KEYS if old.get(k) is not None})
    return out or None


def new_orphans(result: Plan, reported: set[str]) -> list[CreatedLVG]:
    """Orphans not reported yet (each gets one Event); ``reported`` is updated."""
    out = [o for o in result.orphans if o.lvm_volume_group_name not in reported]
    reported.intersection_update(o.lvm_volume_group_name for o in result.orphans)
    reported.update(o.lvm_volume_group_name for o in out)
    return out


def reported_orphans(status: Mapping[str, Any] | None) -> set[str]:
    """Orphans the stored status already names (seeds the controller's memory after a restart)."""
    st = dict(status or {})
    names = {a.get("name") for a in st.get("attention") or () if a.get("reason") == AttentionReason.ORPHANED}
    names |= {o.get("lvmVolumeGroupName") for o in st.get("orphanedLVMVolumeGroups") or ()}
    return {n for n in names if n}


def ready_condition(status: Mapping[str, Any] | None) -> Condition | None:
    prev = LVMVolumeGroupSetStatus.model_validate(dict(status or {}))
    return get_condition(prev.conditions, SetConditionType.READY)
