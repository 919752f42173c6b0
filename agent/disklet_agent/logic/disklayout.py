"""The agent's DiskLayout decisions, pure (no I/O): whether to work on an object now, whether the
live object is still the one judged, and which status fields a verdict changes.

The handler (``disklet_agent.handlers.disklayout``) feeds these with the object Kopf hands it, the
gate's verdict and the apply outcome; the gate and apply results are read through the small
Protocols below, so this module imports no orchestration or adapter code.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from disklet.api.common import Condition, ConditionStatus, now_rfc3339, set_condition
from disklet.api.disklayout import Phase, RefusalCode
from disklet.api.disklayout_ready import devices_text, with_ready
from disklet.kube.patch import owned_keys_patch

CONDITION = "Applied"
# Refusals the operator decides; the agent never retries or overrides them.
OPERATOR_REFUSALS = {RefusalCode.DUPLICATE_NODE_LAYOUT.value}
MAX_MESSAGE = 32000


@dataclass(frozen=True)
class Memo:
    layout_generation: int
    phase: str


def decide(status: Mapping[str, Any], trigger: str, memo: Memo | None) -> bool:
    """Should this agent work on the object now?"""
    lg = status.get("layoutGeneration")
    if lg is None or lg == status.get("appliedLayoutGeneration"):
        return False
    if memo is not None and memo.layout_generation == lg and memo.phase in (Phase.APPLIED, Phase.FAILED):
        return False  # we finished this generation; the body we see is older than our own patch
    phase = status.get("phase")
    if phase == Phase.PENDING:
        return True
    if phase == Phase.REFUSED:
        if status.get("refusalReason") in OPERATOR_REFUSALS:
            return False
        # Retried by the timer; an event only starts it when this process has not judged it yet.
        return trigger == "timer" or memo is None or memo.layout_generation != lg
    return False  # failed waits for a new layoutGeneration; applied is done


@dataclass
class Desired:
    phase: Phase
    message: str
    reason: str
    """Condition reason (CamelCase)."""
    refusal: str | None = None
    applied: bool = False
    attempted: bool = True
    identities: dict[str, dict[str, Any]] | None = None
    """target → identity recorded by a successful apply (status.targetIdentities)."""


def stale_reason(fresh: Mapping[str, Any] | None, seen: Mapping[str, Any]) -> str | None:
    """Why the object we judged is no longer the one to apply (None: it still is).

    The last proof before disko formats anything: Kopf hands timers and events the body it last
    saw, which may be older than the live object, or belong to one that was deleted meanwhile.
    """
    if fresh is None:
        return "the DiskLayout no longer exists"
    meta, seen_meta = fresh.get("metadata") or {}, seen.get("metadata") or {}
    if meta.get("uid") != seen_meta.get("uid"):
        return "the DiskLayout was deleted and recreated"
    if meta.get("deletionTimestamp"):
        return "the DiskLayout is being deleted"
    if (fresh.get("status") or {}).get("layoutGeneration") != (seen.get("status") or {}).get("layoutGeneration"):
        return "the layout generation changed"
    if (fresh.get("spec") or {}) != (seen.get("spec") or {}):
        return "the spec changed"
    return None


def _clip(text: str) -> str:
    return text if len(text) <= MAX_MESSAGE else "..." + text[-MAX_MESSAGE:]


def outcome_status(current: Mapping[str, Any], desired: Desired, *, node_mode: str, targets: list[str] | None,
                   generation: int | None, now: str | None = None) -> dict[str, Any]:
    """The status fields that differ from ``current`` (empty dict: write nothing)."""
    now = now or now_rfc3339()
    conditions = [Condition.model_validate(c) for c in current.get("conditions") or []]
    cond_status: ConditionStatus = "True" if desired.phase == Phase.APPLIED else "False"
    conditions = set_condition(conditions, CONDITION, cond_status, desired.reason, _clip(desired.message),
                               observed_generation=generation, now=now)
    applied_gen = current.get("layoutGeneration") if desired.applied else current.get("appliedLayoutGeneration")
    conditions = with_ready(conditions, desired.phase.value, current.get("layoutGeneration"), applied_gen,
                            _clip(desired.message), desired.refusal, generation, now)
    want: dict[str, Any] = {
        "phase": desired.phase.value,
        "refusalReason": desired.refusal,
        "message": _clip(desired.message),
        "nodeMode": node_mode,
        "conditions": [c.to_wire() for c in conditions],
    }
    if targets is not None:
        want["targetDevices"] = targets
        want["targetDevicesText"] = devices_text(targets)
    if desired.applied:
        want["appliedLayoutGeneration"] = current.get("layoutGeneration")
        want["lastAppliedTime"] = now
    if desired.identities:
        want["targetIdentities"] = [{"device": k, **v} for k, v in sorted(desired.identities.items())]
    changed = owned_keys_patch(current, want, want.keys())
    if changed and desired.attempted:
        changed["lastAttemptTime"] = now
    return changed


class GateVerdict(Protocol):
    """The gate's answer as this module reads it (``disklayout.gate.ApplyPlan``)."""

    @property
    def ok(self) -> bool: ...
    @property
    def failed(self) -> bool: ...
    @property
    def code(self) -> RefusalCode | None: ...
    @property
    def message(self) -> str: ...


class ApplyResult(Protocol):
    """An apply run's end as this module reads it (``disklayout.apply.ApplyOutcome``)."""

    @property
    def ok(self) -> bool: ...
    @property
    def phase(self) -> str: ...
    @property
    def message(self) -> str: ...
    @property
    def refusal(self) -> RefusalCode | None: ...
    @property
    def identities(self) -> dict[str, dict[str, Any]]: ...


def desired_from_plan(plan: GateVerdict) -> Desired | None:
    """Refused/failed when the gate said no; None when the gate said yes."""
    if plan.failed:
        return Desired(Phase.FAILED, plan.message, "Failed")
    if not plan.ok:
        return Desired(Phase.REFUSED, plan.message, "Refused", refusal=str(plan.code) if plan.code else None)
    return None


def desired_from_outcome(out: ApplyResult) -> Desired:
    if out.ok:
        return Desired(Phase.APPLIED, out.message, "Applied", applied=True, identities=out.identities)
    if out.refusal is not None:
        return Desired(Phase.REFUSED, out.message, "Refused", refusal=str(out.refusal))
    return Desired(Phase.FAILED, f"apply failed at {out.phase}: {out.message}", "Failed", applied=False)
