"""The four CRDs: names, scope, printer columns, and the models behind spec and status."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel

from .. import GROUP, VERSION
from .blockdevice import BlockDeviceStatus
from .disklayout import DiskLayoutSpec, DiskLayoutStatus
from .lvm import (
    BACKING_NAME_RULE,
    LVMVolumeGroupSetSpec,
    LVMVolumeGroupSetStatus,
    LVMVolumeGroupSpec,
    LVMVolumeGroupStatus,
)

NODE_LABEL = f"{GROUP}/node"
"""Label the operator (and the agent for BlockDevices) keeps equal to the object's node, so each agent
watches only its node's objects with a server-side label selector."""


@dataclass(frozen=True)
class Resource:
    kind: str
    plural: str
    singular: str
    short_names: tuple[str, ...]
    description: str
    spec: type[BaseModel] | None
    status: type[BaseModel]
    printer_columns: tuple[dict[str, Any], ...] = field(default_factory=tuple)
    spec_required: bool = True
    object_rules: tuple[dict[str, Any], ...] = field(default_factory=tuple)
    """CEL rules on the whole object (they may read ``self.metadata.name``)."""

    @property
    def group(self) -> str:
        return GROUP

    @property
    def version(self) -> str:
        return VERSION

    @property
    def crd_name(self) -> str:
        return f"{self.plural}.{GROUP}"

    @property
    def api_version(self) -> str:
        return f"{GROUP}/{VERSION}"


def _col(name: str, path: str, type_: str = "string", priority: int = 0, description: str = "") -> dict[str, Any]:
    col: dict[str, Any] = {"name": name, "type": type_, "jsonPath": path}
    if priority:
        col["priority"] = priority
    if description:
        col["description"] = description
    return col


AGE = _col("Age", ".metadata.creationTimestamp", "date")

DISK_LAYOUT = Resource(
    kind="DiskLayout", plural="disklayouts", singular="disklayout", short_names=("dl",),
    description="The data-disk layout of one node: structured YAML or raw disko Nix, applied by the node's disklet agent "
                "only when no target device is in use.",
    spec=DiskLayoutSpec, status=DiskLayoutStatus,
    printer_columns=(
        _col("Node", ".spec.nodeName"),
        _col("Phase", ".status.phase"),
        _col("Reason", ".status.refusalReason"),
        _col("Devices", ".status.targetDevicesText"),
        _col("Ready", '.status.conditions[?(@.type=="Ready")].status', priority=1),
        _col("Generation", ".status.layoutGeneration", "integer", 1),
        _col("Mode", ".status.nodeMode", priority=1),
        AGE,
    ),
)

LVM_VOLUME_GROUP = Resource(
    kind="LVMVolumeGroup", plural="lvmvolumegroups", singular="lvmvolumegroup", short_names=("lvg",),
    description="An LVM volume group on one node, built from block devices and/or file-backed loop devices, with thin pools.",
    spec=LVMVolumeGroupSpec, status=LVMVolumeGroupStatus, object_rules=(BACKING_NAME_RULE,),
    printer_columns=(
        _col("ThinPools", ".status.thinPoolReady"),
        _col("Configuration Applied", ".status.configurationApplied"),
        _col("Phase", ".status.phase"),
        _col("Ready", '.status.conditions[?(@.type=="Ready")].status'),
        _col("Node", ".spec.local.nodeName"),
        _col("Size", ".status.vgSize"),
        _col("Allocated", ".status.allocatedSize"),
        _col("VG", ".spec.actualVGNameOnTheNode"),
        AGE,
    ),
)

LVM_VOLUME_GROUP_SET = Resource(
    kind="LVMVolumeGroupSet", plural="lvmvolumegroupsets", singular="lvmvolumegroupset", short_names=("lvgset",),
    description="A template stamped onto every node matching a selector as one LVMVolumeGroup per node.",
    spec=LVMVolumeGroupSetSpec, status=LVMVolumeGroupSetStatus,
    printer_columns=(
        _col("Phase", ".status.phase"),
        _col("Current", ".status.currentLVMVolumeGroupsCount", "integer"),
        _col("Desired", ".status.desiredLVMVolumeGroupsCount", "integer"),
        _col("Updated", ".status.updatedCount", "integer"),
        _col("Ready", ".status.readyCount", "integer"),
        _col("Failed", ".status.failedCount", "integer", priority=1),
        _col("Revision", ".status.currentRevision", priority=1),
        _col("Reason", ".status.reason"),
        AGE,
    ),
)

BLOCK_DEVICE = Resource(
    kind="BlockDevice", plural="blockdevices", singular="blockdevice", short_names=("bd",),
    description="A block device discovered by the disklet agent on a node. Written by the agent only.",
    spec=None, status=BlockDeviceStatus, spec_required=False,
    printer_columns=(
        _col("Node", ".status.nodeName"),
        _col("Consumable", ".status.consumable", "boolean"),
        _col("Size", ".status.size"),
        _col("Path", ".status.path"),
        _col("Model", ".status.model"),
        _col("Serial", ".status.serial"),
        _col("Reason", ".status.consumableReasonCode"),
        _col("Transport", ".status.transport", priority=1),
        _col("Type", ".status.type", priority=1),
        _col("FSType", ".status.fsType", priority=1),
        _col("VG", ".status.actualVGNameOnTheNode"),
        _col("LVG", ".status.lvmVolumeGroupName", priority=1),
        AGE,
    ),
)

ALL_RESOURCES: tuple[Resource, ...] = (DISK_LAYOUT, LVM_VOLUME_GROUP, LVM_VOLUME_GROUP_SET, BLOCK_DEVICE)
