"""kctl diff of LVM manifests on the real API server: the per-node plan from the nodes' BlockDevices
and the children's reported status, and what the agent's own checks would refuse."""

from __future__ import annotations

import pytest
import yaml
from kctl_fixtures import BD, LVG, block_device, kctl

from disklet.api.lvm import backing_file_name


@pytest.fixture()
def kube(real_kube):
    return real_kube


NODES = "v1/nodes"
BASE = "/var/lib/disklet/file-devices"


def _node(name: str, **labels: str) -> dict:
    return {"apiVersion": "v1", "kind": "Node", "metadata": {"name": name, "labels": labels}}


def _set(directory: str = BASE) -> dict:
    return {"apiVersion": "disklet.io/v1alpha1", "kind": "LVMVolumeGroupSet", "metadata": {"name": "data"},
            "spec": {"nodeSelector": {"matchLabels": {"pool": "ssd"}}, "lvmVolumeGroupTemplate": {
                "actualVGNameOnTheNode": "vg-data", "blockDeviceSelector": {"matchLabels": {"disk": "fast"}},
                "fileDevices": [{"name": "a", "directory": directory, "size": "20Gi"}],
                "thinPools": [{"name": "tp", "size": "50%"}]}}}


def _seed(kube) -> None:
    kube.seed(NODES, _node("n1", pool="ssd"))
    kube.seed(NODES, _node("n2", pool="ssd"))
    kube.seed(NODES, _node("n3", pool="hdd"))
    fast = block_device("n1", "/dev/sdb", "100Gi")
    fast["metadata"]["labels"]["disk"] = "fast"
    busy = block_device("n1", "/dev/sdc", "50Gi", fs_type="ext4", consumable=False, reason="has a filesystem (ext4)")
    busy["metadata"]["labels"]["disk"] = "fast"
    kube.seed(BD, fast)
    kube.seed(BD, busy)
    child = {"apiVersion": "disklet.io/v1alpha1", "kind": "LVMVolumeGroup",
             "metadata": {"name": "data-n2", "labels": {"disklet.io/node": "n2", "disklet.io/lvmvolumegroupset": "data"}},
             "spec": {"local": {"nodeName": "n2"}, "actualVGNameOnTheNode": "vg-data",
                      "fileDevices": [{"name": "a", "directory": BASE, "size": "10Gi"}]},
             "status": {"vgUUID": "U-1", "vgSize": "10236Mi", "vgFree": "5116Mi", "extentSize": "4Mi",
                        "nodes": [{"name": "n2", "fileDevices": [{
                            "name": "a", "filePath": f"{BASE}/{backing_file_name('data-n2', 'a')}",
                            "loopDevice": "/dev/loop3", "size": "10236Mi"}]}],
                        "thinPools": [{"name": "tp", "actualSize": "5Gi"}]}}
    kube.seed(LVG, child)


async def test_per_node_plan_from_inventory_and_status(kube, tmp_path):
    _seed(kube)
    f = tmp_path / "set.yaml"
    f.write_text(yaml.safe_dump(_set()))
    before = kube.mutations()
    r = await kctl(kube, "diff", "-f", str(f))
    assert r.code == 1, r.err + r.out  # kubectl diff's convention: 1 = there are differences
    out = r.out
    assert "node n3" not in out, "n3 does not match the selector"
    n1 = out[out.index("node n1"):out.index("node n2")]
    assert "VG vg-data: create (vgcreate with 2 PV(s)" in n1
    assert f"file {BASE}/disklet-data-n1.a.img: create 20Gi" in n1
    assert "device /dev/sdb (dev-n1-sdb, 100Gi): becomes a PV of vg-data (pvcreate, vgcreate)" in n1
    assert "device /dev/sdc (dev-n1-sdc, 50Gi): skipped, not consumable (has a filesystem (ext4))" in n1
    assert "thin pool tp (50%): create" in n1
    n2 = out[out.index("node n2"):]
    assert "VG vg-data: exists (U-1); no new PVs" in n2
    assert "disklet-data-n2.a.img: grow 10236Mi → 20Gi" in n2
    assert "none of the node's BlockDevices matches" in n2
    assert "thin pool tp (50%): grow 5Gi" in n2
    assert kube.mutations() == before, "diff writes nothing"


async def test_what_the_agent_would_refuse_is_shown_and_exits_1(kube, tmp_path):
    _seed(kube)
    f = tmp_path / "set.yaml"
    f.write_text(yaml.safe_dump(_set(directory="/srv/elsewhere")))
    r = await kctl(kube, "diff", "-f", str(f))
    assert r.code == 2, "refused: an error, not just a difference"
    assert r.out.count("REFUSED: fileDevices[a]: directory '/srv/elsewhere' is outside the file devices base") == 2
    assert f"REFUSED: the API server would refuse: file device 'a': directory {BASE} → /srv/elsewhere: the directory is immutable" in r.out
    offline = await kctl(kube, "diff", "--offline", "-f", str(f))
    assert offline.code == 2 and "node <each matching node>: LVMVolumeGroup data-<node>" in offline.out
    assert "disklet-data-<node>.a.img" in offline.out
    other_base = await kctl(kube, "diff", "--file-devices-dir", "/srv", "-f", str(f))
    assert "node n1" in other_base.out and other_base.out.count("REFUSED") == 1, \
        "the base directory is a chart value (an option here); n2's child still has the old directory"
