"""File-backed devices on the host: provision, grow and the scoped rollback of one reconcile (docs/design/lvm.md rules 3, 5, 6). Delete and re-attach are :mod:`.removal`."""

from __future__ import annotations

import posixpath
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from disklet.lvm.sizing import file_needs_growth, loop_needs_refresh, pv_needs_resize

from ..host.files import FileOpError, FileProbe, Presence
from ..host.losetup import LoopDevice, LosetupError, attached_by_inode
from ..host.lvm import PV
from .planner import Journal, Step, plan_rollback
from .ports import FileCommands, LoopCommands, LvmCommands


class FileDeviceError(RuntimeError):
    """One entry could not be provisioned/grown; the message says what to do."""


@dataclass
class Provisioned:
    loop: str
    path: str
    warnings: list[str] = field(default_factory=list)
    probe: FileProbe | None = None
    """The file as this call read it, when still true (the file was not changed since); else None."""
    changed: bool = False
    """Something on the host was created or attached."""
    direct_io: bool = False
    """This call attached the loop with ``--direct-io=on`` and losetup accepted it (the kernel may still
    fall back to buffered I/O without an error: the next ``losetup --list`` read tells)."""


def deleted_guidance(path: str, loops: list[str]) -> str:
    return (f"backing file {path} is attached to {', '.join(loops)} but the file was deleted: refusing to provision "
            "a second device over it. Recovery: move the data off the loop (pvmove / vgreduce) or copy it "
            f"(dd if={loops[0]} of={path}.recovered), then detach it with `losetup -d {loops[0]}` and restore the file")


class FileDevices:
    def __init__(self, files: FileCommands, losetup: LoopCommands, lvm: LvmCommands, reserve_percent: float):
        self.files = files
        self.losetup = losetup
        self.lvm = lvm
        self.reserve_percent = reserve_percent
        self._live_pvs: Callable[[], Mapping[str, PV] | None] = lambda: None

    # ------------------------------------------------------------------ provision
    def space_guard(self, directory: str, missing: int) -> None:
        """Refuse when ``missing`` bytes would eat into the reserve of the filesystem."""
        if missing <= 0:
            return
        try:
            fs = self.files.fs_space(directory)
        except FileOpError as exc:
            raise FileDeviceError(str(exc)) from exc
        reserve = int(fs.total * self.reserve_percent / 100)
        usable = fs.available - reserve
        if missing > usable:
            raise FileDeviceError(
                f"not enough free space in {directory}: need {missing} more bytes, {fs.available} available and "
                f"{reserve} bytes ({self.reserve_percent:g}% of the filesystem) are kept in reserve; free space, "
                "choose a smaller size, or a directory on another filesystem")

    def _find(self, path: str) -> list[LoopDevice]:
        try:
            return self.losetup.find(path)
        except LosetupError as exc:
            raise FileDeviceError(f"cannot tell whether {path} is attached: {exc}") from exc

    def provision(self, path: str, size: int, deleted_loops: list[LoopDevice], journal: Journal,
                  loops: list[LoopDevice] | None = None, guard: Callable[[], None] = lambda: None) -> Provisioned:
        """Rule 3. ``deleted_loops``: loops (from the cycle's list) whose backing file with this basename was deleted.

        ``loops``: this call's ``losetup --list`` read. With it, "which loops are attached to the file"
        is answered the way ``losetup -j`` answers it (backing device and inode against a ``stat`` of the
        file) without one ``losetup -j`` per entry; an absent file has no inode, so no loop can be
        attached to it. Without it (or when the list lacks inode columns), ``losetup -j`` is run.
        """
        probe: FileProbe | None = None
        if loops is None:
            attached = self._find(path)
        else:
            probe = self.files.probe(path)
            if probe.presence is Presence.UNKNOWN:
                raise FileDeviceError(f"cannot read backing file {path} (doing nothing now): {probe.error}")
            found = [] if probe.presence is Presence.ABSENT else \
                attached_by_inode(loops, probe.dev_maj_min, probe.ino or 0)
            attached = self._find(path) if found is None else found
        if len(attached) > 1:
            raise FileDeviceError(
                f"backing file {path} is attached to {len(attached)} loop devices "
                f"({', '.join(sorted(a.name for a in attached))}): two PVs over the same blocks. Refusing to touch it; "
                "detach the loop that is not a PV of the VG (check `pvs`) with `losetup -d`")
        if deleted_loops:
            raise FileDeviceError(deleted_guidance(path, sorted(d.name for d in deleted_loops)))
        if len(attached) == 1:
            self.lvm.owned_loops.add(attached[0].name)
            return Provisioned(attached[0].name, path, probe=probe)
        directory = posixpath.dirname(path)
        if probe is None or probe.presence is Presence.ABSENT:
            guard()
            try:
                self.files.mkdir_p(directory)
            except FileOpError as exc:
                raise FileDeviceError(f"cannot create directory {directory}: {exc}") from exc
        if probe is None:
            probe = self.files.probe(path)
        if probe.presence is Presence.UNKNOWN:
            raise FileDeviceError(f"cannot read backing file {path} (doing nothing now): {probe.error}")
        created = probe.presence is Presence.ABSENT
        have = 0 if created else min(probe.allocated, probe.apparent)
        grown = False
        if have < size:
            self.space_guard(directory, size - have)
            guard()
            try:
                self.files.fallocate(path, size)
                grown = True
            except FileOpError as exc:
                if created:
                    journal.created_file(path)
                raise FileDeviceError(f"cannot allocate {path}: {exc}") from exc
        if created:
            journal.created_file(path)
        guard()
        if created or grown:
            after = self.files.probe(path)  # never attach what a symlink swapped in meanwhile
            if after.presence is not Presence.PRESENT:
                raise FileDeviceError(f"backing file {path} changed under us (doing nothing more now): "
                                      f"{after.error or after.presence.value}")
        try:
            loop, warning = self.losetup.attach_direct(path)
        except LosetupError as exc:
            raise FileDeviceError(f"cannot attach {path} to a loop device: {exc}") from exc
        journal.attached_loop(loop, path)
        self.lvm.owned_loops.add(loop)
        out = Provisioned(loop, path, probe=None if grown or created else probe, changed=True)
        if warning is not None:
            out.warnings.append(f"direct I/O not enabled on {loop} (buffered I/O is used): {warning}")
        else:
            out.direct_io = True
        return out

    # --------------------------------------------------------------------- growth
    def grow(self, path: str, size: int, pv: PV | None, extent: int, loop: str | None = None,
             probe: FileProbe | None = None, guard: Callable[[], None] = lambda: None) -> bool:
        """Rule 6; returns True when something changed. Each step fails toward the smaller size.

        ``loop``/``probe``: what this same call just resolved from the file (provision), so they are not
        read again; without them the loop is resolved with ``losetup -j`` (never from a recorded minor).
        """
        if loop is None:
            attached = self.losetup.find(path)
            if len(attached) != 1:
                raise FileDeviceError(f"cannot grow {path}: expected exactly one loop device, found {len(attached)}")
            loop = attached[0].name
        if probe is None:
            probe = self.files.probe(path)
        if probe.presence is not Presence.PRESENT:
            raise FileDeviceError(f"cannot grow {path}: backing file is {probe.presence.value} {probe.error}".strip())
        changed = False
        if file_needs_growth(probe.allocated, probe.apparent, size, extent):
            self.space_guard(posixpath.dirname(path), size - min(probe.allocated, probe.apparent))
            guard()
            self.files.fallocate(path, size)
            changed = True
        file_size = max(probe.apparent, size if changed else 0)
        if pv is not None and (changed or loop_needs_refresh(pv.dev_size, file_size, extent)):
            self.losetup.refresh(loop)
            changed = True
        if pv is not None:
            if changed or pv_needs_resize(pv.size, max(pv.dev_size, file_size), pv.pe_start, extent):
                mut = self.lvm.pvresize(loop)
                if not mut.ok:
                    raise FileDeviceError(f"pvresize of {loop} failed: {mut.message}")
                changed = True
        return changed

    # ------------------------------------------------------------------- rollback
    def rollback(self, journal: Journal, live_pvs: Callable[[], Mapping[str, PV] | None]) -> list[str]:
        """Rule 5: only this call's steps, in reverse; each command has its own timeout. Returns problems."""
        problems: list[str] = []
        self._live_pvs = live_pvs
        steps = plan_rollback(journal.steps, live_pvs())
        if not steps and journal.steps:
            problems.append("rollback skipped: PVs could not be listed, or everything created is now in use")
        failed_files: set[str] = set()
        for step in steps:
            try:
                self._undo(step, failed_files)
            except (LosetupError, FileOpError, FileDeviceError) as exc:
                failed_files.add(step.file)
                problems.append(f"rollback of {step.kind} {step.target}: {exc}")
        return problems

    def _undo(self, step: Step, failed_files: set[str]) -> None:
        if step.kind == "pv":
            mut = self.lvm.pvremove(step.target)
            if not mut.ok:
                raise FileDeviceError(mut.message)
        elif step.kind == "loop":
            pvs = self._live_pvs()
            if pvs is None or step.target in pvs:
                raise FileDeviceError(f"{step.target} is (or may be) a PV; left attached")
            self.losetup.detach(step.target)
            self.lvm.owned_loops.discard(step.target)
        elif step.kind == "file" and step.target not in failed_files:
            self.files.rm_f(step.target)
