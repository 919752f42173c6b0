"""kctl get/describe/delete/node on the real API server, with seeded objects."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from kctl_fixtures import BD, DL, LVG, block_device, disk_layout, kctl, lvg, table_rows

from disklet.cli.commands import find_agent_pod
from disklet.cli.kube import Kube


@pytest.fixture()
def kube(real_kube):
    return real_kube


REFUSED = {"phase": "refused", "refusalReason": "target_device_is_active_lvm_pv",
           "message": "/dev/sdb is an active LVM physical volume (VG vg_old)", "targetDevices": ["/dev/sdb"],
           "targetDevicesText": "/dev/sdb",
           "layoutHash": "a67e389b9c55f348112ca80969a0a2463ebf3a66f161bd25f6465a4a97f60c6f", "layoutGeneration": 1,
           "observedGeneration": 1, "nodeMode": "controller-managed", "lastAttemptTime": "2024-05-01T10:00:00Z",
           "conditions": [{"type": "Applied", "status": "False", "reason": "Refused", "lastTransitionTime":
                           "2024-05-01T10:00:00Z", "message": "target_device_is_active_lvm_pv: /dev/sdb"},
                          {"type": "Ready", "status": "False", "reason": "Refused", "lastTransitionTime":
                           "2024-05-01T10:00:00Z", "message": "target_device_is_active_lvm_pv: /dev/sdb"}]}
APPLIED = {"phase": "applied", "targetDevices": ["/dev/nvme1n1", "/dev/sdz"], "targetDevicesText": "/dev/nvme1n1,/dev/sdz", "layoutHash": "0d5a2c1e9b7f" + "0" * 52,
           "layoutGeneration": 2, "appliedLayoutGeneration": 2, "nodeMode": "controller-managed"}


def _seed_layouts(kube) -> None:
    kube.seed(DL, disk_layout("node-a-data", "node-a", status=APPLIED))
    kube.seed(DL, disk_layout("node-b-data", "node-b", "/dev/sdb", status=REFUSED))


async def test_get_disk_layouts_table_filters_and_formats(kube):
    _seed_layouts(kube)
    for alias in ("disk-layouts", "dl", "disklayouts"):
        r = await kctl(kube, "get", alias)
        assert r.code == 0, r.err
        lines = r.out.splitlines()
        assert lines[0].split() == ["NAME", "NODE", "PHASE", "REASON", "DEVICES", "AGE"]
        rows = table_rows(r.out)  # an unset column is an empty cell, as in `kubectl get`
        assert list(rows[0].values())[:5] == ["node-a-data", "node-a", "applied", "", "/dev/nvme1n1,/dev/sdz"]
        assert list(rows[1].values())[:5] == ["node-b-data", "node-b", "refused", "target_device_is_active_lvm_pv",
                                              "/dev/sdb"]

    r = await kctl(kube, "get", "disk-layouts", "--node", "node-b", "-o", "wide")
    lines = r.out.splitlines()
    assert lines[0].split() == ["NAME", "NODE", "PHASE", "REASON", "DEVICES", "READY", "GENERATION", "MODE", "AGE"]
    assert len(lines) == 2 and lines[1].split()[5:8] == ["False", "1", "controller-managed"]

    r = await kctl(kube, "get", "dl", "-o", "json")
    data = json.loads(r.out)
    assert data["kind"] == "List" and [i["metadata"]["name"] for i in data["items"]] == ["node-a-data", "node-b-data"]
    r = await kctl(kube, "get", "dl", "node-b-data", "-o", "yaml")
    assert yaml.safe_load(r.out)["status"]["refusalReason"] == "target_device_is_active_lvm_pv"

    r = await kctl(kube, "get", "dl", "--node", "nowhere")
    assert r.code == 0 and r.out == "" and "No resources found for node nowhere." in r.err
    r = await kctl(kube, "get", "dl", "missing")
    assert r.code == 1 and "DiskLayout/missing not found" in r.err
    r = await kctl(kube, "get", "pvcs")
    assert r.code == 2 and "unknown resource type" in r.err


async def test_get_lvg_and_block_devices(kube):
    kube.seed(LVG, lvg("vg-data-a", "node-a", "vg_data", {"phase": "Ready", "vgSize": "20Gi", "vgFree": "10Gi",
                                                          "thinPoolReady": "1/1"}))
    kube.seed(BD, block_device("node-a", "/dev/sdb", "100Gi"))
    kube.seed(BD, block_device("node-b", "/dev/sdc", "50Gi", fs_type="LVM2_member", consumable=False, vg="vg_x"))
    r = await kctl(kube, "get", "lvg")
    assert r.code == 0, r.err
    # the CRD's printer columns, in their order: what `kubectl get lvg` prints
    header = r.out.splitlines()[0]
    assert [h.strip() for h in header.split("   ") if h.strip()][:9] == [
            "NAME", "THINPOOLS", "CONFIGURATION APPLIED", "PHASE", "READY", "NODE", "SIZE", "ALLOCATED", "VG"]
    row = table_rows(r.out)[0]
    assert list(row.values())[:9] == ["vg-data-a", "1/1", "", "Ready", "", "node-a", "20Gi", "", "vg_data"]
    r = await kctl(kube, "get", "bd", "--node", "node-b")
    lines = r.out.splitlines()
    assert lines[0].split() == ["NAME", "NODE", "CONSUMABLE", "SIZE", "PATH", "MODEL", "SERIAL", "REASON", "VG", "AGE"]
    assert len(lines) == 2 and lines[1].split()[1:6] == ["node-b", "false", "50Gi", "/dev/sdc", "vg_x"]


async def test_describe_disk_layout_shows_status_conditions_and_its_events(kube):
    _seed_layouts(kube)
    uid = kube.read(DL, "node-b-data")["metadata"]["uid"]
    kube.seed("v1/events", {"metadata": {"name": "node-b-data.0", "namespace": "default"},
                            "involvedObject": {"kind": "DiskLayout", "name": "node-b-data", "uid": "predecessor-uid"},
                            "type": "Normal", "reason": "Applied", "message": "a predecessor of the same name"})
    kube.seed("v1/events", {"metadata": {"name": "node-b-data.1", "namespace": "default"},
                            "involvedObject": {"kind": "DiskLayout", "name": "node-b-data", "uid": uid}, "type": "Warning",
                            "reason": "Refused", "message": "target_device_is_active_lvm_pv on /dev/sdb", "count": 3,
                            "source": {"component": "disklet-agent"}, "lastTimestamp": "2024-05-01T10:00:00Z"})
    kube.seed("v1/events", {"metadata": {"name": "node-a-data.1", "namespace": "default"},
                            "involvedObject": {"kind": "DiskLayout", "name": "node-a-data"}, "type": "Normal",
                            "reason": "Applied", "message": "applied layout generation 2"})
    r = await kctl(kube, "describe", "disk-layout", "node-b-data")
    assert r.code == 0, r.err
    for text in ("Name:", "node-b-data", "Node:", "node-b", "Source:", "diskLayout (structured, 1 disk(s))",
                 "/dev/sdb", "kcore0 100%: ext4 on /var/lib/kcore/volumes1", "Phase:", "refused",
                 "Refusal reason:", "target_device_is_active_lvm_pv", "Target devices:", "Next step:",
                 "Conditions:", "Applied", "Events:", "Warning", "(x3)", "disklet-agent"):
        assert text in r.out, text
    assert "applied layout generation 2" not in r.out, "events of other objects are not shown"
    assert "a predecessor of the same name" not in r.out, "Events are matched by UID, not by name"
    r = await kctl(kube, "describe", "dl", "missing")
    assert r.code == 1 and "not found" in r.err


async def test_delete_disk_layout_says_the_node_is_untouched(kube):
    _seed_layouts(kube)
    r = await kctl(kube, "delete", "disk-layout", "node-a-data")
    assert r.code == 0, r.err
    assert r.out.startswith("DiskLayout/node-a-data deleted\n") and "The node is untouched" in r.out
    assert kube.read(DL, "node-a-data") is None and kube.read(DL, "node-b-data") is not None
    r = await kctl(kube, "delete", "disk-layout", "node-a-data")
    assert r.code == 1 and "not found" in r.err
    r = await kctl(kube, "delete", "lvg", "x")
    assert r.code == 1 and "LVMVolumeGroup/x not found" in r.err
    r = await kctl(kube, "delete", "dl")
    assert r.code == 2 and "NAME... or -l SELECTOR" in r.err


async def test_node_disks_lists_only_that_nodes_block_devices(kube):
    kube.seed(BD, block_device("node-a", "/dev/sdc", "50Gi", fs_type="LVM2_member", consumable=False, vg="vg_data",
                               lvg="vg-data-a", reason="already a PV"))
    kube.seed(BD, block_device("node-a", "/dev/sdb", "100Gi"))
    kube.seed(BD, block_device("node-b", "/dev/sdd", "1Ti"))
    r = await kctl(kube, "node", "disks", "node-a")
    assert r.code == 0, r.err
    lines = r.out.splitlines()
    assert lines[0].split() == ["PATH", "TYPE", "SIZE", "TRANSPORT", "MODEL", "SERIAL", "FSTYPE", "CONSUMABLE", "REASON",
                                "VG", "LVG", "NAME"]
    assert [ln.split()[0] for ln in lines[1:]] == ["/dev/sdb", "/dev/sdc"]
    assert " no " in lines[2] and "already a PV" in lines[2] and "/dev/sdd" not in r.out
    r = await kctl(kube, "node", "disks", "node-c")
    assert r.code == 0 and r.out == "" and "No BlockDevices for node node-c" in r.err


async def test_describe_node_inventory(kube):
    kube.seed("v1/nodes", {"metadata": {"name": "node-a"}, "status": {"conditions": [{"type": "Ready", "status": "True"}]}})
    kube.seed(DL, disk_layout("node-a-data", "node-a", status=APPLIED))
    kube.seed(LVG, lvg("vg-data-a", "node-a", "vg_data", {
        "phase": "Ready", "vgSize": "20Gi", "vgFree": "10Gi", "allocatedSize": "10Gi", "thinPoolReady": "1/1",
        "nodes": [{"name": "node-a", "devices": [{"path": "/dev/sdc"}],
                   "fileDevices": [{"name": "a", "filePath": "/var/lib/disklet/file-devices/disklet-vg-data-a.a.img",
                                    "loopDevice": "/dev/loop3"}]}],
        "thinPools": [{"name": "tp0", "actualSize": "10Gi", "usedSize": "1Gi", "allocatedSize": "4Gi", "ready": True}]}))
    kube.seed(LVG, lvg("vg-data-b", "node-b", "vg_data"))
    kube.seed(BD, block_device("node-a", "/dev/sdc", "50Gi", fs_type="LVM2_member", consumable=False, vg="vg_data"))
    r = await kctl(kube, "describe", "node", "node-a")
    assert r.code == 0, r.err
    assert "Ready=True" in r.out and "filesystem, lvm" in r.out
    assert "node-a-data" in r.out and "applied" in r.out
    vg_line = next(ln for ln in r.out.splitlines() if ln.strip().startswith("vg-data-a"))
    assert vg_line.split() == ["vg-data-a", "vg_data", "Ready", "20Gi", "10Gi", "10Gi", "2", "1/1"]
    assert "vg-data-b" not in r.out
    assert "tp0" in r.out and "/dev/sdc" in r.out
    r = await kctl(kube, "describe", "node", "ghost")
    assert r.code == 1 and "not found" in r.err


async def test_agent_pod_lookup_uses_the_node_and_label(kube, tmp_path: Path):
    def pod(name: str, node: str, phase: str, created: str, labels: dict | None = None) -> dict:
        return {"metadata": {"name": name, "namespace": "disklet-system", "creationTimestamp": created,
                             "labels": labels if labels is not None else {"app.kubernetes.io/component": "agent"}},
                "spec": {"nodeName": node, "containers": [{"name": "agent", "image": "agent:0"},
                                                        {"name": "metrics-proxy", "image": "proxy:0"}]},
                "status": {"phase": phase}}
    kube.seed("v1/pods", pod("agent-other", "node-b", "Running", "2024-05-01T10:00:00Z"))
    kube.seed("v1/pods", pod("agent-starting", "node-a", "Pending", "2024-05-02T10:00:00Z"))
    kube.seed("v1/pods", pod("agent-a", "node-a", "Running", "2024-05-01T10:00:00Z"))
    kube.seed("v1/pods", pod("operator", "node-a", "Running", "2024-05-03T10:00:00Z", {"app.kubernetes.io/component": "operator"}))
    async with await Kube.connect(str(kube.kubeconfig)) as k:
        assert await find_agent_pod(k, "node-a", "disklet-system") == ("agent-a", "agent")
    before = kube.mutations()
    nix = tmp_path / "day2-disk.nix"
    nix.write_text("{ disko.devices = { }; }\n")
    r = await kctl(kube, "node", "apply-disk", "node-c", "-f", str(nix))
    assert r.code == 1 and "no running disklet agent pod on node 'node-c' in namespace 'disklet-system'" in r.err
    r = await kctl(kube, "node", "apply-disko", "node-c", "-f", str(nix))
    assert r.code == 1 and "deprecated" in r.err
    assert kube.mutations() == before
