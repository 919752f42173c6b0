"""Disks given by ``match``: which live disk each one is, at apply time (docs/selectors.md). (PURE)

- **Pinned first.** A disk whose identity is in ``status.targetIdentities`` (written by the first
  successful apply, with the disk's name) is that disk, wherever the kernel put it now; the
  selector is not evaluated again, so an applied layout never moves to another disk. A pinned disk
  that is not on the node refuses (``selected_disk_missing``).
- **Otherwise exactly one.** The selector is evaluated over the node's whole disks (loop devices
  only with the test switch); exactly one consumable disk must match, else
  ``selector_matched_nothing`` / ``selector_ambiguous`` with every candidate and why it is
  excluded. A disk taken by another disk of the layout (by path, pin or selector) is excluded.
- The chosen disk is named by a stable ``/dev/disk/by-id`` link when it has one, else its kernel path.
- The gate and the classifier run afterwards on the concrete layout: they keep the final say.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from disklet.api.disklayout import RefusalCode, StructuredLayout
from disklet.diskselect import (
    SELECTOR_MATCHED_NOTHING,
    Candidate,
    SelectorError,
    compile_selector,
    resolve_one,
)
from disklet_agent.logic.blockdevices import consumable_verdict, disk_facts
from disklet_agent.logic.topology import BlockNode, BlockTopology

from .identity import DiskIdentity, eligibility_problem

BY_ID_PREFERENCE = ("wwn-", "nvme-eui.", "nvme-", "scsi-", "ata-", "virtio-", "usb-")


@dataclass
class Selection:
    """The outcome for a whole layout: every match disk chosen, or a refusal."""

    devices: dict[str, str] = field(default_factory=dict)
    """disk name → the device path the concrete layout names."""
    aliases: dict[str, str] = field(default_factory=dict)
    """target recorded at the last apply → the kernel path that disk has now (it was renamed)."""
    matches: dict[str, str] = field(default_factory=dict)
    """disk name → its selector (recorded in targetIdentities next to the identity)."""
    lines: list[str] = field(default_factory=list)
    code: RefusalCode | None = None
    message: str = ""

    @property
    def ok(self) -> bool:
        return self.code is None


def stable_path(node: BlockNode) -> str:
    """A /dev/disk/by-id link of the whole disk (most stable kind first), else its kernel path."""
    links = [link for link in node.by_id if "-part" not in link]
    for prefix in BY_ID_PREFERENCE:
        for link in sorted(links):
            if link.startswith(prefix):
                return f"/dev/disk/by-id/{link}"
    return f"/dev/disk/by-id/{sorted(links)[0]}" if links else node.path


def _whole_disks(topology: BlockTopology, allow_loop: bool) -> list[BlockNode]:
    return [n for n in topology.roots if n.type == "disk" or (allow_loop and n.type == "loop")]


def _node_for_path(topology: BlockTopology, path: str) -> BlockNode | None:
    if path.startswith("/dev/disk/by-id/"):
        name = path.rsplit("/", 1)[-1]
        return next((n for n in topology.walk() if name in n.by_id), None)
    return topology.find(path)


def _same_disk(recorded: DiskIdentity, node: BlockNode) -> bool:
    key = recorded.key()
    return key is not None and key == DiskIdentity.of(node).key()


def layout_candidates(topology: BlockTopology, *, allow_loop: bool, system_mounts: Iterable[str],
                      taken: Mapping[str, str]) -> list[Candidate]:
    """The node's whole disks with why each cannot be used (``taken``: kernel path → by what)."""
    out: list[Candidate] = []
    for node in _whole_disks(topology, allow_loop):
        why = eligibility_problem(node, allow_loop=allow_loop)
        verdict = None if why else consumable_verdict(node, None, topology.swaps, system_mounts=system_mounts,
                                                      allow_loop=allow_loop)
        code = "NotEligible" if why else (verdict.code.value if verdict else None)
        out.append(Candidate(disk_facts(node), code, why or (verdict.reason if verdict else None),
                             taken_by=taken.get(node.path)))
    return out


def resolve_selectors(layout: StructuredLayout, topology: BlockTopology, pinned: Sequence[Mapping[str, Any]], *,
                      allow_loop: bool, system_mounts: Iterable[str]) -> Selection:
    """Choose the device of every ``match`` disk of ``layout`` (see the module docstring)."""
    sel = Selection()
    pins = {str(p["disk"]): p for p in pinned if p.get("disk")}
    taken: dict[str, str] = {}
    for disk in layout.disks:
        if disk.device is not None and (node := _node_for_path(topology, disk.device)) is not None:
            taken[node.path] = f"named by disk {disk.name} (device {disk.device})"
    # 1. pinned disks: the recorded identity, wherever it is now
    for disk in layout.disks:
        if disk.match is None or disk.name not in pins:
            continue
        sel.matches[disk.name] = disk.match
        rec = pins[disk.name]
        identity = DiskIdentity.from_dict(rec)
        live = [n for n in _whole_disks(topology, allow_loop) if _same_disk(identity, n)]
        if len(live) != 1:
            sel.code = RefusalCode.SELECTED_DISK_MISSING
            sel.message = (f"{sel.code}: disk {disk.name} was chosen by its selector at the first apply and pinned to "
                           f"{rec.get('device')} ({identity.key()}); " + (
                               "that disk is not on the node" if not live else
                               f"{len(live)} disks carry that identity ({', '.join(n.path for n in live)})") +
                           "; the selector is not evaluated again (an applied layout never moves to another disk)")
            return sel
        node = live[0]
        path = stable_path(node)
        sel.devices[disk.name] = path
        taken[node.path] = f"pinned to disk {disk.name}"
        recorded_target = str(rec.get("device") or "")
        if recorded_target and recorded_target != path:
            sel.aliases[recorded_target] = node.path
        sel.lines.append(f"disk {disk.name}: pinned to {node.path} (identity {identity.key()}, chosen at the first apply)")
    # 2. selectors not pinned yet: exactly one consumable match each
    for index, disk in enumerate(layout.disks):
        if disk.match is None or disk.name in sel.devices:
            continue
        sel.matches[disk.name] = disk.match
        field_name = f"spec.diskLayout.disks[{index}].match"
        try:
            selector = compile_selector(disk.match, field_name)
        except SelectorError as exc:  # the operator and the API refuse these earlier: fail closed anyway
            sel.code = RefusalCode.SELECTOR_MATCHED_NOTHING
            sel.message = f"{sel.code}: {exc}"
            return sel
        res = resolve_one(selector, layout_candidates(topology, allow_loop=allow_loop, system_mounts=system_mounts,
                                                      taken=taken))
        if res.chosen is None:
            sel.code = RefusalCode(res.code or SELECTOR_MATCHED_NOTHING)
            sel.message = f"disk {disk.name}: " + res.message()
            sel.message = f"{sel.code}: " + sel.message.replace(f"{res.code}: ", "", 1)
            return sel
        node = _node_for_path(topology, res.chosen.facts.path)
        assert node is not None
        sel.devices[disk.name] = stable_path(node)
        taken[node.path] = f"chosen by disk {disk.name}"
        sel.lines.append(f"disk {disk.name}: {res.message()}")
    return sel


def pinned_identities(identities: Mapping[str, Mapping[str, Any]], selection: Selection) -> dict[str, dict[str, Any]]:
    """The identities an apply recorded, with the disk name and selector added to each match disk's entry."""
    by_device = {device: name for name, device in selection.devices.items()}
    out: dict[str, dict[str, Any]] = {}
    for target, ident in identities.items():
        entry = dict(ident)
        name = by_device.get(target)
        if name is not None:
            entry["disk"] = name
            entry["match"] = selection.matches.get(name)
        out[target] = entry
    return out
