"""The agent's LVMVolumeGroup wiring on the real API server (fake engine: the engine itself is
proven on real LVM by the host tests and by test_agent_lvm_real.py). Status writes are counted by
the server's request metrics; each test writes the status of one LVMVolumeGroup only."""

from __future__ import annotations

import pytest
from agent_fixtures import LVG, LVG_URL, FakeDisks, FakeEngine, agent_running, disk, lvg
from disklet_agent.lvm.outcomes import ReattachProblem

from devkit.kopfrun import wait_for
from disklet.api.lvm import LVMVolumeGroupStatus

MERGE = {"Content-Type": "application/merge-patch+json"}


@pytest.fixture()
def kube(real_kube):
    return real_kube


def _status_writes(kube) -> int:
    return kube.mutations("lvmvolumegroups", subresource="status")


def _phase(kube, name):
    return ((kube.read(LVG, name) or {}).get("status") or {}).get("phase")


async def test_only_own_node_objects_reach_the_agent(kube, monkeypatch):
    engine = FakeEngine("n1")
    async with agent_running(kube, monkeypatch, "n1", engine=engine):
        async with kube.session() as s:
            # "other" first: "mine" Ready is the sentinel that the watch delivered past it
            await s.post(LVG_URL, json=lvg("other", "n2"))
            await s.post(LVG_URL, json=lvg("mine", "n1"))
        await wait_for(lambda: _phase(kube, "mine") == "Ready", message="status of mine")
    assert ("reconcile", "other") not in engine.calls
    other = kube.read(LVG, "other")
    assert other.get("status") is None and not other["metadata"].get("finalizers")
    assert not any(k.startswith("agent.disklet.io") for k in (other["metadata"].get("annotations") or {}))
    mine = kube.read(LVG, "mine")
    assert mine["metadata"]["finalizers"] == ["disklet.io/agent"]
    assert any(k.startswith("agent.disklet.io/") for k in mine["metadata"]["annotations"])
    assert not any(k.startswith("kopf.zalando.org") for k in mine["metadata"]["annotations"])


@pytest.mark.kmock("reads the label selector of the agent's watch requests from the mock's request log")
async def test_the_agent_watches_only_its_nodes_objects(mock_kube, monkeypatch):
    kube = mock_kube
    async with agent_running(kube, monkeypatch, "n1", engine=FakeEngine("n1")):
        async with kube.session() as s:
            await s.post(LVG_URL, json=lvg("mine", "n1"))
        await wait_for(lambda: _phase(kube, "mine") == "Ready", message="status of mine")
    watches = [r for r in kube.request_log if "watch" in (r.params or {})
               and any(p in str(r.url) for p in ("lvmvolumegroups", "blockdevices", "disklayouts"))]
    assert {p for r in watches for p in ("lvmvolumegroups", "blockdevices") if p in str(r.url)} == {
        "lvmvolumegroups", "blockdevices"}
    assert all(r.params.get("labelSelector") == "disklet.io/node=n1" for r in watches)


async def test_status_written_once_then_no_write_without_change(kube, monkeypatch):
    engine = FakeEngine("n1")
    async with agent_running(kube, monkeypatch, "n1", engine=engine):
        async with kube.session() as s:
            await s.post(LVG_URL, json=lvg("a", "n1", files=2))
            await wait_for(lambda: _phase(kube, "a") == "Ready", message="status written")
            status = kube.read(LVG, "a")["status"]
            assert status["observedGeneration"] == 1
            assert {c["type"] for c in status["conditions"]} == {"VGConfigurationApplied", "VGReady"}
            assert [fd["name"] for fd in status["nodes"][0]["fileDevices"]] == ["f0", "f1"]
            assert _status_writes(kube) == 1
            # the operator writes its own condition; a label change re-triggers nothing that writes
            await s.patch(f"{LVG_URL}/a/status", headers=MERGE, json={"status": {"conditions": [
                *status["conditions"], {"type": "AgentReady", "status": "True", "reason": "LeaseFresh",
                                        "message": "", "lastTransitionTime": "2024-01-01T00:00:00Z"}]}})
            # spec change: a new reconcile whose outcome is written, keeping the operator's condition
            await s.patch(f"{LVG_URL}/a", headers=MERGE, json={"spec": {"thinPools": [{"name": "tp", "size": "50%"}]}})
            await wait_for(lambda: kube.read(LVG, "a")["status"].get("observedGeneration") == 2, message="gen 2")
            conds = {c["type"] for c in kube.read(LVG, "a")["status"]["conditions"]}
            assert conds == {"VGConfigurationApplied", "VGReady", "AgentReady"}
        before = _status_writes(kube)
        assert before == 3  # first write, the operator's patch, the generation-2 write
        reconciles = sum(1 for c in engine.calls if c == ("reconcile", "a"))
        assert reconciles >= 2
        # the timer runs a reconcile only when not converged: make it run with an unchanged outcome
        # (a sentinel: two more engine calls for "a", whatever they are, instead of a sleep)
        calls = sum(1 for c in engine.calls if c[1] == "a")
        await wait_for(lambda: sum(1 for c in engine.calls if c[1] == "a") >= calls + 2,
                       message="two more engine calls for a", timeout=30)
    assert _status_writes(kube) == before


async def test_timer_reconcile_with_no_change_writes_nothing(kube, monkeypatch):
    engine = FakeEngine("n1")
    async with agent_running(kube, monkeypatch, "n1", engine=engine, scan_interval=0.2):
        async with kube.session() as s:
            # a thin pool the fake never reports: the timer keeps reconciling, the outcome never changes
            body = lvg("tp", "n1")
            body["spec"]["thinPools"] = [{"name": "pool", "size": "100%"}]
            await s.post(LVG_URL, json=body)
        await wait_for(lambda: _phase(kube, "tp") == "Ready", message="first status")
        await wait_for(lambda: sum(1 for c in engine.calls if c == ("reconcile", "tp")) >= 4, timeout=10,
                       message="timer re-reconciles")
    assert _status_writes(kube) == 1


async def test_selected_block_devices_come_from_the_index(kube, monkeypatch):
    engine = FakeEngine("n1")
    disks = FakeDisks([disk("/dev/vdb", serial="SB"), disk("/dev/vdc", serial="SC", size=512 * 1024 ** 2)])
    async with agent_running(kube, monkeypatch, "n1", engine=engine, disks=disks):
        await wait_for(lambda: len(kube.read_all("disklet.io/v1alpha1/blockdevices")) == 2, message="BDs")
        async with kube.session() as s:
            await s.post(LVG_URL, json=lvg("sel", "n1", files=0,
                                           selector={"matchLabels": {"disklet.io/consumable": "true"}}))
        await wait_for(lambda: _phase(kube, "sel") == "Ready", message="status")
    assert [p for _, p in engine.block_devices["sel"]] == ["/dev/vdb"]
    devices = kube.read(LVG, "sel")["status"]["nodes"][0]["devices"]
    assert [d["path"] for d in devices] == ["/dev/vdb"] and ".dev-" in devices[0]["blockDevice"]


async def test_delete_keeps_finalizer_until_engine_done(kube, monkeypatch):
    engine = FakeEngine("n1")
    async with agent_running(kube, monkeypatch, "n1", engine=engine):
        async with kube.session() as s:
            await s.post(LVG_URL, json=lvg("d", "n1"))
            await wait_for(lambda: _phase(kube, "d") == "Ready", message="ready")
            await s.delete(f"{LVG_URL}/d")
            await wait_for(lambda: _phase(kube, "d") == "Terminating", message="terminating")
            await wait_for(lambda: sum(1 for c in engine.calls if c == ("delete", "d")) >= 2, message="retries")
            obj = kube.read(LVG, "d")
            assert obj is not None and obj["metadata"]["finalizers"] == ["disklet.io/agent"]
            vg_ready = next(c for c in obj["status"]["conditions"] if c["type"] == "VGReady")
            assert vg_ready["reason"] == "Terminating" and "lv1" in vg_ready["message"]
            engine.delete_done = True
            await wait_for(lambda: kube.read(LVG, "d") is None, message="finalizer released, object gone")


async def test_startup_reattach_runs_before_handlers(kube, monkeypatch):
    kube.seed(LVG, {**lvg("old", "n1"), "status": {"phase": "Ready"}})
    kube.seed(LVG, {**lvg("peer", "n2"), "status": {"phase": "Ready"}})
    engine = FakeEngine("n1", reattach_problems=[ReattachProblem("old", "cannot re-attach a file: gone")])
    async with agent_running(kube, monkeypatch, "n1", engine=engine):
        await wait_for(lambda: ("reconcile", "old") in engine.calls, message="resume handler")
        await wait_for(lambda: any(e.get("reason") == "ReattachFailed" for e in kube.read_all("v1/events")),
                       message="re-attach problem reported as an Event")
    assert engine.calls[0] == ("reattach", "old")
    assert ("reattach", "peer") not in engine.calls
    assert engine.calls.index(("reattach", "old")) < engine.calls.index(("reconcile", "old"))


async def test_node_discovery_writes_only_on_change(kube, monkeypatch):
    engine = FakeEngine("n1")
    async with agent_running(kube, monkeypatch, "n1", engine=engine, scan_interval=0.2):
        async with kube.session() as s:
            await s.post(LVG_URL, json=lvg("disc", "n1"))
        await wait_for(lambda: _phase(kube, "disc") == "Ready", message="ready")
        current = LVMVolumeGroupStatus.model_validate(kube.read(LVG, "disc")["status"])
        same = current.model_copy(deep=True)
        engine.discovered["disc"] = same  # discovery finds exactly what status says: no write
        n0 = sum(1 for c in engine.calls if c[0] == "discover")
        await wait_for(lambda: sum(1 for c in engine.calls if c[0] == "discover") >= n0 + 3, message="cycles")
        assert _status_writes(kube) == 1
        grown = current.model_copy(deep=True)
        grown.vg_size = "2Gi"
        engine.discovered["disc"] = grown
        await wait_for(lambda: kube.read(LVG, "disc")["status"].get("vgSize") == "2Gi", message="discovered size")
        n1 = _status_writes(kube)
        d1 = sum(1 for c in engine.calls if c[0] == "discover")
        await wait_for(lambda: sum(1 for c in engine.calls if c[0] == "discover") >= d1 + 3, message="3 more cycles")
        assert _status_writes(kube) == n1
    st = kube.read(LVG, "disc")["status"]
    assert st["phase"] == "Ready" and {c["type"] for c in st["conditions"]} == {"VGConfigurationApplied", "VGReady"}
