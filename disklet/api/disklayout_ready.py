"""The DiskLayout ``Ready`` condition and the printer-column text of the target devices. Pure.

``Ready`` is True when the phase is ``applied`` and the generation the agent applied is the
current ``layoutGeneration`` (the node's current layout is the one the object describes). Otherwise
it is False with the phase as the reason (``Pending``, ``Refused``, ``Failed``; ``NotValidated``
before the operator's first pre-flight; ``Outdated`` when applied but behind). The operator writes
it with every pre-flight, the agent with every outcome, so ``kubectl wait --for=condition=Ready``
works on DiskLayouts as on LVMVolumeGroups.
"""

from __future__ import annotations

from .common import Condition, ConditionStatus, set_condition

READY = "Ready"
DEVICES_SEPARATOR = ","


def ready_state(phase: str | None, layout_generation: int | None, applied_layout_generation: int | None,
                message: str | None = None, refusal_reason: str | None = None) -> tuple[ConditionStatus, str, str]:
    """(status, reason, message) of ``Ready`` for these status fields."""
    phase = str(phase) if phase else None
    if phase == "applied":
        if applied_layout_generation is not None and applied_layout_generation == layout_generation:
            return "True", "Applied", f"layout generation {layout_generation} is applied on the node"
        return ("False", "Outdated", f"the node applied layout generation {applied_layout_generation}, "
                                     f"the object describes {layout_generation}")
    if phase is None:
        return "False", "NotValidated", "the operator has not pre-flighted this layout yet"
    reason = {"pending": "Pending", "refused": "Refused", "failed": "Failed"}.get(phase, phase.title())
    detail = message or ""
    if refusal_reason and refusal_reason not in detail:
        detail = f"{refusal_reason}: {detail}" if detail else refusal_reason
    return "False", reason, detail or f"phase {phase}"


def with_ready(conditions: list[Condition], phase: str | None, layout_generation: int | None,
               applied_layout_generation: int | None, message: str | None, refusal_reason: str | None,
               observed_generation: int | None, now: str | None = None) -> list[Condition]:
    status, reason, text = ready_state(phase, layout_generation, applied_layout_generation, message, refusal_reason)
    return set_condition(conditions, READY, status, reason, text[:1024], observed_generation, now)


def devices_text(devices: list[str] | tuple[str, ...] | None) -> str | None:
    """``/dev/sdb,/dev/sdc``: what the Devices printer column shows (kubectl prints lists as JSON)."""
    return DEVICES_SEPARATOR.join(devices) if devices else None
