"""Kopf handlers: apply this node's DiskLayout (docs/design/disklayout.md#flow, steps 2–4). Thin: the decisions
live in :mod:`disklet_agent.logic.disklayout` (pure), the work in disklayout.gate/apply.

Triggers: every watch event of an object for this node (``on.event``), plus a timer every
``refused_retry_seconds`` while the object is pending or refused (refused layouts are retried until
clear; pending ones re-check the management mode). The timer is registered WITHOUT Kopf's
finalizer: deleting a DiskLayout never touches the node, and must not hang when the node is gone.
One run per object at a time; a memo of finished generations guards against stale bodies.

Metrics: every run is a ``DiskLayout`` reconcile whose result follows the phase it reached
(applied/pending → success, refused → refused, failed → error; busy → retry); a refusal code is
counted once per transition into it (not per retry tick); each status change is a status write.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Mapping
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

KIND = DISK_LAYOUT.kind
RESULTS = {Phase.APPLIED: SUCCESS, Phase.PENDING: SUCCESS, Phase.REFUSED: REFUSED, Phase.FAILED: ERROR}


def _drop_finalizer_requirement(registry: kopf.OperatorRegistry, fn: Any) -> None:
    """kopf.timer always asks for a finalizer; ours must not block deletion (see module doc)."""
    spawning = registry._spawning  # noqa: SLF001 - no public switch in kopf 1.45
    handlers = spawning._handlers  # noqa: SLF001
    for i, h in enumerate(handlers):
        if getattr(h, "fn", None) is fn:
            handlers[i] = dataclasses.replace(h, requires_finalizer=False)


class DiskLayoutAgent:
    """The agent's DiskLayout handlers, one method per step: pick → judge (mode, gate) → confirm the
    object is still current → apply the checked artifact → write status → emit an Event."""

    def __init__(self, deps: AgentDeps, kube: AgentKube | None = None):
        self.deps = deps
        self.cfg = deps.config
        self.reader = kube or AgentKube()
        self.events = EventRecorder(self.reader, component=AGENT, instance=self.cfg.node_name)
        """Events on the object itself (disklet.kube.events): what `kubectl describe dl` shows."""
        self.deleted: set[str] = set()
        """uids seen DELETED: never worked on again, whatever body a timer still holds."""
        self.locks: dict[str, asyncio.Lock] = {}
        self.memos: dict[str, Memo] = {}
        self.refusals: dict[str, tuple[Any, str | None]] = {}
        """uid → (layoutGeneration, code) last counted in disklet_refusals_total (a stale body re-judged
        by the timer must not count the same refusal twice)."""

    # -- filters ---------------------------------------------------------------------------------
    def mine(self, spec: kopf.Spec, **_: Any) -> bool:
        node = self.cfg.node_name
        return bool(node) and spec.get("nodeName") == node

    def retry_due(self, spec: kopf.Spec, status: kopf.Status, **_: Any) -> bool:
        return self.mine(spec) and status.get("phase") in (Phase.PENDING, Phase.REFUSED) \
            and status.get("layoutGeneration") is not None \
            and status.get("layoutGeneration") != status.get("appliedLayoutGeneration")

    def forget(self, uid: str) -> None:
        self.deleted.add(uid)
        self.memos.pop(uid, None)
        self.locks.pop(uid, None)
        self.refusals.pop(uid, None)

    # -- the run ---------------------------------------------------------------------------------
    async def reconcile(self, body: kopf.Body, patch: kopf.Patch, logger: Any, trigger: str) -> None:
        uid = str(body.get("metadata", {}).get("uid") or body.get("metadata", {}).get("name"))
        status = dict(body.get("status") or {})
        if uid in self.deleted or not decide(status, trigger, self.memos.get(uid)):
            return
        lock = self.locks.setdefault(uid, asyncio.Lock())
        if lock.locked():
            return  # a run is in progress; the timer picks up anything newer afterwards
        async with lock:
            with reconcile_timer(KIND) as counted:
                mode = await asyncio.to_thread(read_management_mode, self.cfg.etc_dir)
                step = await self.judge(body, status, mode, uid, logger)
                if step is None:
                    counted.result = RETRY
                    return
                desired, targets = step
                self.write_status(body, status, patch, desired, mode, targets, uid, counted)

    async def judge(self, body: kopf.Body, status: dict[str, Any], mode: ModeReading, uid: str,
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

    async def still_current(self, body: kopf.Body, uid: str, logger: Any) -> bool:
        """The last proof before disko: the live object is the one we judged."""
        try:
            fresh = await self.reader.get(DISK_LAYOUT, str(body.get("metadata", {}).get("name")))
        except Exception as exc:  # noqa: BLE001 - cannot prove it is current: do nothing now
            logger.warning(f"cannot re-read the DiskLayout before applying ({exc}); retrying later")
            return False
        why = "the DiskLayout was deleted" if uid in self.deleted else stale_reason(fresh, dict(body))
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

    def write_status(self, body: kopf.Body, status: dict[str, Any], patch: kopf.Patch, desired: Desired,
                     mode: ModeReading, targets: list[str] | None, uid: str, counted: ReconcileRecord) -> None:
        lg = status.get("layoutGeneration")
        generation = body.get("metadata", {}).get("generation")
        changed = outcome_status(status, desired, node_mode=mode.mode, targets=targets, generation=generation)
        counted.result = RESULTS[desired.phase]
        new_refusal = desired.phase == Phase.REFUSED and self.refusals.get(uid) != (lg, desired.refusal)
        if desired.phase != Phase.REFUSED:
            self.refusals.pop(uid, None)
        elif new_refusal:
            self.refusals[uid] = (lg, desired.refusal)
            record_refusal(desired.refusal or "unknown")
        if isinstance(lg, int):
            self.memos[uid] = Memo(lg, desired.phase.value)
        if not changed:
            return
        for k, v in changed.items():
            patch.status[k] = v
        record_status_write(KIND)  # Kopf sends the patch when the handler returns
        if ("phase" in changed or "message" in changed) and (desired.phase != Phase.REFUSED or new_refusal):
            emit_event(self.events, body, desired)  # one Refused Event per refusal, even when the timer re-judges a stale body


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


def register(registry: kopf.OperatorRegistry, deps: AgentDeps, *, kube: AgentKube | None = None) -> DiskLayoutAgent:
    """``kube`` reads the live object right before disko runs (default: a client from the kubeconfig)."""
    agent = DiskLayoutAgent(deps, kube)
    group, plural = DISK_LAYOUT.group, DISK_LAYOUT.plural

    @kopf.on.event(group, plural, registry=registry, when=agent.mine)
    async def disklayout_event(body: kopf.Body, patch: kopf.Patch, logger: Any, type: str | None = None,
                               **_: Any) -> None:
        if type == "DELETED":
            agent.forget(str(body.get("metadata", {}).get("uid")))
            return
        await agent.reconcile(body, patch, logger, "event")

    @kopf.timer(group, plural, registry=registry, interval=agent.cfg.refused_retry_seconds, when=agent.retry_due,
                id="disklayout_retry")
    async def disklayout_retry(body: kopf.Body, patch: kopf.Patch, logger: Any, **_: Any) -> None:
        await agent.reconcile(body, patch, logger, "timer")

    _drop_finalizer_requirement(registry, disklayout_retry)
    return agent
