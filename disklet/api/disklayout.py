"""DiskLayout: the data-disk layout of one node (docs/design/disklayout.md)."""

from __future__ import annotations

from enum import StrEnum
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from ..units import disko_unit_hint
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
DISKO_UNIT_RULE = cel(
    "!self.matches('^[0-9]+[KMGTP]iB?$')",
    "is a Kubernetes unit: DiskLayout sizes are disko's, whose letters are already binary (1G = 1 GiB); write 1G",
    message_expression="self + \" is a Kubernetes unit: DiskLayout sizes are disko's, whose letters are already "
                       "binary (1G = 1 GiB); write \" + self.replace('i', '').replace('B', '')")
MOUNT_OPTION_PATTERN = r"^[A-Za-z0-9_=,.:+/-]+$"
FILESYSTEM_FORMATS = ("ext4", "ext3", "ext2", "xfs", "btrfs", "vfat", "f2fs")
MAX_NIX_BODY = 262144
# Mountpoint policy (docs/layouts.md, "Mountpoints"); disklet.layout.mounts applies it.
MOUNTPOINT_PATTERN = r"^(/[A-Za-z0-9_@+-][A-Za-z0-9._@+-]*)+$"
DEFAULT_MOUNT_ROOTS: tuple[str, ...] = ("/var/lib/kcore", "/var/lib/scratch", "/srv", "/data", "/mnt")
DENIED_TREES: tuple[str, ...] = (
    "/etc", "/proc", "/sys", "/dev", "/run", "/usr", "/boot", "/nix", "/bin", "/sbin", "/lib", "/lib32",
    "/lib64", "/root", "/tmp", "/home", "/var/lib/kubelet", "/var/lib/containerd", "/var/lib/docker",
    "/var/lib/etcd", "/var/lib/disklet", "/var/lib/nixos", "/var/log", "/var/run", "/var/lock", "/var/tmp",
    "/var/empty", "/srv/kubernetes",
)
"""Denied together with everything under them."""
DENIED_EXACT: tuple[str, ...] = ("/", "/var", "/var/lib", "/var/lib/kcore", "/opt")
"""Denied as themselves (mounting there hides the tree below)."""


def _denied_mountpoint_cel() -> str:
    trees = " || ".join(f"self == '{d}' || self.startsWith('{d}/')" for d in DENIED_TREES)
    exact = " || ".join(f"self == '{d}'" for d in DENIED_EXACT)
    return f"!({trees} || {exact})"


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
    # What a layout may contain (the allowlist of disko types, keys and values).
    LAYOUT_FORBIDDEN_OPTION = "layout_uses_forbidden_option"
    LAYOUT_VALUE_NOT_ALLOWED = "layout_value_not_allowed"
    MOUNTPOINT_NOT_ALLOWED = "mountpoint_not_allowed"
    MOUNTPOINT_OVER_LIVE_MOUNT = "mountpoint_over_live_mount"
    MOUNTPOINT_RESOLVES_ELSEWHERE = "mountpoint_resolves_elsewhere"
    # Which devices may be targets, and proof that they are the ones we think.
    NOT_WHOLE_DISK = "target_device_not_whole_disk"
    IDENTITY_CHANGED = "target_device_identity_changed"
    TARGET_BUSY = "target_device_busy"
    PARTITION_LABEL_COLLISION = "partition_label_collision"
    VOLUME_GROUP_EXISTS = "volume_group_exists"
    ZPOOL_EXISTS = "zpool_exists"
    # Day-2 changes that would unmount or orphan live data.
    APPLIED_DISK_REMOVED = "applied_disk_removed"
    # Disks chosen by a selector (match) rather than a path.
    SELECTOR_MATCHED_NOTHING = "selector_matched_nothing"
    SELECTOR_AMBIGUOUS = "selector_ambiguous"
    SELECTED_DISK_MISSING = "selected_disk_missing"


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
        default=None, max_length=1024, pattern=MOUNTPOINT_PATTERN,
        json_schema_extra=validations(
            cel(_denied_mountpoint_cel(),
                "mountpoint is a system path (/, /etc, /proc, /sys, /dev, /run, /usr, /var, /boot, /nix, "
                "/var/lib/kubelet, the agent's directories, ...; see docs/layouts.md)"),
        ),
        description="Absolute mount path (filesystem only): letters, digits and . _ + - @, no . or .. segments; "
                    "not a system path, and under an allowed root (default /var/lib/kcore, /var/lib/scratch, /srv, "
                    "/data, /mnt). See docs/layouts.md.")
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
        _check_mountpoint(self.mountpoint)
        return self


def _check_mountpoint(mountpoint: str | None) -> None:
    """The model's own mountpoint rules (partition contents and ZFS pools alike): no . or ..
    segments, no system path. Raises ValueError (pydantic reports it on the field's object)."""
    if mountpoint is None:
        return
    if any(seg in (".", "..") for seg in mountpoint.split("/")):
        raise ValueError(f"mountpoint {mountpoint!r} must not contain . or .. segments")
    if mountpoint in DENIED_EXACT or any(mountpoint == d or mountpoint.startswith(d + "/") for d in DENIED_TREES):
        raise ValueError(f"mountpoint {mountpoint!r} is a system path (see docs/layouts.md)")


class Partition(ApiModel):
    name: str = Field(pattern=NAME_PATTERN, max_length=32,
                      description="Partition name: letters, digits, underscore; unique on the disk. The GPT label is disk-<disk>-<name>.")
    size: str = Field(pattern=SIZE_PATTERN, max_length=24, json_schema_extra=validations(DISKO_UNIT_RULE),
                      description="Size in disko's units, whose letters are binary (512M, 20G = 20 GiB), or 100% for the rest of the disk (last partition only). Note: 20Gi is a Kubernetes unit and not accepted; write 20G.")
    content: PartitionContent = Field(description="What the partition holds.")

    @field_validator("size", mode="before")
    @classmethod
    def _size_hint(cls, v: object) -> object:
        if isinstance(v, str) and disko_unit_hint(v):
            raise ValueError(f"size {v!r} must be 100% or a whole number with K, M, G, T or P{disko_unit_hint(v)}")
        return v


class Gpt(ApiModel):
    partitions: list[Partition] = Field(
        min_length=1, max_length=64, json_schema_extra=list_map("name"),
        description="GPT partitions in on-disk order. On day 2, only appending is allowed.")


SELECTOR_PLACEHOLDER_DIR = "/dev/disk/by-disklet-match/"
"""The device the operator's pre-flight renders for a disk given by ``match`` (the agent substitutes
the disk it resolves on the node before anything is checked or run)."""


def selector_placeholder(disk_name: str) -> str:
    return SELECTOR_PLACEHOLDER_DIR + disk_name


class Disk(ApiModel):
    model_config = ApiModel.model_config | {
        "json_schema_extra": validations(
            cel("has(self.device) != has(self.match)",
                "set exactly one of device (a path) and match (a disk selector expression)"),
        )
    }

    name: str = Field(pattern=NAME_PATTERN, max_length=32, description="Disk name used in the disko config; unique in the layout.")
    device: str | None = Field(
        default=None, pattern=DEVICE_PATTERN, max_length=1024,
        json_schema_extra=validations(
            cel("!self.contains('..')", "device must not contain .."),
            cel("!self.startsWith('" + SELECTOR_PLACEHOLDER_DIR + "')",
                "device must not be under " + SELECTOR_PLACEHOLDER_DIR + " (reserved for match)")),
        description="Block device path, e.g. /dev/disk/by-id/nvme-... (recommended: stable by-id names) or /dev/nvme1n1. "
                    "Set device or match.")
    match: str | None = Field(
        default=None, min_length=1, max_length=2048,
        description="A CEL disk selector instead of a device path, e.g. 'disk.transport == \"nvme\" && disk.size >= 1Ti'. "
                    "The agent chooses the one consumable disk of its node that matches, at the first apply, and "
                    "pins its identity in status.targetIdentities: later applies use that disk, never another. "
                    "Fields: docs/selectors.md.")
    gpt: Gpt = Field(description="GPT partition table of the disk.")

    @model_validator(mode="after")
    def _device_or_match(self) -> Disk:
        if (self.device is None) == (self.match is None):
            raise ValueError("set exactly one of device (a path) and match (a disk selector expression)")
        if self.device is not None:
            if ".." in self.device:
                raise ValueError(f"device {self.device!r} must not contain ..")
            if self.device.startswith(SELECTOR_PLACEHOLDER_DIR):
                raise ValueError(f"device must not be under {SELECTOR_PLACEHOLDER_DIR} (reserved for match)")
        if self.match is not None:
            from disklet.diskselect import check_selector

            problem = check_selector(self.match, "match")
            if problem:
                raise ValueError(problem)
        return self

    @property
    def target(self) -> str:
        """The device the rendered layout names: the path, or the placeholder of a selector."""
        return self.device if self.device is not None else selector_placeholder(self.name)


class NamedStub(ApiModel):
    name: str = Field(pattern=NAME_PATTERN, max_length=32, description="Name of the volume group or pool.")


def _mountpoint_field(what: str) -> Any:
    return Field(
        default=None, max_length=1024, pattern=MOUNTPOINT_PATTERN,
        json_schema_extra=validations(
            cel(_denied_mountpoint_cel(),
                "mountpoint is a system path (/, /etc, /proc, /sys, /dev, /run, /usr, /var, /boot, /nix, "
                "/var/lib/kubelet, the agent's directories, ...; see docs/layouts.md)"),
        ),
        description=what + " letters, digits and . _ + - @, no . or .. segments; not a system path, and under an "
                    "allowed root (default /var/lib/kcore, /var/lib/scratch, /srv, /data, /mnt). See docs/layouts.md.")


class ZfsPoolStub(NamedStub):
    mountpoint: str | None = _mountpoint_field(
        "Where ZFS mounts the pool's root dataset (absolute path). Without it the root dataset is created with "
        "mountpoint=none and nothing of the pool is mounted:")

    @model_validator(mode="after")
    def _mountpoint_allowed(self) -> ZfsPoolStub:
        _check_mountpoint(self.mountpoint)
        return self


class StructuredLayout(ApiModel):
    """Structured YAML expanded by disklet to a disko Nix body (docs/design/disklayout.md#validation and #rendering)."""

    disks: list[Disk] = Field(min_length=1, max_length=64, json_schema_extra=list_map("name"),
                              description="Data disks, in order.")
    lvm_volume_groups: list[NamedStub] | None = Field(
        default=None, max_length=64, json_schema_extra=list_map("name"),
        description="LVM volume groups (empty stubs) that lvm_pv partitions join.")
    zfs_pools: list[ZfsPoolStub] | None = Field(
        default=None, max_length=64, json_schema_extra=list_map("name"),
        description="ZFS pools that zfs partitions join; a pool's root dataset is mounted at its mountpoint, "
                    "or nowhere (mountpoint=none) when it has none.")


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
    layout_nix: str | None = Field(
        default=None, max_length=262144,
        json_schema_extra=validations(
            cel("!self.contains('Hook') && !self.contains('extraArgs')",
                "layoutNix must not use disko hooks (*Hook) or extraArgs: they run as root on the node "
                "(docs/layouts.md, What a layout may contain)"),
        ),
        description="A disko Nix body that defines disko.devices (advanced). Checked against the same allowlist "
                    "as structured layouts after evaluation.")
    layout_nix_file: str | None = Field(default=None, max_length=4096,
                                        description="Path of a .nix file next to the manifest; kctl inlines it into layoutNix before sending.")
    rebuild: bool = Field(default=True, description="Run nixos-rebuild test then switch after disko, so new mounts persist.")
    timeout_seconds: int = Field(default=300, ge=1, le=3600, description="Bound on the disko run, in seconds (1..3600).")
    allow_destructive_changes: bool = Field(
        default=False,
        description="Allow day-2 changes that unmount live data: removing an applied disk from the layout, or "
                    "changing an applied filesystem's mountpoint or mountOptions. Sizes, order and formats of "
                    "applied partitions can never change. See docs/layouts.md.")

    @model_validator(mode="after")
    def _no_hooks_in_raw_text(self) -> DiskLayoutSpec:
        if self.layout_nix is not None and ("Hook" in self.layout_nix or "extraArgs" in self.layout_nix):
            raise ValueError("layoutNix must not use disko hooks (*Hook) or extraArgs: they run as root on the node")
        return self

    @model_validator(mode="after")
    def _exactly_one_source(self) -> DiskLayoutSpec:
        sources = [n for n, v in (("diskLayout", self.disk_layout), ("layoutNix", self.layout_nix),
                                  ("layoutNixFile", self.layout_nix_file)) if v is not None]
        if len(sources) != 1:
            raise ValueError("set exactly one layout source: diskLayout (structured), layoutNix (inline disko Nix) "
                             f"or layoutNixFile (got {', '.join(sources) or 'none'})")
        return self


class TargetIdentity(StatusModel):
    """A target disk's stable identity, recorded when the layout was applied (docs/layouts.md)."""

    device: str = Field(max_length=4096, description="The target as the layout names it.")
    wwn: str | None = Field(default=None, max_length=256, description="World Wide Name (lsblk WWN).")
    serial: str | None = Field(default=None, max_length=256, description="Serial number (lsblk SERIAL).")
    model: str | None = Field(default=None, max_length=256, description="Model (lsblk MODEL).")
    size: int | None = Field(default=None, description="Size in bytes.")
    ptuuid: str | None = Field(default=None, max_length=64, description="GPT disk GUID.")
    backing_file: str | None = Field(default=None, max_length=4096,
                                     description="Backing file (loop devices, tests only).")
    disk: str | None = Field(default=None, max_length=32,
                             description="The layout's disk whose match chose this device (set only for match disks): "
                                         "later applies use this identity, never the selector again.")
    match: str | None = Field(default=None, max_length=2048, description="The selector that chose the device.")


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
    target_identities: list[TargetIdentity] | None = Field(
        default=None, max_length=128, json_schema_extra=ATOMIC,
        description="Identity of each target disk recorded by the last successful apply; an applied disk whose "
                    "live identity differs is refused (target_device_identity_changed).")


class DiskLayout(ApiModel):
    """Full object, for code that handles whole manifests (kctl)."""

    model_config = ApiModel.model_config | {"extra": "ignore"}
    api_version: str = "disklet.io/v1alpha1"
    kind: str = "DiskLayout"
    metadata: dict[str, Any] = Field(default_factory=dict)
    spec: DiskLayoutSpec
    status: DiskLayoutStatus | None = None
