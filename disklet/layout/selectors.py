"""Where a DiskLayout's ``match`` disks would land, predicted from the node's BlockDevices (``kctl diff``). (PURE)

The agent decides at apply time from its own live scan (docs/selectors.md); this is the same rule —
pinned identities first, then exactly one consumable whole disk per selector, disks taken by the
layout's other entries excluded — over the inventory the agent last reported, so a user sees per
node which disk each selector chooses and why every other one is not chosen, before applying.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from disklet.api.disklayout import StructuredLayout
from disklet.diskselect import Candidate, DiskFacts, SelectorError, compile_selector, resolve_one


def _pinned_match(pin: Mapping[str, Any], status: Mapping[str, Any]) -> bool:
    if pin.get("wwn"):
        return bool(status.get("wwn")) and status.get("wwn") == pin.get("wwn")
    if pin.get("serial"):
        return status.get("serial") == pin.get("serial") and (status.get("model") or None) == (pin.get("model") or None)
    return False


def _named_by(device: str, status: Mapping[str, Any]) -> bool:
    if device == status.get("path"):
        return True
    return device.startswith("/dev/disk/by-id/") and device.rsplit("/", 1)[-1] in (status.get("byId") or [])


def inventory_resolution(layout: StructuredLayout, block_devices: Sequence[Mapping[str, Any]],
                         pinned: Sequence[Mapping[str, Any]]) -> tuple[bool, list[str]]:
    """(every match disk resolves, the lines to print) for one node's BlockDevice objects and the
    layout's ``status.targetIdentities``."""
    disks = [bd.get("status") or {} for bd in block_devices if (bd.get("status") or {}).get("type") == "disk"]
    pins = {str(p["disk"]): p for p in pinned if p.get("disk")}
    taken: dict[str, str] = {}
    for disk in layout.disks:
        if disk.device is not None:
            for st in disks:
                if _named_by(disk.device, st):
                    taken[str(st.get("path"))] = f"named by disk {disk.name} (device {disk.device})"
    ok = True
    lines: list[str] = []
    for disk in layout.disks:
        if disk.match is None or disk.name not in pins:
            continue
        pin = pins[disk.name]
        live = [st for st in disks if _pinned_match(pin, st)]
        ident = pin.get("wwn") and f"wwn {pin['wwn']}" or f"serial {pin.get('serial')}"
        if len(live) == 1:
            taken[str(live[0].get("path"))] = f"pinned to disk {disk.name}"
            lines.append(f"disk {disk.name}: pinned to {live[0].get('path')} ({ident}, chosen at the first apply; "
                         "the selector is not evaluated again)")
        else:
            ok = False
            lines.append(f"disk {disk.name}: REFUSED: selected_disk_missing: pinned to {pin.get('device')} ({ident}), "
                         "which is not among the node's BlockDevices")
    for index, disk in enumerate(layout.disks):
        if disk.match is None or disk.name in pins:
            continue
        try:
            selector = compile_selector(disk.match, f"spec.diskLayout.disks[{index}].match")
        except SelectorError as exc:
            ok = False
            lines.append(f"disk {disk.name}: REFUSED: {exc}")
            continue
        candidates = [Candidate(DiskFacts.from_block_device_status(st),
                                None if st.get("consumable") is True else str(st.get("consumableReasonCode") or
                                                                             "NotConsumable"),
                                None if st.get("consumable") is True else st.get("consumableReason"),
                                taken_by=taken.get(str(st.get("path")))) for st in disks]
        res = resolve_one(selector, candidates)
        if res.chosen is not None:
            taken[res.chosen.facts.path] = f"chosen by disk {disk.name}"
            lines.append(f"disk {disk.name}: match {disk.match!r} resolves to {res.chosen.facts.describe()}")
        else:
            ok = False
            lines.append(f"disk {disk.name}: REFUSED: {res.code}: match {disk.match!r} "
                         + ("matches no consumable disk" if res.code == "selector_matched_nothing"
                            else "matches more than one consumable disk"))
        lines += [f"  {line}" for line in res.lines] or ["  the node has no BlockDevices of type disk"]
    return ok, lines
