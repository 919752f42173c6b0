"""BlockDevice discovery loop of one node + the in-memory index the LVG handlers select from.

Every scan interval: lsblk/blkid topology (N's adapter) + LVM PV facts → desired objects → a sync
plan → only the writes the plan asks for. A scan that cannot read the disks writes nothing (never
delete every BlockDevice because lsblk failed once).

Metrics: each scan is a ``BlockDevice`` reconcile (``retry`` when the disks or LVM could not be
read, ``error`` when it raised); each status patch counts as a BlockDevice status write.
"""

from __future__ import annotations

import asyncio
import copy
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import kopf

from disklet.api.resources import BLOCK_DEVICE, NODE_LABEL
from disklet.hostcmd import HostRunner
from disklet.labels import node_label_value
from disklet.observe import RETRY, reconcile_timer, record_status_write

from ..deps import AgentDeps
from ..host.lsblk import ProbeFailed, read_block_topology
from ..kube import AgentKube, NodeObjects
from ..logic.blockdevices import (
    BlockDeviceSyncPlan,
    PvFact,
    desired_block_devices,
    plan_block_device_sync,
    pv_facts_from_lvm,
)
from ..logic.topology import BlockTopology
from ..lvm.ports import LvmSnapshotSource
from ..tasks import BackgroundTasks

log = logging.getLogger("disklet.agent.blockdevices")

INDEX_ID = "disklet_blockdevices"
"""Kopf index of this node's BlockDevices: name → (labels, path, status); handlers get it as this kwarg
(the status is what a selector's ``match`` reads)."""
OBJECTS_INDEX_ID = "disklet_blockdevice_objects"
"""Kopf index of this node's BlockDevices: name → the fields the sync plan reads (name, labels, status)."""

TopologyReader = Callable[[], BlockTopology]
PvReader = Callable[[], dict[str, PvFact] | None]


def read_machine_id(host_root: Path) -> str | None:
    try:
        return (host_root / "etc" / "machine-id").read_text().strip() or None
    except OSError:
        return None


def engine_pv_reader(engine: LvmSnapshotSource) -> PvReader:
    """PV facts from the LVM engine's snapshot (None when LVM cannot be read this cycle)."""
    def read() -> dict[str, PvFact] | None:
        snap = engine.snapshot()
        if not snap.ok:
            return None
        return pv_facts_from_lvm(snap.pvs, snap.vgs, snap.canonical)
    return read


async def apply_plan(kube: AgentKube, plan: BlockDeviceSyncPlan, seen: NodeObjects | None = None) -> int:
    """Write the plan; returns the number of API writes. ``seen``: told of each write (and of a
    failed one), so that its next relist holds what was written."""
    writes = 0
    try:
        for d in plan.creates:
            obj = d.to_object()
            status = obj.pop("status")
            _wrote(seen, await kube.create(BLOCK_DEVICE, obj))
            _wrote(seen, await kube.patch_status(BLOCK_DEVICE, d.name, status))
            record_status_write(BLOCK_DEVICE.kind)
            writes += 2
        for u in plan.updates:
            if u.labels:
                _wrote(seen, await kube.patch(BLOCK_DEVICE, u.name, {"metadata": {"labels": u.labels}}))
                writes += 1
            if u.status is not None:
                _wrote(seen, await kube.patch_status(BLOCK_DEVICE, u.name, u.status))
                record_status_write(BLOCK_DEVICE.kind)
                writes += 1
        for name in plan.deletes:
            _wrote(seen, await kube.delete(BLOCK_DEVICE, name, missing_ok=True))
            writes += 1
    except BaseException:
        if seen is not None:
            seen.write_failed()
        raise
    return writes


def _wrote(seen: NodeObjects | None, answer: dict[str, Any] | None) -> None:
    if seen is not None:
        seen.wrote(answer)


class BlockDeviceScanner:
    """One node's scan → plan → apply, with the readers injectable for tests."""

    def __init__(self, deps: AgentDeps, kube: AgentKube, topology_reader: TopologyReader,
                 pv_reader: PvReader, lock: asyncio.Lock | None = None):
        self.node = deps.config.node_name
        self.deps = deps
        self.kube = kube
        self.read_topology = topology_reader
        self.read_pvs = pv_reader
        self.lock = lock or asyncio.Lock()
        self.last_plan: BlockDeviceSyncPlan | None = None
        self.objects = NodeObjects(kube, BLOCK_DEVICE, self.node, resync_seconds=deps.config.resync_interval_seconds)
        """What exists, from the watch (a LIST only to resync): docs/agent.md ("API requests at idle")."""

    async def scan_once(self) -> BlockDeviceSyncPlan | None:
        """One cycle; None when the node's disks could not be read (nothing written)."""
        with reconcile_timer(BLOCK_DEVICE.kind) as counted:
            plan = await self._scan()
            if plan is None:
                counted.result = RETRY
        return plan

    async def _scan(self) -> BlockDeviceSyncPlan | None:
        async with self.lock:
            try:
                topology = await asyncio.to_thread(self.read_topology)
            except ProbeFailed as exc:
                log.warning("block device scan skipped: %s", exc, extra={"node": self.node})
                return None
            pvs = await asyncio.to_thread(self.read_pvs)
        if pvs is None:
            log.warning("block device scan skipped: LVM state unreadable", extra={"node": self.node})
            return None
        if not topology.roots:
            log.warning("block device scan skipped: lsblk listed no devices", extra={"node": self.node})
            return None
        desired = desired_block_devices(topology, pvs, self.node, read_machine_id(self.deps.config.host_root),
                                        system_mounts=self.deps.config.system_mounts)
        existing = await self.objects.items()
        plan = plan_block_device_sync(desired, existing, self.node)
        if not plan.empty:
            # what we write reaches the watch a little later (much later on a busy API server):
            # apply_plan tells self.objects, so the next cycle relists rather than plan from a
            # view without it
            writes = await apply_plan(self.kube, plan, self.objects)
            log.info("block devices synced", extra={"node": self.node, "bd_created": len(plan.creates),
                                                    "bd_updated": len(plan.updates), "bd_deleted": len(plan.deletes),
                                                    "writes": writes})
        self.last_plan = plan
        return plan

    async def loop(self, interval: float) -> None:
        while True:
            try:
                await self.scan_once()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.error("block device scan failed: %r", exc, extra={"node": self.node})
            await asyncio.sleep(interval)


def register(registry: kopf.OperatorRegistry, deps: AgentDeps, *, kube: AgentKube | None = None,
             engine: LvmSnapshotSource | None = None, topology_reader: TopologyReader | None = None, pv_reader: PvReader | None = None,
             tasks: BackgroundTasks | None = None, lock: asyncio.Lock | None = None) -> BlockDeviceScanner:
    """The index of this node's BlockDevices and the periodic scan (started at operator startup)."""
    node = deps.config.node_name
    kube = kube or AgentKube()
    tasks = tasks or BackgroundTasks.attach(registry)
    runner: HostRunner = deps.runner
    if pv_reader is None:
        if engine is None:
            from ..lvm.engine import HostLvgEngine
            engine = HostLvgEngine(runner, deps.config)
        pv_reader = engine_pv_reader(engine)
    scanner = BlockDeviceScanner(deps, kube, topology_reader or (lambda: read_block_topology(runner)), pv_reader, lock)

    @kopf.index(BLOCK_DEVICE.group, BLOCK_DEVICE.version, BLOCK_DEVICE.plural, registry=registry,
                id=INDEX_ID, labels={NODE_LABEL: node_label_value(node)})
    def disklet_blockdevices(name: str, labels: Any, status: Any,
                             **_: Any) -> dict[str, tuple[dict[str, str], str, dict[str, Any]]]:
        return {name: (dict(labels), str(status.get("path") or ""), copy.deepcopy(dict(status)))}

    @kopf.index(BLOCK_DEVICE.group, BLOCK_DEVICE.version, BLOCK_DEVICE.plural, registry=registry,
                id=OBJECTS_INDEX_ID, labels={NODE_LABEL: node_label_value(node)})
    def disklet_blockdevice_objects(name: str, labels: Any, status: Any, **_: Any) -> dict[str, dict[str, Any]]:
        return {name: {"metadata": {"name": name, "labels": dict(labels)}, "status": copy.deepcopy(dict(status))}}

    @kopf.on.startup(registry=registry)
    async def disklet_start_block_device_scan(**kwargs: Any) -> None:
        scanner.objects.index = kwargs.get(OBJECTS_INDEX_ID)
        tasks.start(f"blockdevices {node}", scanner.loop(deps.config.scan_interval_seconds))

    return scanner
