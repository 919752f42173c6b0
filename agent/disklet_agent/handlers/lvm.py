"""Kopf wiring of this node's LVMVolumeGroups (thin: the LVM engine decides, this module routes).

- startup: re-attach managed backing files (``engine.reattach``) of this node's LVGs, listed from
  the API, before any handler runs (Kopf starts watching only after startup handlers finish);
- create/update/resume: resolve the selected BlockDevices from the Kopf index, run
  ``engine.reconcile`` in a thread, write status only when the engine says ``changed``, post its
  Events, retry after ``requeue_after``;
- timer (scan interval): reconcile again only when the VG is not converged
  (``needs_reconcile``); converged VGs are refreshed by the node discovery cycle;
- node discovery cycle (scan interval): ONE LVM snapshot → ``engine.discover`` over every LVG of
  the node → status written only where it differs;
- delete (finalizer ``disklet.io/agent``): ``engine.delete``; while not done the finalizer stays,
  status shows Terminating with the condition, and the handler retries.

Every engine call and the status write that follows run under one per-node lock, so two writers
never interleave.

Metrics (``disklet.observe``): every engine reconcile/delete is a ``LVMVolumeGroup`` reconcile
(success, retry when not converged, error); each status the engine or discovery returns sets the
VG and thin-pool gauges (dropped on delete); the discovery cycle sets the managed loop devices.
Status transitions (spec applied, file devices in/out) are posted as Events next to the engine's.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Iterable, Mapping
from typing import Any, cast

import kopf
from pydantic import ValidationError

from disklet.api.lvm import LVMVolumeGroupSpec, LVMVolumeGroupStatus
from disklet.api.resources import LVM_VOLUME_GROUP, NODE_LABEL
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
from ..kube import AgentKube
from ..logic.lvg import (
    merge_discovered,
    needs_reconcile,
    selected_block_devices,
    status_merge_patch,
    with_operator_conditions,
)
from ..lvm.ports import LvgEngine
from ..tasks import BackgroundTasks
from .blockdevices import INDEX_ID

log = logging.getLogger("disklet.agent.lvm")
KIND = LVM_VOLUME_GROUP.kind
MIN_RETRY_SECONDS = 1.0


def _status_of(obj: Mapping[str, Any]) -> LVMVolumeGroupStatus | None:
    raw = obj.get("status")
    if not raw:
        return None
    try:
        return LVMVolumeGroupStatus.model_validate(dict(raw))
    except ValidationError:
        return None


def _index_entries(index: Any) -> list[tuple[str, Mapping[str, str], str]]:
    """(name, labels, path) from the BlockDevice Kopf index (name → store of (labels, path))."""
    out: list[tuple[str, Mapping[str, str], str]] = []
    if index is None:
        return out
    for name in list(index):
        for labels, path in index[name]:
            out.append((name, labels, path))
    return out


class LvgWiring:
    """State shared by this node's LVG handlers: engine, client, lock, and what happened (for tests)."""

    def __init__(self, deps: AgentDeps, engine: LvgEngine, kube: AgentKube, lock: asyncio.Lock):
        self.deps = deps
        self.node = deps.config.node_name
        self.engine = engine
        self.kube = kube
        self.lock = lock
        self.reattach_problems: list[str] | None = None
        """None until the startup re-attach ran; then its per-file problems."""
        self.pending_events: dict[str, list[tuple[str, str, str]]] = {}
        """Events found at startup, posted by the object's first handler (Kopf posts only from handlers)."""
        self.gauges = LvgGauges()
        """VG/thin-pool gauges, published from every status the engine returns."""

    def mine(self, obj: Mapping[str, Any]) -> bool:
        return ((obj.get("spec") or {}).get("local") or {}).get("nodeName") == self.node

    # ---------------------------------------------------------------- startup
    async def reattach(self) -> list[str]:
        items = [o for o in await self.kube.list_node_objects(LVM_VOLUME_GROUP, self.node) if self.mine(o)]
        lvgs: list[tuple[str, LVMVolumeGroupSpec, LVMVolumeGroupStatus | None]] = []
        for obj in items:
            name = obj["metadata"]["name"]
            try:
                lvgs.append((name, LVMVolumeGroupSpec.model_validate(dict(obj["spec"])), _status_of(obj)))
            except ValidationError as exc:
                log.warning("re-attach skips an invalid LVMVolumeGroup", extra={"lvg": name, "error": str(exc)})
        async with self.lock:
            problems = list(await asyncio.to_thread(self.engine.reattach, lvgs)) if lvgs else []
        for problem in problems:
            log.error("re-attach problem: %s", problem, extra={"node": self.node})
            for obj in items:
                name = obj["metadata"]["name"]
                if f"disklet-{name}." in problem or f"LVMVolumeGroup {name}" in problem:
                    self.pending_events.setdefault(name, []).append(("Warning", "ReattachFailed", problem))
        self.reattach_problems = problems
        log.info("startup re-attach done", extra={"node": self.node, "lvgs": len(lvgs), "problems": len(problems)})
        return problems

    # ---------------------------------------------------------------- reconcile
    async def _write_status(self, name: str, current: Mapping[str, Any] | None, new: LVMVolumeGroupStatus) -> bool:
        patch = status_merge_patch(current, new.to_wire())
        if patch is None:
            return False
        await self.kube.patch_status(LVM_VOLUME_GROUP, name, patch)
        record_status_write(KIND)
        return True

    def _post(self, body: Mapping[str, Any], events: Iterable[tuple[str, str, str]]) -> None:
        for type_, reason, message in events:
            kopf.event(cast(kopf.Body, dict(body)), type=type_, reason=reason, message=message[:1000])

    async def reconcile(self, name: str, index: Any, *, only_if_needed: bool = False,
                        raise_on_requeue: bool = True) -> str:
        """One reconcile of ``name`` from the server's current object; returns what happened."""
        rid = uuid.uuid4().hex[:8]
        pending = self.pending_events.pop(name, [])
        async with self.lock:
            obj = await self.kube.get(LVM_VOLUME_GROUP, name)
            if obj is None or not self.mine(obj) or (obj.get("metadata") or {}).get("deletionTimestamp"):
                return "skipped"
            self._post(obj, pending)
            spec = LVMVolumeGroupSpec.model_validate(dict(obj["spec"]))
            current = _status_of(obj)
            generation = (obj.get("metadata") or {}).get("generation")
            bds = selected_block_devices(spec.block_device_selector, _index_entries(index))
            if only_if_needed:
                why = needs_reconcile(spec, current, generation, bds, self.node)
                if why is None:
                    return "converged"
                log.info("timer reconcile: %s", why, extra={"lvg": name, "reconcile_id": rid})
            with reconcile_timer(KIND) as counted:  # timer checks that find nothing to do are not reconciles
                outcome = await asyncio.to_thread(self.engine.reconcile, name, spec, current, bds, generation)
                self.gauges.publish(name, spec.actual_vg_name_on_the_node, outcome.status)
                written = False
                if outcome.changed:
                    new = with_operator_conditions(outcome.status, current)
                    written = await self._write_status(name, obj.get("status"), new)
                transition = lvg_status_events(self.node, spec.actual_vg_name_on_the_node, current, outcome.status)
                self._post(obj, [*outcome.events, *transition])
                log.info("reconciled", extra={"lvg": name, "reconcile_id": rid, "changed": outcome.changed,
                                              "status_written": written, "phase": str(outcome.status.phase)})
                if outcome.requeue_after and raise_on_requeue:
                    raise kopf.TemporaryError(f"LVMVolumeGroup {name} not converged; retrying",
                                              delay=max(MIN_RETRY_SECONDS, float(outcome.requeue_after)))
                if outcome.requeue_after:
                    counted.result = RETRY
        return "written" if written else "unchanged"

    # ---------------------------------------------------------------- delete
    async def delete(self, name: str, body: Mapping[str, Any]) -> None:
        with reconcile_timer(KIND):  # a finalizer kept counts as retry
            async with self.lock:
                obj = await self.kube.get(LVM_VOLUME_GROUP, name) or dict(body)
                spec = LVMVolumeGroupSpec.model_validate(dict(obj["spec"]))
                current = _status_of(obj)
                outcome = await asyncio.to_thread(self.engine.delete, name, spec, current)
                if not outcome.done:
                    await self._write_status(name, obj.get("status"),
                                             with_operator_conditions(outcome.status, current))
            self._post(obj, outcome.events)
            if not outcome.done:
                raise kopf.TemporaryError(f"LVMVolumeGroup {name} cannot be removed yet; finalizer kept",
                                          delay=max(MIN_RETRY_SECONDS, self.deps.config.refused_retry_seconds))
            self.gauges.forget(name)
        log.info("volume group removed; finalizer released", extra={"lvg": name})

    # ---------------------------------------------------------------- node discovery
    async def discover_once(self) -> list[str]:
        """One shared LVM snapshot for every LVG of the node; returns the names whose status was written."""
        written: list[str] = []
        async with self.lock:
            items = [o for o in await self.kube.list_node_objects(LVM_VOLUME_GROUP, self.node)
                     if self.mine(o) and not (o.get("metadata") or {}).get("deletionTimestamp") and o.get("status")]
            lvgs: list[tuple[str, LVMVolumeGroupSpec]] = []
            by_name: dict[str, Mapping[str, Any]] = {}
            for obj in items:
                name = obj["metadata"]["name"]
                try:
                    lvgs.append((name, LVMVolumeGroupSpec.model_validate(dict(obj["spec"]))))
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
                if await self._write_status(name, seen.get("status"), merged):
                    written.append(name)
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
        from ..lvm.engine import LVMEngine
        engine = LVMEngine(deps.runner, deps.config)
    wiring = LvgWiring(deps, engine, kube or AgentKube(), lock or asyncio.Lock())
    tasks = tasks or BackgroundTasks.attach(registry)
    interval = deps.config.scan_interval_seconds
    res = (LVM_VOLUME_GROUP.group, LVM_VOLUME_GROUP.version, LVM_VOLUME_GROUP.plural)
    labels = {NODE_LABEL: node_label_value(node)}

    def is_mine(spec: Any, **_: Any) -> bool:
        return bool((spec.get("local") or {}).get("nodeName") == node)

    @kopf.on.startup(registry=registry, backoff=5)
    async def disklet_lvg_reattach(**_: Any) -> None:
        await wiring.reattach()
        tasks.start(f"lvm discovery {node}", wiring.discovery_loop(interval))

    @kopf.on.resume(*res, registry=registry, labels=labels, when=is_mine)
    @kopf.on.create(*res, registry=registry, labels=labels, when=is_mine)
    @kopf.on.update(*res, registry=registry, labels=labels, when=is_mine, field="spec")
    async def disklet_lvg_reconcile(name: str, **kwargs: Any) -> None:
        await wiring.reconcile(name, kwargs.get(INDEX_ID))

    @kopf.timer(*res, registry=registry, labels=labels, when=is_mine, interval=interval, initial_delay=interval,
                idle=None)
    async def disklet_lvg_timer(name: str, **kwargs: Any) -> None:
        await wiring.reconcile(name, kwargs.get(INDEX_ID), only_if_needed=True, raise_on_requeue=False)

    @kopf.on.delete(*res, registry=registry, labels=labels, when=is_mine)
    async def disklet_lvg_delete(name: str, body: Any, **_: Any) -> None:
        await wiring.delete(name, body)

    return wiring
