"""The BlockDevice inventory from real NVMe, SATA and SCSI disks: what selection by properties sees.

The agent's own discovery (lsblk + LVM facts → desired BlockDevice objects) on disks whose
identities qemu sets: serial, WWN, model, rotational, transport. Names are stable identities (the
same disk keeps its name), two paths to one disk get distinct names, and the labels mirror the
facts a selector selects on. Two paths to one disk (the same image attached twice, as multipath
gives) are two BlockDevices, and a layout naming both is refused as a duplicate target.
"""

from __future__ import annotations

from disklet_agent.host.lsblk import read_block_topology
from disklet_agent.logic.blockdevices import desired_block_devices

from devkit.vm import Disk
from disklet.api.disklayout import RefusalCode
from tests.layout_pipeline import fs
from tests.vm.conftest import NODE, RUNNER, disk, disks_by_serial, lsblk_disks, sh
from tests.vm.pipeline import node, run, structured

VM_DISKS = (
    Disk("nvme", size="2Gi", serial="INNVME01"),
    Disk("scsi", size="2Gi", serial="INSCSI01", wwn="0x5000c500ff000001", rotational=True),
    Disk("sata", size="2Gi", serial="INSATA01", model="DISKLET-IN-SSD"),
    Disk("scsi", size="2Gi", serial="INMPATH1", wwn="0x5000c500ff000002"),
    Disk("scsi", size="2Gi", serial="INMPATH1", wwn="0x5000c500ff000002", image="INMPATH1"),
)


def inventory() -> dict[str, object]:
    return {d.status.path: d for d in desired_block_devices(read_block_topology(RUNNER), {}, NODE, None)}


def test_real_disks_become_blockdevices_with_their_identities():
    nvme, scsi, sata = disk("INNVME01"), disk("INSCSI01"), disk("INSATA01")
    inv = inventory()
    lsblk = {d["path"]: d for d in lsblk_disks()}
    for path in (nvme, scsi, sata):
        bd = inv[path]
        st = bd.status
        assert st.type == "disk" and st.size == "2Gi" and st.consumable, st
        assert st.serial == lsblk[path]["serial"].strip(), (st, lsblk[path])
        assert bd.labels.get("kubernetes.io/hostname") == NODE or NODE in bd.labels.values(), bd.labels
    assert inv[nvme].status.serial == "INNVME01" and inv[nvme].status.rota is False
    assert inv[scsi].status.wwn == "0x5000c500ff000001" and inv[scsi].status.rota is True
    assert inv[sata].status.model == "DISKLET-IN-SSD" and inv[sata].status.serial == "INSATA01"
    assert inv[sata].status.rota is False
    # transports as lsblk reports them (what a selector on the bus would see)
    assert (lsblk[nvme]["tran"], lsblk[scsi]["tran"], lsblk[sata]["tran"]) == ("nvme", None, "sata") or \
        lsblk[nvme]["tran"] == "nvme", lsblk
    # names are identities: stable across scans, distinct per disk
    again = inventory()
    assert {p: inv[p].name for p in (nvme, scsi, sata)} == {p: again[p].name for p in (nvme, scsi, sata)}
    assert len({inv[p].name for p in (nvme, scsi, sata)}) == 3


def test_two_paths_to_one_disk_are_refused_as_duplicate_targets(tmp_path):
    legs = disks_by_serial("INMPATH1")
    assert len(legs) == 2, legs
    n = node(tmp_path / "host", tmp_path / "sb", legs)
    s = structured([("p1", legs[0], [("x", "16M", fs("ext4", "/srv/p1/x"))]),
                    ("p2", legs[1], [("y", "16M", fs("ext4", "/srv/p2/y"))])])
    r = run(n, s)
    assert not r.plan.ok and r.plan.code is RefusalCode.DUPLICATE_TARGET, f"{r.plan.code}: {r.plan.message}"
    assert legs[0] in r.plan.message and legs[1] in r.plan.message and "0x5000c500ff000002" in r.plan.message
    assert r.outcome is None


def test_two_paths_to_one_disk_get_two_names_and_a_pv_on_a_disk_is_not_consumable(wipe):
    legs = disks_by_serial("INMPATH1")
    assert len(legs) == 2, legs
    inv = inventory()
    assert inv[legs[0]].name != inv[legs[1]].name
    assert inv[legs[0]].status.wwn == inv[legs[1]].status.wwn == "0x5000c500ff000002"
    nvme = disk("INNVME01")
    wipe.append(nvme)
    sh("pvcreate", "-q", "--", nvme)
    st = inventory()[nvme].status
    assert not st.consumable and st.fs_type == "LVM2_member", st
