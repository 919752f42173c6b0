"""The combined reads that replace per-step re-reads: pvs with VG columns, losetup list by inode, stat probe."""

from __future__ import annotations

import json

from disklet_agent.host.files import HostFiles, Presence
from disklet_agent.host.losetup import attached_by_inode, parse_list_json
from disklet_agent.host.lvm import PV_VG_COLUMNS, parse_pvs_vgs

from devkit.fakehost import FakeRunner

TAGS = "disklet.io/enabled=true,disklet.io/lvmVolumeGroupName=l"


def _pv_row(name: str, vg: str, uuid: str, **extra: str) -> dict[str, str]:
    row = {c: "" for c in PV_VG_COLUMNS}
    row.update(pv_name=name, pv_uuid="pv-" + name, vg_name=vg, vg_uuid=uuid, pv_size="100", dev_size="104",
               pe_start="4", vg_size="200" if vg else "0", vg_free="50" if vg else "0",
               vg_extent_size="4" if vg else "0", vg_tags=TAGS if vg else "", pv_count="2" if vg else "0",
               lv_count="0")
    row.update(extra)
    return row


def test_pvs_with_vg_columns_yields_each_vg_once_and_no_vg_for_orphans() -> None:
    rows = [_pv_row("/dev/loop0", "v", "U1"), _pv_row("/dev/loop1", "v", "U1"), _pv_row("/dev/loop2", "", ""),
            _pv_row("[unknown]", "w", "U2", pv_missing="missing", vg_missing_pv_count="1")]
    pvs, vgs = parse_pvs_vgs(json.dumps({"report": [{"pv": rows}]}))
    assert [p.name for p in pvs] == ["/dev/loop0", "/dev/loop1", "/dev/loop2", "[unknown]"]
    assert pvs[2].vg_uuid == "" and pvs[3].missing
    assert [(v.name, v.uuid) for v in vgs] == [("v", "U1"), ("w", "U2")]
    assert vgs[0].owner == "l" and vgs[0].managed and vgs[0].size == 200 and vgs[0].extent_size == 4
    assert vgs[1].missing_pv_count == 1


def _loops(*rows: dict[str, object]) -> str:
    return json.dumps({"loopdevices": list(rows)})


def test_attached_by_inode_answers_like_losetup_j() -> None:
    loops = parse_list_json(_loops(
        {"name": "/dev/loop0", "back-file": "/b/x.img", "maj:min": "7:0", "back-ino": 11, "back-maj:min": " 254:0 "},
        {"name": "/dev/loop1", "back-file": "/c/y.img", "maj:min": "7:1", "back-ino": 11, "back-maj:min": "8:1"},
        {"name": "/dev/loop2", "back-file": "/b/x.img (deleted)", "maj:min": "7:2", "back-ino": 12,
         "back-maj:min": "254:0"},
        {"name": "/dev/loop3", "back-file": "/b/link-to-x.img", "maj:min": "7:3", "back-ino": 11,
         "back-maj:min": "254:0"}))
    assert loops[0].back_ino == 11 and loops[0].back_maj_min == "254:0"
    # Same inode on another filesystem is another file; a path alias (hard link) of the same inode is the same file.
    found = attached_by_inode(loops, "254:0", 11)
    assert found is not None and [lp.name for lp in found] == ["/dev/loop0", "/dev/loop3"]
    deleted_ino = attached_by_inode(loops, "254:0", 12)
    assert deleted_ino == []  # a deleted backing file is never "attached to" the file at the path now
    assert attached_by_inode(loops, "254:0", 99) == []


def test_attached_by_inode_is_none_without_inode_columns() -> None:
    loops = parse_list_json(_loops({"name": "/dev/loop0", "back-file": "/b/x.img", "maj:min": "7:0"}))
    assert attached_by_inode(loops, "254:0", 11) is None  # the caller falls back to losetup -j


def _StatRunner(stdout: str, rc: int = 0, stderr: str = "") -> FakeRunner:  # noqa: N802
    """Every command answers the same (``stat`` output here)."""
    return FakeRunner(default=(rc, stdout, stderr))


def test_probe_reads_device_and_inode_for_the_loop_match() -> None:
    p = HostFiles(_StatRunner("256 512 67108864 254:0 2146567 regular file\n")).probe("/b/x.img")
    assert p.presence is Presence.PRESENT and p.allocated == 256 * 512 and p.apparent == 67108864
    assert p.dev_maj_min == "254:0" and p.ino == 2146567
    assert HostFiles(_StatRunner("8 512 4096 254:0 7 directory\n")).probe("/b").presence is Presence.UNKNOWN
    gone = HostFiles(_StatRunner("", 1, "stat: cannot statx '/b/x.img': No such file or directory")).probe("/b/x")
    assert gone.presence is Presence.ABSENT
