"""LVMVolumeGroup bookkeeping: the node label and the NodeReady/AgentReady/Ready conditions.

The agent writes ``VGConfigurationApplied``/``VGReady`` and everything else in the status; the
operator writes only its three conditions (``logic.readiness`` has the rule), only when they change:

- on every LVMVolumeGroup event (``lvg-bookkeeping``: label and conditions, at once);
- from one operator-wide loop (:class:`ReadinessLoop`), every ``interval`` seconds: a Lease going
  stale or a Node changing produces no event on the LVMVolumeGroup. The loop walks an index that
  keeps, per LVMVolumeGroup, only its node and the NodeReady/AgentReady it carries; a pass with
  nothing to change sends no request. A change is written from a fresh GET, conditioned on its
  ``resourceVersion`` (a 409 means an event is on its way and the event handler decides).

Nodes, agent Leases and LVMVolumeGroups are read from Kopf indexes, never fetched per object.
docs/operator.md ("LVMVolumeGroup readiness") explains the loop and its stale-cache guard.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import kopf

from disklet import GROUP, VERSION
from disklet.api.common import parse_rfc3339
from disklet.api.lvm import ConditionType, LVGPhase
from disklet.api.resources import LVM_VOLUME_GROUP
from disklet.kube.client import ApiError, Conflict, Kind, KubeClient, NotFound
from disklet.kube.events import OPERATOR, EventRecorder, operator_instance, recorder_for
from disklet.kube.lease import lease_namespace, lease_node
from disklet.kube.login import registry_login
from disklet.observe import record_status_write

from ..logic.labels import node_label_patch
from ..logic.readiness import (
    DEFAULT_LEASE_GRACE_SECONDS,
    ConditionState,
    agent_readiness,
    carried_state,
    conditions_update,
    deleting_without_agent,
    lease_index_behind,
    node_readiness,
)

PLURAL = LVM_VOLUME_GROUP.plural
NODES_INDEX = "lvg_nodes"
LEASES_INDEX = "lvg_agent_leases"
LVGS_INDEX = "lvg_readiness"
DEFAULT_INTERVAL_SECONDS = 30.0
LVG_KIND = Kind(GROUP, VERSION, PLURAL, LVM_VOLUME_GROUP.kind)
LEASE_KIND = Kind("coordination.k8s.io", "v1", "leases", "Lease", namespaced=True)
log = logging.getLogger("disklet.operator.lvg")


@dataclass(frozen=True, slots=True)
class IndexedReadiness:
    """What the readiness loop keeps per LVMVolumeGroup: its node and the two conditions it carries."""

    node: str | None
    node_ready: ConditionState | None
    agent_ready: ConditionState | None


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

    The event handler evaluates Kopf's last-seen body, which lacks our last write until the watch
    delivers it (seconds under CPU load). Evaluating such a body again would send the same write
    again, with fresh lastTransitionTimes; so ``value`` must leave timestamps out. Once a body shows
    the write (``reflected``), it is no longer in flight: a later body without it means another
    writer removed it, and it is written again at once. ``window`` bounds how long a write that
    never shows up is trusted.
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


class ReadinessLoop:
    """The operator-wide readiness loop (one task per operator, not one per LVMVolumeGroup).

    Started from the first LVMVolumeGroup event (so it runs in Kopf's handler context and can post
    Events), stopped at cleanup. ``passes``, ``requests`` and ``writes`` are counted for tests and
    the benchmark.
    """

    def __init__(self, namespace: str, interval: float, lease_grace: float, now: Callable[[], datetime],
                 concurrency: int = 4) -> None:
        self.namespace = namespace
        self.interval = interval
        self.lease_grace = lease_grace
        self.now = now
        self.concurrency = concurrency
        self.kube: KubeClient | None = None
        self.indexes: Mapping[str, Any] = {}
        self.task: asyncio.Task[None] | None = None
        self.events: EventRecorder | None = None
        self.passes = 0
        self.requests = 0
        self.writes = 0
        self.skipped = 0
        """Passes that wrote nothing because the Lease index was behind the API server."""
        self.lease_checks = 0
        """LISTs of the agents' Leases (only when no indexed Lease looked fresh)."""

    def ensure_started(self, kwargs: Mapping[str, Any]) -> None:
        """Start the loop (once) from a handler's kwargs, keeping only the three indexes it reads."""
        if self.task is None or self.task.done():
            self.indexes = {k: kwargs[k] for k in (NODES_INDEX, LEASES_INDEX, LVGS_INDEX)}
            self.task = asyncio.create_task(self._run(), name="lvg-readiness")

    async def stop(self) -> None:
        task, self.task = self.task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            try:
                await self.run_pass()
            except asyncio.CancelledError:
                raise
            except Exception:  # keep the loop alive; the next pass retries
                log.exception("LVMVolumeGroup readiness pass failed")

    def states(self, node: str | None, now: datetime,
               indexes: Mapping[str, Any] | None = None) -> tuple[ConditionState, ConditionState]:
        """NodeReady and AgentReady of ``node`` from the indexes as of ``now``."""
        indexes = self.indexes if indexes is None else indexes
        found_node, ready = _first(indexes.get(NODES_INDEX), node)
        found_lease, renew = _first(indexes.get(LEASES_INDEX), node)
        return (node_readiness(node, found_node, ready),
                agent_readiness(node, renew, found_lease, now, self.lease_grace, self.namespace))

    def due(self, now: datetime) -> list[str]:
        """LVMVolumeGroups whose carried NodeReady/AgentReady differ from what the indexes say now."""
        per_node: dict[str | None, tuple[ConditionState, ConditionState]] = {}
        out = []
        for name, store in (self.indexes.get(LVGS_INDEX) or {}).items():
            for carried in store:
                states = per_node.get(carried.node)
                if states is None:
                    states = per_node[carried.node] = self.states(carried.node, now)
                if states != (carried.node_ready, carried.agent_ready):
                    out.append(name)
                break
        return out

    async def run_pass(self) -> int:
        """One pass; returns how many LVMVolumeGroups it wrote. Idle: no request at all."""
        try:
            now = self.now()
            due = self.due(now)
            if not due:
                return 0
            if await self._lease_index_behind(now):
                self.skipped += 1
                return 0
            sem = asyncio.Semaphore(self.concurrency)

            async def one(name: str) -> bool:
                async with sem:
                    return await self._rewrite(name, now)

            written = sum(await asyncio.gather(*(one(n) for n in due)))
            self.writes += written
            return written
        finally:
            self.passes += 1

    async def _lease_index_behind(self, now: datetime) -> bool:
        """True when the API server has an agent Lease renewed later than the index shows.

        Kopf stops the watch streams of a replica that peering pauses, so its indexes freeze and every
        Lease would look stale after the grace period. Only when the index shows no Lease renewed
        within half the grace period does the pass check (one LIST of the agents' Leases).
        """
        leases = self.indexes.get(LEASES_INDEX) or {}
        indexed = {node: next(iter(store), None) for node, store in leases.items()}
        newest = max((t for t in (parse_rfc3339(v) for v in indexed.values()) if t is not None), default=None)
        if newest is not None and (now - newest).total_seconds() <= self.lease_grace / 2:
            return False
        client = self._client()
        self.requests += 1
        self.lease_checks += 1
        items = await client.list(LEASE_KIND, namespace=self.namespace)
        live: dict[str, str | None] = {}
        for item in items:
            node, spec = lease_node((item.get("metadata") or {}).get("name", "")), item.get("spec") or {}
            if node is not None:
                live[node] = spec.get("renewTime") or spec.get("acquireTime")
        behind = lease_index_behind(indexed, live)
        if behind:
            log.info(f"the agent Lease index is behind the API server ({len(behind)} Leases, e.g. {behind[0]}): "
                     "readiness pass skipped (a replica paused by peering, or a lagging watch)")
        return bool(behind)

    def _client(self) -> KubeClient:
        assert self.kube is not None, "the startup handler connects the client"
        return self.kube

    async def _rewrite(self, name: str, now: datetime) -> bool:
        """Re-evaluate one LVMVolumeGroup from a fresh GET; write only a change, only if unchanged since."""
        client = self._client()
        self.requests += 1
        body = await client.get(LVG_KIND, name)
        if body is None:
            return False
        meta, spec, status = body.get("metadata") or {}, body.get("spec") or {}, body.get("status") or {}
        node_state, agent_state = self.states(_node_of(spec), now)
        agent_state, phase = _deletion_view(meta, status, _node_of(spec), agent_state)
        update = conditions_update(status, node_state, agent_state, meta.get("generation"), now)
        if update is None and phase is None:
            return False
        written: dict[str, Any] = {"conditions": update.conditions} if update is not None else {}
        if phase is not None:
            written["phase"] = phase
        try:
            self.requests += 1
            await client.patch(LVG_KIND, name, {"metadata": {"resourceVersion": meta.get("resourceVersion")},
                                                "status": written}, subresource="status")
        except (Conflict, NotFound):
            return False  # changed or gone since the GET: its event re-evaluates it
        except ApiError as exc:
            log.warning(f"LVMVolumeGroup {name}: readiness not written: {exc}")
            return False
        record_status_write(LVM_VOLUME_GROUP.kind)
        if update is not None:
            _post_ready_event(self.events, body, update.ready_before, update.ready)
        return True


def _deletion_view(meta: Mapping[str, Any], status: Mapping[str, Any], node: str | None,
                   agent_state: ConditionState) -> tuple[ConditionState, str | None]:
    """An LVMVolumeGroup deleted while its agent does not report: only that agent may remove the VG
    and release the finalizer, so AgentReady/Ready say what it waits for and the phase says
    Terminating (instead of the agent's last phase, e.g. Ready, standing forever). Returns the
    AgentReady state to write and the phase to write (None: leave it)."""
    if not meta.get("deletionTimestamp") or agent_state.status == "True":
        return agent_state, None
    phase = None if status.get("phase") == LVGPhase.TERMINATING else LVGPhase.TERMINATING.value
    return deleting_without_agent(node, agent_state), phase


def _post_ready_event(events: EventRecorder | None, body: Mapping[str, Any], before: str | None,
                      ready: ConditionState) -> None:
    if before == ready.status or events is None:
        return
    if ready.status == "True":
        events.record(body, "Normal", "Ready", ready.message)
    elif before is not None:
        events.record(body, "Warning", "NotReady", f"{ready.reason}: {ready.message}")


def register(registry: kopf.OperatorRegistry, *, namespace: str | None = None,
             interval: float = DEFAULT_INTERVAL_SECONDS, lease_grace: float = DEFAULT_LEASE_GRACE_SECONDS,
             clock: Callable[[], datetime] | None = None, dedupe_seconds: float = 60.0) -> ReadinessLoop:
    """Define the LVMVolumeGroup handlers, the Node/Lease/LVG indexes and the readiness loop on
    ``registry``; returns the loop (tests and benchmarks count its passes).

    ``namespace``: where the agents' Leases live (default: :func:`disklet.kube.lease.lease_namespace`); ``interval``:
    seconds between readiness passes; ``lease_grace``: how old a Lease renewal may be; ``clock``: read
    once per evaluation and once per pass, for the Lease's age and the conditions' lastTransitionTime
    (tests pass a counting, stepping or advancing clock).
    """
    ns = namespace or lease_namespace()
    now = clock or (lambda: datetime.now(UTC))
    loop = ReadinessLoop(ns, interval, lease_grace, now)
    loop.events = recorder_for(registry, component=OPERATOR, instance=operator_instance())

    @kopf.on.startup(registry=registry, id="lvg_readiness_client")
    def lvg_readiness_client(**_: Any) -> None:
        # Writes are rare (a node or an agent changing state): two connections (each TLS one holds
        # a 256 KiB buffer) serve the few in flight.
        loop.kube = loop.kube or KubeClient(login=registry_login(registry), field_manager="disklet-operator",
                                            max_connections=2)

    @kopf.on.cleanup(registry=registry, id="lvg_readiness_cleanup")
    async def lvg_readiness_cleanup(**_: Any) -> None:
        await loop.stop()
        if loop.kube is not None:
            await loop.kube.close()

    # Index functions are async: Kopf runs a sync one in its thread pool, a thread hop per watch
    # event (≈ 43 µs against 0.1 µs; docs/performance.md, operator_rss).
    @kopf.index("v1", "nodes", registry=registry, id=NODES_INDEX)
    async def lvg_nodes(name: str, status: Mapping[str, Any], **_: Any) -> dict[str, dict[str, Any] | None]:
        # Only what NodeReady reads (not the heartbeat times, which change on every kubelet update).
        ready = next((c for c in status.get("conditions") or [] if c.get("type") == "Ready"), None)
        return {name: None if ready is None else {k: ready.get(k) for k in ("status", "reason", "message")}}

    def _agent_lease(name: str, namespace: str | None, **_: Any) -> bool:
        return namespace == ns and lease_node(name) is not None

    @kopf.index("coordination.k8s.io", "v1", "leases", registry=registry, id=LEASES_INDEX, when=_agent_lease)
    async def lvg_agent_leases(name: str, spec: Mapping[str, Any], **_: Any) -> dict[str, str | None]:
        return {lease_node(name) or name: spec.get("renewTime") or spec.get("acquireTime")}

    @kopf.index(GROUP, VERSION, PLURAL, registry=registry, id=LVGS_INDEX)
    async def lvg_readiness(name: str, spec: Mapping[str, Any], status: Mapping[str, Any], **_: Any) -> dict[str, IndexedReadiness]:
        conditions = status.get("conditions") or []
        return {name: IndexedReadiness(_node_of(spec), carried_state(conditions, ConditionType.NODE_READY),
                              carried_state(conditions, ConditionType.AGENT_READY))}

    def evaluate(body: kopf.Body, spec: Mapping[str, Any], status: Mapping[str, Any], meta: Mapping[str, Any],
                 labels: Mapping[str, str], patch: kopf.Patch, indexes: Mapping[str, Any]) -> None:
        memo = indexes.get("memo")
        node = _node_of(spec)
        label = node_label_patch(labels, node)
        if not _still_in_flight(memo, "labels", label, not label, dedupe_seconds) and label:
            patch.metadata.setdefault("labels", {}).update(label)
        at = now()  # one reading per evaluation: the Lease's age and any lastTransitionTime
        node_state, agent_state = loop.states(node, at, indexes)
        agent_state, phase = _deletion_view(meta, status, node, agent_state)
        if phase is not None:
            patch.status["phase"] = phase
        update = conditions_update(status, node_state, agent_state, meta.get("generation"), at)
        if update is None:
            _still_in_flight(memo, "conditions", None, True, dedupe_seconds)  # the body shows our last write
            return
        if _still_in_flight(memo, "conditions", update.sent, False, dedupe_seconds):
            return
        patch.status["conditions"] = update.conditions
        record_status_write(LVM_VOLUME_GROUP.kind)
        _post_ready_event(loop.events, body, update.ready_before, update.ready)

    @kopf.on.event(GROUP, VERSION, PLURAL, registry=registry, id="lvg-bookkeeping")
    async def lvg_bookkeeping(event: Mapping[str, Any], body: kopf.Body, spec: Mapping[str, Any], status: Mapping[str, Any],
                        meta: Mapping[str, Any], labels: Mapping[str, str], patch: kopf.Patch, **kwargs: Any) -> None:
        loop.ensure_started(kwargs)
        if event.get("type") == "DELETED":
            return
        evaluate(body, spec, status, meta, labels, patch, kwargs)

    return loop

