"""LVMVolumeGroup and LVMVolumeGroupSet (docs/design/lvm.md). Field names follow sds-node-configurator."""

from __future__ import annotations

import math
import posixpath
import re
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import Field, WithJsonSchema, field_validator, model_validator

from ..units import GIB, PERCENT_RE, WHOLE_BINARY_SIZE_RE, QuantityError, decimal_unit_hint, quantity_bytes
from .blockdevice import DEVICE_PATH_PATTERN
from .common import (
    DNS_LABEL,
    DNS_SUBDOMAIN,
    ApiModel,
    BlockDeviceSelector,
    Condition,
    LabelSelector,
    StatusModel,
    cel,
    immutable,
    list_map,
    validations,
)

LVM_NAME_PATTERN = r"^[a-zA-Z0-9+_.][a-zA-Z0-9+_.-]*$"
FILE_SIZE_PATTERN = r"^[1-9][0-9]*(Mi|Gi|Ti|Pi)$"
# Whole numbers only (1536Mi, not 1.5Gi): the API server's quantity library cannot tell a
# fractional byte count from a whole one reliably, so the pattern keeps every value whole bytes.
# Binary units or bare bytes only: a decimal letter (1G = 10^9 bytes) is refused with a hint, as for
# fileDevices, so one size text never means two sizes (docs/kctl.md#sizes).
THIN_SIZE_PATTERN = r"^(([1-9][0-9]?|100)%|[0-9]+(Ki|Mi|Gi|Ti|Pi|Ei)?)$"
ALLOCATION_LIMIT_PATTERN = r"^[1-9][0-9]{0,3}%$"
MIN_FILE_DEVICE_BYTES = GIB
NAME_MAX = 255
BACKING_NAME_OVERHEAD = len("disklet-..img")
"""The bytes of disklet-<lvg>.<entry>.img around the two names."""
DIRECTORY_PATTERN = r"^/[^\x00-\x1f\x7f]*$"
"""Absolute, and no control characters (a newline in a path breaks every line-based tool)."""
DECIMAL_SIZE_RULE = cel(
    "!self.matches('^[0-9]+[KMGTP]B?$')", "is a decimal size (1G is 10^9 bytes): use Mi, Gi, Ti or Pi",
    message_expression="self + ' is a decimal size (1G is 10^9 bytes): use Mi, Gi, Ti or Pi; did you mean ' + "
                       "self.replace('B', '') + 'i?'")


class LVGPhase(StrEnum):
    PENDING = "Pending"
    READY = "Ready"
    NOT_READY = "NotReady"
    TERMINATING = "Terminating"


class Reason(StrEnum):
    """Condition reasons (docs/lvm.md says which still count as Ready)."""

    CREATING = "Creating"
    UPDATING = "Updating"
    APPLIED = "Applied"
    VALIDATION_FAILED = "ValidationFailed"
    FILE_DEVICE_NOT_APPLIED = "FileDeviceNotApplied"
    FILE_DEVICE_GROW_FAILED = "FileDeviceGrowFailed"
    FILE_DEVICE_DRIFT = "FileDeviceDrift"
    VG_EXTEND_FAILED = "VGExtendFailed"
    THIN_POOL_RECONCILE_FAILED = "ThinPoolReconcileFailed"
    ALIAS_RESOLUTION_FAILED = "AliasResolutionFailed"
    VG_NAME_CONFLICT = "VGNameConflict"
    NODE_LABEL_MISMATCH = "NodeLabelMismatch"
    TERMINATING = "Terminating"


class SetReason(StrEnum):
    """Reasons of an LVMVolumeGroupSet's ``Ready`` condition, of a child problem, and the set's status."""

    ALL_CREATED = "AllCreated"
    NO_MATCHING_NODES = "NoMatchingNodes"
    CREATING = "Creating"
    CREATE_FAILED = "CreateFailed"
    UPDATE_FAILED = "UpdateFailed"
    VALIDATION_FAILED = "ValidationFailed"
    NAME_CONFLICT = "NameConflict"


class AttentionReason(StrEnum):
    """Why a child is listed in an LVMVolumeGroupSet's ``status.attention``."""

    FAILED = "Failed"
    NOT_READY = "NotReady"
    UPDATING = "Updating"
    ORPHANED = "Orphaned"


class ProgressReason(StrEnum):
    """Reasons of an LVMVolumeGroupSet's ``Progressing`` condition."""

    COMPLETE = "Complete"
    ROLLING_OUT = "RollingOut"
    PAUSED = "Paused"
    CHILD_FAILED = "ChildFailed"
    BLOCKED = "Blocked"


class SetPhase(StrEnum):
    CREATED = "Created"
    PENDING = "Pending"
    NOT_CREATED = "NotCreated"


class SetConditionType(StrEnum):
    READY = "Ready"
    PROGRESSING = "Progressing"


class ConditionType(StrEnum):
    VG_CONFIGURATION_APPLIED = "VGConfigurationApplied"
    VG_READY = "VGReady"
    NODE_READY = "NodeReady"
    AGENT_READY = "AgentReady"
    READY = "Ready"


def backing_file_name(lvg_name: str, entry_name: str) -> str:
    """Invertible owner-marker name of a backing file (docs/design/lvm.md rule 1)."""
    return f"disklet-{lvg_name}.{entry_name}.img"


def parse_backing_file_name(basename: str) -> tuple[str, str] | None:
    """(lvg, entry) from a backing file basename, or None when it is not ours."""
    if not basename.startswith("disklet-") or not basename.endswith(".img"):
        return None
    stem = basename[len("disklet-"):-len(".img")]
    lvg, dot, entry = stem.rpartition(".")
    if not dot or not lvg or not entry:
        return None
    return lvg, entry


class FileDevice(ApiModel):
    """A preallocated file under the base directory, attached as a loop device and used as a PV."""

    model_config = ApiModel.model_config | {
        "json_schema_extra": validations(
            cel("!self.size.matches('^[1-9][0-9]*(Mi|Gi|Ti|Pi)$') || quantity(self.size).compareTo(quantity('1Gi')) >= 0",
                "size must be at least 1Gi (binary units: 1G is 10^9 bytes, below 1Gi)"),
            cel("!self.size.matches('^[1-9][0-9]*(Mi|Gi|Ti|Pi)$') || quantity(self.size).compareTo(quantity('1Ei')) <= 0",
                "size must be at most 1Ei (1024Pi)"),
            cel("self.directory == oldSelf.directory",
                "directory of an existing file device is immutable, and entries are never removed: to use another directory, delete and re-create the LVMVolumeGroup"),
            cel("!self.size.matches('^[1-9][0-9]*(Mi|Gi|Ti|Pi)$') || !oldSelf.size.matches('^[1-9][0-9]*(Mi|Gi|Ti|Pi)$') || quantity(self.size).compareTo(quantity(oldSelf.size)) >= 0",
                "size of a file device may only grow (the backing file is never shrunk)"),
        )
    }

    name: str = Field(pattern=DNS_LABEL, max_length=63,
                      description="Entry name (DNS-1123 label), part of the backing file name disklet-<lvg>.<name>.img.")
    directory: str = Field(
        max_length=4096, pattern=DIRECTORY_PATTERN,
        json_schema_extra=validations(cel("!self.matches('(^|/)[.][.]?(/|$)')",
                                          "directory must not contain . or .. segments")),
        description="Absolute directory of the backing file: the agent's base directory (Helm value fileDevicesDirectory, default /var/lib/disklet/file-devices) or below it. Immutable.")
    size: str = Field(
        pattern=FILE_SIZE_PATTERN, max_length=32, json_schema_extra=validations(DECIMAL_SIZE_RULE),
        description="Size of the backing file in whole binary units (Mi, Gi, Ti, Pi), at least 1Gi. May only grow. Note: 1G is decimal (10^9 bytes) and not accepted; write 1Gi.")

    @field_validator("size", mode="before")
    @classmethod
    def _size_hint(cls, v: object) -> object:
        if isinstance(v, str) and not WHOLE_BINARY_SIZE_RE.fullmatch(v):
            raise ValueError(f"size {v!r} must be a whole number of Mi, Gi, Ti or Pi{decimal_unit_hint(v)}")
        return v

    @field_validator("size")
    @classmethod
    def _size_min(cls, v: str) -> str:
        if quantity_bytes(v) < MIN_FILE_DEVICE_BYTES:
            raise ValueError(f"size {v} is below the 1Gi minimum")
        return v

    @field_validator("directory")
    @classmethod
    def _directory_clean(cls, v: str) -> str:
        if not v.startswith("/"):
            raise ValueError(f"directory {v!r} must be absolute")
        if re.search(r"[\x00-\x1f\x7f]", v):
            raise ValueError(f"directory {v!r} must not contain control characters (newline, tab, ...)")
        if any(seg in (".", "..") for seg in v.split("/")):
            raise ValueError(f"directory {v!r} must not contain . or .. segments")
        return v

    def bytes(self) -> int:
        return quantity_bytes(self.size)

    def file_path(self, lvg_name: str) -> str:
        return posixpath.join(self.directory, backing_file_name(lvg_name, self.name))


class ThinPool(ApiModel):
    name: str = Field(pattern=LVM_NAME_PATTERN, max_length=127, description="Thin pool LV name.")
    size: str = Field(pattern=THIN_SIZE_PATTERN, max_length=32, json_schema_extra=validations(cel(
        "!isQuantity(self) || (quantity(self).compareTo(quantity('0')) > 0 && "
        "quantity(self).compareTo(quantity('1Ei')) <= 0)",
        "thin pool size must be a percentage of the VG (1%..100%) or a quantity from 1 byte to 1Ei"),
        DECIMAL_SIZE_RULE),
                      description="Absolute quantity, a whole number of bytes with an optional binary unit (10Gi, 1536Mi), or a percentage of the VG (1%..100%). Pools never shrink. Note: 1G is decimal (10^9 bytes) and not accepted; write 1Gi.")
    allocation_limit: str = Field(default="150%", pattern=ALLOCATION_LIMIT_PATTERN, max_length=8,
                                  description="Overcommit limit for thin volumes, as a percentage of the pool size.")

    @field_validator("size", mode="before")
    @classmethod
    def _size_hint(cls, v: object) -> object:
        if isinstance(v, str) and decimal_unit_hint(v):
            raise ValueError(f"thin pool size {v!r} must be a percentage, bytes or a whole number of Ki, Mi, Gi, "
                             f"Ti, Pi or Ei{decimal_unit_hint(v)}")
        return v

    @field_validator("size")
    @classmethod
    def _size_parses(cls, v: str) -> str:
        if not PERCENT_RE.fullmatch(v):
            try:
                if quantity_bytes(v) <= 0:
                    raise ValueError(f"thin pool size {v} must be positive")
            except QuantityError as exc:
                raise ValueError(str(exc)) from exc
        return v


class LocalSpec(ApiModel):
    node_name: str = Field(pattern=DNS_SUBDOMAIN, max_length=253,
                           json_schema_extra=validations(immutable("local.nodeName")),
                           description="Node that holds the VG (immutable).")


_REMOVAL_RULE = cel(
    "!has(oldSelf.fileDevices) || oldSelf.fileDevices.all(o, has(self.fileDevices) && self.fileDevices.exists(n, n.name == o.name))",
    "file devices cannot be removed from the list: a backing file holds a PV with data. To retire one, move its "
    "extents off (pvmove) and remove it from the VG on the node, or delete the whole LVMVolumeGroup",
)
_AT_LEAST_ONE = cel("has(self.blockDeviceSelector) || (has(self.fileDevices) && size(self.fileDevices) > 0)",
                    "set blockDeviceSelector, a non-empty fileDevices, or both")


def _unique_backing_files(lvg_name: str | None, file_devices: list[FileDevice] | None) -> None:
    if not file_devices:
        return
    for fd in file_devices:
        if lvg_name and len(backing_file_name(lvg_name, fd.name).encode()) > NAME_MAX:
            raise ValueError(f"backing file name {backing_file_name(lvg_name, fd.name)[:40]}... for entry {fd.name!r} "
                             f"is longer than {NAME_MAX} bytes (the file name limit): shorten the LVMVolumeGroup "
                             "name or the entry name")
    names = [fd.name for fd in file_devices]
    if len(set(names)) != len(names):
        raise ValueError("fileDevices names must be unique")


def _unique_thin_pools(thin_pools: list[ThinPool] | None) -> None:
    """thinPools is a list keyed by name: the API server refuses a name twice, so does the model."""
    names = [tp.name for tp in thin_pools or ()]
    if len(set(names)) != len(names):
        raise ValueError("thinPools names must be unique")


class LVMVolumeGroupSpec(ApiModel):
    model_config = ApiModel.model_config | {
        "json_schema_extra": validations(
            cel("self.type != 'Local' || has(self.local)", "local (with nodeName) is required when type is Local"),
            _AT_LEAST_ONE,
            _REMOVAL_RULE,
        )
    }

    type: Literal["Local"] = Field(default="Local", json_schema_extra=validations(immutable("type")),
                                   description="Local: the VG lives on one node (the only type; immutable).")
    local: LocalSpec | None = Field(default=None, description="Node of a Local VG.")
    actual_vg_name_on_the_node: str = Field(
        alias="actualVGNameOnTheNode", pattern=LVM_NAME_PATTERN, max_length=127,
        json_schema_extra=validations(immutable("actualVGNameOnTheNode")),
        description="Name of the VG on the node (immutable; unique per node).")
    block_device_selector: BlockDeviceSelector | None = Field(
        default=None, description="Selects the node's BlockDevices that become PVs of the VG: by their labels "
                                  "and/or a CEL disk selector (match, docs/selectors.md).")
    file_devices: list[FileDevice] | None = Field(
        default=None, max_length=32, json_schema_extra=list_map("name"),
        description="File-backed loop devices used as PVs. Entries may be appended and grown, never edited otherwise or removed.")
    thin_pools: list[ThinPool] | None = Field(default=None, max_length=32, json_schema_extra=list_map("name"),
                                              description="Thin pools to create in the VG.")

    @model_validator(mode="after")
    def _at_least_one_source(self) -> LVMVolumeGroupSpec:
        if self.type == "Local" and self.local is None:
            raise ValueError("local (with nodeName) is required when type is Local")
        if self.block_device_selector is None and not self.file_devices:
            raise ValueError("set blockDeviceSelector, a non-empty fileDevices, or both")
        _unique_backing_files(None, self.file_devices)
        _unique_thin_pools(self.thin_pools)
        return self


class NodeDevice(StatusModel):
    block_device: str | None = Field(default=None, description="BlockDevice object name.")
    path: str = Field(pattern=DEVICE_PATH_PATTERN, max_length=4096, description="Device path on the node.")
    pv_size: str | None = Field(default=None, description="Size of the PV.")
    dev_size: str | None = Field(default=None, description="Size of the device.")
    pv_uuid: str | None = Field(default=None, alias="pvUUID", description="PV UUID.")


class NodeFileDevice(StatusModel):
    name: str = Field(description="Entry name from spec.fileDevices.")
    file_path: str = Field(description="Backing file path as the kernel reports it.")
    loop_device: str = Field(pattern=r"^/dev/loop[0-9]+$", max_length=32,
                             description="Canonical loop device, /dev/loopN.")
    size: str | None = Field(default=None, description="PV size (backing file minus LVM metadata).")
    pv_uuid: str | None = Field(default=None, alias="pvUUID", description="PV UUID.")


class NodeStatus(StatusModel):
    name: str = Field(description="Node name.")
    devices: list[NodeDevice] | None = Field(default=None, json_schema_extra={"x-kubernetes-list-type": "atomic"},
                                             description="Block-device PVs of the VG.")
    file_devices: list[NodeFileDevice] | None = Field(default=None, json_schema_extra=list_map("name"),
                                                      description="File-backed PVs of the VG.")


class ThinPoolStatus(StatusModel):
    name: str = Field(description="Thin pool name.")
    actual_size: str | None = Field(default=None, description="Current pool size.")
    used_size: str | None = Field(default=None, description="Data used in the pool.")
    allocated_size: str | None = Field(default=None, description="Sum of thin volume sizes.")
    allocation_limit: str | None = Field(default=None, description="Overcommit limit (percent).")
    available_space: str | None = Field(default=None, description="actualSize × allocationLimit − allocatedSize.")
    ready: bool = Field(default=False, description="Whether the pool exists at its requested size.")
    message: str | None = Field(default=None, description="Why the pool is not ready.")
    data_percent: float | None = Field(default=None, description="Data fullness in percent (lvs data_percent).")
    metadata_percent: float | None = Field(default=None, description="Metadata fullness in percent (lvs metadata_percent).")
    chunk_size: str | None = Field(default=None, description="Thin pool chunk size.")
    metadata_size: str | None = Field(default=None, description="Size of the pool's metadata LV.")


class LVMVolumeGroupStatus(StatusModel):
    phase: LVGPhase | None = Field(default=None, description="Pending, Ready, NotReady or Terminating.")
    observed_generation: int | None = Field(default=None, description="metadata.generation last reconciled.")
    conditions: list[Condition] | None = Field(default=None, max_length=32, json_schema_extra=list_map("type"),
                                               description="VGConfigurationApplied, VGReady, ThinPoolNearlyFull, ThinPoolMetadataNearlyFull (agent); NodeReady, AgentReady, Ready (operator).")
    nodes: list[NodeStatus] | None = Field(default=None, json_schema_extra=list_map("name"),
                                           description="Devices and file devices of the VG per node.")
    vg_uuid: str | None = Field(default=None, alias="vgUUID", description="VG UUID: the VG's identity.")
    vg_size: str | None = Field(default=None, alias="vgSize", description="VG size.")
    vg_free: str | None = Field(default=None, alias="vgFree", description="Unallocated VG space.")
    allocated_size: str | None = Field(default=None, description="Allocated VG space.")
    extent_size: str | None = Field(default=None, description="Physical extent size.")
    configuration_applied: bool | None = Field(default=None, description="Whether the last reconcile applied the spec.")
    thin_pools: list[ThinPoolStatus] | None = Field(default=None, json_schema_extra=list_map("name"),
                                                    description="Thin pools as found on the node.")
    thin_pool_ready: str | None = Field(default=None, description="Ready thin pools out of requested, e.g. 1/2.")


BACKING_NAME_RULE = cel(
    f"!has(self.spec.fileDevices) || self.spec.fileDevices.all(f, "
    f"size(self.metadata.name) + size(f.name) <= {NAME_MAX - BACKING_NAME_OVERHEAD})",
    f"a backing file name disklet-<name>.<entry>.img would be longer than {NAME_MAX} bytes (the file name limit): "
    "shorten the LVMVolumeGroup name or the fileDevices entry name")
"""Object-level (the LVMVolumeGroup name is not in spec): names are DNS labels, so characters are bytes."""


class LVMVolumeGroup(ApiModel):
    model_config = ApiModel.model_config | {"extra": "ignore"}
    api_version: str = "disklet.io/v1alpha1"
    kind: str = "LVMVolumeGroup"
    metadata: dict[str, Any] = Field(default_factory=dict)
    spec: LVMVolumeGroupSpec
    status: LVMVolumeGroupStatus | None = None

    @model_validator(mode="after")
    def _backing_names_fit(self) -> LVMVolumeGroup:
        _unique_backing_files(self.metadata.get("name"), self.spec.file_devices)
        return self


# ----------------------------------------------------------------------------- LVMVolumeGroupSet


class TemplateMetadata(ApiModel):
    labels: dict[str, str] | None = Field(default=None, description="Labels copied onto every child LVMVolumeGroup.")


class LVMVolumeGroupTemplate(ApiModel):
    """An LVMVolumeGroup spec without ``local`` (the operator sets it per node)."""

    model_config = ApiModel.model_config | {
        "json_schema_extra": validations(_AT_LEAST_ONE, _REMOVAL_RULE)
    }

    metadata: TemplateMetadata | None = Field(default=None, description="Metadata for the children.")
    type: Literal["Local"] = Field(default="Local", json_schema_extra=validations(immutable("type")),
                                   description="Local (the only type; immutable).")
    actual_vg_name_on_the_node: str = Field(
        alias="actualVGNameOnTheNode", pattern=LVM_NAME_PATTERN, max_length=127,
        json_schema_extra=validations(immutable("lvmVolumeGroupTemplate.actualVGNameOnTheNode",
                                                "children cannot rename their VG")),
        description="Name of the VG on every node (immutable).")
    block_device_selector: BlockDeviceSelector | None = Field(
        default=None, description="Selects BlockDevices on each node: labels and/or match (docs/selectors.md).")
    file_devices: list[FileDevice] | None = Field(
        default=None, max_length=32, json_schema_extra=list_map("name"),
        description="File-backed devices for every child; append or grow only.")
    thin_pools: list[ThinPool] | None = Field(default=None, max_length=32, json_schema_extra=list_map("name"),
                                              description="Thin pools for every child.")

    @model_validator(mode="after")
    def _at_least_one_source(self) -> LVMVolumeGroupTemplate:
        if self.block_device_selector is None and not self.file_devices:
            raise ValueError("set blockDeviceSelector, a non-empty fileDevices, or both")
        _unique_backing_files(None, self.file_devices)
        _unique_thin_pools(self.thin_pools)
        return self

    def child_spec(self, node_name: str) -> LVMVolumeGroupSpec:
        return LVMVolumeGroupSpec(
            type=self.type, local=LocalSpec(node_name=node_name),
            actual_vg_name_on_the_node=self.actual_vg_name_on_the_node,
            block_device_selector=self.block_device_selector, file_devices=self.file_devices,
            thin_pools=self.thin_pools)


MAX_UNAVAILABLE_PATTERN = r"^(100|[1-9]?[0-9])%$"
DEFAULT_MAX_UNAVAILABLE = 1
MAX_ATTENTION = 20
"""status.attention holds at most this many children; the counts cover the rest."""
MAX_REVISIONS = 2
"""status.revisions: the current template and the one before it (what ``kctl rollout undo`` restores)."""

IntOrString = Annotated[int | str, WithJsonSchema({
    "x-kubernetes-int-or-string": True,
    "x-kubernetes-validations": [cel(
        "type(self) == int ? int(self) >= 0 : string(self).matches('^(100|[1-9]?[0-9])%$')",
        "maxUnavailable is a count (0 or more) or a percentage 0%..100%")],
})]


class RolloutSpec(ApiModel):
    """How a template change (and the creation of new children) reaches the nodes."""

    max_unavailable: IntOrString = Field(
        default=DEFAULT_MAX_UNAVAILABLE,
        description="Children that may be not Ready at the same time because of the rollout: a count or a percentage "
                    "of the matching nodes (rounded up, at least 1). Default 1: a bad template reaches one node, not the fleet.")
    canary: int | None = Field(
        default=None, ge=0, le=10000,
        description="The first N children in rollout order are written first and must be updated and Ready before any other is touched.")
    paused: bool = Field(default=False, description="True: no child is created or updated until unpaused (status is still reported).")
    failure_policy: Literal["Halt", "Continue"] = Field(
        default="Halt",
        description="Halt: stop at the first child that failed to apply the current template (condition Progressing=False, "
                    "reason ChildFailed, naming it). Continue: keep going within maxUnavailable.")
    order_label: str | None = Field(
        default=None, max_length=317, pattern=r"^([a-z0-9.-]+/)?[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$",
        description="A Node label whose value orders the rollout (integers numerically, before other values; nodes "
                    "without it last). Ties and the default order: node name.")

    @field_validator("max_unavailable")
    @classmethod
    def _max_unavailable(cls, v: int | str) -> int | str:
        if isinstance(v, bool):
            raise ValueError("maxUnavailable is a count or a percentage")
        if isinstance(v, int):
            if v < 0:
                raise ValueError("maxUnavailable must not be negative")
            return v
        if not re.fullmatch(MAX_UNAVAILABLE_PATTERN, v):
            raise ValueError(f"maxUnavailable {v!r} must be a count or a percentage 0%..100%")
        return v

    def budget(self, desired: int) -> int:
        """maxUnavailable as a count of children for ``desired`` matching nodes (percent rounded up, at least 1)."""
        v = self.max_unavailable
        if isinstance(v, str):
            n = math.ceil(desired * int(v[:-1]) / 100)
        else:
            n = v
        return max(1, n)


class LVMVolumeGroupSetSpec(ApiModel):
    node_selector: LabelSelector = Field(description="Nodes that get a child LVMVolumeGroup.")
    strategy: Literal["PerNode"] = Field(default="PerNode", json_schema_extra=validations(immutable("strategy")),
                                         description="PerNode: one LVMVolumeGroup per matching node (immutable).")
    rollout: RolloutSpec = Field(default_factory=RolloutSpec,
                                 description="Staged rollout of new children and template changes (docs/lvmvolumegroupset.md).")
    lvm_volume_group_template: LVMVolumeGroupTemplate = Field(
        alias="lvmVolumeGroupTemplate", description="The LVMVolumeGroup stamped onto every matching node.")


class CreatedLVG(StatusModel):
    lvm_volume_group_name: str = Field(alias="lvmVolumeGroupName", description="Child LVMVolumeGroup name.")
    node_name: str = Field(description="Node of the child.")


class AttentionChild(StatusModel):
    """A child that needs a look: not Ready, failed, refused, orphaned or in conflict."""

    name: str = Field(description="Child LVMVolumeGroup name.")
    node_name: str = Field(description="Node of the child.")
    reason: str = Field(description="Failed, NotReady, Updating, Orphaned, UpdateFailed, CreateFailed, NameConflict, ValidationFailed.")
    message: str | None = Field(default=None, max_length=512, description="Short detail (the child's own status has the rest).")
    revision: str | None = Field(default=None, description="Template revision the child is at.")


class TemplateRevision(StatusModel):
    revision: str = Field(description="Hash of the template (the children's disklet.io/lvgset-revision label).")
    template: Annotated[dict[str, Any], WithJsonSchema({"type": "object", "x-kubernetes-preserve-unknown-fields": True})] = Field(
        description="spec.lvmVolumeGroupTemplate of that revision, as the operator first saw it.")


class LVMVolumeGroupSetStatus(StatusModel):
    current_lvm_volume_groups_count: int | None = Field(default=None, alias="currentLVMVolumeGroupsCount",
                                                        description="Managed children that exist.")
    desired_lvm_volume_groups_count: int | None = Field(default=None, alias="desiredLVMVolumeGroupsCount",
                                                        description="Nodes that match the selector.")
    updated_count: int | None = Field(default=None, description="Children whose spec is the current template.")
    ready_count: int | None = Field(default=None, description="Children that are Ready (degraded included).")
    updated_ready_count: int | None = Field(default=None, description="Children at the current template that applied it and are Ready.")
    failed_count: int | None = Field(default=None, description="Children that failed to apply the current template, or whose write was refused.")
    orphaned_count: int | None = Field(default=None, description="Children kept for nodes that no longer match.")
    current_revision: str | None = Field(default=None, description="Hash of spec.lvmVolumeGroupTemplate (label disklet.io/lvgset-revision on the children).")
    attention: list[AttentionChild] | None = Field(
        default=None, max_length=MAX_ATTENTION, json_schema_extra={"x-kubernetes-list-type": "atomic"},
        description=f"Up to {MAX_ATTENTION} children needing a look (failed first); all children: "
                    "kubectl get lvg -l disklet.io/lvmvolumegroupset=<set>.")
    revisions: list[TemplateRevision] | None = Field(
        default=None, max_length=MAX_REVISIONS, json_schema_extra={"x-kubernetes-list-type": "atomic"},
        description="The current template revision first, then the previous one (kctl rollout undo).")
    phase: Literal["Created", "Pending", "NotCreated"] | None = Field(default=None, description="Created, Pending or NotCreated.")
    reason: str | None = Field(default=None, description="Why the set is not Created.")
    observed_generation: int | None = Field(default=None, description="metadata.generation last reconciled.")
    conditions: list[Condition] | None = Field(default=None, max_length=32, json_schema_extra=list_map("type"),
                                               description="Ready, Progressing.")


class LVMVolumeGroupSet(ApiModel):
    model_config = ApiModel.model_config | {"extra": "ignore"}
    api_version: str = "disklet.io/v1alpha1"
    kind: str = "LVMVolumeGroupSet"
    metadata: dict[str, Any] = Field(default_factory=dict)
    spec: LVMVolumeGroupSetSpec
    status: LVMVolumeGroupSetStatus | None = None
