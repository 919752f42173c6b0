"""LVMVolumeGroup bookkeeping: the node label and the NodeReady/AgentReady/Ready conditions.

The agent writes ``VGConfigurationApplied``/``VGReady`` and everything else in the status; the
operator writes only its three conditions (``logic.readiness`` has the rule), only when they change,
on every LVMVolumeGroup event and on a timer (a Lease going stale produces no event on the LVG).
Nodes and agent Leases are read from Kopf indexes, never fetched per object.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

import kopf

from disklet import GROUP, VERSION
from disklet.api.common import rfc3339
from disklet.api.lvm import ConditionType
from disklet.api.resources import LVM_VOLUME_GROUP
from disklet.kube.lease import lease_namespace, lease_node
from disklet.observe import record_status_write

from ..logic.conditions import merge_owned_conditions, parse_conditions
from ..logic.labels import node_label_patch
from ..logic.readiness import (
    DEFAULT_LEASE_GRACE_SECONDS,
    agent_readiness,
    node_readiness,
    readiness_conditions,
)

PLURAL = LVM_VOLUME_GROUP.plural
NODES_INDEX = "lvg_nodes"
LEASES_INDEX = "lvg_agent_leases"
DEFAULT_INTERVAL_SECONDS = 30.0


def _node_of(spec: Mapping[str, Any] | None) -> str | None:
    node = ((spec or {}).get("local") or {}).get("nodeName")
    return node if isinstance(node, str) and node else None


def _first(index: Any, key: str | None) -> tuple[bool, Any]:
    if index is None or key is None or key not in index:
        return False, None
    values = list(index[key])
    return (True, values[0]) if values else (False, None)


def _still_in_flight(memo: Any, key: str, value: Any, reflected: bool, window: float) -> bool:
    """True when this same write was sent and Kopf's body does not show it yet (a stale body).

    The event handler and the timer both evaluate Kopf's last-seen body, which lacks our last write
    until the watch delivers it (seconds under CPU load). Evaluating such a body again would send
    the same write again, with fresh lastTransitionTimes; so ``value`` must leave timestamps out.
    Once a body shows the write (``reflected``), it is no longer in flight: a later body without
    it means another writer removed it, and it is written again at once. ``window`` bounds how
    long a write that never shows up is trusted.
    """
    if not isinstance(memo, dict):  # kopf.Memo is a dict: one per object, shared by its handlers
        return False
    sent = memo.setdefault("disklet_sent", {})
    if reflected:
        sent.pop(key, None)
        return False
    previous = sent.get(key)
    stamp = time.monotonic()
    if previous is not None and previous[0] == value and stamp - previous[1] < window:
        return True
    sent[key] = (value, stamp)
    return False


def register(registry: kopf.OperatorRegistry, *, namespace: str | None = None,
             interval: float = DEFAULT_INTERVAL_SECONDS, lease_grace: float = DEFAULT_LEASE_GRACE_SECONDS,
             clock: Callable[[], datetime] | None = None, dedupe_seconds: float = 60.0) -> None:
    """Define the LVMVolumeGroup handlers and the Node/Lease indexes on ``registry``.

    ``namespace``: where the agents' Leases live (default: :func:`disklet.kube.lease.lease_namespace`); ``interval``:
    how often every LVG is re-evaluated; ``lease_grace``: how old a Lease renewal may be;
    ``clock``: read once per evaluation, for the Lease's age and the conditions' lastTransitionTime
    (tests pass a counting or stepping clock).
    """
    ns = namespace or lease_namespace()
    now = clock or (lambda: datetime.now(UTC))

    @kopf.index("v1", "nodes", registry=registry, id=NODES_INDEX)
    def lvg_nodes(name: str, status: Mapping[str, Any], **_: Any) -> dict[str, dict[str, Any]]:
        ready = next((dict(c) for c in status.get("conditions") or [] if c.get("type") == "Ready"), None)
        return {name: {"ready": ready}}

    def _agent_lease(name: str, namespace: str | None, **_: Any) -> bool:
        return namespace == ns and lease_node(name) is not None

    @kopf.index("coordination.k8s.io", "v1", "leases", registry=registry, id=LEASES_INDEX, when=_agent_lease)
    def lvg_agent_leases(name: str, spec: Mapping[str, Any], **_: Any) -> dict[str, str | None]:
        return {lease_node(name) or name: spec.get("renewTime") or spec.get("acquireTime")}

    def evaluate(body: kopf.Body, spec: Mapping[str, Any], status: Mapping[str, Any], meta: Mapping[str, Any],
                 labels: Mapping[str, str], patch: kopf.Patch, indexes: Mapping[str, Any]) -> None:
        memo = indexes.get("memo")
        node = _node_of(spec)
        label = node_label_patch(labels, node)
        if not _still_in_flight(memo, "labels", label, not label, dedupe_seconds) and label:
            patch.metadata.setdefault("labels", {}).update(label)
        found_node, node_entry = _first(indexes.get(NODES_INDEX), node)
        node_state = node_readiness(node, found_node, (node_entry or {}).get("ready"))
        found_lease, renew = _first(indexes.get(LEASES_INDEX), node)
        at = now()  # one reading per evaluation: the Lease's age and any lastTransitionTime
        agent_state = agent_readiness(node, renew, found_lease, at, lease_grace, ns)
        raw = list(status.get("conditions") or [])
        old = parse_conditions(raw)
        owned = readiness_conditions(old, node_state, agent_state, meta.get("generation"), rfc3339(at))
        merged = merge_owned_conditions(raw, owned)
        sent = [(c.type, c.status, c.reason, c.message) for c in owned]  # what we write, minus timestamps
        if _still_in_flight(memo, "conditions", sent, merged == raw, dedupe_seconds) or merged == raw:
            return
        patch.status["conditions"] = merged
        record_status_write(LVM_VOLUME_GROUP.kind)
        before = next((c.status for c in old if c.type == ConditionType.READY), None)
        ready = next(c for c in owned if c.type == ConditionType.READY)
        if before != ready.status:
            if ready.status == "True":
                kopf.info(body, reason="Ready", message=ready.message)
            elif before is not None:
                kopf.warn(body, reason="NotReady", message=f"{ready.reason}: {ready.message}"[:1024])

    @kopf.on.event(GROUP, VERSION, PLURAL, registry=registry, id="lvg-bookkeeping")
    def lvg_bookkeeping(event: Mapping[str, Any], body: kopf.Body, spec: Mapping[str, Any], status: Mapping[str, Any],
                        meta: Mapping[str, Any], labels: Mapping[str, str], patch: kopf.Patch, **kwargs: Any) -> None:
        if event.get("type") == "DELETED":
            return
        evaluate(body, spec, status, meta, labels, patch, kwargs)

    @kopf.timer(GROUP, VERSION, PLURAL, registry=registry, id="lvg-readiness", interval=interval)
    def lvg_readiness(body: kopf.Body, spec: Mapping[str, Any], status: Mapping[str, Any], meta: Mapping[str, Any],
                      labels: Mapping[str, str], patch: kopf.Patch, **kwargs: Any) -> None:
        evaluate(body, spec, status, meta, labels, patch, kwargs)
