"""Kopf handlers: apply this node's DiskLayout (docs/design/disklayout.md#flow, steps 2–4). Thin: the decisions
live in :mod:`disklet_agent.logic.disklayout` (pure), the work in disklayout.gate/apply.

Triggers: every watch event of an object for this node (``on.event``; Kopf writes the status
patch), plus the retry: ONE task of the node (not a Kopf timer per object) walks, every
``refused_retry_seconds``, the DiskLayouts the watch shows (a Kopf index, no request) and retries
each one that is pending or refused and not applied at its layoutGeneration (refused layouts are
retried until clear; pending ones re-check the management mode). Each is read from the API server
right before its retry, and retried only when the live object still is due; the retry writes the
status itself. An object the watch no longer shows (deleted, or relabelled out of the node's
label selector) is not retried; when it comes back it is retried again, once per interval. Kopf's
timers are not used: Kopf forgets an object whose watch says DELETED (leaving the selector says
so too) without stopping its timers, so each round trip left one more timer behind; they also
needed a finalizer, and deleting a DiskLayout never touches the node and must not wait for it:
the agent puts no finalizer on DiskLayouts.

A DELETED watch event is not taken as a deletion: the object may only have left the node's
selector, and is worked on again when it comes back. The agent's bookkeeping of the object (memo,
refusal counted) is dropped only once the API server confirms it is gone. One run per object at a
time; a memo of finished generations guards against stale bodies, and right before disko the live
object is read again and must be the one judged.

Metrics: every run is a ``DiskLayout`` reconcile whose result follows the phase it reached
(applied/pending → success, refused → refused, failed → error; busy → retry); a refusal code is
counted once per transition into it (not per retry, nor when the object leaves the node's watch and
comes back); each status change is a status write. A status change posts one Event (a refusal: one
per transition).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import kopf

from disklet.advice import event_message
from disklet.api.disklayout import DiskLayoutSpec, Phase, RefusalCode
from disklet.api.resources import DISK_LAYOUT
from disklet.kube.events import AGENT, MAX_MESSAGE, EventRecorder
from disklet.observe import (
    ERROR,
    REFUSED,
    RETRY,
    SUCCESS,
    ReconcileRecord,
    reconcile_timer,
    record_refusal,
    record_status_write,
)
from disklet_agent.deps import AgentDeps
from disklet_agent.disklayout.apply import ApplyBusy, ApplyOutcome, apply_layout, expectation_from
from disklet_agent.disklayout.gate import ApplyPlan, plan_apply
from disklet_agent.disklayout.mode import ModeReading, read_management_mode
from disklet_agent.disklayout.selection import Selection, pinned_identities, resolve_selectors
from disklet_agent.host.lsblk import ProbeFailed, read_block_topology
from disklet_agent.kube import AgentKube
from disklet_agent.logic.disklayout import (
    Desired,
    Memo,
    decide,
    desired_from_outcome,
    desired_from_plan,
    outcome_status,
    stale_reason,
)
from disklet_agent.tasks import BackgroundTasks, every, walk_watched

KIND = DISK_LAYOUT.kind
RESULTS = {Phase.APPLIED: SUCCESS, Phase.PENDING: SUCCESS, Phase.REFUSED: REFUSED, Phase.FAILED: ERROR}
OBJECTS_INDEX_ID = "disklet_disklayout_objects"
"""Kopf index of this node's DiskLayouts (name → what the retry needs to know it is due), fed by the watch."""

log = logging.getLogger("disklet.agent.disklayout")
StatusWriter = Callable[[dict[str, Any]], Awaitable[None]]
"""Sends the status fields that changed (Kopf's patch in a handler; a status PATCH in the retry)."""


def retry_due(obj: Mapping[str, Any], node: str) -> bool:
    """Pending or refused on ``node``, and not applied at its layoutGeneration: the retry's business."""
    spec, status = obj.get("spec") or {}, obj.get("status") or {}
    return bool(node) and spec.get("nodeName") == node and status.get("phase") in (Phase.PENDING, Phase.REFUSED) \
        and status.get("layoutGeneration") is not None \
        and status.get("layoutGeneration") != status.get("appliedLayoutGeneration")


def uid_of(body: Mapping[str, Any]) -> str:
    meta = body.get("metadata") or {}
    return str(meta.get("uid") or meta.get("name"))


class DiskLayoutAgent:
    """The agent's DiskLayout handlers, one method per step: pick → judge (mode, gate) → confirm the
    object is still current → apply the checked artifact → write status → emit an Event."""

    def __init__(self, deps: AgentDeps, kube: AgentKube | None = None):
        self.deps = deps
        self.cfg = deps.config
        self.reader = kube or AgentKube()
        self.events = EventRecorder(self.reader, component=AGENT, instance=self.cfg.node_name)
        """Events on the object itself (disklet.kube.events): what `kubectl describe dl` shows."""
        self.index: Any = None
        """The watch-fed Kopf index of this node's DiskLayouts (:data:`OBJECTS_INDEX_ID`), from the startup handler."""
        self.locks: dict[str, asyncio.Lock] = {}
        self.memos: dict[str, Memo] = {}
        self.refusals: dict[str, tuple[Any, str | None]] = {}
        """uid → (layoutGeneration, code) last counted in disklet_refusals_total (a stale body re-judged
        by the retry, or an object back in the watch, must not count the same refusal twice)."""

    # -- filters ---------------------------------------------------------------------------------
    def mine(self, spec: kopf.Spec, **_: Any) -> bool:
        node = self.cfg.node_name
        return bool(node) and spec.get("nodeName") == node

    async def left_watch(self, body: kopf.Body) -> None:
        """The watch said DELETED: the object was deleted, or only left the node's label selector
        (relabelled; it is worked on again when it comes back). Its bookkeeping goes only when the
        API server says it is gone (a run still holding its lock keeps the lock)."""
        uid, name = uid_of(body), str(body.get("metadata", {}).get("name"))
        try:
            live = await self.reader.get(DISK_LAYOUT, name)
        except Exception as exc:  # noqa: BLE001 - keep the bookkeeping; a later event tells
            log.warning("cannot tell whether DiskLayout %s was deleted (%s); keeping its bookkeeping", name, exc)
            return
        if live is None or uid_of(live) != uid:
            self.forget(uid)

    def forget(self, uid: str) -> None:
        self.memos.pop(uid, None)
        self.refusals.pop(uid, None)
        lock = self.locks.get(uid)
        if lock is not None and not lock.locked():
            self.locks.pop(uid, None)

    # -- the retry -------------------------------------------------------------------------------
    async def retry_pass(self) -> None:
        """One retry pass over this node's DiskLayouts as the watch shows them (``tasks.walk_watched``)."""
        await walk_watched(self.index, self.retry, what="DiskLayout retry", node=self.cfg.node_name,
                           key="disklayout")

    async def retry(self, name: str, seen: Mapping[str, Any]) -> None:
        """Retry one DiskLayout: only when, as watched AND as read now from the API server, it is due
        and still in the node's watch; the run works on the object just read, and writes its status."""
        node = self.cfg.node_name
        if not retry_due(seen, node):
            return
        live = await self.reader.get(DISK_LAYOUT, name)
        if live is None or (live.get("metadata") or {}).get("deletionTimestamp") or not retry_due(live, node) \
                or self.index is None or name not in self.index:
            return

        async def write(changed: dict[str, Any]) -> None:
            await self.reader.patch_status(DISK_LAYOUT, name, changed)

        await self.reconcile(live, write, log, "timer")

    # -- the run ---------------------------------------------------------------------------------
    async def reconcile(self, body: Mapping[str, Any], write: StatusWriter, logger: Any, trigger: str) -> None:
        uid = uid_of(body)
        status = dict(body.get("status") or {})
        if not decide(status, trigger, self.memos.get(uid)):
            return
        lock = self.locks.setdefault(uid, asyncio.Lock())
        if lock.locked():
            return  # a run is in progress; the retry picks up anything newer afterwards
        async with lock:
            with reconcile_timer(KIND) as counted:
                mode = await asyncio.to_thread(read_management_mode, self.cfg.etc_dir)
                step = await self.judge(body, status, mode, uid, logger)
                if step is None:
                    counted.result = RETRY
                    return
                desired, targets = step
                await self.write_status(body, status, write, desired, mode, targets, uid, counted)

    async def judge(self, body: Mapping[str, Any], status: dict[str, Any], mode: ModeReading, uid: str,
                    logger: Any) -> tuple[Desired, list[str] | None] | None:
        """What the object's status should become; None: nothing now (retry later)."""
        if not mode.controller_managed:
            return Desired(Phase.PENDING, f"waiting: {mode.explain('/etc/disklet')}", "InstallerOnly",
                           attempted=False), None
        from disklet.layout import LayoutError, resolve_body

        try:
            spec = DiskLayoutSpec.model_validate(dict(body.get("spec") or {}))
            text, _source = resolve_body(spec)
        except (ValueError, LayoutError) as exc:
            return Desired(Phase.FAILED, f"invalid layout: {exc}", "Failed"), None
        selection: Selection | None = None
        preflighted_hash: str | None = None
        if spec.disk_layout is not None and any(d.match is not None for d in spec.disk_layout.disks):
            step = await asyncio.to_thread(self.select_disks, spec, status)
            if isinstance(step, Desired):
                return step, None
            selection, text, preflighted_hash = step
        plan = await asyncio.to_thread(plan_apply, text, runner=self.deps.runner, config=self.cfg,
                                       allow_destructive=spec.allow_destructive_changes,
                                       aliases=selection.aliases if selection else None)
        targets = plan.targets or None
        refused = desired_from_plan(plan)
        if refused is not None:
            return refused, targets
        if selection is not None:
            # the operator pre-flighted the layout with placeholders for the match disks
            plan.message = "; ".join([*selection.lines, plan.message])
        if status.get("layoutHash") and (preflighted_hash or plan.layout_hash) != status.get("layoutHash"):
            logger.info("layout changed since the operator's pre-flight; waiting for a new layoutGeneration")
            return None
        if not await self.still_current(body, uid, logger):
            return None
        outcome = await self.apply(plan, spec, logger)
        if outcome is None:
            return None
        if selection is not None:
            outcome.message = "; ".join([*selection.lines, outcome.message])
            if outcome.identities:
                outcome.identities = pinned_identities(outcome.identities, selection)
        return desired_from_outcome(outcome), targets

    def select_disks(self, spec: DiskLayoutSpec, status: dict[str, Any]) -> Desired | tuple[Selection, str, str]:
        """The devices of the layout's match disks (pinned identities first) and the concrete body;
        or a refusal. Also the hash the operator computed (with placeholders) to compare with."""
        from disklet.layout.hashing import layout_hash
        from disklet.layout.render import devices_value, render_disko_nix

        assert spec.disk_layout is not None
        try:
            topology = read_block_topology(self.deps.runner)
        except ProbeFailed as exc:
            return Desired(Phase.REFUSED, f"{RefusalCode.LSBLK_PROBE_FAILED}: could not snapshot the node's disks to "
                           f"resolve the layout's selectors, refusing (fail closed): {exc}", "Refused",
                           refusal=RefusalCode.LSBLK_PROBE_FAILED.value)
        selection = resolve_selectors(spec.disk_layout, topology, status.get("targetIdentities") or [],
                                      allow_loop=self.cfg.allow_loop_targets, system_mounts=self.cfg.system_mounts)
        if not selection.ok:
            return Desired(Phase.REFUSED, selection.message, "Refused",
                           refusal=str(selection.code) if selection.code else None)
        text = render_disko_nix(spec.disk_layout, selection.devices)
        return selection, text, layout_hash(dict(devices_value(spec.disk_layout)))

    async def still_current(self, body: Mapping[str, Any], uid: str, logger: Any) -> bool:
        """The last proof before disko: the live object is the one we judged."""
        try:
            fresh = await self.reader.get(DISK_LAYOUT, str(body.get("metadata", {}).get("name")))
        except Exception as exc:  # noqa: BLE001 - cannot prove it is current: do nothing now
            logger.warning(f"cannot re-read the DiskLayout before applying ({exc}); retrying later")
            return False
        why = stale_reason(fresh, dict(body))
        if why:
            logger.info(f"not applying: {why}")
            return False
        return True

    async def apply(self, plan: ApplyPlan, spec: DiskLayoutSpec, logger: Any) -> ApplyOutcome | None:
        """Run disko on the plan's artifact (never the user's text); None when another apply runs."""
        try:
            return await asyncio.to_thread(
                apply_layout, plan.artifact, runner=self.deps.runner, config=self.cfg,
                expect=expectation_from(plan.devices_value, plan.resolved), targets=dict(plan.resolved),
                timeout_seconds=spec.timeout_seconds, rebuild=spec.rebuild)
        except ApplyBusy as exc:
            logger.info(f"{exc}; retrying later")
            return None

    async def write_status(self, body: Mapping[str, Any], status: dict[str, Any], write: StatusWriter,
                           desired: Desired, mode: ModeReading, targets: list[str] | None, uid: str,
                           counted: ReconcileRecord) -> None:
        lg = status.get("layoutGeneration")
        generation = body.get("metadata", {}).get("generation")
        changed = outcome_status(status, desired, node_mode=mode.mode, targets=targets, generation=generation)
        counted.result = RESULTS[desired.phase]
        if changed:
            await write(changed)  # the bookkeeping below follows only a status that was sent
            record_status_write(KIND)
        new_refusal = desired.phase == Phase.REFUSED and self.refusals.get(uid) != (lg, desired.refusal)
        if desired.phase != Phase.REFUSED:
            self.refusals.pop(uid, None)
        elif new_refusal:
            self.refusals[uid] = (lg, desired.refusal)
            record_refusal(desired.refusal or "unknown")
        if isinstance(lg, int):
            self.memos[uid] = Memo(lg, desired.phase.value)
        if changed and ("phase" in changed or "message" in changed) and (desired.phase != Phase.REFUSED or new_refusal):
            emit_event(self.events, body, desired)  # one Refused Event per refusal, even when the retry re-judges a stale body


def emit_event(events: EventRecorder, body: Mapping[str, Any], desired: Desired) -> None:
    msg = desired.message
    if desired.phase == Phase.APPLIED:
        events.record(body, "Normal", "Applied", msg)
    elif desired.phase == Phase.REFUSED:
        events.record(body, "Warning", "Refused", event_message(str(desired.refusal), msg, MAX_MESSAGE))
    elif desired.phase == Phase.FAILED:
        events.record(body, "Warning", "Failed", msg)
    else:
        events.record(body, "Normal", desired.reason or "Pending", msg)


def register(registry: kopf.OperatorRegistry, deps: AgentDeps, *, kube: AgentKube | None = None,
             tasks: BackgroundTasks | None = None) -> DiskLayoutAgent:
    """``kube`` reads the live object right before disko runs and before each retry, and writes the
    retry's status (default: a client from the kubeconfig)."""
    agent = DiskLayoutAgent(deps, kube)
    tasks = tasks or BackgroundTasks.attach(registry)
    group, plural = DISK_LAYOUT.group, DISK_LAYOUT.plural
    node = agent.cfg.node_name

    @kopf.index(group, plural, registry=registry, id=OBJECTS_INDEX_ID, when=agent.mine)
    def disklet_disklayout_objects(name: str, body: kopf.Body, **_: Any) -> dict[str, dict[str, Any]]:
        meta, status = body.get("metadata") or {}, body.get("status") or {}
        return {name: {"metadata": {k: meta.get(k) for k in ("name", "uid", "deletionTimestamp") if meta.get(k)},
                       "spec": {"nodeName": (body.get("spec") or {}).get("nodeName")},
                       "status": {k: status.get(k) for k in ("phase", "layoutGeneration", "appliedLayoutGeneration")}}}

    @kopf.on.startup(registry=registry)
    async def disklet_disklayout_retry(**kwargs: Any) -> None:
        agent.index = kwargs.get(OBJECTS_INDEX_ID)
        tasks.start(f"disklayout retry {node}", every(agent.cfg.refused_retry_seconds, agent.retry_pass))

    @kopf.on.event(group, plural, registry=registry, when=agent.mine)
    async def disklayout_event(body: kopf.Body, patch: kopf.Patch, logger: Any, type: str | None = None,
                               **_: Any) -> None:
        if type == "DELETED":
            await agent.left_watch(body)
            return

        async def write(changed: dict[str, Any]) -> None:
            for k, v in changed.items():
                patch.status[k] = v  # Kopf sends the patch when the handler returns

        await agent.reconcile(body, write, logger, "event")

    return agent
