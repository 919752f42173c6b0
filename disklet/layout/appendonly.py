"""Day 2 rule: partitions of an applied disk may only be appended; applied disks stay (docs/layouts.md).

Two findings besides "not an append": an applied disk missing from the new layout
(``applied_disk_removed``: ``nixos-rebuild switch`` would unmount its filesystems while they hold
data) and a changed mountpoint or mount options of an applied filesystem (the rebuild would move a
live mount). Both are allowed only when the DiskLayout sets ``spec.allowDestructiveChanges: true``.
Size, order, format and content-type changes of applied partitions are never allowed: disko does
not resize or reformat, so the layout would describe something the disk is not.
"""

from __future__ import annotations

from typing import Any

from disklet.api.disklayout import RefusalCode

RELOCATABLE = ("mountpoint", "mountOptions")
"""Filesystem keys of an applied partition that allowDestructiveChanges lets change."""


def _disks_by_device(devices_value: dict[str, Any]) -> dict[str, tuple[str, dict[str, Any]]]:
    out: dict[str, tuple[str, dict[str, Any]]] = {}
    disks = devices_value.get("disk") if isinstance(devices_value, dict) else None
    if not isinstance(disks, dict):
        return out
    for name, disk in disks.items():
        if isinstance(disk, dict) and isinstance(disk.get("device"), str):
            out[disk["device"]] = (name, disk)
    return out


def _content(disk: dict[str, Any]) -> dict[str, Any]:
    content = disk.get("content")
    return content if isinstance(content, dict) else {}


def _ordered_partitions(disk: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """Partitions in disko's order: by priority (default 1000 like disko), then by name."""
    content = disk.get("content")
    parts = content.get("partitions") if isinstance(content, dict) else None
    if not isinstance(parts, dict):
        return []
    items = [(n, p if isinstance(p, dict) else {"value": p}) for n, p in parts.items()]

    def key(item: tuple[str, dict[str, Any]]) -> tuple[int, str]:
        priority = item[1].get("priority", 1000)
        return (priority if isinstance(priority, int) else 1000, item[0])

    return sorted(items, key=key)


def append_only_findings(applied_devices_value: dict[str, Any], new_devices_value: dict[str, Any], *,
                         allow_destructive: bool = False) -> list[tuple[RefusalCode, str]]:
    """(code, problem) for every change the day-2 rule forbids (empty list = allowed)."""
    out: list[tuple[RefusalCode, str]] = []
    new_disks = _disks_by_device(new_devices_value)
    if not allow_destructive:
        for device, (name, disk) in _disks_by_device(applied_devices_value).items():
            if device not in new_disks and disk.get("content") is not None:  # a bare disk entry created nothing
                out.append((RefusalCode.APPLIED_DISK_REMOVED,
                            f"applied disk {name!r} ({device}) is missing from the new layout; its filesystems "
                            "would be unmounted by the rebuild (set spec.allowDestructiveChanges: true to retire it)"))
    for problem in check_append_only(applied_devices_value, new_devices_value, allow_relocate=allow_destructive):
        out.append((RefusalCode.PARTITIONS_NOT_APPEND_ONLY, problem))
    return out


def _relocation_only(old: Any, new: Any) -> bool:
    """Do two partition ``content`` values differ only in mountpoint/mountOptions of one filesystem?"""
    if not (isinstance(old, dict) and isinstance(new, dict)) or old.get("type") != "filesystem" \
            or new.get("type") != "filesystem":
        return False
    def strip(content: dict[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in content.items() if k not in RELOCATABLE}

    return strip(old) == strip(new)


def check_append_only(applied_devices_value: dict[str, Any], new_devices_value: dict[str, Any], *,
                      allow_relocate: bool = False) -> list[str]:
    """Problems that make ``new`` more than an append to ``applied`` (empty list = allowed).

    Disks are matched by ``device``. For each disk in both, the applied partitions (in priority
    order) must be an unchanged prefix of the new ones: same names, same priorities, same sizes,
    same content. Disks only in one of the two are not this rule's concern. A changed partition
    table type (gpt → something else) is a problem too.
    """
    problems: list[str] = []
    old_disks = _disks_by_device(applied_devices_value)
    new_disks = _disks_by_device(new_devices_value)
    for device, (_old_name, old_disk) in old_disks.items():
        if device not in new_disks:
            continue
        new_name, new_disk = new_disks[device]
        where = f"disk {new_name!r} ({device})"
        old_content = _content(old_disk)
        new_content = _content(new_disk)
        if old_content.get("type") != new_content.get("type"):
            problems.append(f"{where}: partition table type changed from {old_content.get('type')!r} "
                            f"to {new_content.get('type')!r}")
            continue
        old_parts = _ordered_partitions(old_disk)
        new_parts = _ordered_partitions(new_disk)
        if len(new_parts) > len(old_parts) and old_parts and old_parts[-1][1].get("size") == "100%":
            problems.append(f"{where}: the applied last partition {old_parts[-1][0]!r} takes 100% of the disk, "
                            "so nothing can be appended after it")
        if len(new_parts) < len(old_parts):
            removed = [repr(n) for n, _ in old_parts[len(new_parts):]]
            problems.append(f"{where}: partitions {', '.join(removed)} were applied and cannot be removed")
        for index, (old_pname, old_part) in enumerate(old_parts):
            if index >= len(new_parts):
                break
            new_pname, new_part = new_parts[index]
            number = index + 1
            if new_pname != old_pname:
                problems.append(f"{where}: partition {number} was {old_pname!r} and is now {new_pname!r} "
                                "(rename, reorder or insert); only appending after the last partition is allowed")
                continue
            for key in sorted(set(old_part) | set(new_part)):
                if key == "content" and allow_relocate and _relocation_only(old_part.get(key), new_part.get(key)):
                    continue
                if old_part.get(key) != new_part.get(key):
                    problems.append(f"{where}: partition {number} {old_pname!r} changes {key} "
                                    f"from {old_part.get(key)!r} to {new_part.get(key)!r}; applied partitions "
                                    "are immutable")
    return problems
