"""The real handlers (agent and operator) feed ``disklet.metrics.REGISTRY`` and post their Events,
on the real API server.

Metric values are read back from the registry as deltas (after − before), so other tests running
in the same process do not matter. Every test uses its own object and VG names.
"""

from __future__ import annotations

import copy
import uuid
from pathlib import Path
from typing import Any

import pytest
from agent_fixtures import LVG, LVG_URL, FakeEngine, agent_running, lvg
from disklet_agent.config import AgentConfig
from disklet_agent.lvm.outcomes import LvgOutcome
from lvgset_fixtures import SET_URL, file_device, lvgset, lvgset_operator, node, post
from operator_fixtures import (
    AGENT_NS,
    NODES,
    CountingClock,
    agent_lease,
    disk_layout,
    node_object,
    operator_running,
    volume_group,
)

from devkit.kopfrun import wait_for
from disklet.api.lvm import (
    LVMVolumeGroupSpec,
    LVMVolumeGroupStatus,
    NodeFileDevice,
    NodeStatus,
    ThinPoolStatus,
)
from disklet.layout.samples import EXT4
from disklet.metrics import REGISTRY
from disklet.observe import LvgGauges, count_managed_loops

DL = "disklet.io/v1alpha1/disklayouts"
DL_URL = "/apis/disklet.io/v1alpha1/disklayouts"
MERGE = {"Content-Type": "application/merge-patch+json"}
GIB = 1024 ** 3


@pytest.fixture()
def kube(real_kube):
    return real_kube


def value(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def reconciles(kind: str, result: str) -> float:
    return value("disklet_reconciles_total", kind=kind, result=result)


def status_writes(kind: str) -> float:
    return value("disklet_status_writes_total", kind=kind)


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:6]}"


def events_about(kube: Any, name: str) -> list[dict[str, Any]]:
    return [e for e in kube.read_all("v1/events") if (e.get("involvedObject") or {}).get("name") == name]


class CapacityEngine(FakeEngine):
    """The fake engine, reporting VG capacity and one thin pool like the real engine's discovery."""

    def reconcile(self, name: str, spec: LVMVolumeGroupSpec, status: LVMVolumeGroupStatus | None,
                  block_devices: list[tuple[str, str]], generation: int | None) -> LvgOutcome:
        out = super().reconcile(name, spec, status, block_devices, generation)
        new = out.status.model_copy(deep=True)
        new.vg_size, new.vg_free = "10Gi", "6Gi"
        new.thin_pools = [ThinPoolStatus(name="pool", actual_size="4Gi", used_size="1Gi", ready=True)]
        # no engine Events: the ones asserted below come from the handler's status transitions
        return LvgOutcome(status=new, changed=new.to_wire() != (status.to_wire() if status else {}),
                                events=[], requeue_after=out.requeue_after)


class NeverConvergedEngine(FakeEngine):
    """An engine whose reconcile always asks to be retried (a failing step)."""

    def reconcile(self, *args: Any) -> LvgOutcome:
        out = super().reconcile(*args)
        out.requeue_after = 0.2
        return out


async def test_lvg_reconcile_gauges_events_and_forget_on_delete(kube, monkeypatch):
    name, vg = unique("m-lvg"), unique("vgm")
    engine = CapacityEngine("n1", delete_done=True)
    ok0, writes0 = reconciles("LVMVolumeGroup", "success"), status_writes("LVMVolumeGroup")
    async with agent_running(kube, monkeypatch, "n1", engine=engine), kube.session() as s:
        r = await s.post(LVG_URL, json=lvg(name, "n1", files=2, vg=vg))
        assert r.status in (200, 201), await r.text()
        await wait_for(lambda: ((kube.read(LVG, name) or {}).get("status") or {}).get("phase") == "Ready",
                       message="LVG Ready", timeout=30)
        await wait_for(lambda: value("disklet_vg_size_bytes", vg=vg, lvg=name) == 10 * GIB, message="VG gauge")
        assert value("disklet_vg_free_bytes", vg=vg, lvg=name) == 6 * GIB
        assert value("disklet_thin_pool_size_bytes", vg=vg, pool="pool") == 4 * GIB
        assert value("disklet_thin_pool_used_bytes", vg=vg, pool="pool") == 1 * GIB
        # the reconcile is counted when it ends, after its status patch made the object Ready
        await wait_for(lambda: reconciles("LVMVolumeGroup", "success") - ok0 >= 1, message="a counted reconcile")
        await wait_for(lambda: status_writes("LVMVolumeGroup") - writes0 >= 1, message="a counted status write")
        # the discovery cycle counts this node's loop devices from the statuses (f0, f1 → /dev/loop0, 1)
        await wait_for(lambda: value("disklet_managed_loop_devices") == 2, message="loop gauge", timeout=30)
        provisioned = await wait_for(
            lambda: [e for e in events_about(kube, name) if e.get("reason") == "FileDeviceProvisioned"][1:] and
            [e for e in events_about(kube, name) if e.get("reason") == "FileDeviceProvisioned"],
            message="both FileDeviceProvisioned events", timeout=30)
        assert {e["type"] for e in provisioned} == {"Normal"}
        assert sorted(e["message"].split(":")[0] for e in provisioned) == ["fileDevices[f0]", "fileDevices[f1]"]
        assert any("attached as /dev/loop0" in e["message"] for e in provisioned)
        # the Applied Event is posted after the status write that made the object Ready
        applied = await wait_for(lambda: [e for e in events_about(kube, name) if e.get("reason") == "Applied"],
                                 message="the Applied event", timeout=30)
        assert [(e["type"], e["message"]) for e in applied] == [
            ("Normal", f"volume group {vg} matches the spec (generation 1)")]

        deletes0 = reconciles("LVMVolumeGroup", "success")
        r = await s.delete(f"{LVG_URL}/{name}")
        assert r.status in (200, 202), await r.text()
        await wait_for(lambda: kube.read(LVG, name) is None, message="LVG gone (finalizer released)", timeout=30)
        await wait_for(lambda: value("disklet_managed_loop_devices") == 0, message="loop gauge back to 0", timeout=30)
    assert REGISTRY.get_sample_value("disklet_vg_size_bytes", {"vg": vg, "lvg": name}) is None
    assert REGISTRY.get_sample_value("disklet_vg_free_bytes", {"vg": vg, "lvg": name}) is None
    assert REGISTRY.get_sample_value("disklet_thin_pool_size_bytes", {"vg": vg, "pool": "pool"}) is None
    assert reconciles("LVMVolumeGroup", "success") - deletes0 >= 1  # the delete is a reconcile too


async def test_lvg_not_converged_counts_retry(kube, monkeypatch):
    name = unique("m-retry")
    retry0 = reconciles("LVMVolumeGroup", "retry")
    async with agent_running(kube, monkeypatch, "n1", engine=NeverConvergedEngine("n1")):
        async with kube.session() as s:
            await s.post(LVG_URL, json=lvg(name, "n1", vg=unique("vgr")))
        await wait_for(lambda: reconciles("LVMVolumeGroup", "retry") - retry0 >= 2, message="retries counted", timeout=30)


async def test_block_device_scan_counts_reconciles_and_status_writes(kube, monkeypatch):
    ok0, writes0 = reconciles("BlockDevice", "success"), status_writes("BlockDevice")
    async with agent_running(kube, monkeypatch, "n1"):
        await wait_for(lambda: kube.read_all("disklet.io/v1alpha1/blockdevices") or None, message="BlockDevice")
        await wait_for(lambda: reconciles("BlockDevice", "success") - ok0 >= 2, message="scans counted", timeout=30)
    assert status_writes("BlockDevice") - writes0 == 1  # created once (one disk); later scans write nothing


def _layout_with_missing_target(name: str, node_name: str) -> dict[str, Any]:
    layout = copy.deepcopy(EXT4)
    layout["disks"][0]["device"] = f"/dev/disk/by-id/disklet-metrics-missing-{uuid.uuid4().hex[:8]}"
    body = disk_layout(name, node_name, structured=layout, labels={"disklet.io/node": node_name})
    return body


async def test_agent_refusal_counts_code_once_and_posts_event(kube, monkeypatch, tmp_path: Path):
    name, node_name = unique("m-dl"), "n1"
    etc = tmp_path / "etc" / "disklet"
    etc.mkdir(parents=True)
    (etc / "disk-management-mode").write_text("controller-managed\n")
    config = AgentConfig(node_name=node_name, host_root=tmp_path, scan_interval_seconds=0.3,
                         refused_retry_seconds=0.3)
    code = "target_device_not_found"
    refusals0, refused0 = value("disklet_refusals_total", code=code), reconciles("DiskLayout", "refused")
    writes0 = status_writes("DiskLayout")
    async with agent_running(kube, monkeypatch, node_name, config=config), \
            kube.session() as s:
        r = await s.post(DL_URL, json=_layout_with_missing_target(name, node_name))
        assert r.status in (200, 201), await r.text()
        # what the operator's pre-flight writes: the agent takes it from here
        r = await s.patch(f"{DL_URL}/{name}/status", headers=MERGE,
                          json={"status": {"phase": "pending", "layoutGeneration": 1, "observedGeneration": 1}})
        assert r.status == 200, await r.text()
        st = await wait_for(lambda: ((kube.read(DL, name) or {}).get("status") or {}).get("phase") == "refused"
                            and kube.read(DL, name)["status"], message="agent refused", timeout=60)
        assert st["refusalReason"] == code
        # the retry timer (0.3 s) re-judges it: each attempt is a reconcile, the refusal counts once
        await wait_for(lambda: reconciles("DiskLayout", "refused") - refused0 >= 3, message="retries", timeout=60)
        refused_event = [e for e in events_about(kube, name) if e.get("reason") == "Refused"]
    assert value("disklet_refusals_total", code=code) - refusals0 == 1
    assert status_writes("DiskLayout") - writes0 >= 1
    assert len(refused_event) == 1 and refused_event[0]["type"] == "Warning"
    assert refused_event[0]["message"].startswith(f"{code}: ")
    from disklet.advice import next_step
    assert refused_event[0]["message"].endswith(f" Next step: {next_step(code)}"), "the code's own advice"


async def test_operator_lvg_readiness_counts_status_writes(kube):
    name = unique("m-ready")
    kube.seed(NODES, node_object("n1"))
    kube.seed("coordination.k8s.io/v1/leases", agent_lease("n1", namespace=AGENT_NS))
    writes0 = status_writes("LVMVolumeGroup")
    clock = CountingClock()
    async with operator_running(kube, clock=clock) as api:
        await api.create(LVG_URL, volume_group(name, "n1"))
        await wait_for(lambda: any(c.get("type") == "Ready" for c in
                                   ((kube.read(LVG, name) or {}).get("status") or {}).get("conditions") or []),
                       message="operator conditions written")
        seen = clock.calls
        # Sentinel, not a sleep: three more evaluations (timer passes) with nothing new write nothing.
        await wait_for(lambda: clock.calls >= seen + 3, message="three more evaluations", timeout=30)
    assert status_writes("LVMVolumeGroup") - writes0 == 1


async def test_lvgset_pass_counts_reconcile_and_status_write(kube):
    name = unique("m-set")
    kube.seed(NODES, node(unique("m-node")))
    ok0, err0, writes0 = (reconciles("LVMVolumeGroupSet", "success"), reconciles("LVMVolumeGroupSet", "error"),
                          status_writes("LVMVolumeGroupSet"))
    async with lvgset_operator(kube), kube.session() as s:
        await post(s, SET_URL, lvgset(name, file_devices=[file_device("a")]))
        await wait_for(lambda: ((kube.read("disklet.io/v1alpha1/lvmvolumegroupsets", name) or {}).get("status")
                                or {}).get("phase") == "Created", message="set Created", timeout=30)
        await wait_for(lambda: reconciles("LVMVolumeGroupSet", "success") - ok0 >= 1, message="pass counted", timeout=30)
    assert status_writes("LVMVolumeGroupSet") - writes0 >= 1
    assert reconciles("LVMVolumeGroupSet", "error") == err0


def test_gauges_follow_the_status_and_drop_gone_pools():
    """LvgGauges: a thin pool that left the status stops being exported; forget drops the rest."""
    gauges, lvg_name, vg = LvgGauges(), unique("m-unit"), unique("vgu")
    two = LVMVolumeGroupStatus(vg_size="2Gi", vg_free="512Mi", thin_pools=[
        ThinPoolStatus(name="a", actual_size="1Gi", used_size="0"),
        ThinPoolStatus(name="b", actual_size="256Mi", used_size="128Mi")])
    gauges.publish(lvg_name, vg, two)
    assert value("disklet_vg_free_bytes", vg=vg, lvg=lvg_name) == 512 * 1024 ** 2
    assert value("disklet_thin_pool_used_bytes", vg=vg, pool="b") == 128 * 1024 ** 2
    gauges.publish(lvg_name, vg, two.model_copy(update={"thin_pools": two.thin_pools[:1]}))
    assert REGISTRY.get_sample_value("disklet_thin_pool_size_bytes", {"vg": vg, "pool": "b"}) is None
    assert value("disklet_thin_pool_size_bytes", vg=vg, pool="a") == GIB
    gauges.forget(lvg_name)
    assert REGISTRY.get_sample_value("disklet_vg_size_bytes", {"vg": vg, "lvg": lvg_name}) is None
    assert REGISTRY.get_sample_value("disklet_thin_pool_size_bytes", {"vg": vg, "pool": "a"}) is None


def test_loop_count_is_this_nodes_distinct_loops():
    def status(node_name: str, *loops: str) -> LVMVolumeGroupStatus:
        return LVMVolumeGroupStatus(nodes=[NodeStatus(name=node_name, file_devices=[
            NodeFileDevice(name=f"f{i}", file_path=f"/x/{i}", loop_device=lp) for i, lp in enumerate(loops)])])
    statuses = [status("n1", "/dev/loop1", "/dev/loop2"), status("n1", "/dev/loop3"), status("n2", "/dev/loop9"),
                None]
    assert count_managed_loops("n1", statuses) == 3
    assert count_managed_loops("n3", statuses) == 0
