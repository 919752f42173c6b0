"""The host-side LVM engine the agent's Kopf handlers call (sync; run it in a thread).

:class:`HostLvgEngine` implements the handlers' :class:`~disklet_agent.lvm.ports.LvgEngine` over
this node's adapters (``host.lvm``, ``host.losetup``, ``host.files``) and hands each job to the
module that does it:

- reads of the node (snapshot, live PVs, node-wide VG names, block scan): :mod:`.reads`;
- symlink confinement of file-device paths: :mod:`.confinement`;
- the reconcile steps (provision, PVs, VG, tags, growth, thin pools): :mod:`.reconcile`;
- the status built from one snapshot: :mod:`.status` (and :mod:`.discovery`);
- delete and startup re-attach: :mod:`.removal`.

LVM commands run in one persistent ``lvm`` shell when ``config.lvm_shell`` is on (docs/agent.md);
independent reads then run side by side.
"""

from __future__ import annotations

from disklet.api.lvm import LVMVolumeGroupSpec, LVMVolumeGroupStatus
from disklet.hostcmd import HostRunner

from ..config import AgentConfig
from ..host.files import HostFiles
from ..host.losetup import Losetup
from ..host.lvm import Lvm
from ..host.lvmshell import LvmShell
from .discovery import discover_status, find_vg, name_ambiguity, name_conflict_status
from .filedevices import FileDevices
from .outcomes import BlockScan, DeleteOutcome, LvgOutcome, ReattachProblem
from .ports import FileCommands, LoopCommands, LvmCommands
from .reads import LvmReads
from .reconcile import LvgReconciler
from .removal import LvgRemoval
from .snapshot import LvmSnapshot


class HostLvgEngine:
    def __init__(self, runner: HostRunner, config: AgentConfig, *, block_scan: BlockScan | None = None,
                 lvm: LvmCommands | None = None, losetup: LoopCommands | None = None,
                 files: FileCommands | None = None):
        """The adapters default to this node's (``host.lvm``, ``host.losetup``, ``host.files`` over
        ``runner``); a test may pass its own for any of them."""
        self.runner = runner
        self.config = config
        timeout = config.command_timeout_seconds
        self.shell = LvmShell(runner) if config.lvm_shell and lvm is None else None
        self.lvm: LvmCommands = lvm or Lvm(runner, extra_config=config.lvm_extra_config, timeout=timeout,
                                          shell=self.shell)
        self.losetup: LoopCommands = losetup or Losetup(runner, timeout)
        self.files: FileCommands = files or HostFiles(runner, timeout)
        self.devices = FileDevices(self.files, self.losetup, self.lvm, config.free_space_reserve_percent)
        self.reads = LvmReads(runner, config, self.lvm, self.losetup, self.files, block_scan=block_scan,
                              parallel=self.shell is not None)
        self.reconciler = LvgReconciler(self.reads, self.lvm, self.files, self.devices, config)
        self.removal = LvgRemoval(self.reads, self.lvm, self.losetup, self.files, config)

    @property
    def parallel_reads(self) -> bool:
        """Independent reads side by side (with the lvm shell); False: one after the other
        (bench/apply_to_ready.py --ab measures the difference)."""
        return self.reads.parallel

    @parallel_reads.setter
    def parallel_reads(self, value: bool) -> None:
        self.reads.parallel = value

    def close(self) -> None:
        """Stop the lvm shell (a later command starts a new one)."""
        if self.shell is not None:
            self.shell.close()

    def snapshot(self, base_dirs: tuple[str, ...] | None = None) -> LvmSnapshot:
        return self.reads.snapshot(base_dirs)

    def reconcile(self, lvg_name: str, spec: LVMVolumeGroupSpec, status: LVMVolumeGroupStatus | None,
                  block_devices: list[tuple[str, str]] | None = None,
                  generation: int | None = None) -> LvgOutcome:
        return self.reconciler.run(lvg_name, spec, status, block_devices, generation)

    def discover(self, lvgs: list[tuple[str, LVMVolumeGroupSpec]],
                 snapshot: LvmSnapshot | None = None) -> dict[str, LVMVolumeGroupStatus | None]:
        """Discovered status fields per LVG; None = skip writing this cycle. No phase/conditions,
        except for a VG whose name another VG carries too (the filtered read shows both, or the
        node-wide read, made side by side with it, shows the other): phase ``NotReady`` and the
        agent's conditions ``VGNameConflict`` naming both UUIDs (:func:`.discovery.name_ambiguity`)."""
        if snapshot is None:
            snap, named = self.reads.both(self.snapshot, self.reads.node_vgs)
            if isinstance(named, list):
                snap.node_vgs = named
        else:
            snap = snapshot
        out: dict[str, LVMVolumeGroupStatus | None] = {}
        for name, spec in lvgs:
            if not snap.ok:
                out[name] = None
                continue
            vg = find_vg(snap, name, spec.actual_vg_name_on_the_node, None).vg
            found = discover_status(name, spec, snap, self.config.node_name, vg) if vg else None
            if found is not None and vg is not None and (ambiguous := name_ambiguity(snap, vg)):
                found = name_conflict_status(found, ambiguous)
            out[name] = found
        return out

    def delete(self, lvg_name: str, spec: LVMVolumeGroupSpec, status: LVMVolumeGroupStatus | None) -> DeleteOutcome:
        return self.removal.delete(lvg_name, spec, status)

    def reattach(self, lvgs: list[tuple[str, LVMVolumeGroupSpec, LVMVolumeGroupStatus | None]]
                 ) -> list[ReattachProblem]:
        return self.removal.reattach(lvgs)
