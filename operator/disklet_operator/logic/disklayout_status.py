"""From a pre-flight verdict and the current DiskLayout status to the status the operator writes.

The operator owns ``layoutHash``, ``layoutGeneration``, ``targetDevices``, ``observedGeneration``
and the ``Validated`` condition. It shares ``phase``/``refusalReason``/``message`` with the agent:

- a verdict against the layout (malformed, invalid spec, no target devices, another DiskLayout
  for the node) always sets the phase (failed / refused);
- a valid layout sets ``pending`` only when it starts a new layout generation, or when the
  phase was the operator's own negative verdict (``Validated`` was not True). Otherwise the
  agent's phase stays: an applied layout whose body did not change stays applied, an
  agent-written refused stays refused (the agent retries it), a disko failure stays failed.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from pydantic import ValidationError

from disklet.api.common import Condition, ConditionStatus, get_condition, set_condition
from disklet.api.disklayout import DiskLayoutStatus, Phase, RefusalCode
from disklet.api.disklayout_ready import READY, devices_text, with_ready

from .duplicates import duplicate_message
from .generation import next_layout_generation

VALIDATED = "Validated"
"""The operator's condition on a DiskLayout: did the spec pass pre-flight?"""

OPERATOR_STATUS_KEYS: frozenset[str] = frozenset({
    "phase", "refusalReason", "message", "targetDevices", "observedGeneration", "conditions",
    "layoutHash", "layoutGeneration", "targetDevicesText",
})
"""Status fields the operator may write (everything else belongs to the agent)."""


class VerdictKind(StrEnum):
    VALID = "Valid"
    NO_TARGET_DEVICES = "NoTargetDevices"
    MALFORMED = "Malformed"
    INVALID_SPEC = "InvalidSpec"
    DUPLICATE = "DuplicateNodeLayout"
    REFUSED = "Refused"
    """Any other pre-flight refusal code (future-proof: carried through as is)."""


@dataclass(frozen=True)
class PreflightVerdict:
    """The operator's judgement of one DiskLayout spec (pre-flight or duplicate check)."""

    kind: VerdictKind
    message: str
    layout_hash: str | None = None
    target_devices: tuple[str, ...] = field(default_factory=tuple)
    refusal_reason: RefusalCode | None = None
    owner: str | None = None
    """For DUPLICATE: the DiskLayout that owns the node."""

    @property
    def valid(self) -> bool:
        return self.kind is VerdictKind.VALID

    @property
    def phase(self) -> Phase:
        if self.kind is VerdictKind.VALID:
            return Phase.PENDING
        if self.kind in (VerdictKind.MALFORMED, VerdictKind.INVALID_SPEC):
            return Phase.FAILED
        return Phase.REFUSED

    @property
    def condition_status(self) -> ConditionStatus:
        return "True" if self.valid else "False"


def verdict_from_preflight(result: Any) -> PreflightVerdict:
    """Map ``disklet.layout.PreflightResult`` to a verdict."""
    targets = tuple(result.target_devices or ())
    phase = Phase(result.phase)
    if phase is Phase.PENDING:
        return PreflightVerdict(VerdictKind.VALID, result.message, result.layout_hash, targets)
    if phase is Phase.REFUSED:
        code = RefusalCode(result.refusal_reason) if result.refusal_reason else None
        kind = VerdictKind.NO_TARGET_DEVICES if code is RefusalCode.NO_TARGET_DEVICES else VerdictKind.REFUSED
        return PreflightVerdict(kind, result.message, result.layout_hash, targets, refusal_reason=code)
    return PreflightVerdict(VerdictKind.MALFORMED, result.message, result.layout_hash, targets)


def invalid_spec_verdict(exc: ValidationError | Exception) -> PreflightVerdict:
    """A spec the model rejects (the mock/old servers do not run the CRD schema): failed, clearly."""
    if isinstance(exc, ValidationError):
        problems = []
        for err in exc.errors():
            where = ".".join(str(p) for p in err.get("loc", ())) or "spec"
            problems.append(f"spec.{where}: {err.get('msg', 'invalid')}")
        text = "; ".join(problems)
    else:
        text = str(exc)
    return PreflightVerdict(VerdictKind.INVALID_SPEC, f"invalid spec: {text}")


def duplicate_verdict(node: str, owner: str) -> PreflightVerdict:
    """This DiskLayout is refused: ``owner`` (older) already describes ``node``."""
    return PreflightVerdict(VerdictKind.DUPLICATE, duplicate_message(node, owner),
                   refusal_reason=RefusalCode.DUPLICATE_NODE_LAYOUT, owner=owner)


def parse_status(raw: Mapping[str, Any] | None) -> DiskLayoutStatus:
    """The status as a model; fields (and conditions) that do not parse are dropped, never fatal."""
    raw = dict(raw or {})
    try:
        return DiskLayoutStatus.model_validate(raw)
    except ValidationError:
        pass
    good: dict[str, Any] = {}
    for key, value in raw.items():
        if key == "conditions" and isinstance(value, list):
            conds = []
            for c in value:
                try:
                    conds.append(Condition.model_validate(c).to_wire())
                except ValidationError:
                    continue
            good[key] = conds
            continue
        try:
            DiskLayoutStatus.model_validate({key: value})
        except ValidationError:
            continue
        good[key] = value
    return DiskLayoutStatus.model_validate(good)


def desired_status(old: DiskLayoutStatus, verdict: PreflightVerdict, generation: int | None,
                   now: str | None = None) -> DiskLayoutStatus:
    """The status after ``verdict`` for ``metadata.generation`` ``generation`` (pure; see module doc).

    ``Ready`` follows the resulting phase (:mod:`disklet.api.disklayout_ready`)."""
    new = _desired_status(old, verdict, generation, now)
    new.target_devices_text = devices_text(new.target_devices)
    new.conditions = with_ready(list(new.conditions or []), new.phase, new.layout_generation,
                                new.applied_layout_generation, new.message, new.refusal_reason, generation, now)
    return new


OWNED_CONDITIONS = (VALIDATED, READY)
"""Condition types the operator writes on a DiskLayout (the agent writes Applied, and Ready too)."""


def _desired_status(old: DiskLayoutStatus, verdict: PreflightVerdict, generation: int | None,
                    now: str | None = None) -> DiskLayoutStatus:
    new = old.model_copy(deep=True)
    gen = next_layout_generation(old.layout_hash, old.layout_generation, verdict.layout_hash)
    new.layout_hash = gen.layout_hash
    new.layout_generation = gen.layout_generation
    if verdict.layout_hash is not None:
        new.target_devices = list(verdict.target_devices)  # the targets of the body layoutHash describes
    if generation is not None:
        new.observed_generation = generation
    previously = get_condition(old.conditions, VALIDATED)
    new.conditions = set_condition(list(old.conditions or []), VALIDATED, verdict.condition_status,
                                   str(verdict.kind), verdict.message, generation, now)
    if not verdict.valid:
        new.phase = verdict.phase
        new.refusal_reason = verdict.refusal_reason.value if verdict.refusal_reason else None
        new.message = verdict.message
        return new
    operator_phase = old.phase is None or previously is None or previously.status != "True"
    if gen.bumped or operator_phase:
        new.phase = Phase.PENDING
        new.refusal_reason = None
        new.message = verdict.message
    return new


def status_transition(old: DiskLayoutStatus, new: DiskLayoutStatus) -> tuple[bool, bool]:
    """(phase changed, layoutGeneration bumped): what deserves an Event."""
    return (old.phase != new.phase or old.refusal_reason != new.refusal_reason,
            old.layout_generation != new.layout_generation)
