"""kctl get with several types at once (``dl,lvg``, ``TYPE/NAME``), as kubectl, on the real API server."""

from __future__ import annotations

import json

import pytest
from kctl_fixtures import DL, LVG, disk_layout, kctl, lvg


@pytest.fixture()
def kube(real_kube):
    return real_kube


def _seed(kube) -> None:
    kube.seed(DL, disk_layout("node-a-data", "node-a"))
    kube.seed(DL, disk_layout("node-b-data", "node-b", "/dev/sdb"))
    kube.seed(LVG, lvg("vg-data-a", "node-a", "vg_data", {"phase": "Ready"}))


async def test_type_list_prints_one_section_per_type_with_kind_names(kube):
    _seed(kube)
    r = await kctl(kube, "get", "dl,lvg")
    assert r.code == 0, r.err
    sections = r.out.split("\n\n")
    assert len(sections) == 2
    dl_lines, lvg_lines = sections[0].splitlines(), sections[1].splitlines()
    assert dl_lines[0].split()[:3] == ["NAME", "NODE", "PHASE"]
    assert [ln.split()[0] for ln in dl_lines[1:]] == ["disklayout.disklet.io/node-a-data",
                                                       "disklayout.disklet.io/node-b-data"]
    assert lvg_lines[0].split()[0] == "NAME" and "THINPOOLS" in lvg_lines[0]
    assert [ln.split()[0] for ln in lvg_lines[1:]] == ["lvmvolumegroup.disklet.io/vg-data-a"]


async def test_node_filter_applies_to_each_type_and_empty_types_are_left_out(kube):
    _seed(kube)
    r = await kctl(kube, "get", "dl,lvg", "--node", "node-b")
    assert r.code == 0, r.err
    assert "\n\n" not in r.out
    assert [ln.split()[0] for ln in r.out.splitlines()[1:]] == ["disklayout.disklet.io/node-b-data"]
    r = await kctl(kube, "get", "dl,lvg", "--node", "nowhere")
    assert r.code == 0 and r.out == "" and "No resources found for node nowhere." in r.err


async def test_type_slash_name_operands_and_one_list_for_machine_formats(kube):
    _seed(kube)
    r = await kctl(kube, "get", "dl/node-a-data", "lvg/vg-data-a", "-o", "json")
    assert r.code == 0, r.err
    data = json.loads(r.out)
    assert data["kind"] == "List"
    assert [(i["kind"], i["metadata"]["name"]) for i in data["items"]] == [
        ("DiskLayout", "node-a-data"), ("LVMVolumeGroup", "vg-data-a")]
    r = await kctl(kube, "get", "dl/node-a-data", "lvg/vg-data-a", "-o", "name")
    assert r.out.splitlines() == ["disklayout.disklet.io/node-a-data", "lvmvolumegroup.disklet.io/vg-data-a"]


async def test_missing_names_are_reported_per_type_and_fail(kube):
    _seed(kube)
    r = await kctl(kube, "get", "dl,lvg", "node-a-data")
    assert r.code == 1
    assert "disklayout.disklet.io/node-a-data" in r.out
    assert "LVMVolumeGroup/node-a-data not found" in r.err


async def test_bad_operands_are_usage_errors_that_say_what_to_write(kube):
    for argv, says in ((["dl/a", "b"], "every operand must be TYPE/NAME"),
                       (["dl,pvc"], "unknown resource type 'pvc'"),
                       (["dl/a/b"], "every operand must be TYPE/NAME"),
                       (["dl,lvg", "-w"], "-w watches one type at a time"),
                       (["dl,lvgset", "--node", "n"], "--node does not apply to lvmvolumegroupsets")):
        r = await kctl(kube, "get", *argv)
        assert r.code == 2 and says in r.err, (argv, r.err)
