"""Readiness of an LVMVolumeGroup as the operator sees it (NodeReady, AgentReady, Ready).

The agent writes ``VGConfigurationApplied`` and ``VGReady`` (what it did on the node); the operator
adds what the agent cannot say about itself: is the node Ready, is the agent alive (its Lease
``disklet-agent-<node>`` renewed within the grace period), and the aggregate ``Ready``.

``Ready`` is True only when the node is Ready, the agent reports, the agent's ``VGReady`` is True
(the VG exists with all its PVs) and ``VGConfigurationApplied`` is True or False with a reason in
:data:`DEGRADED_BUT_SERVING`: the VG serves I/O but the latest spec is not (yet) fully applied.
``Ready`` is then True with reason ``Degraded`` and the agent's reason and message. Every other
reason (``Terminating``, ``Creating``, or one this operator does not know) takes the VG out of
service: fail closed.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from disklet.api.common import (
    Condition,
    ConditionStatus,
    get_condition,
    parse_rfc3339,
    rfc3339,
    set_condition,
)
from disklet.api.lvm import ConditionType, Reason
from disklet.kube.lease import lease_name

from .conditions import merge_owned_conditions, parse_conditions

DEFAULT_LEASE_GRACE_SECONDS = 60.0
MAX_MESSAGE = 1024

DEGRADED_BUT_SERVING: frozenset[str] = frozenset({
    Reason.UPDATING,                    # a reconcile is in progress or LVM could not be read this round
    Reason.VALIDATION_FAILED,           # the new spec is rejected; the VG of the last good spec serves
    Reason.FILE_DEVICE_NOT_APPLIED,     # a new file device could not be attached/added; existing PVs serve
    Reason.FILE_DEVICE_GROW_FAILED,     # a file device could not grow; the VG keeps its size
    Reason.VG_EXTEND_FAILED,            # vgextend failed; the VG keeps its PVs
    Reason.THIN_POOL_RECONCILE_FAILED,  # a thin pool is missing/small; thick LVs and other pools serve
    Reason.ALIAS_RESOLUTION_FAILED,     # a device path could not be resolved; the VG itself is complete
    Reason.FILE_DEVICE_DRIFT,           # a PV left the spec (nothing destroyed); VGReady says it is complete
})
"""Agent reasons on ``VGConfigurationApplied=False`` that still count as Ready (degraded but serving)."""

OWNED_TYPES: frozenset[str] = frozenset({ConditionType.NODE_READY, ConditionType.AGENT_READY, ConditionType.READY})
"""The only LVMVolumeGroup conditions the operator writes."""


@dataclass(frozen=True)
class ConditionState:
    status: ConditionStatus
    reason: str
    message: str


def _short(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= MAX_MESSAGE else text[:MAX_MESSAGE - 1] + "…"


def node_readiness(node: str | None, found: bool, ready: Mapping[str, Any] | None) -> ConditionState:
    """NodeReady from the Node's ``Ready`` condition (``ready``: that condition, None if absent)."""
    if not node:
        return ConditionState("False", "NodeNotFound", "spec.local.nodeName is not set")
    if not found:
        return ConditionState("False", "NodeNotFound", f"node {node} does not exist")
    if ready is None:
        return ConditionState("Unknown", "NodeStatusUnknown", f"node {node} reports no Ready condition")
    status = ready.get("status")
    detail = ": ".join(str(x) for x in (ready.get("reason"), ready.get("message")) if x)
    if status == "True":
        return ConditionState("True", "NodeReady", f"node {node} is Ready")
    if status == "False":
        return ConditionState("False", "NodeNotReady", _short(f"node {node} is not Ready" + (f" ({detail})" if detail else "")))
    return ConditionState("Unknown", "NodeStatusUnknown",
                          _short(f"node {node} Ready is Unknown (kubelet stopped posting status)" + (f" ({detail})" if detail else "")))


def agent_readiness(node: str | None, renew_time: str | None, found: bool, now: datetime,
                    grace_seconds: float = DEFAULT_LEASE_GRACE_SECONDS, namespace: str = "") -> ConditionState:
    """AgentReady from the agent's Lease: renewed within ``grace_seconds`` of ``now``.

    Messages carry no moving numbers (no "renewed 12s ago"), so the condition is rewritten only when
    its meaning changes.
    """
    if not node:
        return ConditionState("False", "AgentNotReporting", "spec.local.nodeName is not set")
    where = f"{namespace}/{lease_name(node)}" if namespace else lease_name(node)
    if not found:
        return ConditionState("False", "AgentNotReporting",
                              f"no agent Lease {where}: is the disklet agent running on node {node}?")
    renewed = parse_rfc3339(renew_time)
    if renewed is None:
        return ConditionState("False", "AgentNotReporting", f"agent Lease {where} has no renewTime")
    age = (now - renewed).total_seconds()
    if age <= grace_seconds:
        return ConditionState("True", "AgentReporting", f"agent Lease {where} renewed within the last {grace_seconds:g}s")
    return ConditionState("False", "AgentNotReporting",
                          f"agent Lease {where} last renewed at {renew_time}, more than {grace_seconds:g}s ago")


def deleting_without_agent(node: str | None, agent: ConditionState) -> ConditionState:
    """AgentReady of an LVMVolumeGroup being deleted while its agent does not report: what is
    happening and what it waits for (the Ready condition carries the same message)."""
    return ConditionState("False", agent.reason, _short(
        f"deletion requested; waiting for the agent of node {node or '?'} to remove the volume group and release "
        f"its finalizer (nothing happens until it reports again): {agent.message}"))


def aggregate_ready(node: ConditionState, agent: ConditionState, conditions: Iterable[Condition]) -> ConditionState:
    """The aggregate Ready (see the module doc for the rule)."""
    conds = list(conditions)
    if node.status != "True":
        return ConditionState("False", "NodeNotReady", node.message)
    if agent.status != "True":
        return ConditionState("False", "AgentNotReporting", agent.message)
    vg_ready = get_condition(conds, ConditionType.VG_READY)
    if vg_ready is None:
        return ConditionState("False", "VGNotReported", "the agent has not reported the volume group yet")
    if vg_ready.status != "True":
        return ConditionState("False", "VGNotReady", _short(f"VGReady is {vg_ready.status} ({vg_ready.reason}): {vg_ready.message}"))
    applied = get_condition(conds, ConditionType.VG_CONFIGURATION_APPLIED)
    if applied is None or applied.status == "True":
        return ConditionState("True", "Ready", "the volume group is present and the node and agent are healthy")
    if applied.reason in DEGRADED_BUT_SERVING:
        return ConditionState("True", "Degraded", _short(
            f"the volume group serves, but the latest spec is not fully applied ({applied.reason}): {applied.message}"))
    reason = "Terminating" if applied.reason == Reason.TERMINATING else "ConfigurationNotApplied"
    return ConditionState("False", reason, _short(f"VGConfigurationApplied is False ({applied.reason}): {applied.message}"))


def readiness_conditions(old: Iterable[Condition], node: ConditionState, agent: ConditionState,
                         generation: int | None, now: str | None = None) -> list[Condition]:
    """Our three conditions, upserted so lastTransitionTime moves only when a status changes."""
    conds = list(old)
    ready = aggregate_ready(node, agent, conds)
    out = conds
    for type_, state in ((ConditionType.NODE_READY, node), (ConditionType.AGENT_READY, agent), (ConditionType.READY, ready)):
        out = set_condition(out, type_, state.status, state.reason, state.message, generation, now)
    return [c for c in out if c.type in OWNED_TYPES]


def carried_state(conditions: Iterable[Mapping[str, Any]], type_: str) -> ConditionState | None:
    """The condition ``type_`` an object carries, as a :class:`ConditionState` (None when absent)."""
    for c in conditions:
        if isinstance(c, Mapping) and c.get("type") == type_:
            return ConditionState(c.get("status", "Unknown"), str(c.get("reason") or ""), str(c.get("message") or ""))
    return None


def lease_index_behind(indexed: Mapping[str, str | None], live: Mapping[str, str | None]) -> list[str]:
    """Nodes whose agent Lease the API server shows renewed later than the index (or that the index lacks).

    ``indexed`` and ``live``: node → renewTime. An index that is behind must not turn a renewal it
    has not seen into "the agent stopped reporting".
    """
    out = []
    for node, renew in live.items():
        seen, now_at = parse_rfc3339(indexed.get(node)), parse_rfc3339(renew)
        if now_at is not None and (node not in indexed or seen is None or now_at > seen):
            out.append(node)
    return sorted(out)


@dataclass(frozen=True)
class Update:
    """A change of the operator's conditions on one LVMVolumeGroup."""

    conditions: list[dict[str, Any]]
    """The whole new ``status.conditions`` (the agent's entries kept byte for byte)."""
    sent: list[tuple[str, str, str, str]]
    """Our three conditions without timestamps (what the in-flight guard compares)."""
    ready_before: str | None
    ready: ConditionState


def conditions_update(status: Mapping[str, Any], node_state: ConditionState, agent_state: ConditionState,
                      generation: int | None, at: datetime) -> Update | None:
    """What to write into ``status.conditions`` (``at`` stamps a lastTransitionTime that moves); None
    when our conditions already say it."""
    raw = list(status.get("conditions") or [])
    old = parse_conditions(raw)
    owned = readiness_conditions(old, node_state, agent_state, generation, rfc3339(at))
    merged = merge_owned_conditions(raw, owned)
    if merged == raw:
        return None
    before = next((c.status for c in old if c.type == ConditionType.READY), None)
    ready = next(c for c in owned if c.type == ConditionType.READY)
    return Update(merged, [(c.type, c.status, c.reason, c.message) for c in owned], before,
                  ConditionState(ready.status, ready.reason, ready.message))
