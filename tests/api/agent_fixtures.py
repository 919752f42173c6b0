"""Shared pieces of the agent API tests: a fake LVM engine (wiring tests only; the real engine is
proven by V's host tests and tests/api/test_agent_lvm_real.py), a fake disk topology, and a
context manager running one node's agent against the API server (real or mock)."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
from disklet_agent.config import AgentConfig
from disklet_agent.daemon import build_registry, configure_settings
from disklet_agent.deps import AgentDeps
from disklet_agent.logic.topology import BlockNode, BlockTopology
from disklet_agent.lvm.outcomes import DeleteOutcome, LvgOutcome, ReattachProblem

from devkit.kopfrun import kopf_running
from disklet.api.common import set_condition
from disklet.api.lvm import (
    ConditionType,
    LVGPhase,
    LVMVolumeGroupSpec,
    LVMVolumeGroupStatus,
    NodeDevice,
    NodeFileDevice,
    NodeStatus,
    Reason,
)

LVG = "disklet.io/v1alpha1/lvmvolumegroups"
LVG_URL = "/apis/disklet.io/v1alpha1/lvmvolumegroups"
BD = "disklet.io/v1alpha1/blockdevices"
LEASES = "coordination.k8s.io/v1/leases"
GIB = 1024 ** 3


def lvg(name: str, node: str, *, files: int = 1, selector: dict | None = None, vg: str = "vg0",
        directory: str = "/var/lib/disklet/file-devices") -> dict[str, Any]:
    spec: dict[str, Any] = {"type": "Local", "local": {"nodeName": node}, "actualVGNameOnTheNode": vg}
    if files:
        spec["fileDevices"] = [{"name": f"f{i}", "directory": directory, "size": "1Gi"} for i in range(files)]
    if selector is not None:
        spec["blockDeviceSelector"] = selector
    return {"apiVersion": "disklet.io/v1alpha1", "kind": "LVMVolumeGroup",
            "metadata": {"name": name, "labels": {"disklet.io/node": node}}, "spec": spec}


@dataclass
class FakeEngine:
    """Engine double with the real interface and outcome types; records every call in order."""

    node: str
    calls: list[tuple[str, str]] = field(default_factory=list)
    block_devices: dict[str, list[tuple[str, str]]] = field(default_factory=dict)
    delete_done: bool = False
    reattach_problems: list[ReattachProblem] = field(default_factory=list)
    discovered: dict[str, LVMVolumeGroupStatus | None] = field(default_factory=dict)

    def snapshot(self) -> Any:
        raise AssertionError("tests pass a pv_reader; the fake engine has no LVM snapshot")

    def reattach(self, lvgs: list[tuple[str, LVMVolumeGroupSpec, LVMVolumeGroupStatus | None]]) -> list[ReattachProblem]:
        self.calls.extend(("reattach", name) for name, _spec, _status in lvgs)
        return list(self.reattach_problems)

    def reconcile(self, name: str, spec: LVMVolumeGroupSpec, status: LVMVolumeGroupStatus | None,
                  block_devices: list[tuple[str, str]], generation: int | None) -> LvgOutcome:
        self.calls.append(("reconcile", name))
        self.block_devices[name] = list(block_devices)
        old = status or LVMVolumeGroupStatus()
        new = old.model_copy(deep=True)
        conds = set_condition(list(old.conditions or []), ConditionType.VG_CONFIGURATION_APPLIED, "True",
                              Reason.APPLIED, "applied", generation)
        new.conditions = set_condition(conds, ConditionType.VG_READY, "True", Reason.APPLIED, "present", generation)
        new.phase = LVGPhase.READY
        new.configuration_applied = True
        new.observed_generation = generation
        new.nodes = [NodeStatus(
            name=self.node,
            devices=[NodeDevice(block_device=n, path=p) for n, p in block_devices] or None,
            file_devices=[NodeFileDevice(name=fd.name, file_path=fd.file_path(name), loop_device=f"/dev/loop{i}")
                          for i, fd in enumerate(spec.file_devices or [])] or None)]
        changed = new.to_wire() != old.to_wire()
        events = [("Normal", "Applied", f"volume group {spec.actual_vg_name_on_the_node} ready")] if changed else []
        return LvgOutcome(status=new, changed=changed, events=events)

    def discover(self, lvgs: list[tuple[str, LVMVolumeGroupSpec]], snapshot: Any = None) -> dict[str, Any]:
        self.calls.append(("discover", ",".join(n for n, _ in lvgs)))
        return {name: self.discovered.get(name) for name, _ in lvgs}

    def delete(self, name: str, spec: LVMVolumeGroupSpec, status: LVMVolumeGroupStatus | None) -> DeleteOutcome:
        self.calls.append(("delete", name))
        new = (status or LVMVolumeGroupStatus()).model_copy(deep=True)
        new.phase = LVGPhase.TERMINATING
        if self.delete_done:
            return DeleteOutcome(done=True, status=new)
        new.conditions = set_condition(list(new.conditions or []), ConditionType.VG_READY, "False", Reason.TERMINATING,
                                       "volume group vg0 still holds logical volumes lv1")
        return DeleteOutcome(done=False, status=new, events=[("Warning", "Terminating", "still holds lv1")])


def disk(kname: str, *, serial: str | None = None, wwn: str | None = None, size: int = 10 * GIB,
         children: list[BlockNode] | None = None, **kw: Any) -> BlockNode:
    return BlockNode(path=kname, kname=kname, name=kname, type="disk", size=size, serial=serial, wwn=wwn,
                     model=kw.pop("model", "QEMU HARDDISK"), children=children or [], **kw)


def part(kname: str, partuuid: str, *, size: int = 5 * GIB, **kw: Any) -> BlockNode:
    return BlockNode(path=kname, kname=kname, name=kname, type="part", size=size, partuuid=partuuid, **kw)


@dataclass
class FakeDisks:
    """A mutable topology the scanner reads (tests change it between cycles); ``reads`` counts scans,
    so a test can wait for "two more scan cycles" (a sentinel) instead of sleeping."""

    roots: list[BlockNode]
    reads: int = 0

    def read(self) -> BlockTopology:
        self.reads += 1
        return BlockTopology(roots=list(self.roots))


@contextlib.asynccontextmanager
async def agent_running(kube: Any, monkeypatch: pytest.MonkeyPatch, node: str, *, engine: Any = None,
                        disks: FakeDisks | None = None, scan_interval: float = 0.3, lease_interval: float = 0.2,
                        config: AgentConfig | None = None, pv_reader: Any = None,
                        also: Callable[[Any], object] | None = None) -> AsyncIterator[Any]:
    """One node's full agent (build_registry + configure_settings) against ``kube`` (real or mock).

    ``also(registry)``: registers more handlers after the agent's (e.g. a test's own ``on.event``
    sentinel, which Kopf runs after the agent's handlers of the same event)."""
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    monkeypatch.setenv("KUBECONFIG", str(kube.kubeconfig))
    monkeypatch.setenv("DISKLET_NAMESPACE", "disklet-test")
    config = config or AgentConfig(node_name=node, scan_interval_seconds=scan_interval, refused_retry_seconds=0.3)
    deps = AgentDeps(config=config)
    disks = disks or FakeDisks([disk("/dev/vda", serial="S0")])
    registry = build_registry(deps, engine=engine or FakeEngine(node), topology_reader=disks.read,
                              pv_reader=pv_reader or (lambda: {}), lease_interval=lease_interval)
    if also is not None:
        also(registry)
    async with kopf_running(registry, kube=kube, configure=lambda s: configure_settings(s, config)):
        yield registry


def status_patches(kube: Any, plural: str, name: str | None = None) -> list[Any]:
    """PATCH requests to the status subresource of ``plural`` (optionally of one object)."""
    out = []
    for r in kube.request_log:
        path = str(r.url)
        if "PATCH" not in str(getattr(r, "method", "")).upper() or f"/{plural}/" not in path or not path.endswith("/status"):
            continue
        if name is None or f"/{plural}/{name}/status" in path:
            out.append(r)
    return out
