"""The classifier with udev: lsblk's FSTYPE from the udev database and ``/dev/disk/by-id`` links.

The host tier has no udev, so there every verdict comes from the ``blkid -p`` fallback. Here the
same live states are judged twice — from lsblk's udev columns (the path a real node takes) and
with every device re-probed by ``blkid -p`` — and through each of the disk's by-id links: the
verdicts must be the same.
"""

from __future__ import annotations

import os
from pathlib import Path

from disklet_agent.disklayout.classifier import Verdict, classify_targets
from disklet_agent.host.layout_reads import resolve_targets
from disklet_agent.host.lsblk import read_block_topology
from disklet_agent.logic.topology import BlockTopology

from devkit.vm import Disk
from disklet.api.disklayout import RefusalCode
from tests.vm.conftest import RUNNER, disk, sh

VM_DISKS = (
    Disk("nvme", size="1Gi", serial="CLNVME01"),
    Disk("scsi", size="1Gi", serial="CLSCSI01", wwn="0x5000c500cc000001", rotational=True),
    Disk("sata", size="1Gi", serial="CLSATA01", model="DISKLET-CL-SSD"),
)
SYSTEM = ["/", "/opt/disklet"]
VOLUMES = ["/mnt/vm/volumes*"]


def by_id_links(path: str) -> list[str]:
    d = Path("/dev/disk/by-id")
    return sorted(str(p) for p in d.iterdir() if os.path.realpath(p) == path)


def verdicts(targets: list[str], topology: BlockTopology) -> dict[str, Verdict]:
    """Each target judged on its own (two names of one device in one layout are a duplicate target)."""
    resolved = resolve_targets(RUNNER, targets)
    out = {}
    for t in targets:
        [v] = classify_targets([t], topology, resolved={t: resolved[t]}, system_mounts=SYSTEM,
                               volume_mounts=VOLUMES, applied_targets=set())
        out[t] = v
    return out


def judge(targets: list[str]) -> tuple[dict[str, Verdict], dict[str, Verdict], BlockTopology]:
    sh("udevadm", "settle", "-t", "30")
    udev = read_block_topology(RUNNER)
    blkid = read_block_topology(RUNNER, probe_all=True)
    return verdicts(targets, udev), verdicts(targets, blkid), udev


def test_udev_and_blkid_give_the_same_verdicts_on_every_state_and_every_by_id_link(wipe):
    nvme, scsi, sata = disk("CLNVME01"), disk("CLSCSI01"), disk("CLSATA01")
    wipe.extend([nvme, scsi, sata])
    links = {p: by_id_links(p) for p in (nvme, scsi, sata)}
    # udev's links carry the identities qemu gave the disks
    assert any("CLNVME01" in x for x in links[nvme]), links
    assert "/dev/disk/by-id/wwn-0x5000c500cc000001" in links[scsi], links
    assert any(x.startswith("/dev/disk/by-id/scsi-3") for x in links[scsi]), links
    assert "/dev/disk/by-id/ata-DISKLET-CL-SSD_CLSATA01" in links[sata], links

    def round_(expected: dict[str, RefusalCode | None], fstype: dict[str, str]) -> None:
        targets = [t for p in expected for t in (p, *links[p])]
        by_udev, by_blkid, topo = judge(targets)
        for path, code in expected.items():
            node = topo.find(path)
            assert node is not None
            if fstype.get(path):
                # the udev path: lsblk itself typed the device, no blkid probe was needed
                assert (node.fstype, node.fstype_source) == (fstype[path], "lsblk"), node
            for t in (path, *links[path]):
                u, b = by_udev[t], by_blkid[t]
                assert (u.safe, u.code) == (b.safe, b.code) == (code is None, code), (t, u, b)
                assert u.resolved_path == path, u
            # the kernel name and a by-id link of one disk in one layout: one disk named twice
            both = [path, links[path][0]]
            pair = classify_targets(both, topo, resolved=resolve_targets(RUNNER, both), system_mounts=SYSTEM,
                                    volume_mounts=VOLUMES, applied_targets=set())
            assert not any(v.safe for v in pair) and any(v.code is RefusalCode.DUPLICATE_TARGET for v in pair), pair

    # 1. blank, an old ext4, a GPT with a mounted partition
    sh("mkfs.ext4", "-q", "-F", "--", scsi)
    sh("sgdisk", "-n", "1:0:+64M", "-n", "2:0:+64M", "--", sata)
    sh("partprobe", "--", sata)
    sh("udevadm", "settle", "-t", "30")
    part = sh("lsblk", "-nr", "-o", "PATH", "--", sata).split()[2]
    sh("mkfs.ext4", "-q", "-F", "--", part)
    Path("/mnt/vm/other").mkdir(parents=True, exist_ok=True)
    sh("mount", "--", part, "/mnt/vm/other")
    round_({nvme: None, scsi: RefusalCode.NOT_BLANK, sata: RefusalCode.ACTIVE_MOUNT}, {scsi: "ext4"})
    sh("umount", "/mnt/vm/other")

    # 2. an LVM PV, active swap, a volume mount
    sh("pvcreate", "-q", "--", nvme)
    sh("mkswap", "-q", "--", scsi)
    sh("swapon", "--", scsi)
    try:
        Path("/mnt/vm/volumes1").mkdir(parents=True, exist_ok=True)
        sh("mount", "--", part, "/mnt/vm/volumes1")
        round_({nvme: RefusalCode.ACTIVE_LVM_PV, scsi: RefusalCode.ACTIVE_SWAP, sata: RefusalCode.ACTIVE_KCORE_VOLUME},
               {nvme: "LVM2_member", scsi: "swap"})
        sh("umount", "/mnt/vm/volumes1")
    finally:
        sh("swapoff", "--", scsi, check=False)


def test_an_lv_on_the_disk_is_seen_through_its_holders(wipe):
    """An active LV (only possible with device-mapper) makes its PV refused, by udev and by blkid."""
    nvme = disk("CLNVME01")
    wipe.append(nvme)
    sh("pvcreate", "-q", "--", nvme)
    sh("vgcreate", "-q", "vgcl", "--", nvme)
    sh("lvcreate", "-q", "--yes", "-L", "16M", "-n", "lv", "--", "vgcl")
    by_udev, by_blkid, topo = judge([nvme])
    node = topo.find(nvme)
    assert node is not None and node.holders, node
    assert by_udev[nvme].code is by_blkid[nvme].code is RefusalCode.ACTIVE_LVM_PV
    assert "dm-" in by_udev[nvme].detail or "vgcl" in by_udev[nvme].detail, by_udev[nvme].detail
