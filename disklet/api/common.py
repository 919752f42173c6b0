"""Shared building blocks of the API models: base class, conditions, label selectors, CEL."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator
from pydantic.alias_generators import to_camel

DNS_LABEL = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
DNS_SUBDOMAIN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"


def cel(rule: str, message: str, *, field_path: str | None = None, reason: str | None = None,
        message_expression: str | None = None) -> dict[str, Any]:
    """One ``x-kubernetes-validations`` entry (``message_expression``: a CEL string expression over
    ``self`` that the API server shows instead of ``message``)."""
    out: dict[str, Any] = {"rule": rule, "message": message}
    if message_expression:
        out["messageExpression"] = message_expression
    if field_path:
        out["fieldPath"] = field_path
    if reason:
        out["reason"] = reason
    return out


def validations(*rules: dict[str, Any], **extra: Any) -> dict[str, Any]:
    """``json_schema_extra`` carrying CEL rules (and any other x-kubernetes-* keys)."""
    out: dict[str, Any] = dict(extra)
    if rules:
        out["x-kubernetes-validations"] = list(rules)
    return out


def immutable(what: str, hint: str = "") -> dict[str, Any]:
    msg = f"{what} is immutable" + (f": {hint}" if hint else "")
    return cel("self == oldSelf", msg)


def list_map(*keys: str, **extra: Any) -> dict[str, Any]:
    return {"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": list(keys), **extra}


ATOMIC: dict[str, Any] = {"x-kubernetes-list-type": "atomic"}


class ApiModel(BaseModel):
    """camelCase on the wire, snake_case in Python; unknown keys are errors (nothing dropped)."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid")

    def to_wire(self) -> dict[str, Any]:
        """The JSON shape Kubernetes stores (what a Kopf handler returns or patches)."""
        return self.model_dump(mode="json", by_alias=True, exclude_none=True)


class StatusModel(ApiModel):
    """Status is written by us but read back from the server: tolerate fields we do not know."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="ignore")


ConditionStatus = Literal["True", "False", "Unknown"]


class Condition(StatusModel):
    """A metav1.Condition."""

    type: str = Field(description="Type of condition in CamelCase, e.g. Ready or VGConfigurationApplied.",
                      max_length=316, pattern=r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])$")
    status: ConditionStatus = Field(description="True, False or Unknown.")
    observed_generation: int | None = Field(default=None, ge=0,
                                            description="metadata.generation the condition was set for.")
    last_transition_time: str = Field(description="When the condition last changed status (RFC 3339).")
    reason: str = Field(max_length=1024, pattern=r"^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$",
                        description="Machine-readable CamelCase reason for the last transition.")
    message: str = Field(default="", max_length=32768, description="Human-readable details.")


def parse_rfc3339(value: str | None) -> datetime | None:
    """An RFC 3339 timestamp as Kubernetes writes it (aware, UTC when unzoned), or None when
    absent or unreadable."""
    if not value:
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def rfc3339(when: datetime) -> str:
    """``when`` as a condition timestamp: UTC, whole seconds, ``Z``."""
    return when.astimezone(UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")


def now_rfc3339() -> str:
    return rfc3339(datetime.now(UTC))


def set_condition(conditions: list[Condition], type_: str, status: ConditionStatus, reason: str,
                  message: str = "", observed_generation: int | None = None,
                  now: str | None = None) -> list[Condition]:
    """Upsert a condition; lastTransitionTime moves only when status changes (no status churn)."""
    out: list[Condition] = []
    found = False
    for c in conditions:
        if c.type == type_:
            found = True
            ltt = c.last_transition_time if c.status == status else (now or now_rfc3339())
            out.append(Condition(type=type_, status=status, reason=reason, message=message,
                                 observed_generation=observed_generation, last_transition_time=ltt))
        else:
            out.append(c)
    if not found:
        out.append(Condition(type=type_, status=status, reason=reason, message=message,
                             observed_generation=observed_generation,
                             last_transition_time=now or now_rfc3339()))
    return out


def get_condition(conditions: list[Condition] | None, type_: str) -> Condition | None:
    for c in conditions or []:
        if c.type == type_:
            return c
    return None


SelectorOperator = Literal["In", "NotIn", "Exists", "DoesNotExist"]
LabelValue = Annotated[str, Field(max_length=63)]
"""A label value as selectors carry it (the CRD says maxLength 63; so does the model)."""


class LabelSelectorRequirement(ApiModel):
    key: str = Field(max_length=317, description="The label key the selector applies to.")
    operator: SelectorOperator = Field(description="In, NotIn, Exists or DoesNotExist.")
    values: list[LabelValue] | None = Field(
        default=None, max_length=64, json_schema_extra=ATOMIC,
        description="Values for In/NotIn (non-empty); must be empty for Exists/DoesNotExist.")


class LabelSelector(ApiModel):
    """A metav1.LabelSelector; an empty selector matches everything."""

    model_config = ConfigDict(
        alias_generator=to_camel, populate_by_name=True, extra="forbid",
        json_schema_extra={"x-kubernetes-map-type": "atomic"},
    )

    match_labels: dict[str, LabelValue] | None = Field(
        default=None, json_schema_extra={"maxProperties": 64, "additionalProperties": {"type": "string", "maxLength": 63}},
        description="Labels that must all be present with these values.")
    match_expressions: list[LabelSelectorRequirement] | None = Field(
        default=None, max_length=64, json_schema_extra=ATOMIC,
        description="Requirements that must all hold (AND).")

    def matches(self, labels: Mapping[str, str] | None) -> bool:
        labels = labels or {}
        for k, v in (self.match_labels or {}).items():
            if labels.get(k) != v:
                return False
        for req in self.match_expressions or []:
            present = req.key in labels
            vals = req.values or []
            if req.operator == "In" and not (present and labels[req.key] in vals):
                return False
            if req.operator == "NotIn" and present and labels[req.key] in vals:
                return False
            if req.operator == "Exists" and not present:
                return False
            if req.operator == "DoesNotExist" and present:
                return False
        return True

    def keys(self) -> set[str]:
        """Label keys the selector reads (to skip node events that cannot change its result)."""
        return set(self.match_labels or {}) | {r.key for r in self.match_expressions or []}


class BlockDeviceSelector(LabelSelector):
    """Labels and/or a CEL disk selector (``match``, docs/selectors.md); a device must satisfy both."""

    match: str | None = Field(
        default=None, min_length=1, max_length=2048,
        description="A CEL disk selector over the BlockDevice's facts, e.g. "
                    "'disk.transport == \"nvme\" && disk.size >= 1Ti' (docs/selectors.md). "
                    "ANDed with matchLabels and matchExpressions.")

    @model_validator(mode="after")
    def _match_compiles(self) -> BlockDeviceSelector:
        if self.match is not None:
            from disklet.diskselect import check_selector

            problem = check_selector(self.match, "match")
            if problem:
                raise ValueError(problem)
        return self

    def matches_device(self, labels: Mapping[str, str] | None, status: Mapping[str, Any] | None) -> bool:
        """Labels match and, with ``match``, the expression is true for the BlockDevice's status
        (an evaluation error does not match)."""
        if not self.matches(labels):
            return False
        if self.match is None:
            return True
        from disklet.diskselect import DiskFacts, SelectorError, compile_selector

        try:
            return compile_selector(self.match, "blockDeviceSelector.match").evaluate(
                DiskFacts.from_block_device_status(status or {}))
        except SelectorError:
            return False
