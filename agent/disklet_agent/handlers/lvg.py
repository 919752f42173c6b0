"""Kopf wiring of this node's LVMVolumeGroups (thin: the LVM engine decides, this module routes).

- startup: re-attach managed backing files (``engine.reattach``) of this node's LVGs, listed from
  the API, before any handler runs (Kopf starts watching only after startup handlers finish);
- create/update/resume: resolve the selected BlockDevices from the Kopf index, run
  ``engine.reconcile`` in a thread, write status only when the engine says ``changed``, post its
  Events, retry after ``requeue_after``;
- periodic check (scan interval): ONE task for the node (not a Kopf timer per object) walks the
  LVGs in the watch-fed index and reconciles again only a VG that is not converged
  (``needs_reconcile``); converged VGs are refreshed by the node discovery cycle. An object that
  leaves the index (deleted, or relabelled out of the node's label-filtered watch) gets no further
  pass. Kopf's own timers are not used here: Kopf forgets an object's memory when the watch says
  DELETED without stopping its timers, so an object that left the filtered watch and came back
  kept its old timer running beside a new one, even after it was deleted;
- node discovery cycle (scan interval): ONE LVM snapshot → ``engine.discover`` over every LVG of
  the node → status written only where it differs;
- delete (finalizer ``disklet.io/agent``): ``engine.delete``; while not done the finalizer stays,
  status shows Terminating with the condition, and the handler retries.

Ownership is ``spec.local.nodeName``, never the ``disklet.io/node`` label (a routing hint for the
watch). The handlers are registered WITHOUT a node filter, so Kopf keeps the finalizer on every
object routed here (Kopf strips the finalizer of objects no handler matches); each handler acts
only when ``nodeName`` is this node. A mislabelled object is reported (condition
``VGConfigurationApplied=False/NodeLabelMismatch`` and one Warning Event) and left alone: its
delete handler never completes here, so this agent never releases it. The agent of ``nodeName``
releases the finalizer only after the engine proved the cleanup, and only while the node's agent
Lease is held by this node and fresh.

Refused objects: the handler's retry is the only retry (the timer skips an object reconciled less
than a scan interval ago), and Events are posted only when the status changed.

Every engine call and the status write that follows run under one per-node lock, so two writers
never interleave.

Metrics (``disklet.observe``): every engine reconcile/delete is a ``LVMVolumeGroup`` reconcile
(success, retry when not converged, error); each status the engine or discovery returns sets the
VG and thin-pool gauges (dropped on delete); the discovery cycle sets the managed loop devices.
Status transitions (spec applied, file devices in/out) are posted as Events next to the engine's.
"""

from __future__ import annotations

import asyncio
import copy
import logging
import time
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import kopf
from pydantic import ValidationError

from disklet.api.common import get_condition, parse_rfc3339, set_condition
from disklet.api.lvm import ConditionType, LVMVolumeGroupSpec, LVMVolumeGroupStatus, Reason
from disklet.api.resources import LVM_VOLUME_GROUP, NODE_LABEL
from disklet.kube.events import AGENT, EventRecorder
from disklet.kube.lease import lease_name, lease_namespace
from disklet.labels import node_label_value
from disklet.observe import (
    RETRY,
    LvgGauges,
    count_managed_loops,
    lvg_status_events,
    reconcile_timer,
    record_status_write,
    set_managed_loop_devices,
)

from ..deps import AgentDeps
from ..kube import CONSISTENT, AgentKube, ApiError, NodeObjects
from ..logic.lvg import (
    contested_devices,
    merge_discovered,
    name_conflict_event,
    needs_reconcile,
    selected_block_devices,
    status_merge_patch,
    with_operator_conditions,
)
from ..lvm.ports import LvgEngine
from ..tasks import BackgroundTasks
from .blockdevices import INDEX_ID

OBJECTS_INDEX_ID = "disklet_lvg_objects"
"""Kopf index of this node's LVMVolumeGroups (name → metadata essentials, spec, status), fed by the watch."""

log = logging.getLogger("disklet.agent.lvm")
KIND = LVM_VOLUME_GROUP.kind
MIN_RETRY_SECONDS = 1.0


def owner_node(obj: Mapping[str, Any]) -> str | None:
    """The node that owns the object: ``spec.local.nodeName`` (never the label)."""
    return ((obj.get("spec") or {}).get("local") or {}).get("nodeName")


def _status_of(obj: Mapping[str, Any]) -> LVMVolumeGroupStatus | None:
    raw = obj.get("status")
    if not raw:
        return None
    try:
        return LVMVolumeGroupStatus.model_validate(dict(raw))
    except ValidationError:
        return None


def spec_ignoring_bad_match(raw: Mapping[str, Any]) -> LVMVolumeGroupSpec:
    """The spec to remove, re-attach or discover a VG by. A selector's ``match`` only chooses new
    devices, so one the model refuses (the API server cannot type-check it) must not keep the
    finalizer forever or leave file devices detached after a reboot: it is dropped for these; the
    reconcile itself reports it (``invalid_spec``). Anything else invalid still raises."""
    try:
        return LVMVolumeGroupSpec.model_validate(dict(raw))
    except ValidationError:
        spec = copy.deepcopy(dict(raw))
        selector = spec.get("blockDeviceSelector")
        if isinstance(selector, dict) and "match" in selector:
            selector.pop("match")
            return LVMVolumeGroupSpec.model_validate(spec)
        raise


def _index_entries(index: Any) -> list[tuple[Any, ...]]:
    """(name, labels, path, status) from the BlockDevice Kopf index (name → store of (labels, path, status))."""
    out: list[tuple[Any, ...]] = []
    if index is None:
        return out
    for name in list(index):
        for value in index[name]:
            out.append((name, *value))
    return out


@dataclass(frozen=True)
class LastReconcile:
    """The last engine reconcile of one LVMVolumeGroup by this agent."""

    at: float
    """time.monotonic() when it finished."""
    generation: int | None
    requeue_after: float | None
    """What the engine asked for (None: converged)."""


class LvgWiring:
    """State shared by this node's LVG handlers: engine, client, lock, and what happened (for tests)."""

    def __init__(self, deps: AgentDeps, engine: LvgEngine, kube: AgentKube, lock: asyncio.Lock):
        self.deps = deps
        self.node = deps.config.node_name
        self.interval = deps.config.scan_interval_seconds
        self.engine = engine
        self.kube = kube
        self.lock = lock
        self.reattach_problems: list[str] | None = None
        """None until the startup re-attach ran; then its per-file problems."""
        self.pending_events: dict[str, list[tuple[str, str, str]]] = {}
        """Events found at startup, posted by the object's first handler (Kopf posts only from handlers)."""
        self.gauges = LvgGauges()
        """VG/thin-pool gauges, published from every status the engine returns."""
        self.events = EventRecorder(kube, component=AGENT, instance=self.node)
        """Events on the object itself (disklet.kube.events): what `kubectl describe lvg` shows."""
        self.overlaps: dict[str, str] = {}
        """LVMVolumeGroup → the selection overlap last reported for it (see ``contested``)."""
        self.last_reconcile: dict[str, LastReconcile] = {}
        """Each object's last engine reconcile: (monotonic end time, generation, requeue_after)."""
        self.retrying: set[str] = set()
        """Objects whose handler is retrying (Kopf's delay): the timer leaves them to that retry."""
        self.name_conflicts: dict[str, str] = {}
        """LVMVolumeGroup → the VG name conflict its status last reported (by a reconcile or the
        discovery cycle): the discovery cycle posts its Event only when it differs, so a cycle that
        reads a watched status older than the reconcile's write does not post the same Event again."""
        self.block_devices: Any = None
        """The node's BlockDevice Kopf index (handed to the startup handler) for the periodic check."""
        self.objects = NodeObjects(kube, LVM_VOLUME_GROUP, self.node, first_read=CONSISTENT,
                                   resync_seconds=deps.config.resync_interval_seconds)
        """This node's LVGs from the watch (a LIST only to resync): docs/agent.md ("API requests at
        idle"). The first LIST is a consistent read: the startup re-attach acts on the host from it."""

    def mine(self, obj: Mapping[str, Any]) -> bool:
        return owner_node(obj) == self.node

    # ---------------------------------------------------------------- not ours
    async def mislabelled(self, name: str, body: Mapping[str, Any]) -> None:
        """Routed here by its label but owned by another node: report once, touch nothing, release nothing."""
        owner = owner_node(body) or "(none)"
        label = ((body.get("metadata") or {}).get("labels") or {}).get(NODE_LABEL, "")
        msg = (f"labelled {NODE_LABEL}={label} but spec.local.nodeName is {owner}: the agent of {self.node} does "
               f"not manage it and keeps its finalizer; set the label to {owner} (the operator does so) so the agent "
               f"of {owner} handles it")
        current = _status_of(body) or LVMVolumeGroupStatus()
        new = current.model_copy(deep=True)
        new.conditions = set_condition(list(current.conditions or []), ConditionType.VG_CONFIGURATION_APPLIED,
                                       "False", Reason.NODE_LABEL_MISMATCH, msg,
                                       current.observed_generation)
        if new.to_wire() == current.to_wire():
            return  # already reported: one Event per transition
        log.warning("mislabelled LVMVolumeGroup left alone", extra={"lvg": name, "node": self.node})
        self._post(body, [("Warning", Reason.NODE_LABEL_MISMATCH, msg)])
        try:
            await self._write_status(name, body.get("status"), new)
        except ApiError as exc:  # e.g. refused by the per-node admission policy: the Event stays
            log.warning("cannot report the label mismatch in status: %s", exc, extra={"lvg": name})

    async def invalid_spec(self, name: str, obj: Mapping[str, Any], exc: ValidationError) -> None:
        """A spec the model refuses (e.g. a blockDeviceSelector.match that does not type-check): status
        VGConfigurationApplied=False/ValidationFailed naming the field, one Warning per change; nothing
        on the node is touched."""
        msg = "invalid spec, nothing done: " + "; ".join(
            f"spec.{'.'.join(str(p) for p in e.get('loc', ()))}: {e.get('msg', 'invalid')}" for e in exc.errors())
        current = _status_of(obj) or LVMVolumeGroupStatus()
        new = current.model_copy(deep=True)
        new.conditions = set_condition(list(current.conditions or []), ConditionType.VG_CONFIGURATION_APPLIED,
                                       "False", Reason.VALIDATION_FAILED, msg[:1000],
                                       (obj.get("metadata") or {}).get("generation"))
        if new.to_wire() == current.to_wire():
            return
        log.warning("invalid LVMVolumeGroup spec: %s", msg, extra={"lvg": name, "node": self.node})
        self._post(obj, [("Warning", Reason.VALIDATION_FAILED, msg)])
        try:
            await self._write_status(name, obj.get("status"), new)
        except ApiError as exc2:
            log.warning("cannot report the invalid spec in status: %s", exc2, extra={"lvg": name})

    async def holds_node_lease(self) -> str | None:
        """None when this node's agent Lease names this node and is fresh; else why not."""
        name = lease_name(self.node)
        try:
            lease = await self.kube.get_lease(lease_namespace(), name)
        except ApiError as exc:
            return f"cannot read the agent Lease {name}: {exc}"
        spec = (lease or {}).get("spec") or {}
        if spec.get("holderIdentity") != self.node:
            return f"the agent Lease {name} is held by {spec.get('holderIdentity')!r}, not by node {self.node}"
        renewed = parse_rfc3339(spec.get("renewTime") or "")
        duration = float(spec.get("leaseDurationSeconds") or 0)
        if renewed is None or (time.time() - renewed.timestamp()) > duration:
            return f"the agent Lease {name} is not fresh"
        return None

    # ---------------------------------------------------------------- startup
    async def reattach(self) -> list[str]:
        items = [o for o in await self.objects.items() if self.mine(o)]
        lvgs: list[tuple[str, LVMVolumeGroupSpec, LVMVolumeGroupStatus | None]] = []
        for obj in items:
            name = obj["metadata"]["name"]
            try:
                lvgs.append((name, spec_ignoring_bad_match(obj["spec"]), _status_of(obj)))
            except ValidationError as exc:
                log.warning("re-attach skips an invalid LVMVolumeGroup", extra={"lvg": name, "error": str(exc)})
        async with self.lock:
            found = list(await asyncio.to_thread(self.engine.reattach, lvgs)) if lvgs else []
        problems: list[str] = []
        for problem in found:  # each bound to its LVMVolumeGroup by the engine
            log.error("re-attach problem: %s", problem.message, extra={"node": self.node, "lvg": problem.lvg})
            self.pending_events.setdefault(problem.lvg, []).append(("Warning", "ReattachFailed", problem.message))
            problems.append(problem.message)
        self.reattach_problems = problems
        log.info("startup re-attach done", extra={"node": self.node, "lvgs": len(lvgs), "problems": len(problems)})
        return problems

    # ---------------------------------------------------------------- reconcile
    async def _write_status(self, name: str, current: Mapping[str, Any] | None,
                            new: LVMVolumeGroupStatus) -> dict[str, Any] | None:
        """The server's answer when a patch was written; None when nothing differed."""
        patch = status_merge_patch(current, new.to_wire())
        if patch is None:
            return None
        answer = await self.kube.patch_status(LVM_VOLUME_GROUP, name, patch)
        record_status_write(KIND)
        return answer

    def _post(self, body: Mapping[str, Any], events: Iterable[tuple[str, str, str]]) -> None:
        for type_, reason, message in events:
            self.events.record(body, type_, reason, message)

    async def contested(self, name: str, spec: LVMVolumeGroupSpec, entries: list[tuple[Any, ...]]) -> dict[str, list[str]]:
        """Consumable devices this LVMVolumeGroup's selector shares with another one of the node. Neither
        takes them (a Warning Event names both) until the selections are made disjoint."""
        if spec.block_device_selector is None:
            return {}
        others: list[tuple[str, Any]] = []
        for obj in await self.objects.items():
            other = str((obj.get("metadata") or {}).get("name") or "")
            if other == name or not self.mine(obj):
                continue
            try:
                others.append((other, LVMVolumeGroupSpec.model_validate(dict(obj.get("spec") or {})).block_device_selector))
            except ValidationError:
                continue
        contested = contested_devices(spec.block_device_selector, entries, others)
        if contested:
            named = sorted({o for v in contested.values() for o in v})
            shared = "; ".join(f"{path} also selected by {' and '.join(o)}" for path, o in contested.items())
            msg = (f"blockDeviceSelector of LVMVolumeGroup {name} overlaps with LVMVolumeGroup {', '.join(named)} on "
                   f"this node ({shared}); neither takes these devices until the selections are made disjoint")
            if self.overlaps.get(name) != msg:  # one Event per change, not one per timer tick
                log.warning(msg, extra={"lvg": name, "node": self.node})
                self.pending_events.setdefault(name, []).append(("Warning", "SelectionOverlap", msg))
            self.overlaps[name] = msg
        else:
            self.overlaps.pop(name, None)
        return contested

    def converged_as_seen(self, seen: Mapping[str, Any], index: Any) -> bool:
        """Nothing to do as the watch last showed the object (no request); the reconcile itself re-reads."""
        meta = seen.get("metadata") or {}
        if meta.get("deletionTimestamp") or not self.mine(seen) or seen.get("spec") is None:
            return False
        try:
            spec = LVMVolumeGroupSpec.model_validate(dict(seen["spec"]))
        except ValidationError:
            return False
        bds = selected_block_devices(spec.block_device_selector, _index_entries(index))
        return needs_reconcile(spec, _status_of(seen), meta.get("generation"), bds, self.node) is None

    async def reconcile(self, name: str, index: Any, *, only_if_needed: bool = False,
                        raise_on_requeue: bool = True, seen: Mapping[str, Any] | None = None) -> str:
        """One reconcile of ``name`` from the server's current object; returns what happened.

        ``seen`` (timer): the object as watched; when it shows nothing to do, no request is made."""
        if only_if_needed and seen is not None and self.converged_as_seen(seen, index):
            return "converged"
        rid = uuid.uuid4().hex[:8]
        pending = self.pending_events.pop(name, [])
        async with self.lock:
            obj = await self.kube.get(LVM_VOLUME_GROUP, name)
            if obj is None or not self.mine(obj) or (obj.get("metadata") or {}).get("deletionTimestamp"):
                return "skipped"
            self._post(obj, pending)
            try:
                spec = LVMVolumeGroupSpec.model_validate(dict(obj["spec"]))
            except ValidationError as exc:
                # what the API server cannot check (a selector's match is type-checked here): report, touch nothing
                await self.invalid_spec(name, obj, exc)
                return "invalid"
            current = _status_of(obj)
            generation = (obj.get("metadata") or {}).get("generation")
            entries = _index_entries(index)
            bds = selected_block_devices(spec.block_device_selector, entries)
            contested = await self.contested(name, spec, entries)
            if contested:
                bds = [(n, p) for n, p in bds if p not in contested]
                self._post(obj, self.pending_events.pop(name, []))
            if only_if_needed:
                why = needs_reconcile(spec, current, generation, bds, self.node)
                if why is None:
                    return "converged"
                log.info("timer reconcile: %s", why, extra={"lvg": name, "reconcile_id": rid})
            last = self.last_reconcile.get(name)
            fresh = last is not None and last.generation == generation and time.monotonic() - last.at < 0.5 * (
                last.requeue_after or self.interval)
            if only_if_needed and (name in self.retrying or fresh):
                return "recent"  # the handler's own retry covers a refused object: one reconcile per cycle
            if fresh and last is not None and last.requeue_after and raise_on_requeue:
                # A timer reconcile of this generation just ran and was refused: wait for the next cycle.
                self.retrying.add(name)
                raise kopf.TemporaryError(f"LVMVolumeGroup {name} not converged; retrying",
                                          delay=max(MIN_RETRY_SECONDS, float(last.requeue_after)))
            with reconcile_timer(KIND) as counted:  # timer checks that find nothing to do are not reconciles
                outcome = await asyncio.to_thread(self.engine.reconcile, name, spec, current, bds, generation)
                self.last_reconcile[name] = LastReconcile(time.monotonic(), generation, outcome.requeue_after)
                self.gauges.publish(name, spec.actual_vg_name_on_the_node, outcome.status)
                written = False
                if outcome.changed:
                    new = with_operator_conditions(outcome.status, current)
                    written = await self._write_status(name, obj.get("status"), new) is not None
                self.note_name_conflict(name, outcome.status)
                transition = lvg_status_events(self.node, spec.actual_vg_name_on_the_node, current, outcome.status)
                self._post(obj, [*outcome.events, *transition])
                log.info("reconciled", extra={"lvg": name, "reconcile_id": rid, "changed": outcome.changed,
                                              "host_changed": outcome.host_changed, "status_written": written,
                                              "phase": str(outcome.status.phase)})
                if outcome.requeue_after and raise_on_requeue:
                    self.retrying.add(name)
                    raise kopf.TemporaryError(f"LVMVolumeGroup {name} not converged; retrying",
                                              delay=max(MIN_RETRY_SECONDS, float(outcome.requeue_after)))
                if outcome.requeue_after:
                    counted.result = RETRY
                if not only_if_needed:
                    self.retrying.discard(name)
        return "written" if written else "unchanged"

    def note_name_conflict(self, name: str, status: LVMVolumeGroupStatus) -> None:
        ready = get_condition(status.conditions, ConditionType.VG_READY)
        if ready is not None and ready.reason == Reason.VG_NAME_CONFLICT:
            self.name_conflicts[name] = ready.message
        else:
            self.name_conflicts.pop(name, None)

    # ---------------------------------------------------------------- periodic check
    async def timer_pass(self, index: Any) -> None:
        """One pass over this node's LVMVolumeGroups as the watch last showed them (the Kopf index:
        an object the watch no longer shows — deleted, or relabelled out of the node's selector — is
        not there). Each is looked up again right before its check, so one that left during the pass
        is skipped. A failure of one does not stop the others."""
        lvgs = self.objects.index
        if lvgs is None:
            return
        for name in sorted(list(lvgs)):
            seen = next(iter(lvgs.get(name, ())), None)
            if seen is None or not self.mine(seen) or (seen.get("metadata") or {}).get("deletionTimestamp"):
                continue
            try:
                await self.reconcile(name, index, only_if_needed=True, raise_on_requeue=False, seen=seen)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.error("periodic LVMVolumeGroup check failed: %r", exc, extra={"lvg": name, "node": self.node})

    async def timer_loop(self, interval: float) -> None:
        """The periodic check, every ``interval`` (the first one ``interval`` after start)."""
        while True:
            await asyncio.sleep(interval)
            await self.timer_pass(self.block_devices)

    # ---------------------------------------------------------------- delete
    async def delete(self, name: str, body: Mapping[str, Any]) -> None:
        with reconcile_timer(KIND):  # a finalizer kept counts as retry
            async with self.lock:
                obj = await self.kube.get(LVM_VOLUME_GROUP, name) or dict(body)
                spec = spec_ignoring_bad_match(obj.get("spec") or {})
                current = _status_of(obj)
                outcome = await asyncio.to_thread(self.engine.delete, name, spec, current)
                if outcome.done and (why := await self.holds_node_lease()) is not None:
                    outcome = outcome.kept(f"cleaned up on the node, but the finalizer is kept: {why}")
                written = False
                if not outcome.done:
                    written = await self._write_status(name, obj.get("status"),
                                                       with_operator_conditions(outcome.status, current)) is not None
            # Host changes always; a Warning only when the reason changed (one Event per transition).
            self._post(obj, [e for e in outcome.events if outcome.done or written or e[0] == "Normal"])
            if not outcome.done:
                raise kopf.TemporaryError(f"LVMVolumeGroup {name} cannot be removed yet; finalizer kept",
                                          delay=max(MIN_RETRY_SECONDS, self.deps.config.refused_retry_seconds))
            self.gauges.forget(name)
            self.last_reconcile.pop(name, None)
            self.name_conflicts.pop(name, None)
        log.info("volume group removed; finalizer released", extra={"lvg": name})

    # ---------------------------------------------------------------- node discovery
    async def discover_once(self) -> list[str]:
        """One shared LVM snapshot for every LVG of the node; returns the names whose status was written."""
        written: list[str] = []
        async with self.lock:
            items = [o for o in await self.objects.items()
                     if self.mine(o) and not (o.get("metadata") or {}).get("deletionTimestamp") and o.get("status")]
            lvgs: list[tuple[str, LVMVolumeGroupSpec]] = []
            by_name: dict[str, Mapping[str, Any]] = {}
            for obj in items:
                name = obj["metadata"]["name"]
                try:
                    lvgs.append((name, spec_ignoring_bad_match(obj["spec"])))
                    by_name[name] = obj
                except ValidationError:
                    continue
            if not lvgs:
                set_managed_loop_devices(0)
                return written
            found = await asyncio.to_thread(self.engine.discover, lvgs)
            specs = dict(lvgs)
            statuses = {name: _status_of(obj) for name, obj in by_name.items()}
            for name, discovered in found.items():
                seen = by_name.get(name)
                if discovered is None or seen is None:
                    continue  # unreadable this cycle: keep the last status rather than write a partial one
                current = statuses[name]
                merged = statuses[name] = merge_discovered(current, discovered)
                self.gauges.publish(name, specs[name].actual_vg_name_on_the_node, merged)
                try:
                    answer = await self._write_status(name, seen.get("status"), merged)
                except ApiError:
                    self.objects.write_failed()  # the watched view may be behind: the next cycle relists
                    raise
                if answer is not None:
                    written.append(name)
                    self.objects.wrote(answer)  # reaches the watch later: the next cycle relists, not older
                    event = name_conflict_event(current, merged)
                    if event is not None and self.name_conflicts.get(name) != event[2]:
                        log.warning("volume group name conflict: %s", event[2], extra={"lvg": name})
                        self._post(answer, [event])
                    self.note_name_conflict(name, merged)
            set_managed_loop_devices(count_managed_loops(self.node, statuses.values()))
        return written

    async def discovery_loop(self, interval: float) -> None:
        while True:
            await asyncio.sleep(interval)
            try:
                names = await self.discover_once()
                if names:
                    log.info("discovered status changes", extra={"node": self.node, "lvgs": names})
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.error("LVM discovery cycle failed: %r", exc, extra={"node": self.node})


def register(registry: kopf.OperatorRegistry, deps: AgentDeps, *, engine: LvgEngine | None = None,
             kube: AgentKube | None = None,
             tasks: BackgroundTasks | None = None, lock: asyncio.Lock | None = None) -> LvgWiring:
    """This node's LVMVolumeGroup handlers; returns the wiring (tests inspect it)."""
    node = deps.config.node_name
    if engine is None:
        from ..lvm.engine import HostLvgEngine
        engine = HostLvgEngine(deps.runner, deps.config)
    wiring = LvgWiring(deps, engine, kube or AgentKube(), lock or asyncio.Lock())
    tasks = tasks or BackgroundTasks.attach(registry)
    interval = deps.config.scan_interval_seconds
    res = (LVM_VOLUME_GROUP.group, LVM_VOLUME_GROUP.version, LVM_VOLUME_GROUP.plural)
    labels = {NODE_LABEL: node_label_value(node)}
    # No node filter on the handlers (see the module docstring): Kopf must keep the finalizer of
    # every object routed here; each handler checks spec.local.nodeName itself.

    @kopf.index(*res, registry=registry, labels=labels, id=OBJECTS_INDEX_ID)
    def disklet_lvg_objects(name: str, body: Any, **_: Any) -> dict[str, dict[str, Any]]:
        meta = body.get("metadata") or {}
        kept = {k: meta.get(k) for k in ("name", "generation", "labels", "deletionTimestamp") if meta.get(k) is not None}
        return {name: copy.deepcopy({"metadata": kept, "spec": dict(body.get("spec") or {}),
                                     "status": dict(body.get("status") or {})})}

    @kopf.on.startup(registry=registry, backoff=5)
    async def disklet_lvg_reattach(**kwargs: Any) -> None:
        wiring.objects.index = kwargs.get(OBJECTS_INDEX_ID)
        wiring.block_devices = kwargs.get(INDEX_ID)
        await wiring.reattach()
        tasks.start(f"lvm discovery {node}", wiring.discovery_loop(interval))
        tasks.start(f"lvm periodic check {node}", wiring.timer_loop(interval))

    @kopf.on.resume(*res, registry=registry, labels=labels)
    @kopf.on.create(*res, registry=registry, labels=labels)
    @kopf.on.update(*res, registry=registry, labels=labels, field="spec")
    async def disklet_lvg_reconcile(name: str, body: Any, **kwargs: Any) -> None:
        if not wiring.mine(body):
            await wiring.mislabelled(name, body)
            return
        await wiring.reconcile(name, kwargs.get(INDEX_ID))

    @kopf.on.update(*res, registry=registry, labels=labels, field=("metadata", "labels"))
    async def disklet_lvg_relabelled(name: str, body: Any, **_: Any) -> None:
        if not wiring.mine(body):
            await wiring.mislabelled(name, body)

    @kopf.on.delete(*res, registry=registry, labels=labels)
    async def disklet_lvg_delete(name: str, body: Any, **_: Any) -> None:
        if not wiring.mine(body):
            await wiring.mislabelled(name, body)
            # Never completes here: only the agent of spec.local.nodeName may release the finalizer.
            raise kopf.TemporaryError(f"LVMVolumeGroup {name} belongs to node {owner_node(body)}; finalizer kept",
                                      delay=max(MIN_RETRY_SECONDS, interval))
        await wiring.delete(name, body)

    return wiring
