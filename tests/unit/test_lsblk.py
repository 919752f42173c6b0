"""lsblk adapter: parsing, blkid/wipefs fallback rules and fail-closed recording (canned host output)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from disklet_agent.host.lsblk import (
    LSBLK_ARGV,
    ProbeFailed,
    parse_blkid_export,
    parse_lsblk_json,
    parse_proc_swaps,
    read_block_topology,
)

from devkit.fakehost import FakeRunner


def CannedRunner() -> FakeRunner:  # noqa: N802 - reads as the runner it makes
    """Answers exact argv → (rc, stdout, stderr) set in ``answers``; anything unexpected is a loud 127."""
    return FakeRunner(strict=True)


def lsblk_json(*devs: dict[str, Any]) -> str:
    return json.dumps({"blockdevices": list(devs)})


def d(path: str, type_: str = "disk", size: int = 1 << 30, **kw: Any) -> dict[str, Any]:
    base = {"name": path, "path": path, "kname": path, "fstype": None, "mountpoints": [None], "type": type_,
            "size": size, "ro": False, "rm": False, "hotplug": False, "rota": True, "serial": "S1",
            "wwn": None, "model": "Disk", "partuuid": None, "pkname": None, "maj:min": "7:0"}
    base.update(kw)
    return base


@pytest.fixture
def sysfs(tmp_path: Path) -> Path:
    for name, holders in {"loop0": [], "loop0p1": ["dm-0"], "loop1": [], "zram0": []}.items():
        h = tmp_path / "class" / "block" / name / "holders"
        h.mkdir(parents=True)
        for x in holders:
            (h / x).mkdir()
    return tmp_path


SWAPS = "Filename\t\t\t\tType\t\tSize\t\tUsed\t\tPriority\n/dev/zram0 partition 100 0 -2\n/swap\\040file file 1 0 -3\n"


def runner_for(lsblk_out: str, **extra: tuple[int, str, str]) -> CannedRunner:
    r = CannedRunner()
    r.answers[LSBLK_ARGV] = (0, lsblk_out, "")
    r.answers[("cat", "/proc/swaps")] = (0, SWAPS, "")
    for k, v in extra.items():
        r.answers[tuple(k.split(" "))] = v
    return r


def test_parse_tree_and_fields() -> None:
    [root] = parse_lsblk_json(lsblk_json(d("/dev/loop0", mountpoints=[None, "/a", "/b"], ro=True,
                                           children=[d("/dev/loop0p1", "part", partuuid="abc")])))
    assert root.mountpoints == ["/a", "/b"] and root.ro and root.serial == "S1" and root.size == 1 << 30
    assert [n.path for n in root.walk()] == ["/dev/loop0", "/dev/loop0p1"]
    assert root.children[0].partuuid == "abc"


@pytest.mark.parametrize("text", ["", "{not json", "[]", '{"blockdevices": 3}', '{"blockdevices": [{"size": 1}]}',
                                  '{"blockdevices": [{"path": "/dev/x", "size": "1G"}]}'])
def test_unreadable_json_is_probe_failed(text: str) -> None:
    with pytest.raises(ProbeFailed):
        parse_lsblk_json(text)


def test_lsblk_failure_raises(sysfs: Path) -> None:
    r = runner_for("")
    r.answers[LSBLK_ARGV] = (1, "", "lsblk: failed to access sysfs directory")
    with pytest.raises(ProbeFailed, match="sysfs"):
        read_block_topology(r, sys_root=sysfs)


def test_blkid_fills_fstype_and_pttype(sysfs: Path) -> None:
    r = runner_for(lsblk_json(d("/dev/loop0", children=[d("/dev/loop0p1", "part")]), d("/dev/zram0", size=0)),
                   **{"blkid -p -o export -- /dev/loop0": (0, "DEVNAME=/dev/loop0\nPTUUID=x\nPTTYPE=gpt\n", ""),
                      "blkid -p -o export -- /dev/loop0p1": (0, "TYPE=LVM2_member\nUSAGE=raid\nPART_ENTRY_NUMBER=1\n", "")})
    t = read_block_topology(r, sys_root=sysfs)
    loop0, p1, zram = t.find("/dev/loop0"), t.find("/dev/loop0p1"), t.find("/dev/zram0")
    assert loop0 and p1 and zram
    assert loop0.pttype == "gpt" and loop0.fstype is None and loop0.fstype_source == "blkid"
    assert p1.fstype == "LVM2_member" and p1.holders == ["/dev/dm-0"]
    assert zram.fstype_source == "size0" and zram.blank  # never probed
    assert ("blkid", "-p", "-o", "export", "--", "/dev/zram0") not in r.seen
    assert t.swaps == ["/dev/zram0", "/swap file"] and t.swaps_error is None


def test_exit2_is_blank_only_when_wipefs_agrees(sysfs: Path) -> None:
    r = runner_for(lsblk_json(d("/dev/loop0"), d("/dev/loop1")),
                   **{"blkid -p -o export -- /dev/loop0": (2, "", ""),
                      "wipefs --no-act --json -- /dev/loop0": (0, '{"signatures": []}', ""),
                      "blkid -p -o export -- /dev/loop1": (2, "", ""),
                      "wipefs --no-act --json -- /dev/loop1": (1, "", "wipefs: error: /dev/loop1: probing initialization failed")})
    t = read_block_topology(r, sys_root=sysfs)
    assert t.find("/dev/loop0").blank  # type: ignore[union-attr]
    loop1 = t.find("/dev/loop1")
    assert loop1 and not loop1.blank and "probing initialization failed" in (loop1.probe_error or "")


def test_wipefs_finding_what_blkid_missed(sysfs: Path) -> None:
    sig = json.dumps({"signatures": [{"device": "loop0", "offset": "0x200", "type": "gpt"},
                                     {"device": "loop0", "offset": "0x438", "type": "ext4"}]})
    r = runner_for(lsblk_json(d("/dev/loop0")), **{"blkid -p -o export -- /dev/loop0": (2, "", ""),
                                                   "wipefs --no-act --json -- /dev/loop0": (0, sig, "")})
    n = read_block_topology(r, sys_root=sysfs).find("/dev/loop0")
    assert n and n.pttype == "gpt" and n.fstype == "ext4" and n.fstype_source == "wipefs"


def test_exit2_with_stderr_or_other_codes_is_unknown(sysfs: Path) -> None:
    r = runner_for(lsblk_json(d("/dev/loop0"), d("/dev/loop1")),
                   **{"blkid -p -o export -- /dev/loop0": (2, "", "blkid: error: /dev/loop0: Operation not permitted"),
                      "blkid -p -o export -- /dev/loop1": (8, "", "ambivalent result")})
    t = read_block_topology(r, sys_root=sysfs)
    assert "Operation not permitted" in (t.find("/dev/loop0").probe_error or "")  # type: ignore[union-attr]
    assert "exited 8" in (t.find("/dev/loop1").probe_error or "")  # type: ignore[union-attr]


def test_lsblk_fstype_is_trusted_unless_probe_all(sysfs: Path) -> None:
    r = runner_for(lsblk_json(d("/dev/loop0", fstype="xfs")),
                   **{"blkid -p -o export -- /dev/loop0": (0, "TYPE=xfs\n", "")})
    assert read_block_topology(r, sys_root=sysfs).find("/dev/loop0").fstype == "xfs"  # type: ignore[union-attr]
    assert not any(a[0] == "blkid" for a in r.seen)
    read_block_topology(r, sys_root=sysfs, probe_all=True)
    assert ("blkid", "-p", "-o", "export", "--", "/dev/loop0") in r.seen


def test_missing_holders_dir_and_swaps_failure_recorded(sysfs: Path) -> None:
    r = runner_for(lsblk_json(d("/dev/sdz", fstype="ext4")))
    r.answers[("cat", "/proc/swaps")] = (1, "", "cat: /proc/swaps: No such file or directory")
    t = read_block_topology(r, sys_root=sysfs)
    n = t.find("/dev/sdz")
    assert n and n.holders_error and "sdz" in n.holders_error and not n.blank
    assert t.swaps == [] and t.swaps_error and "No such file" in t.swaps_error


def test_small_parsers() -> None:
    assert parse_blkid_export("TYPE=ext4\nLABEL=my\\ disk\n") == {"TYPE": "ext4", "LABEL": "my disk"}
    assert parse_proc_swaps("Filename Type Size Used Priority\n") == []
