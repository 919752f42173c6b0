"""Disk selectors on the real API server: a DiskLayout and an LVMVolumeGroupSet chosen by ``match``,
``kctl diff``'s per-node resolution from the BlockDevices, ``kctl apply`` of both, the overlap refusal.

The BlockDevices are what the agent writes for two recorded machines (the pure discovery over
``tests/unit/disk_recordings``): n1 the mixed server (system NVMe, two empty 1.92 TB NVMe, an empty
960 GB Intel NVMe, SATA/SAS/multipath/ZFS/USB disks in use), n2 the same machine without the
Intel NVMe and with one of the 1.92 TB NVMe holding a filesystem.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from disklet_agent.host.lsblk import parse_by_id_listing, parse_lsblk_json
from disklet_agent.logic.blockdevices import PvFact, desired_block_devices
from disklet_agent.logic.topology import BlockTopology
from kctl_fixtures import BD, LVG, kctl

REC = Path(__file__).resolve().parents[1] / "unit" / "disk_recordings"
NODES = "v1/nodes"
DL = "disklet.io/v1alpha1/disklayouts"
SET = "disklet.io/v1alpha1/lvmvolumegroupsets"
FAST = 'disk.transport == "nvme" && disk.size >= 1Ti'


@pytest.fixture()
def kube(real_kube):
    return real_kube


def _inventory(node: str, edit: Any = None) -> list[dict[str, Any]]:
    data = json.loads((REC / "server-mixed.lsblk.json").read_text())
    if edit:
        edit(data["blockdevices"])
    roots = parse_lsblk_json(json.dumps(data))
    links = parse_by_id_listing((REC / "server-mixed.by-id.txt").read_text())
    for root in roots:
        for n in root.walk():
            n.by_id = links.get(n.kname, [])
    pvs = {"/dev/sdb": PvFact("/dev/sdb", "pvU1", "data", "vgU1")}
    return [d.to_object() for d in desired_block_devices(BlockTopology(roots=roots), pvs, node, "mid-" + node)]


def _n2(devs: list[dict[str, Any]]) -> None:
    devs[:] = [d for d in devs if d["name"] != "/dev/nvme3n1"]
    for d in devs:
        if d["name"] == "/dev/nvme2n1":
            d["fstype"], d["mountpoints"] = "xfs", ["/srv/old"]


def _seed(kube) -> None:
    for node, pool in (("n1", "nvme"), ("n2", "nvme")):
        kube.seed(NODES, {"apiVersion": "v1", "kind": "Node", "metadata": {"name": node, "labels": {"pool": pool}}})
    for obj in _inventory("n1") + _inventory("n2", _n2):
        kube.seed(BD, obj)


def _layout(node: str, match: str) -> dict[str, Any]:
    return {"apiVersion": "disklet.io/v1alpha1", "kind": "DiskLayout", "metadata": {"name": f"data-{node}"},
            "spec": {"nodeName": node, "diskLayout": {"disks": [{"name": "fast", "match": match, "gpt": {"partitions": [
                {"name": "data", "size": "100%",
                 "content": {"type": "filesystem", "format": "xfs", "mountpoint": "/var/lib/scratch/fast"}}]}}]}}}


def _set(match: str = FAST) -> dict[str, Any]:
    return {"apiVersion": "disklet.io/v1alpha1", "kind": "LVMVolumeGroupSet", "metadata": {"name": "fast"},
            "spec": {"nodeSelector": {"matchLabels": {"pool": "nvme"}}, "lvmVolumeGroupTemplate": {
                "actualVGNameOnTheNode": "vg-fast", "blockDeviceSelector": {"match": match}}}}


def _write(tmp_path: Path, *objs: dict[str, Any]) -> str:
    f = tmp_path / "m.yaml"
    f.write_text(yaml.safe_dump_all(list(objs)))
    return str(f)


async def test_diff_resolves_a_layout_selector_per_node_and_apply_sends_it(kube, tmp_path):
    _seed(kube)
    path = _write(tmp_path, _layout("n1", 'disk.transport == "nvme" && disk.model.startsWith("INTEL")'))
    r = await kctl(kube, "diff", "-f", path)
    assert r.code == 1, r.err + r.out  # new object: differences
    out = r.out
    assert "selectors on node n1" in out
    assert "disk fast: match 'disk.transport == \"nvme\" && disk.model.startsWith(\"INTEL\")' resolves to " \
           "/dev/nvme3n1 (INTEL SSDPE2KX010T8, serial PHLJ0123004B960CGN" in out
    # every other disk is listed with why it is not chosen
    lines = [ln.strip() for ln in out.splitlines()]
    assert any(ln.startswith("/dev/nvme1n1 (SAMSUNG MZQL21T9HCJR-00A07, serial S64GNE0R600123")
               and ln.endswith(": does not match") for ln in lines), out
    assert any(ln.startswith("/dev/nvme3n1 (INTEL") and ln.endswith(": chosen") for ln in lines), out
    assert any(ln.startswith("/dev/sda (WDC WD80EFZZ-68BTXN0") and ln.endswith(": does not match") for ln in lines)

    r = await kctl(kube, "diff", "-f", path, "--offline")
    assert "disk fast: match" in r.out and "cannot resolve offline" in r.out, r.out

    r = await kctl(kube, "apply", "-f", path)
    assert r.code == 0, r.err + r.out
    stored = kube.read(DL, "data-n1")
    assert stored["spec"]["diskLayout"]["disks"][0]["match"].startswith('disk.transport == "nvme"')
    assert "device" not in stored["spec"]["diskLayout"]["disks"][0]


async def test_diff_refuses_ambiguous_and_in_use_selections_listing_candidates(kube, tmp_path):
    _seed(kube)
    r = await kctl(kube, "diff", "-f", _write(tmp_path, _layout("n1", FAST)))
    assert r.code == 2, r.err + r.out
    assert "REFUSED: selector_ambiguous" in r.out
    assert "/dev/nvme1n1 (SAMSUNG MZQL21T9HCJR-00A07, serial S64GNE0R600123" in r.out
    assert "/dev/nvme2n1 (SAMSUNG MZQL21T9HCJR-00A07, serial S64GNE0R600124" in r.out
    # on n2 the same selector is unique: the other 1.92 TB NVMe holds a mounted filesystem
    r = await kctl(kube, "diff", "-f", _write(tmp_path, _layout("n2", FAST)))
    assert r.code == 1, r.err + r.out
    assert "resolves to /dev/nvme1n1" in r.out
    assert "/dev/nvme2n1" in r.out and "matches, but is not consumable: Mounted (mounted at /srv/old)" in r.out
    # a disk in use is never chosen, even when it is the only match
    r = await kctl(kube, "diff", "-f", _write(tmp_path, _layout("n1", 'disk.model == "Micron_5300_MTFDDAK960TDS"')))
    assert r.code == 2 and "REFUSED: selector_matched_nothing" in r.out
    assert "matches, but is not consumable: LVMPhysicalVolume (LVM PV of volume group data)" in r.out
    # a misspelt field is a clear error naming the field, before anything is sent
    r = await kctl(kube, "apply", "-f", _write(tmp_path, _layout("n1", "disk.sise >= 1Ti")))
    assert r.code != 0 and "match" in r.err + r.out and "undeclared reference to 'disk.sise'" in r.err + r.out
    assert kube.read(DL, "data-n1") is None


async def test_set_by_selector_per_node_plan_apply_and_overlap(kube, tmp_path):
    _seed(kube)
    path = _write(tmp_path, _set())
    r = await kctl(kube, "diff", "-f", path)
    assert r.code == 1, r.err + r.out
    n1 = r.out[r.out.index("node n1"):r.out.index("node n2")]
    n2 = r.out[r.out.index("node n2"):]
    assert "device /dev/nvme1n1" in n1 and "becomes a PV of vg-fast" in n1
    assert n1.count("becomes a PV of vg-fast") == 2  # the two empty 1.92 TB NVMe
    assert "device /dev/nvme3n1" in n1 and "not selected (match is false)" in n1  # 960 GB < 1 TiB
    assert n2.count("becomes a PV of vg-fast") == 1
    assert "device /dev/nvme2n1" in n2 and "skipped, not consumable (mounted at /srv/old)" in n2

    r = await kctl(kube, "apply", "-f", path)
    assert r.code == 0, r.err + r.out
    assert kube.read(SET, "fast")["spec"]["lvmVolumeGroupTemplate"]["blockDeviceSelector"]["match"] == FAST

    # another VG on n1 that also wants big disks: the set's plan for n1 is refused, naming both
    other = {"apiVersion": "disklet.io/v1alpha1", "kind": "LVMVolumeGroup",
             "metadata": {"name": "big-n1", "labels": {"disklet.io/node": "n1"}},
             "spec": {"local": {"nodeName": "n1"}, "actualVGNameOnTheNode": "vg-big",
                      "blockDeviceSelector": {"match": "disk.size >= 1Ti"}}}
    kube.seed(LVG, copy.deepcopy(other))
    r = await kctl(kube, "diff", "-f", path)
    assert r.code == 2, r.err + r.out
    n1 = r.out[r.out.index("node n1"):r.out.index("node n2")]
    assert "REFUSED: blockDeviceSelector overlaps with LVMVolumeGroup big-n1 on device /dev/nvme1n1: fast-n1 and " \
           "big-n1 both select it" in n1
    assert "overlaps" not in r.out[r.out.index("node n2"):]
