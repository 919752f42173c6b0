"""Pydantic models: the one source of truth for every CRD's spec and status."""

from .blockdevice import BlockDevice, BlockDeviceStatus, block_device_name
from .common import Condition, LabelSelector, get_condition, now_rfc3339, set_condition
from .disklayout import DiskLayout, DiskLayoutSpec, DiskLayoutStatus, Phase, RefusalCode, StructuredLayout
from .lvm import (
    ConditionType,
    FileDevice,
    LVGPhase,
    LVMVolumeGroup,
    LVMVolumeGroupSet,
    LVMVolumeGroupSetSpec,
    LVMVolumeGroupSetStatus,
    LVMVolumeGroupSpec,
    LVMVolumeGroupStatus,
    LVMVolumeGroupTemplate,
    Reason,
    ThinPool,
    backing_file_name,
    parse_backing_file_name,
)
from .resources import (
    ALL_RESOURCES,
    BLOCK_DEVICE,
    DISK_LAYOUT,
    LVM_VOLUME_GROUP,
    LVM_VOLUME_GROUP_SET,
    NODE_LABEL,
    Resource,
)

__all__ = [
    "ALL_RESOURCES", "BLOCK_DEVICE", "DISK_LAYOUT", "LVM_VOLUME_GROUP", "LVM_VOLUME_GROUP_SET", "NODE_LABEL",
    "BlockDevice", "BlockDeviceStatus", "Condition", "ConditionType", "DiskLayout", "DiskLayoutSpec",
    "DiskLayoutStatus", "FileDevice", "LVGPhase", "LVMVolumeGroup", "LVMVolumeGroupSet", "LVMVolumeGroupSetSpec",
    "LVMVolumeGroupSetStatus", "LVMVolumeGroupSpec", "LVMVolumeGroupStatus", "LVMVolumeGroupTemplate",
    "LabelSelector", "Phase", "Reason", "RefusalCode", "Resource", "StructuredLayout", "ThinPool",
    "backing_file_name", "block_device_name", "get_condition", "now_rfc3339", "parse_backing_file_name",
    "set_condition",
]
