"""Every rule of docs/design/disklayout.md#validation for a structured ``diskLayout``, as hard errors collected in one pass.

The pydantic models already reject unknown keys and most malformed fields; this module repeats the
field rules (so a model built with ``model_construct`` or by hand is still checked) and adds the
cross-field rules a schema cannot express: uniqueness, label length, ``100%`` placement, mountpoint
rules and VG/pool references in both directions.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field

from disklet.api.disklayout import (
    DEVICE_PATTERN,
    FILESYSTEM_FORMATS,
    MOUNT_OPTION_PATTERN,
    NAME_PATTERN,
    POOL_PATTERN,
    SIZE_PATTERN,
    Disk,
    Partition,
    StructuredLayout,
)

from ..units import disko_unit_hint
from .errors import LayoutError

NAME_RE = re.compile(NAME_PATTERN)
POOL_RE = re.compile(POOL_PATTERN)
DEVICE_RE = re.compile(DEVICE_PATTERN)
SIZE_RE = re.compile(SIZE_PATTERN)
MOUNT_OPTION_RE = re.compile(MOUNT_OPTION_PATTERN)
MAX_GPT_LABEL = 36
"""disko names a partition ``disk-<disk>-<part>``; longer GPT labels are replaced by a hash."""
ZFS_RESERVED_PREFIXES = ("mirror", "raidz", "draid", "spare")
ZFS_RESERVED_NAMES = ("log", "cache", "special", "dedup")
FORBIDDEN_MOUNTPOINTS = ("/", "/boot", "/nix")


def _printable_ascii(value: str) -> bool:
    return all(0x20 <= ord(c) < 0x7F for c in value)


def gpt_label(disk: str, partition: str) -> str:
    return f"disk-{disk}-{partition}"


def zfs_pool_name_problem(name: str) -> str | None:
    """Why ``name`` cannot be a pool name, or None."""
    if not POOL_RE.fullmatch(name):
        return f"pool name {name!r} must match {POOL_PATTERN} (start with a letter)"
    lower = name.lower()
    if lower in ZFS_RESERVED_NAMES or lower.startswith(ZFS_RESERVED_PREFIXES):
        return f"pool name {name!r} is a ZFS vdev keyword (mirror, raidz*, draid*, spare*, log, cache, special, dedup)"
    return None


def mountpoint_problem(mountpoint: str) -> str | None:
    """Why ``mountpoint`` is not allowed, or None."""
    if not _printable_ascii(mountpoint):
        return f"mountpoint {mountpoint!r} must be printable ASCII"
    if not mountpoint.startswith("/"):
        return f"mountpoint {mountpoint!r} must be absolute"
    segments = mountpoint.split("/")[1:]
    if mountpoint != "/" and any(s == "" for s in segments):
        return f"mountpoint {mountpoint!r} must not contain empty segments or a trailing /"
    if any(s in (".", "..") for s in segments):
        return f"mountpoint {mountpoint!r} must not contain . or .. segments"
    if mountpoint in FORBIDDEN_MOUNTPOINTS or mountpoint.startswith("/nix/"):
        return f"mountpoint {mountpoint!r} is an OS mount (/, /boot or under /nix); day-2 layouts cannot use it"
    return None


def _duplicates(values: list[str]) -> list[str]:
    return [v for v, n in Counter(values).items() if n > 1]


def layout_problems(layout: StructuredLayout) -> list[str]:
    """All rule violations of ``layout`` (empty list = valid), in a stable order."""
    disks = list(layout.disks or [])
    problems = ["disks must list at least one disk"] if not disks else []
    problems += [f"disk name {dup!r} is used more than once" for dup in _duplicates([d.name for d in disks])]
    problems += [f"device {dup!r} is listed by more than one disk"
                 for dup in _duplicates([d.device for d in disks if d.device is not None])]
    seen = _Members()
    for disk in disks:
        problems += _disk_problems(disk, seen)
    problems += _pool_mountpoint_problems(layout, seen.mountpoints)
    problems += [f"mountpoint {dup!r} is used by more than one partition or pool" for dup in _duplicates(seen.mountpoints)]
    problems += _declaration_problems(layout, seen)
    if seen.with_content and not seen.mountpoints:
        problems.append(NOTHING_MOUNTED_STRUCTURED)
    return problems


@dataclass
class _Members:
    """What the partitions use, gathered while their problems are listed: the VGs and pools they
    join, the mount points, and how many disks have at least one partition (something disko creates)."""

    vgs: Counter[str] = field(default_factory=Counter)
    pools: Counter[str] = field(default_factory=Counter)
    mountpoints: list[str] = field(default_factory=list)
    with_content: int = 0


def _disk_problems(disk: Disk, seen: _Members) -> list[str]:
    """One disk's own rules, then each of its partitions'."""
    where = f"disk {disk.name!r}"
    problems = []
    if not NAME_RE.fullmatch(disk.name):
        problems.append(f"{where}: name must match {NAME_PATTERN}")
    if disk.device is None and disk.match is None:
        problems.append(f"{where}: set device (a path) or match (a disk selector)")
    if disk.device is not None and not DEVICE_RE.fullmatch(disk.device):
        problems.append(f"{where}: device {disk.device!r} must match {DEVICE_PATTERN} "
                        "(recommended: /dev/disk/by-id/...)")
    if disk.device is not None and ".." in disk.device:
        problems.append(f"{where}: device {disk.device!r} must not contain ..")
    partitions = list(getattr(getattr(disk, "gpt", None), "partitions", None) or [])
    if partitions:
        seen.with_content += 1
    else:
        problems.append(no_content_structured(disk.name))
    problems += [f"{where}: partition name {dup!r} is used more than once" for dup in _duplicates([p.name for p in partitions])]
    for index, part in enumerate(partitions):
        problems += _partition_problems(f"{where} partition {part.name!r}", disk.name, part,
                                        last=index == len(partitions) - 1)
        problems += _content_problems(f"{where} partition {part.name!r}", part.content, seen.vgs, seen.pools,
                                      seen.mountpoints)
    return problems


def _partition_problems(pwhere: str, disk_name: str, part: Partition, *, last: bool) -> list[str]:
    """A partition's name, GPT label length and size (100% only on the disk's last partition)."""
    problems = []
    if not NAME_RE.fullmatch(part.name):
        problems.append(f"{pwhere}: name must match {NAME_PATTERN}")
    label = gpt_label(disk_name, part.name)
    if len(label) > MAX_GPT_LABEL:
        problems.append(f"{pwhere}: GPT label {label!r} is {len(label)} characters; "
                        f"disk and partition names together must keep it at most {MAX_GPT_LABEL}")
    if not SIZE_RE.fullmatch(part.size):
        problems.append(f"{pwhere}: size {part.size!r} must be 100% or a whole number with an "
                        f"optional binary unit K, M, G, T or P (e.g. 512M, 20G){disko_unit_hint(part.size)}")
    elif part.size == "100%" and not last:
        problems.append(f"{pwhere}: size 100% is allowed only on the last partition of the disk")
    return problems


def _pool_mountpoint_problems(layout: StructuredLayout, mountpoints: list[str]) -> list[str]:
    """The zfsPools entries' mount points (each one joins ``mountpoints``)."""
    problems = []
    for pool_stub in layout.zfs_pools or []:
        pool_mp = getattr(pool_stub, "mountpoint", None)
        if pool_mp is None:
            continue
        why = mountpoint_problem(pool_mp)
        if why:
            problems.append(f"zfsPools {pool_stub.name!r}: {why}")
        mountpoints.append(pool_mp)
    return problems


def _declaration_problems(layout: StructuredLayout, seen: _Members) -> list[str]:
    """Declared VGs and pools: named once, valid names, each with a member; and every VG or pool a
    partition joins is declared."""
    declared_vgs = [v.name for v in layout.lvm_volume_groups or []]
    declared_pools = [p.name for p in layout.zfs_pools or []]
    problems = [f"lvmVolumeGroups: {dup!r} is declared more than once" for dup in _duplicates(declared_vgs)]
    problems += [f"zfsPools: {dup!r} is declared more than once" for dup in _duplicates(declared_pools)]
    for vg in declared_vgs:
        if not NAME_RE.fullmatch(vg):
            problems.append(f"lvmVolumeGroups: name {vg!r} must match {NAME_PATTERN}")
        if vg not in seen.vgs:
            problems.append(f"lvmVolumeGroups: {vg!r} has no lvm_pv partition (every declared VG needs a member)")
    for pool in declared_pools:
        why = zfs_pool_name_problem(pool)
        if why:
            problems.append(f"zfsPools: {why}")
        if pool not in seen.pools:
            problems.append(f"zfsPools: {pool!r} has no zfs partition (every declared pool needs a member)")
    problems += [f"lvm_pv partitions join VG {vg!r}, which is not declared in lvmVolumeGroups"
                 for vg in seen.vgs if vg not in declared_vgs]
    problems += [f"zfs partitions join pool {pool!r}, which is not declared in zfsPools"
                 for pool in seen.pools if pool not in declared_pools]
    return problems


NOTHING_MOUNTED_STRUCTURED = (
    "the layout mounts no file system (its partitions are all lvm_pv or zfs, and no zfsPools entry has a "
    "mountpoint): disko cannot build its mount step without one and refuses the layout; add a partition with "
    "content type filesystem and a mountpoint (for example a small one before the PV), or a mountpoint on a "
    "zfsPools entry")
"""docs/layouts.md#validation-rules-every-one-is-a-hard-error-all-problems-are-reported-at-once (disko needs a mount)."""


def no_content_structured(disk: str) -> str:
    """Why a disk without partitions is refused and what to add
    (docs/layouts.md#validation-rules-every-one-is-a-hard-error-all-problems-are-reported-at-once)."""
    return (f"disk {disk!r} has no content (gpt.partitions is missing or empty): disko refuses a disk without "
            "content, and an empty table would only wipe the disk's partition table; add gpt.partitions with at "
            "least one partition whose content is a filesystem (with a mountpoint), an lvm_pv or a zfs vdev, "
            "or leave the disk out of the layout")


def _content_problems(where: str, content: object, vg_members: Counter[str], pool_members: Counter[str],
                      mountpoints: list[str]) -> list[str]:
    problems: list[str] = []
    ctype = getattr(content, "type", None)
    fmt = getattr(content, "format", None)
    mountpoint = getattr(content, "mountpoint", None)
    options = getattr(content, "mount_options", None)
    vg = getattr(content, "vg", None)
    pool = getattr(content, "pool", None)
    if ctype == "filesystem":
        if fmt not in FILESYSTEM_FORMATS:
            problems.append(f"{where}: format {fmt!r} is not one of {', '.join(FILESYSTEM_FORMATS)}")
        if mountpoint is None:
            problems.append(f"{where}: a filesystem partition needs a mountpoint")
        else:
            why = mountpoint_problem(mountpoint)
            if why:
                problems.append(f"{where}: {why}")
            mountpoints.append(mountpoint)
        for option in options or []:
            if not MOUNT_OPTION_RE.fullmatch(option):
                problems.append(f"{where}: mount option {option!r} must match {MOUNT_OPTION_PATTERN}")
    elif ctype == "lvm_pv":
        if not vg or not NAME_RE.fullmatch(vg):
            problems.append(f"{where}: vg {vg!r} must match {NAME_PATTERN}")
        else:
            vg_members[vg] += 1
    elif ctype == "zfs":
        why = zfs_pool_name_problem(pool) if pool else "a zfs partition needs pool"
        if why:
            problems.append(f"{where}: {why}")
        if pool:
            pool_members[pool] += 1
    else:
        problems.append(f"{where}: content type {ctype!r} is not filesystem, lvm_pv or zfs")
    if ctype != "filesystem" and (fmt is not None or mountpoint is not None or options is not None):
        problems.append(f"{where}: format, mountpoint and mountOptions belong to type filesystem only")
    if ctype != "lvm_pv" and vg is not None:
        problems.append(f"{where}: vg belongs to type lvm_pv only")
    if ctype != "zfs" and pool is not None:
        problems.append(f"{where}: pool belongs to type zfs only")
    return problems


def validate_structured_layout(layout: StructuredLayout) -> None:
    """Raise ``LayoutError`` listing every problem; return None when the layout is valid."""
    problems = layout_problems(layout)
    if problems:
        raise LayoutError(problems)
