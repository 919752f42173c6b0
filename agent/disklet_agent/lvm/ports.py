"""The LVM engine as the handlers see it: typed seams (``Protocol``s) that the real
:class:`~disklet_agent.lvm.engine.HostLvgEngine` and the tests' doubles both satisfy.

Naming: a Protocol is named for the role the caller needs (``LvgEngine``); the class that does the
work on the node says so (``HostLvgEngine``), so an annotation can never be mistaken for the
implementation.

Parameters are positional-only: the handlers call them positionally and implementations may
name them as they like.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from disklet.api.lvm import LVMVolumeGroupSpec, LVMVolumeGroupStatus

    from .outcomes import DeleteOutcome, LvgOutcome, ReattachProblem
    from .snapshot import LvmSnapshot


class LvmSnapshotSource(Protocol):
    """One live LVM snapshot of the node (the BlockDevice scan reads PV facts from it)."""

    def snapshot(self) -> LvmSnapshot: ...


class LvgEngine(LvmSnapshotSource, Protocol):
    """Everything the LVMVolumeGroup handlers ask of the node's LVM (blocking; run in a thread)."""

    def reconcile(self, lvg_name: str, spec: LVMVolumeGroupSpec, status: LVMVolumeGroupStatus | None,
                  block_devices: list[tuple[str, str]] | None, generation: int | None, /) -> LvgOutcome: ...

    def discover(self, lvgs: list[tuple[str, LVMVolumeGroupSpec]], /) -> dict[str, LVMVolumeGroupStatus | None]: ...

    def delete(self, lvg_name: str, spec: LVMVolumeGroupSpec, status: LVMVolumeGroupStatus | None, /) -> DeleteOutcome: ...

    def reattach(self, lvgs: list[tuple[str, LVMVolumeGroupSpec, LVMVolumeGroupStatus | None]], /) -> list[ReattachProblem]: ...
