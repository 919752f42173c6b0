"""Removing an LVMVolumeGroup from the node, and re-attaching its backing files at startup.

Delete undoes exactly what exists on the host and is ours: thin pools, the VG, its PVs, then the
loops and backing files of this LVMVolumeGroup (a loop only if its kernel-resolved backing file
carries our name inside a base directory and it is not a PV; a file only if it is a regular file,
never a symlink, whose directory resolves inside the base). Re-attach gives every managed file
without a loop its loop again and activates our VGs; it never creates a file.
"""

from __future__ import annotations

import posixpath

from disklet.api.lvm import (
    NAME_MAX,
    LVMVolumeGroupSpec,
    LVMVolumeGroupStatus,
    backing_file_name,
    parse_backing_file_name,
)
from disklet.lvm.validation import has_control_chars

from ..config import AgentConfig
from ..host.files import FileOpError, Presence
from ..host.losetup import LosetupError
from ..host.lvm import PV
from .confinement import confined_files
from .discovery import find_vg, name_ambiguity, status_file_paths
from .outcomes import DeleteOutcome, Event, ReattachProblem
from .planner import managed_loop
from .ports import FileCommands, LoopCommands, LvmCommands
from .reads import LvmReads
from .snapshot import LvmSnapshot
from .status import delete_outcome


class LvgRemoval:
    """Delete and re-attach over the engine's adapters."""

    def __init__(self, reads: LvmReads, lvm: LvmCommands, losetup: LoopCommands, files: FileCommands,
                 config: AgentConfig):
        self.reads = reads
        self.lvm = lvm
        self.losetup = losetup
        self.files = files
        self.config = config

    def candidates(self, lvg_name: str, spec: LVMVolumeGroupSpec,
                   status: LVMVolumeGroupStatus | None) -> dict[str, list[str]]:
        """basename → candidate paths from this node's status ∪ spec, keeping only what this agent
        could ever have created: our name for this LVMVolumeGroup (within NAME_MAX), no control
        characters, an absolute path. Anything else never existed as ours."""
        targets: dict[str, list[str]] = {}
        for fd in spec.file_devices or []:
            targets.setdefault(backing_file_name(lvg_name, fd.name), []).append(fd.file_path(lvg_name))
        for base, path in status_file_paths(status, self.config.node_name).items():
            targets.setdefault(base, []).append(path)
        out: dict[str, list[str]] = {}
        for basename, paths in targets.items():
            parsed = parse_backing_file_name(basename)
            if parsed is None or parsed[0] != lvg_name or len(basename.encode()) > NAME_MAX:
                continue
            keep = [p for p in dict.fromkeys(paths) if not has_control_chars(p) and p.startswith("/")]
            if keep:
                out[basename] = keep
        return out

    # ------------------------------------------------------------------- delete
    def delete(self, lvg_name: str, spec: LVMVolumeGroupSpec, status: LVMVolumeGroupStatus | None) -> DeleteOutcome:
        """Undo exactly what exists on the host and is ours; an object that never created anything is
        released at once (refused objects included)."""
        old = status or LVMVolumeGroupStatus()
        events: list[Event] = []
        problems: list[str] = []
        snap = self.reads.snapshot()
        if not snap.ok:
            return delete_outcome(old, False, [f"cannot read LVM state (finalizer kept): {snap.error}"], events)
        vg = find_vg(snap, lvg_name, spec.actual_vg_name_on_the_node, old.vg_uuid).vg
        if vg is not None and (ambiguous := name_ambiguity(snap, vg)):
            # Another VG of this name in the filtered view: the removals address the VG by name, and
            # a name two VGs carry is never acted on (one behind the filter cannot be reached).
            return delete_outcome(old, False, [f"nothing was removed: {ambiguous}"], events)
        if vg is not None:
            lvs = snap.lvs_of(vg)
            pools = {lv.name for lv in lvs if lv.is_thin_pool}
            others = sorted(lv.name for lv in lvs if not lv.is_thin_pool)
            if others:
                msg = (f"volume group {vg.name} still holds logical volumes {', '.join(others)}: delete them "
                       "(their PVCs/LVMLogicalVolumes) first; nothing was removed")
                return delete_outcome(old, False, [msg], events)
            pv_devs = [snap.canonical(p.name) or p.name for p in snap.pvs_of(vg)]
            for pool in sorted(pools):
                mut = self.lvm.lvremove(vg.name, pool)
                if not mut.ok:
                    problems.append(f"cannot remove thin pool {pool}: {mut.message}")
            if not problems:
                mut = self.lvm.vgremove(vg.name)
                if not mut.ok:
                    problems.append(f"vgremove {vg.name} failed: {mut.message}")
                else:
                    events.append(("Normal", "VGRemoved", f"removed volume group {vg.name}"))
                    if pv_devs:
                        mut = self.lvm.pvremove(*pv_devs)
                        if not mut.ok:
                            problems.append(f"pvremove {', '.join(pv_devs)} failed: {mut.message}")
            if problems:
                return delete_outcome(old, False, problems, events)
        problems.extend(self.delete_files(lvg_name, spec, old, events, snap if vg is None else None))
        return delete_outcome(old, not problems, problems, events)

    def delete_files(self, lvg_name: str, spec: LVMVolumeGroupSpec, status: LVMVolumeGroupStatus,
                     events: list[Event], snap: LvmSnapshot | None = None) -> list[str]:
        """Detach the loops and remove the files of this LVMVolumeGroup that exist and are ours.
        ``snap``: a live read taken after the last LVM change, if any."""
        snap = snap or self.reads.snapshot()  # LIVE: after the VG/PV removals
        if not snap.ok or snap.unresolved():
            return [f"cannot list PVs (finalizer kept): {snap.error or 'unresolved device aliases'}"]
        problems: list[str] = []
        pv_devs = snap.pvs_by_device()
        candidates = self.candidates(lvg_name, spec, status)
        try:
            confined = confined_files(self.files, {p for ps in candidates.values() for p in ps}, snap.base_dirs)
        except FileOpError as exc:
            return [f"cannot resolve the backing file directories (finalizer kept): {exc}"]
        for basename, paths in sorted(candidates.items()):
            loops = {lp.name for lp in snap.loops if posixpath.basename(lp.back_file) == basename
                     and managed_loop(lp, snap.base_dirs, lvg_name) is not None}
            if self._release_loops(basename, loops, pv_devs, events, problems):
                self._remove_files([p for p in paths if confined.get(p) is None], events, problems)
        return problems

    def _release_loops(self, basename: str, loops: set[str], pv_devs: dict[str, PV], events: list[Event],
                       problems: list[str]) -> bool:
        """Clear orphan PV labels on our loops of ``basename`` and detach them; False when one stays
        (a PV of a VG, or a failed command: its files are left alone this round)."""
        # An orphan PV on our own file (an interrupted create: pvcreate done, no VG yet) holds no
        # data of any VG: its label goes with the object.
        orphans = sorted(lp for lp in loops if lp in pv_devs and not pv_devs[lp].vg_uuid)
        if orphans:
            mut = self.lvm.pvremove(*orphans)
            if not mut.ok:
                problems.append(f"pvremove {', '.join(orphans)} failed: {mut.message}")
                return False
        busy = sorted(lp for lp in loops if lp in pv_devs and lp not in orphans)
        if busy:
            problems.append(f"{', '.join(busy)} (backing file {basename}) is still a PV of volume group "
                            f"{pv_devs[busy[0]].vg_name or '(none)'}: not detached")
            return False
        detached = True
        for loop in sorted(loops):
            try:
                self.losetup.detach(loop)
                events.append(("Normal", "LoopDetached", f"detached {loop} ({basename})"))
            except LosetupError as exc:
                problems.append(f"cannot detach {loop}: {exc}")
                detached = False
        return detached

    def _remove_files(self, paths: list[str], events: list[Event], problems: list[str]) -> None:
        """Remove each confined path that is a regular file (absent: nothing to do; a symlink: never ours)."""
        for path in paths:
            probe = self.files.probe(path)
            if probe.presence is Presence.ABSENT:
                continue
            if probe.presence is Presence.UNKNOWN:
                if "symbolic link" in probe.error:
                    continue  # we never create symlinks: not ours, left alone
                problems.append(f"cannot tell whether {path} exists (finalizer kept): {probe.error}")
                continue
            try:
                self.files.rm_f(path)
                events.append(("Normal", "BackingFileRemoved", f"removed {path}"))
            except FileOpError as exc:
                problems.append(f"cannot remove {path}: {exc}")

    # ----------------------------------------------------------------- reattach
    def reattach(self, lvgs: list[tuple[str, LVMVolumeGroupSpec, LVMVolumeGroupStatus | None]]
                 ) -> list[ReattachProblem]:
        """Attach every managed file (status ∪ spec) that has no loop; never create files; then activate.
        Only regular files whose directory resolves inside the base directory are attached."""
        problems: list[ReattachProblem] = []
        base = self.config.file_devices_dir
        try:
            real = self.files.realpath(base)
        except FileOpError as exc:
            return [ReattachProblem(name, f"cannot resolve the base directory {base}: {exc}") for name, _, _ in lvgs]
        base_dirs = tuple(dict.fromkeys((base, real)))
        for lvg_name, spec, status in lvgs:
            candidates = self.candidates(lvg_name, spec, status)
            try:
                confined = confined_files(self.files, {p for ps in candidates.values() for p in ps}, base_dirs)
            except FileOpError as exc:
                problems.append(ReattachProblem(lvg_name, f"cannot resolve backing file directories: {exc}"))
                continue
            recorded = status_file_paths(status, self.config.node_name)
            for basename, paths in sorted(candidates.items()):
                path = next((p for p in paths if confined.get(p) is None), None)
                if path is None:
                    problems.append(ReattachProblem(lvg_name, f"{paths[0]}: {confined[paths[0]]}; skipped"))
                    continue
                if (problem := self._reattach_file(path, basename in recorded)) is not None:
                    problems.append(ReattachProblem(lvg_name, problem))
        snap = self.reads.snapshot(base_dirs)
        names = {spec.actual_vg_name_on_the_node: name for name, spec, _ in lvgs}
        if not snap.ok:
            return [*problems, *(ReattachProblem(name, f"cannot list volume groups for activation: {snap.error}")
                                 for name, _, _ in lvgs)]
        for vg in snap.vgs:
            if vg.managed and names.get(vg.name) == vg.owner:
                mut = self.lvm.vgchange_activate(vg.name)
                if not mut.ok:
                    problems.append(ReattachProblem(names[vg.name], f"cannot activate {vg.name}: {mut.message}"))
        return problems

    def _reattach_file(self, path: str, recorded: bool) -> str | None:
        """Give ``path`` a loop when it has none; the problem, or None."""
        try:
            if self.losetup.find(path):
                return None
            probe = self.files.probe(path)
            if probe.presence is Presence.ABSENT:
                return f"{path}: backing file is missing; not recreated" if recorded else None
            if probe.presence is Presence.UNKNOWN:
                return f"{path}: cannot read backing file: {probe.error}"
            loop, _ = self.losetup.attach_direct(path)  # direct I/O is best effort here
            self.lvm.owned_loops.add(loop)
        except LosetupError as exc:
            return f"{path}: {exc}"
        return None
