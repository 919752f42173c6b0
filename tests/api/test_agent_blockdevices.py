"""BlockDevice sync and the agent Lease on the real API server (fake disk topology; real API writes,
counted by the server's request metrics)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from agent_fixtures import BD, GIB, LEASES, FakeDisks, agent_running, disk, part
from disklet_agent.logic.blockdevices import PvFact

from devkit.kopfrun import wait_for


@pytest.fixture()
def kube(real_kube):
    return real_kube


def _writes(kube, plural: str) -> int:
    return kube.mutations(plural)


def _by_path(kube) -> dict[str, dict]:
    return {(o.get("status") or {}).get("path"): o for o in kube.read_all(BD)}


async def test_block_device_sync_creates_updates_deletes_and_idles(kube, monkeypatch):
    disks = FakeDisks([disk("/dev/vdb", serial="SB"),
                       disk("/dev/vdc", wwn="0x5000c500a1b2c3d4", children=[part("/dev/vdc1", "p-uuid-1")]),
                       disk("/dev/loop0")])
    disks.roots[2].type = "loop"
    pvs: dict[str, PvFact] = {}
    async with agent_running(kube, monkeypatch, "n1", disks=disks, scan_interval=0.2, pv_reader=lambda: dict(pvs)):
        await wait_for(lambda: len(_by_path(kube)) == 3 and all(o.get("status") for o in kube.read_all(BD)),
                       message="three BlockDevices with status")
        objs = _by_path(kube)
        assert "/dev/loop0" not in objs, "loop devices are never BlockDevices"
        vdb, vdc, vdc1 = objs["/dev/vdb"], objs["/dev/vdc"], objs["/dev/vdc1"]
        assert vdb["metadata"]["name"].startswith("n1.dev-")  # node-bound (docs/security.md)
        assert vdb["status"]["consumable"] is True and vdb["status"]["nodeName"] == "n1"
        assert vdc["status"]["consumable"] is False and "partitions" in vdc["status"]["consumableReason"]
        labels = vdb["metadata"]["labels"]
        assert labels["disklet.io/node"] == "n1" and labels["kubernetes.io/hostname"] == "n1"
        assert labels["disklet.io/consumable"] == "true" and labels["disklet.io/type"] == "disk"
        assert labels["disklet.io/size"] == "10Gi" and labels["disklet.io/serial"] == "SB"
        assert labels["disklet.io/name"] == "vdb" and labels["disklet.io/model"] == "QEMU_HARDDISK"
        assert vdc1["metadata"]["labels"]["disklet.io/partuuid"] == "p-uuid-1"
        names = {p: o["metadata"]["name"] for p, o in objs.items()}

        # nothing changed: several cycles, no write at all (cycles counted, not slept)
        await _cycles(disks, 2)
        idle_from = _writes(kube, "blockdevices")
        await _cycles(disks, 3)
        assert _writes(kube, "blockdevices") == idle_from

        # vdb becomes a PV of a VG; vdc is renamed to vdd (same WWN): same object, new path
        pvs["/dev/vdb"] = PvFact(device="/dev/vdb", pv_uuid="PV-1", vg_name="vg0", vg_uuid="VG-1",
                                 lvm_volume_group_name="lvg-a")
        disks.roots[1] = disk("/dev/vdd", wwn="0x5000c500a1b2c3d4", children=[part("/dev/vdd1", "p-uuid-1")])
        await wait_for(lambda: "/dev/vdd" in _by_path(kube) and (_by_path(kube)["/dev/vdb"]["status"].get("pvUUID")),
                       message="updated facts")
        objs = _by_path(kube)
        assert objs["/dev/vdd"]["metadata"]["name"] == names["/dev/vdc"], "the name follows the disk, not the path"
        assert objs["/dev/vdd1"]["metadata"]["name"] == names["/dev/vdc1"]
        vdb = objs["/dev/vdb"]
        assert vdb["metadata"]["name"] == names["/dev/vdb"]
        assert vdb["status"]["consumable"] is False and "vg0" in vdb["status"]["consumableReason"]
        assert vdb["metadata"]["labels"]["disklet.io/consumable"] == "false"
        assert vdb["metadata"]["labels"]["disklet.io/vg"] == "vg0"
        assert vdb["status"]["lvmVolumeGroupName"] == "lvg-a"

        # a disk disappears: its object is deleted
        del disks.roots[0]
        await wait_for(lambda: "/dev/vdb" not in _by_path(kube), message="deleted")
        assert len(kube.read_all(BD)) == 2


async def test_other_nodes_block_devices_are_never_touched(kube, monkeypatch):
    foreign = {"apiVersion": "disklet.io/v1alpha1", "kind": "BlockDevice",
               "metadata": {"name": "dev-foreign", "labels": {"disklet.io/node": "n2"}},
               "status": {"nodeName": "n2", "path": "/dev/vdb", "size": "1Gi", "type": "disk"}}
    seeded = kube.seed(BD, foreign)
    disks = FakeDisks([disk("/dev/vdb", serial="X")])
    async with agent_running(kube, monkeypatch, "n1", disks=disks, scan_interval=0.2):
        await wait_for(lambda: len(kube.read_all(BD)) == 2, message="own BD created")
        await _cycles(disks, 3)
    assert kube.read(BD, "dev-foreign") == seeded, "no write reached the other node's object (same resourceVersion)"


async def test_failed_scan_writes_nothing(kube, monkeypatch):
    from disklet_agent.host.lsblk import ProbeFailed

    disks = FakeDisks([disk("/dev/vdb", serial="SB", size=2 * GIB)])
    state = {"fail": False}
    real_read = disks.read

    def read():
        if state["fail"]:
            state["failed"] = state.get("failed", 0) + 1
            raise ProbeFailed("lsblk failed")
        return real_read()

    disks.read = read  # type: ignore[method-assign]
    async with agent_running(kube, monkeypatch, "n1", disks=disks, scan_interval=0.2):
        await wait_for(lambda: len(kube.read_all(BD)) == 1, message="created")
        state["fail"] = True
        await wait_for(lambda: state.get("failed", 0) >= 1, message="a failed scan")
        before = _writes(kube, "blockdevices")
        await wait_for(lambda: state.get("failed", 0) >= 4, message="three more failed scans", timeout=30)
        assert _writes(kube, "blockdevices") == before
        assert len(kube.read_all(BD)) == 1, "an unreadable scan never deletes"


async def test_lease_created_and_renewed(kube, monkeypatch):
    async with agent_running(kube, monkeypatch, "n1", lease_interval=0.2):
        lease = await wait_for(lambda: kube.read(LEASES, "disklet-agent-n1", "disklet-test"), message="lease")
        first = lease["spec"]["renewTime"]
        await wait_for(lambda: kube.read(LEASES, "disklet-agent-n1", "disklet-test")["spec"]["renewTime"] != first,
                       message="renewed")
    spec = kube.read(LEASES, "disklet-agent-n1", "disklet-test")["spec"]
    assert spec["holderIdentity"] == "n1" and spec["leaseDurationSeconds"] == 60
    renew = datetime.strptime(spec["renewTime"], "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)
    assert abs((datetime.now(UTC) - renew).total_seconds()) < 30
    assert len(spec["renewTime"].split(".")[1]) == 7  # six digits + Z (MicroTime)


async def _cycles(disks: FakeDisks, n: int) -> None:
    """Wait until the scanner has started ``n`` more scans (so ``n - 1`` full cycles completed)."""
    start = disks.reads
    await wait_for(lambda: disks.reads >= start + n, message=f"{n} more scan cycles", timeout=30)
