"""Sample structured layouts for tests, benchmarks and docs (pure data, no I/O)."""

from __future__ import annotations

import copy
from typing import Any

from disklet.api.disklayout import StructuredLayout

EXT4: dict[str, Any] = {
    "disks": [{
        "name": "data1", "device": "/dev/nvme1n1",
        "gpt": {"partitions": [{
            "name": "kcore0", "size": "100%",
            "content": {"type": "filesystem", "format": "ext4", "mountpoint": "/var/lib/kcore/volumes1"},
        }]},
    }],
}
"""The seed's typical layout: one NVMe data disk, one ext4 partition."""

MIXED: dict[str, Any] = {
    "lvmVolumeGroups": [{"name": "vg_kcore"}],
    "zfsPools": [{"name": "tank0"}],
    "disks": [
        {"name": "data1", "device": "/dev/disk/by-id/nvme-a", "gpt": {"partitions": [
            {"name": "scratch", "size": "64G",
             "content": {"type": "filesystem", "format": "xfs", "mountpoint": "/srv/scratch",
                         "mountOptions": ["nofail", "noatime"]}},
            {"name": "pv", "size": "100%", "content": {"type": "lvm_pv", "vg": "vg_kcore"}},
        ]}},
        {"name": "data2", "device": "/dev/disk/by-id/nvme-b", "gpt": {"partitions": [
            {"name": "z", "size": "100%", "content": {"type": "zfs", "pool": "tank0"}},
        ]}},
    ],
}
"""All three content types, both stub kinds, mountOptions."""


def n_disks(n: int) -> dict[str, Any]:
    """A layout of ``n`` disks with two partitions each (vfat + ext4), for benchmarks."""
    return {"disks": [
        {"name": f"d{i}", "device": f"/dev/disk/by-id/nvme-disk-{i}", "gpt": {"partitions": [
            {"name": "efi", "size": "1G",
             "content": {"type": "filesystem", "format": "vfat", "mountpoint": f"/srv/d{i}/efi"}},
            {"name": "data", "size": "100%",
             "content": {"type": "filesystem", "format": "ext4", "mountpoint": f"/srv/d{i}/data",
                         "mountOptions": ["nofail"]}},
        ]}} for i in range(n)]}


def structured(data: dict[str, Any]) -> StructuredLayout:
    return StructuredLayout.model_validate(copy.deepcopy(data))
