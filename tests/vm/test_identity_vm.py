"""Disk identity across reboots: real disks come back under other kernel names.

Boot 0 applies two layouts (two agents, their state on the group's state disk): one names its disk
by the kernel name ``/dev/sda`` (the only SCSI disk, WWN A), the other names a virtio disk by its
stable ``/dev/disk/by-id/virtio-…`` link (it is ``/dev/vdf`` then). Boot 1 attaches another SCSI
disk (WWN B, now ``/dev/sda``) and a virtio disk before the second one (which becomes
``/dev/vdg``; virtio names follow the attachment order, so this is deterministic):

- the by-id layout keeps following its disk under its new kernel name (its partitions are ours,
  the identical re-apply goes through, the data is still there);
- the layout that names ``/dev/sda`` is refused with ``target_device_identity_changed``, because a
  different disk now answers to that name, and nothing is written to that disk.

Two paths to one disk (refused as duplicates) are in test_inventory_vm.py (one boot suffices).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from devkit.vm import Boot, Disk
from devkit.vm.machine import STATE_DIR
from disklet.api.disklayout import DiskLayoutSpec, RefusalCode
from tests.layout_pipeline import fs
from tests.vm.conftest import disk, sh
from tests.vm.pipeline import Node, applied, node, run, structured

WWN_A, WWN_B = "0x5000c500dd00000a", "0x5000c500dd00000b"
A = Disk("scsi", size="1Gi", serial="IDDISK0A", wwn=WWN_A)
B = Disk("scsi", size="1Gi", serial="IDDISK0B", wwn=WWN_B)
V = Disk("virtio", size="1Gi", serial="IDVIRT0V")
FILLER = Disk("virtio", size="1Gi", serial="IDVIRT0F")
VM_BOOTS = (Boot(disks=(A, V)), Boot(disks=(B, FILLER, V)))
STATE = Path(STATE_DIR)
BY_ID_V = "/dev/disk/by-id/virtio-IDVIRT0V"
DISKS = ["/dev/sda", "/dev/vdf", "/dev/vdg"]


def kernel_named() -> Node:
    return node(STATE / "kernel-named" / "host", Path("/run/sb-kernel"), DISKS)


def by_id() -> Node:
    return node(STATE / "by-id" / "host", Path("/run/sb-by-id"), DISKS)


def kernel_layout() -> DiskLayoutSpec:
    return structured([("ka", "/dev/sda", [("data", "64M", fs("ext4", "/srv/ka/data"))])])


def by_id_layout() -> DiskLayoutSpec:
    return structured([("kv", BY_ID_V, [("data", "64M", fs("ext4", "/srv/kv/data"))])])


@pytest.mark.vm_boot(0)
def test_boot0_both_layouts_apply_and_record_their_disks():
    assert (disk("IDDISK0A"), disk("IDVIRT0V")) == ("/dev/sda", "/dev/vdf")
    kn, bi = kernel_named(), by_id()
    applied(kn, kernel_layout())
    applied(bi, by_id_layout())
    rec_a = json.loads((kn.current.parent / "identity.json").read_text())["disks"]["/dev/sda"]
    rec_v = json.loads((bi.current.parent / "identity.json").read_text())["disks"][BY_ID_V]
    assert rec_a["wwn"] == WWN_A and rec_a["serial"] == "IDDISK0A", rec_a
    assert rec_v["serial"] == "IDVIRT0V", rec_v
    (kn.mounted("/srv/ka/data") / "mark").write_text("disk A")
    (bi.mounted("/srv/kv/data") / "mark").write_text("disk V")
    sh("umount", "--", str(kn.mounted("/srv/ka/data")))
    sh("umount", "--", str(bi.mounted("/srv/kv/data")))


@pytest.mark.vm_boot(1)
def test_boot1_a_layout_naming_the_disk_by_id_keeps_following_it():
    assert (disk("IDDISK0B"), disk("IDVIRT0F"), disk("IDVIRT0V")) == ("/dev/sda", "/dev/vdf", "/dev/vdg")
    bi = by_id()
    before = sh("sgdisk", "--print", "--", BY_ID_V)
    r = run(bi, by_id_layout())
    assert r.plan.ok, f"{r.plan.code}: {r.plan.message}"
    assert r.plan.resolved[BY_ID_V] == "/dev/vdg"
    assert BY_ID_V in r.plan.applied_targets, "the disk must be recognised as the one applied in boot 0"
    assert r.outcome is not None and r.outcome.ok, r.outcome.message if r.outcome else ""
    assert sh("sgdisk", "--print", "--", BY_ID_V) == before
    assert (bi.mounted("/srv/kv/data") / "mark").read_text() == "disk V"
    sh("umount", "--", str(bi.mounted("/srv/kv/data")))


@pytest.mark.vm_boot(1)
def test_boot1_another_disk_under_the_applied_kernel_name_is_refused():
    kn = kernel_named()
    r = run(kn, kernel_layout())
    assert not r.plan.ok and r.plan.code is RefusalCode.IDENTITY_CHANGED, f"{r.plan.code}: {r.plan.message}"
    assert WWN_A in r.plan.message and WWN_B in r.plan.message, r.plan.message
    # nothing was written to the disk that now answers to /dev/sda
    assert "disk-ka-data" not in sh("sgdisk", "--print", "--", "/dev/sda", check=False)
