"""Disk identity across reboots: real disks come back under other kernel names.

Boot 0 applies two layouts (two agents, their state on the group's state disk): one names its disk
by the kernel name ``/dev/sda``, the other by the stable ``/dev/disk/by-id/wwn-…`` link of another
disk. Boot 1 attaches the same disk images in the other order (``/dev/sda`` is now the other
disk) and the first disk a second time (two paths to one disk, as multipath gives):

- the by-id layout keeps following its disk under its new kernel name (its partitions are ours,
  the identical re-apply goes through and changes nothing);
- the layout that names ``/dev/sda`` is refused with ``target_device_identity_changed``, because a
  different disk now answers to that name;
- a layout naming both paths of the one disk is refused as a duplicate target.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from devkit.vm import Boot, Disk
from devkit.vm.machine import STATE_DIR
from disklet.api.disklayout import RefusalCode
from tests.vm.conftest import disk, disks_by_serial, sh
from tests.vm.pipeline import applied, fs, node, run, structured

WWN_A, WWN_B = "0x5000c500dd00000a", "0x5000c500dd00000b"
A = Disk("scsi", size="1Gi", serial="IDDISK0A", wwn=WWN_A)
B = Disk("scsi", size="1Gi", serial="IDDISK0B", wwn=WWN_B)
A2 = Disk("scsi", size="1Gi", serial="IDDISK0A", wwn=WWN_A, image=A.image)  # a second path to A
VM_BOOTS = (Boot(disks=(A, B)), Boot(disks=(B, A, A2)))
STATE = Path(STATE_DIR)
BY_ID_B = f"/dev/disk/by-id/wwn-{WWN_B}"


def kernel_named() -> tuple:
    return node(STATE / "kernel-named" / "host", Path("/run/sb-kernel"), ["/dev/sda", "/dev/sdb", "/dev/sdc"])


def by_id() -> tuple:
    return node(STATE / "by-id" / "host", Path("/run/sb-by-id"), ["/dev/sda", "/dev/sdb", "/dev/sdc"])


def kernel_layout():
    return structured([("ka", "/dev/sda", [("data", "64M", fs("ext4", "/srv/ka/data"))])])


def by_id_layout():
    return structured([("kb", BY_ID_B, [("data", "64M", fs("ext4", "/srv/kb/data"))])])


@pytest.mark.vm_boot(0)
def test_boot0_both_layouts_apply_and_record_their_disks():
    a, b = disk("IDDISK0A"), disk("IDDISK0B")
    assert (a, b) == ("/dev/sda", "/dev/sdb")
    kn, bi = kernel_named(), by_id()
    applied(kn, kernel_layout())
    applied(bi, by_id_layout())
    rec_a = json.loads((kn.current.parent / "identity.json").read_text())["disks"]["/dev/sda"]
    rec_b = json.loads((bi.current.parent / "identity.json").read_text())["disks"][BY_ID_B]
    assert rec_a["wwn"] == WWN_A and rec_a["serial"] == "IDDISK0A", rec_a
    assert rec_b["wwn"] == WWN_B and rec_b["serial"] == "IDDISK0B", rec_b
    (kn.mounted("/srv/ka/data") / "mark").write_text("disk A")
    (bi.mounted("/srv/kb/data") / "mark").write_text("disk B")
    sh("umount", "-R", str(kn.root / "srv"))
    sh("umount", "-R", str(bi.root / "srv"))


@pytest.mark.vm_boot(1)
def test_boot1_the_disks_answer_to_other_kernel_names():
    assert disk("IDDISK0B") == "/dev/sda"
    assert disks_by_serial("IDDISK0A") == ["/dev/sdb", "/dev/sdc"]


@pytest.mark.vm_boot(1)
def test_boot1_a_layout_naming_the_disk_by_id_keeps_following_it():
    bi = by_id()
    before = sh("sgdisk", "--print", "--", BY_ID_B)
    r = run(bi, by_id_layout())
    assert r.plan.ok, f"{r.plan.code}: {r.plan.message}"
    assert r.plan.resolved[BY_ID_B] == "/dev/sda"
    assert BY_ID_B in r.plan.applied_targets, "the disk must be recognised as the one applied in boot 0"
    assert r.outcome is not None and r.outcome.ok, r.outcome.message if r.outcome else ""
    assert sh("sgdisk", "--print", "--", BY_ID_B) == before
    assert (bi.mounted("/srv/kb/data") / "mark").read_text() == "disk B"
    sh("umount", "-R", str(bi.root / "srv"))


@pytest.mark.vm_boot(1)
def test_boot1_another_disk_under_the_applied_kernel_name_is_refused():
    kn = kernel_named()
    r = run(kn, kernel_layout())
    assert not r.plan.ok and r.plan.code is RefusalCode.IDENTITY_CHANGED, f"{r.plan.code}: {r.plan.message}"
    assert WWN_A in r.plan.message and WWN_B in r.plan.message, r.plan.message
    # nothing was written to the disk that now answers to /dev/sda
    assert "disk-ka-data" not in sh("sgdisk", "--print", "--", "/dev/sda")


@pytest.mark.vm_boot(1)
def test_boot1_two_paths_to_one_disk_are_refused_as_duplicates(tmp_path):
    n = node(tmp_path / "host", tmp_path / "sb", ["/dev/sdb", "/dev/sdc"])
    s = structured([("p1", "/dev/sdb", [("x", "16M", fs("ext4", "/srv/p1/x"))]),
                    ("p2", "/dev/sdc", [("y", "16M", fs("ext4", "/srv/p2/y"))])])
    r = run(n, s)
    assert not r.plan.ok and r.plan.code is RefusalCode.DUPLICATE_TARGET, f"{r.plan.code}: {r.plan.message}"
    assert "/dev/sdb" in r.plan.message and "/dev/sdc" in r.plan.message and WWN_A in r.plan.message
