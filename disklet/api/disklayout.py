"""DiskLayout: the data-disk layout of one node (DESIGN.md §4, DISKO.md)."""

from __future__ import annotations

from enum import StrEnum
from typing import Literal

from pydantic import Field, model_validator

from .common import (
    ATOMIC,
    DNS_SUBDOMAIN,
    ApiModel,
    Condition,
    StatusModel,
    cel,
    immutable,
    list_map,
    validations,
)

NAME_PATTERN = r"^[A-Za-z_][A-Za-z0-9_]{0,31}$"
POOL_PATTERN = r"^[A-Za-z][A-Za-z0-9_]{0,31}$"
DEVICE_PATTERN = r"^/dev/[A-Za-z0-9._:+/-]+$"
SIZE_PATTERN = r"^(100%|[1-9][0-9]*[KMGTP]?)$"
MOUNT_OPTION_PATTERN = r"^[A-Za-z0-9_=,.:+/-]+$"
FILESYSTEM_FORMATS = ("ext4", "ext3", "ext2", "xfs", "btrfs", "vfat", "f2fs")
MAX_NIX_BODY = 262144


class Phase(StrEnum):
    PENDING = "pending"
    APPLIED = "applied"
    REFUSED = "refused"
    FAILED = "failed"


class RefusalCode(StrEnum):
    """Stable, machine-readable refusal codes (docs/refusal-codes.md). Never rename one."""

    # The six codes of the seed design, exactly as named there.
    ACTIVE_KCORE_VOLUME = "target_device_has_active_kcore_volume"
    ACTIVE_SYSTEM_MOUNT = "target_device_has_active_system_mount"
    ACTIVE_LVM_PV = "target_device_is_active_lvm_pv"
    ACTIVE_ZPOOL_MEMBER = "target_device_is_active_zpool_member"
    NO_TARGET_DEVICES = "no_target_devices"
    LSBLK_PROBE_FAILED = "lsblk_probe_failed"
    # disklet's additional guards.
    ACTIVE_MOUNT = "target_device_has_active_mount"
    ACTIVE_SWAP = "target_device_has_active_swap"
    RAID_MEMBER = "target_device_is_raid_member"
    OPEN_CRYPT_MAPPING = "target_device_has_open_crypt_mapping"
    HAS_HOLDERS = "target_device_has_holders"
    NOT_FOUND = "target_device_not_found"
    NOT_BLANK = "target_device_not_blank"
    STATE_UNKNOWN = "target_device_state_unknown"
    DUPLICATE_TARGET = "duplicate_target_device"
    PARTITIONS_NOT_APPEND_ONLY = "partition_change_not_append_only"
    DUPLICATE_NODE_LAYOUT = "another_disk_layout_for_node"


class PartitionContent(ApiModel):
    """What a partition holds; the fields allowed depend on ``type``."""

    model_config = ApiModel.model_config | {
        "json_schema_extra": validations(
            cel("self.type != 'filesystem' || (has(self.format) && has(self.mountpoint))",
                "a filesystem partition needs format and mountpoint"),
            cel("self.type == 'filesystem' || (!has(self.format) && !has(self.mountpoint) && !has(self.mountOptions))",
                "format, mountpoint and mountOptions belong to type: filesystem only"),
            cel("self.type != 'lvm_pv' || has(self.vg)", "an lvm_pv partition needs vg (the volume group it joins)"),
            cel("self.type == 'lvm_pv' || !has(self.vg)", "vg belongs to type: lvm_pv only"),
            cel("self.type != 'zfs' || has(self.pool)", "a zfs partition needs pool (the zpool it joins)"),
            cel("self.type == 'zfs' || !has(self.pool)", "pool belongs to type: zfs only"),
        )
    }

    type: Literal["filesystem", "lvm_pv", "zfs"] = Field(
        description="filesystem (format + mountpoint), lvm_pv (a PV of vg) or zfs (a vdev of pool).")
    format: Literal[FILESYSTEM_FORMATS] | None = Field(  # type: ignore[valid-type]
        default=None, description="Filesystem to create (filesystem only): " + ", ".join(FILESYSTEM_FORMATS) + ".")
    mountpoint: str | None = Field(
        default=None, max_length=1024, pattern=r"^/",
        json_schema_extra=validations(
            cel("!self.matches('(^|/)[.][.]?(/|$)')", "mountpoint must not contain . or .. segments"),
            cel("self != '/' && self != '/boot' && self != '/nix' && !self.startsWith('/nix/')",
                "mountpoint must not be /, /boot or under /nix (OS mounts are out of scope for day-2 layouts)"),
        ),
        description="Absolute mount path (filesystem only). Not /, /boot or under /nix.")
    mount_options: list[str] | None = Field(
        default=None, max_length=32,
        json_schema_extra=ATOMIC | {"items": {"maxLength": 256, "pattern": MOUNT_OPTION_PATTERN}},
        description="mount(8) options (filesystem only), e.g. [\"nofail\", \"noatime\"]. Recommended: nofail on data disks.")
    vg: str | None = Field(default=None, pattern=NAME_PATTERN, max_length=32,
                           description="Volume group this PV joins (lvm_pv only); declare it in lvmVolumeGroups.")
    pool: str | None = Field(default=None, pattern=POOL_PATTERN, max_length=32,
                             description="ZFS pool this partition joins (zfs only); declare it in zfsPools.")

    @model_validator(mode="after")
    def _fields_match_type(self) -> PartitionContent:
        allowed = {"filesystem": {"format", "mountpoint", "mount_options"}, "lvm_pv": {"vg"}, "zfs": {"pool"}}
        required = {"filesystem": {"format", "mountpoint"}, "lvm_pv": {"vg"}, "zfs": {"pool"}}
        present = {k for k in ("format", "mountpoint", "mount_options", "vg", "pool") if getattr(self, k) is not None}
        missing = required[self.type] - present
        if missing:
            raise ValueError(f"content type {self.type} needs {', '.join(sorted(missing))}")
        extra = present - allowed[self.type]
        if extra:
            raise ValueError(f"{', '.join(sorted(extra))} not allowed for content type {self.type}")
        if self.mountpoint is not None:
            if any(seg in (".", "..") for seg in self.mountpoint.split("/")):
                raise ValueError(f"mountpoint {self.mountpoint!r} must not contain . or .. segments")
            if self.mountpoint in ("/", "/boot", "/nix") or self.mountpoint.startswith("/nix/"):
                raise ValueError(f"mountpoint {self.mountpoint!r} must not be /, /boot or under /nix")
        return self


class Partition(ApiModel):
    name: str = Field(pattern=NAME_PATTERN, max_length=32,
                      description="Partition name: letters, digits, underscore; unique on the disk. The GPT label is disk-<disk>-<name>.")
    size: str = Field(pattern=SIZE_PATTERN, max_length=24,
                      description="Size in binary units (512M, 20G) or 100% for the rest of the disk (last partition only).")
    content: PartitionContent = Field(description="What the partition holds.")


class Gpt(ApiModel):
    partitions: list[Partition] = Field(
        min_length=1, max_length=64, json_schema_extra=list_map("name"),
        description="GPT partitions in on-disk order. On day 2, only appending is allowed.")


class Disk(ApiModel):
    name: str = Field(pattern=NAME_PATTERN, max_length=32, description="Disk name used in the disko config; unique in the layout.")
    device: str = Field(
        pattern=DEVICE_PATTERN, max_length=1024,
        json_schema_extra=validations(cel("!self.contains('..')", "device must not contain ..")),
        description="Block device path, e.g. /dev/disk/by-id/nvme-... (recommended: stable by-id names) or /dev/nvme1n1.")
    gpt: Gpt = Field(description="GPT partition table of the disk.")

    @model_validator(mode="after")
    def _device_has_no_dotdot(self) -> Disk:
        if ".." in self.device:
            raise ValueError(f"device {self.device!r} must not contain ..")
        return self


class NamedStub(ApiModel):
    name: str = Field(pattern=NAME_PATTERN, max_length=32, description="Name of the volume group or pool.")


class StructuredLayout(ApiModel):
    """Structured YAML expanded by disklet to a disko Nix body (DISKO.md §1–2)."""

    disks: list[Disk] = Field(min_length=1, max_length=64, json_schema_extra=list_map("name"),
                              description="Data disks, in order.")
    lvm_volume_groups: list[NamedStub] | None = Field(
        default=None, max_length=64, json_schema_extra=list_map("name"),
        description="LVM volume groups (empty stubs) that lvm_pv partitions join.")
    zfs_pools: list[NamedStub] | None = Field(
        default=None, max_length=64, json_schema_extra=list_map("name"),
        description="ZFS pools (empty stubs) that zfs partitions join.")


class DiskLayoutSpec(ApiModel):
    model_config = ApiModel.model_config | {
        "json_schema_extra": validations(
            cel("(has(self.diskLayout) ? 1 : 0) + (has(self.layoutNix) ? 1 : 0) + (has(self.layoutNixFile) ? 1 : 0) == 1",
                "set exactly one layout source: diskLayout (structured), layoutNix (inline disko Nix) or layoutNixFile"),
            cel("!has(self.layoutNixFile)",
                "layoutNixFile is resolved by kctl, not by the API server: run `kctl apply -f MANIFEST`, which reads the file next to the manifest and sends its content as layoutNix"),
        )
    }

    node_name: str = Field(
        pattern=DNS_SUBDOMAIN, max_length=253, json_schema_extra=validations(immutable("nodeName", "create a new DiskLayout for another node")),
        description="The Kubernetes node whose data disks this layout describes (immutable). kctl also accepts nodeId in files.")
    disk_layout: StructuredLayout | None = Field(default=None, description="Structured layout, expanded to disko Nix by disklet.")
    layout_nix: str | None = Field(default=None, max_length=262144,
                                   description="A disko Nix body that defines disko.devices (advanced).")
    layout_nix_file: str | None = Field(default=None, max_length=4096,
                                        description="Path of a .nix file next to the manifest; kctl inlines it into layoutNix before sending.")
    rebuild: bool = Field(default=True, description="Run nixos-rebuild test then switch after disko, so new mounts persist.")
    timeout_seconds: int = Field(default=300, ge=1, le=3600, description="Bound on the disko run, in seconds (1..3600).")

    @model_validator(mode="after")
    def _exactly_one_source(self) -> DiskLayoutSpec:
        sources = [n for n, v in (("diskLayout", self.disk_layout), ("layoutNix", self.layout_nix),
                                  ("layoutNixFile", self.layout_nix_file)) if v is not None]
        if len(sources) != 1:
            raise ValueError("set exactly one layout source: diskLayout (structured), layoutNix (inline disko Nix) "
                             f"or layoutNixFile (got {', '.join(sources) or 'none'})")
        return self


class DiskLayoutStatus(StatusModel):
    phase: Phase | None = Field(default=None, description="pending, applied, refused or failed.")
    refusal_reason: str | None = Field(
        default=None, description="Machine-readable refusal code, set only when phase is refused (docs/refusal-codes.md).")
    message: str | None = Field(default=None, max_length=32768, description="Human-readable detail of the phase.")
    target_devices: list[str] | None = Field(default=None, max_length=128, json_schema_extra=ATOMIC | {"items": {"maxLength": 4096}},
                                             description="Block devices the resolved layout formats.")
    target_devices_text: str | None = Field(default=None, max_length=8192,
                                            description="targetDevices joined by commas (the Devices printer column).")
    observed_generation: int | None = Field(default=None, description="metadata.generation last pre-flighted by the operator.")
    conditions: list[Condition] | None = Field(default=None, max_length=32, json_schema_extra=list_map("type"),
                                               description="Validated, Applied and friends (metav1.Condition).")
    layout_hash: str | None = Field(default=None, max_length=80,
                                    description="sha256 of the evaluated disko.devices value (canonical JSON): the same layout written another way hashes the same.")
    layout_generation: int | None = Field(default=None, description="Bumps only when the resolved Nix body changes.")
    applied_layout_generation: int | None = Field(default=None, description="layoutGeneration the agent last applied.")
    last_attempt_time: str | None = Field(default=None, description="When the agent last tried to apply (RFC 3339).")
    last_applied_time: str | None = Field(default=None, description="When the agent last applied successfully (RFC 3339).")
    node_mode: str | None = Field(default=None, description="Disk management mode the agent last read on the node.")


class DiskLayout(ApiModel):
    """Full object, for code that handles whole manifests (kctl)."""

    model_config = ApiModel.model_config | {"extra": "ignore"}
    api_version: str = "disklet.io/v1alpha1"
    kind: str = "DiskLayout"
    metadata: dict = Field(default_factory=dict)
    spec: DiskLayoutSpec
    status: DiskLayoutStatus | None = None
