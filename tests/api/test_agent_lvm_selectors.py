"""The agent's LVMVolumeGroup selection by ``blockDeviceSelector.match`` on the real API server: the
agent's BlockDevice index carries each device's status, the selector reads it, and two VGs of one
node that want the same consumable device both go without it, with a Warning Event naming both."""

from __future__ import annotations

import pytest
from agent_fixtures import LVG, LVG_URL, FakeDisks, FakeEngine, agent_running, disk, lvg

from devkit.kopfrun import wait_for

GIB = 1024**3


@pytest.fixture()
def kube(real_kube):
    return real_kube


def _disks() -> FakeDisks:
    return FakeDisks([disk("/dev/nvme0n1", serial="N0", wwn="eui.00", size=2048 * GIB, tran="nvme"),
                      disk("/dev/nvme1n1", serial="N1", wwn="eui.01", size=512 * GIB, tran="nvme"),
                      disk("/dev/sdb", serial="S1", size=4096 * GIB, tran="sata", rota=True)])


def _bds_written(kube) -> bool:
    """All three BlockDevices exist with their status (the agent creates each, then writes its status)."""
    bds = kube.read_all("disklet.io/v1alpha1/blockdevices")
    return len(bds) == 3 and all((b.get("status") or {}).get("transport") for b in bds)


def _phase(kube, name):
    return ((kube.read(LVG, name) or {}).get("status") or {}).get("phase")


async def test_match_selects_by_facts_from_the_index(kube, monkeypatch):
    engine = FakeEngine("n1")
    async with agent_running(kube, monkeypatch, "n1", engine=engine, disks=_disks()):
        await wait_for(lambda: _bds_written(kube), message="BDs with their status", timeout=60)
        bds = {b["status"]["path"]: b["status"] for b in kube.read_all("disklet.io/v1alpha1/blockdevices")}
        assert bds["/dev/nvme0n1"]["transport"] == "nvme" and bds["/dev/sdb"]["transport"] == "sata"
        async with kube.session() as s:
            await s.post(LVG_URL, json=lvg("fast", "n1", files=0, selector={
                "match": 'disk.transport == "nvme" && disk.size >= 1Ti'}))
        await wait_for(lambda: _phase(kube, "fast") == "Ready", message="status", timeout=60)
    assert [p for _, p in engine.block_devices["fast"]] == ["/dev/nvme0n1"]


async def test_overlapping_selections_take_neither_device_and_name_both(kube, monkeypatch):
    engine = FakeEngine("n1")
    async with agent_running(kube, monkeypatch, "n1", engine=engine, disks=_disks()):
        await wait_for(lambda: _bds_written(kube), message="BDs with their status", timeout=60)
        async with kube.session() as s:
            await s.post(LVG_URL, json=lvg("big", "n1", files=1, vg="vg-big",
                                           selector={"match": "disk.size >= 1Ti"}))
            await wait_for(lambda: _phase(kube, "big") == "Ready", message="big ready", timeout=60)
            await s.post(LVG_URL, json=lvg("nvme", "n1", files=1, vg="vg-nvme",
                                           selector={"match": 'disk.transport == "nvme"'}))
            await wait_for(lambda: any(e.get("reason") == "SelectionOverlap"
                                       and (e.get("involvedObject") or {}).get("name") == "nvme"
                                       for e in kube.read_all("v1/events")), message="overlap Event", timeout=60)
        event = next(e for e in kube.read_all("v1/events") if e.get("reason") == "SelectionOverlap"
                     and (e.get("involvedObject") or {}).get("name") == "nvme")
        assert event["type"] == "Warning"
        assert "LVMVolumeGroup nvme overlaps with LVMVolumeGroup big" in event["message"]
        assert "/dev/nvme0n1 also selected by big" in event["message"]
        await wait_for(lambda: engine.block_devices.get("nvme") is not None, message="nvme reconciled", timeout=60)
        # the contested NVMe goes to neither; what only one of them selects is still theirs
        assert [p for _, p in engine.block_devices["nvme"]] == ["/dev/nvme1n1"]
        # big's next reconcile (a spec change: one more file device) no longer gets the contested disk
        before = engine.calls.count(("reconcile", "big"))
        async with kube.session() as s:
            resp = await s.patch(f"{LVG_URL}/big", headers={"Content-Type": "application/merge-patch+json"}, json={
                "spec": {"fileDevices": [{"name": "f0", "directory": "/var/lib/disklet/file-devices", "size": "1Gi"},
                                         {"name": "f1", "directory": "/var/lib/disklet/file-devices", "size": "1Gi"}]}})
            assert resp.status == 200, await resp.text()
        await wait_for(lambda: engine.calls.count(("reconcile", "big")) > before, message="big reconciled again", timeout=60)
        assert sorted(p for _, p in engine.block_devices["big"]) == ["/dev/sdb"]


async def test_a_match_the_server_cannot_check_is_reported_in_status_not_crashed_on(kube, monkeypatch):
    """The API server accepts any string as match; the agent type-checks it and says which field."""
    engine = FakeEngine("n1")
    async with agent_running(kube, monkeypatch, "n1", engine=engine, disks=_disks()):
        async with kube.session() as s:
            resp = await s.post(LVG_URL, json=lvg("typo", "n1", files=1, selector={"match": 'disk.tranport == "nvme"'}))
            assert resp.status == 201, await resp.text()  # the server cannot type-check the disk variables

        def condition():  # type: ignore[no-untyped-def]
            conds = ((kube.read(LVG, "typo") or {}).get("status") or {}).get("conditions") or []
            return next((c for c in conds if c["type"] == "VGConfigurationApplied"), None)

        await wait_for(lambda: condition() is not None, message="condition", timeout=60)
        cond = condition()
        assert cond["status"] == "False" and cond["reason"] == "ValidationFailed"
        assert "spec.blockDeviceSelector" in cond["message"] and "undeclared reference to 'disk.tranport'" in cond["message"]
    assert ("reconcile", "typo") not in engine.calls  # nothing reached the node

    # and it can still be deleted: the finalizer is released (match only chooses devices)
    async with agent_running(kube, monkeypatch, "n1", engine=engine, disks=_disks()):
        engine.delete_done = True
        async with kube.session() as s:
            await s.delete(f"{LVG_URL}/typo")
        await wait_for(lambda: kube.read(LVG, "typo") is None, message="deleted", timeout=60)
    assert ("delete", "typo") in engine.calls
