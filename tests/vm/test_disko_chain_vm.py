"""A DiskLayout with lvm_pv partitions, logical volumes and file systems, applied by disko's own
scripts on real disks with activation on: the whole chain is created, activated, mounted and read
back from the kernel (partitions, PVs, VG, LVs as device-mapper devices, file systems, mounts).

The host tier can only run this chain up to the PVs (no device-mapper there: disko's LVs are never
activated); here every step of disko's script runs as on a node.
"""

from __future__ import annotations

import json
from pathlib import Path

from devkit.vm import Disk
from disklet.api.disklayout import DiskLayoutSpec, RefusalCode
from tests.vm.conftest import disk, lvm_report, sh
from tests.vm.pipeline import applied, node, run

VM_DISKS = (
    Disk("nvme", size="1Gi", serial="DKNVME01"),
    Disk("sata", size="1Gi", serial="DKSATA01", model="DISKLET-DK-SSD"),
)

BODY = """{
  disko.devices = {
    disk.fast = {
      type = "disk";
      device = "%(nvme)s";
      content = {
        type = "gpt";
        partitions.boot = { size = "32M"; content = { type = "filesystem"; format = "ext4"; mountpoint = "/srv/dk/plain"; }; };
        partitions.pv = { size = "100%%"; content = { type = "lvm_pv"; vg = "vgdk"; }; };
      };
    };
    disk.slow = {
      type = "disk";
      device = "%(sata)s";
      content = {
        type = "gpt";
        partitions.pv = { size = "100%%"; content = { type = "lvm_pv"; vg = "vgdk"; }; };
      };
    };
    lvm_vg.vgdk = {
      type = "lvm_vg";
      lvs.data = { size = "256M"; content = { type = "filesystem"; format = "ext4"; mountpoint = "/srv/dk/data"; }; };
      lvs.logs = { size = "64M"; content = { type = "filesystem"; format = "ext4"; mountpoint = "/srv/dk/logs"; }; };
    };
  };
}"""


def test_lvm_pv_partitions_lvs_and_filesystems_applied_by_disko_mounted_and_checked(tmp_path, wipe):
    nvme, sata = disk("DKNVME01"), disk("DKSATA01")
    wipe.extend([nvme, sata])
    n = node(tmp_path / "host", Path("/run/sb-dk"), [nvme, sata])
    spec = DiskLayoutSpec.model_validate({"nodeName": "vm-node", "layoutNix": BODY % {"nvme": nvme, "sata": sata}})
    try:
        r = applied(n, spec)
        assert r.outcome is not None and r.outcome.promoted
        # partitions with disko's labels, made by udev's own by-partlabel links
        for label in ("disk-fast-boot", "disk-fast-pv", "disk-slow-pv"):
            assert Path(f"/dev/disk/by-partlabel/{label}").exists(), label
        # the VG spans a partition of each disk
        pvs = {row["pv_name"]: row["vg_name"] for row in lvm_report("pvs", columns="pv_name,vg_name")}
        fast_pv = sh("realpath", "/dev/disk/by-partlabel/disk-fast-pv").strip()
        slow_pv = sh("realpath", "/dev/disk/by-partlabel/disk-slow-pv").strip()
        assert pvs.get(fast_pv) == "vgdk" and pvs.get(slow_pv) == "vgdk", pvs
        # both LVs exist at their sizes and are ACTIVE (device-mapper devices)
        lvs = {row["lv_name"]: row for row in lvm_report("lvs", "vgdk", columns="lv_name,lv_size,lv_attr,lv_dm_path")}
        assert int(lvs["data"]["lv_size"]) == 256 << 20 and int(lvs["logs"]["lv_size"]) == 64 << 20, lvs
        assert all(row["lv_attr"][4] == "a" for row in lvs.values()), lvs
        table = sh("dmsetup", "table", "vgdk-data")
        assert " linear " in table, table
        # file systems on them, mounted where the layout says (under the sandbox root)
        mounts = json.loads(sh("findmnt", "--json", "--list", "-o", "TARGET,SOURCE,FSTYPE"))["filesystems"]
        found = {m["target"]: (m["source"], m["fstype"]) for m in mounts}
        assert found[str(n.mounted("/srv/dk/data"))] == ("/dev/mapper/vgdk-data", "ext4"), found
        assert found[str(n.mounted("/srv/dk/logs"))] == ("/dev/mapper/vgdk-logs", "ext4"), found
        assert found[str(n.mounted("/srv/dk/plain"))][1] == "ext4", found
        (n.mounted("/srv/dk/data") / "payload").write_bytes(b"x" * 4096)
        sh("sync")
        assert (n.mounted("/srv/dk/data") / "payload").stat().st_size == 4096
        # the node's disks are now live: a second look at the same layout refuses while mounted
        again = run(n, spec)
        assert not again.plan.ok and again.plan.code in (RefusalCode.ACTIVE_MOUNT, RefusalCode.ACTIVE_LVM_PV), \
            f"{again.plan.code}: {again.plan.message}"
    finally:
        sh("umount", "-R", str(n.root / "srv"), check=False)
        sh("vgchange", "-an", "vgdk", check=False)
