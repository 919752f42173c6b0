"""The classifier with udev: lsblk's FSTYPE from the udev database and ``/dev/disk/by-id`` links.

The host tier has no udev, so there every verdict comes from the ``blkid -p`` fallback. Here the
same live state is judged twice — from lsblk's udev columns (the path a real node takes) and
with every device re-probed by ``blkid -p``: the verdicts must be the same.
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
