"""BlockDevice: a disk or partition the agent discovered on its node (docs/design/lvm.md#blockdevice)."""

from __future__ import annotations

import hashlib
from enum import StrEnum
from typing import Any

from pydantic import Field

from .common import ApiModel, StatusModel

DEVICE_PATH_PATTERN = r"^/dev/[^\x00-\x1f\x7f]+$"
"""A device path: under /dev, no control characters (it must never read as an option)."""


MAX_NAME = 253
NODE_BOUND_SUFFIX = 45
"""``.dev-`` + 40 hex digits: what follows the node name in a node-bound BlockDevice name."""


def block_device_name(node: str, identity: str, path: str) -> str:
    """``<node>.dev-<hash>``: a stable hash (the same disk keeps its name across reboots and renames),
    bound to the node. The node-authority admission policy lets an agent create only names that are
    its node, a dot and ``dev-`` + 40 hex digits, so no agent can take another node's future names
    (docs/security.md, "Node authority"). A node name longer than 208 characters does not fit; such a
    node's devices are named ``dev-<hash>`` (not bound: documented)."""
    digest = hashlib.sha256(f"{node}\0{identity}\0{path if not identity else ''}".encode()).hexdigest()
    if len(node) + NODE_BOUND_SUFFIX <= MAX_NAME:
        return f"{node}.dev-{digest[:40]}"
    return f"dev-{digest[:40]}"


class ConsumableReason(StrEnum):
    """Why a device is not consumable (``status.consumableReasonCode``), first match wins in this order.
    Stable: never rename one (docs/lvm.md, "BlockDevice")."""

    UNSUPPORTED_TYPE = "UnsupportedType"
    PROBE_FAILED = "ProbeFailed"
    SYSTEM_DISK = "SystemDisk"
    MOUNTED = "Mounted"
    SWAP = "Swap"
    MULTIPATH_MEMBER = "MultipathMember"
    LVM_PHYSICAL_VOLUME = "LVMPhysicalVolume"
    ZFS_MEMBER = "ZFSMember"
    RAID_MEMBER = "RAIDMember"
    HAS_PARTITIONS = "HasPartitions"
    HELD = "HeldByDevice"
    HAS_PARTITION_TABLE = "HasPartitionTable"
    HAS_FILESYSTEM = "HasFilesystem"
    READ_ONLY = "ReadOnly"
    REMOVABLE = "Removable"
    HOT_PLUG = "HotPlug"
    TOO_SMALL = "TooSmall"


_LIST_OF_PATHS: dict[str, Any] = {"x-kubernetes-list-type": "atomic", "items": {"maxLength": 4096}}


class BlockDeviceStatus(StatusModel):
    node_name: str = Field(description="Node the device is on.")
    path: str = Field(pattern=DEVICE_PATH_PATTERN, max_length=4096, description="Kernel device path, e.g. /dev/sdb.")
    size: str = Field(description="Device size.")
    type: str = Field(description="lsblk type: disk, part, ...")
    fs_type: str | None = Field(default=None, alias="fsType", description="Filesystem or signature found on the device.")
    pv_uuid: str | None = Field(default=None, alias="pvUUID", description="PV UUID if the device is a PV.")
    vg_uuid: str | None = Field(default=None, alias="vgUUID", description="VG UUID if the PV belongs to a VG.")
    lvm_volume_group_name: str | None = Field(default=None, alias="lvmVolumeGroupName",
                                              description="LVMVolumeGroup that owns the VG (from its tag).")
    actual_vg_name_on_the_node: str | None = Field(default=None, alias="actualVGNameOnTheNode", description="VG name on the node.")
    part_uuid: str | None = Field(default=None, alias="partUUID", description="GPT partition UUID.")
    serial: str | None = Field(default=None, description="Disk serial.")
    wwn: str | None = Field(default=None, description="World Wide Name.")
    model: str | None = Field(default=None, description="Disk model.")
    vendor: str | None = Field(default=None, description="Disk vendor (SCSI/SATA; usually empty for NVMe).")
    transport: str | None = Field(default=None, description="nvme, sata, sas, usb, virtio, scsi, iscsi, fc, loop, ...")
    removable: bool | None = Field(default=None, strict=True, description="Removable media.")
    read_only: bool | None = Field(default=None, strict=True, description="Read-only device.")
    logical_sector_size: int | None = Field(default=None, strict=True, description="Logical sector size in bytes.")
    physical_sector_size: int | None = Field(default=None, strict=True, description="Physical sector size in bytes.")
    partition_table_type: str | None = Field(default=None, description="Partition table on the device (gpt, dos).")
    by_id: list[str] | None = Field(default=None, max_length=64, json_schema_extra=_LIST_OF_PATHS,
                                    description="Names of the /dev/disk/by-id links to the device.")
    mountpoints: list[str] | None = Field(default=None, max_length=64, json_schema_extra=_LIST_OF_PATHS,
                                          description="Where the device itself is mounted.")
    partitions: list[str] | None = Field(default=None, max_length=256, json_schema_extra=_LIST_OF_PATHS,
                                         description="Partitions and other devices directly on this one (lsblk children).")
    holders: list[str] | None = Field(default=None, max_length=64, json_schema_extra=_LIST_OF_PATHS,
                                      description="Devices stacked on this one (device mapper, md), from sysfs.")
    zfs_pool: str | None = Field(default=None, description="ZFS pool the device (or a partition of it) belongs to.")
    # strict: 1 or "yes" is not a boolean for the API server either (the schema says boolean).
    rota: bool | None = Field(default=None, strict=True, description="Rotational device.")
    hot_plug: bool | None = Field(default=None, strict=True, description="Hot-pluggable device.")
    machine_id: str | None = Field(
        default=None, description="The node's app-specific machine ID: derived from /etc/machine-id with HMAC-SHA256 "
                                  "(systemd-id128 machine-id --app-specific=5e2a7c1d9b4f4e0a8c6d3f1b2a9e7c40 on the node "
                                  "prints it); the machine ID itself is never published.")
    consumable: bool = Field(default=False, strict=True, description="Whether the device can become a PV of a new VG now.")
    consumable_reason: str | None = Field(default=None, description="Why the device is not consumable.")
    consumable_reason_code: ConsumableReason | None = Field(
        default=None, description="Why the device is not consumable, machine-readable: "
                                  + ", ".join(r.value for r in ConsumableReason) + ".")


class BlockDevice(ApiModel):
    model_config = ApiModel.model_config | {"extra": "ignore"}
    api_version: str = "disklet.io/v1alpha1"
    kind: str = "BlockDevice"
    metadata: dict[str, Any] = Field(default_factory=dict)
    status: BlockDeviceStatus | None = None
