"""The BlockDevice inventory from real NVMe, SATA and SCSI disks: what selection by properties sees.

The agent's own discovery (lsblk + LVM facts → desired BlockDevice objects) on disks whose
identities qemu sets: serial, WWN, model, rotational, transport. Names are stable identities (the
same disk keeps its name), two paths to one disk get distinct names, and the labels mirror the
facts a selector selects on.
"""

from __future__ import annotations

from disklet_agent.host.lsblk import read_block_topology
from disklet_agent.logic.blockdevices import desired_block_devices

from devkit.vm import Disk
from tests.vm.conftest import NODE, RUNNER, disk, lsblk_disks

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
