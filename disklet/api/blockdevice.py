"""BlockDevice: a disk or partition the agent discovered on its node (docs/design/lvm.md#blockdevice)."""

from __future__ import annotations

import hashlib
from typing import Any

from pydantic import Field

from .common import ApiModel, StatusModel

DEVICE_PATH_PATTERN = r"^/dev/[^\x00-\x1f\x7f]+$"
"""A device path: under /dev, no control characters (it must never read as an option)."""


def block_device_name(node: str, identity: str, path: str) -> str:
    """``dev-`` + a stable hash: the same disk keeps its name across reboots and renames."""
    digest = hashlib.sha256(f"{node}\0{identity}\0{path if not identity else ''}".encode()).hexdigest()
    return f"dev-{digest[:40]}"


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
    # strict: 1 or "yes" is not a boolean for the API server either (the schema says boolean).
    rota: bool | None = Field(default=None, strict=True, description="Rotational device.")
    hot_plug: bool | None = Field(default=None, strict=True, description="Hot-pluggable device.")
    machine_id: str | None = Field(default=None, description="/etc/machine-id of the node.")
    consumable: bool = Field(default=False, strict=True, description="Whether the device can become a PV of a new VG now.")
    consumable_reason: str | None = Field(default=None, description="Why the device is not consumable.")


class BlockDevice(ApiModel):
    model_config = ApiModel.model_config | {"extra": "ignore"}
    api_version: str = "disklet.io/v1alpha1"
    kind: str = "BlockDevice"
    metadata: dict[str, Any] = Field(default_factory=dict)
    status: BlockDeviceStatus | None = None
