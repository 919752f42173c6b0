"""Pure planners: alias resolution, which devices need pvcreate/vgextend, and scoped rollback (rules 4, 5)."""

from __future__ import annotations

import posixpath
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from disklet.api.lvm import parse_backing_file_name
from disklet.lvm.validation import inside_base

from ..host.losetup import LoopDevice
from ..host.lvm import PV


def canonical_device(name: str, loops_by_majmin: Mapping[str, str], aliases: Mapping[str, str]) -> str | None:
    """``/dev/loopN`` (or any kernel name) for an LVM-reported name; None when an alias cannot be resolved.

    ``/dev/block/MAJ:MIN`` resolves through the loop list; ``/dev/disk/...`` through ``aliases``
    (realpath results gathered by the caller).
    """
    if name.startswith("/dev/block/"):
        return loops_by_majmin.get(name[len("/dev/block/"):]) or aliases.get(name)
    if name.startswith("/dev/disk/"):
        return aliases.get(name)
    return name


@dataclass(frozen=True)
class PvPlan:
    pvcreate: tuple[str, ...] = ()
    """Devices a live pvs does not show as PVs."""
    join: tuple[str, ...] = ()
    """Devices to add to the VG (new PVs and orphan PVs of an interrupted create)."""
    members: tuple[str, ...] = ()
    errors: tuple[tuple[str, str], ...] = ()
    """(device, message): a PV of another VG, or an alias we could not resolve."""


def plan_pvs(devices: Iterable[str], live_pvs: Mapping[str, PV], vg_uuid: str | None,
             unresolved_aliases: Iterable[str] = ()) -> PvPlan:
    """Decide per device from a LIVE pvs keyed by canonical device name."""
    pvcreate: list[str] = []
    join: list[str] = []
    members: list[str] = []
    errors: list[tuple[str, str]] = []
    unresolved = list(unresolved_aliases)
    for dev in dict.fromkeys(devices):
        pv = live_pvs.get(dev)
        if pv is None:
            if unresolved:
                # Fail closed: the device may be one of the PVs LVM reports under an alias we cannot resolve.
                errors.append((dev, f"cannot tell whether {dev} is already a PV: unresolved LVM device names "
                                    f"{', '.join(sorted(unresolved))}"))
                continue
            pvcreate.append(dev)
            join.append(dev)
        elif not pv.vg_uuid:
            join.append(dev)
        elif vg_uuid and pv.vg_uuid == vg_uuid:
            members.append(dev)
        else:
            errors.append((dev, f"{dev} is already a PV of another volume group ({pv.vg_name or pv.vg_uuid})"))
    return PvPlan(tuple(pvcreate), tuple(join), tuple(members), tuple(errors))


# ----------------------------------------------------------------------------- rollback


@dataclass(frozen=True)
class Step:
    """Something this call created: ``file`` (proved absent before), ``loop`` (attached), ``pv`` (pvcreated)."""

    kind: str
    target: str
    file: str = ""


@dataclass
class Journal:
    """What one reconcile created, in order, so a rollback touches only that."""

    steps: list[Step] = field(default_factory=list)

    def created_file(self, path: str) -> None:
        self.steps.append(Step("file", path, path))

    def attached_loop(self, loop: str, path: str) -> None:
        self.steps.append(Step("loop", loop, path))

    def created_pv(self, device: str, path: str = "") -> None:
        self.steps.append(Step("pv", device, path))

    def for_file(self, path: str) -> Journal:
        return Journal([s for s in self.steps if s.file == path or (s.kind == "pv" and s.file == path)])


def plan_rollback(steps: list[Step], live_pvs: Mapping[str, PV] | None) -> list[Step]:
    """Reverse order; pvremove only orphan PVs we created; never detach a loop that is (or may be) a PV.

    ``live_pvs`` None means listing PVs failed: tear nothing down. A file is removed only when this
    call created it and its loop (if any) will be detached.
    """
    if live_pvs is None:
        return []
    plan: list[Step] = []
    kept_files: set[str] = set()
    removed_pvs: set[str] = set()
    for step in reversed(steps):
        if step.kind == "pv":
            pv = live_pvs.get(step.target)
            if pv is not None and not pv.vg_uuid:
                plan.append(step)
                removed_pvs.add(step.target)
            elif pv is not None:
                kept_files.add(step.file)
        elif step.kind == "loop":
            if step.target in live_pvs and step.target not in removed_pvs:
                kept_files.add(step.file)
                continue
            plan.append(step)
        elif step.kind == "file":
            if step.target in kept_files:
                continue
            plan.append(step)
    return plan


# ----------------------------------------------------------------------------- ownership


def managed_loop(loop: LoopDevice, base_dirs: Iterable[str], lvg_name: str | None = None) -> tuple[str, str] | None:
    """(lvg, entry) when the loop's backing file has our name pattern inside a base directory (rule 1)."""
    parsed = parse_backing_file_name(posixpath.basename(loop.back_file))
    if parsed is None:
        return None
    if not any(inside_base(posixpath.dirname(loop.back_file), b) for b in base_dirs):
        return None
    if lvg_name is not None and parsed[0] != lvg_name:
        return None
    return parsed
