"""The LVM engine's values: what it hands back to the handlers (the outcome of a reconcile, a delete
and a startup re-attach), the live view of a selected block device, and the record one reconcile
keeps while it runs (:class:`ReconcileState`)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from disklet.api.common import set_condition
from disklet.api.lvm import ConditionType, LVMVolumeGroupStatus, Reason

from .snapshot import LvmSnapshot

Event = tuple[str, str, str]
"""(type, reason, message) of one Kubernetes Event."""


@dataclass(frozen=True)
class LiveDevice:
    """One device as this node's own live scan reports it (the BlockDevice object only selects)."""

    path: str
    consumable: bool
    reason: str | None = None


BlockScan = Callable[[LvmSnapshot], Mapping[str, LiveDevice]]
"""BlockDevice name (the stable identity hash) → the device as scanned now."""


@dataclass
class LvgOutcome:
    """What one engine reconcile of an LVMVolumeGroup did (not the metrics outcome)."""

    status: LVMVolumeGroupStatus
    changed: bool
    events: list[Event] = field(default_factory=list)
    requeue_after: float | None = None
    host_changed: bool = False
    """Something on the host was created, changed or rolled back by this call (status may be equal)."""


@dataclass
class DeleteOutcome:
    done: bool
    status: LVMVolumeGroupStatus
    events: list[Event] = field(default_factory=list)

    def kept(self, why: str) -> DeleteOutcome:
        """The same cleanup, but the finalizer stays for ``why`` (said in the condition and an Event)."""
        status = self.status.model_copy(deep=True)
        status.conditions = set_condition(list(status.conditions or []), ConditionType.VG_CONFIGURATION_APPLIED,
                                          "False", Reason.TERMINATING, why, status.observed_generation)
        return DeleteOutcome(False, status, [*self.events, ("Warning", Reason.TERMINATING, why)])


@dataclass(frozen=True)
class ReattachProblem:
    """A per-file (or per-VG) problem of the startup re-attach, bound to its LVMVolumeGroup."""

    lvg: str
    message: str

    def __str__(self) -> str:
        return self.message


@dataclass
class ReconcileState:
    """What one reconcile found and did so far: its failures by condition reason, its Events, and
    the freshest snapshot that still stands for the host."""

    failures: list[tuple[str, str]] = field(default_factory=list)
    events: list[Event] = field(default_factory=list)

    latest: LvmSnapshot | None = None
    """The last snapshot this call read, while nothing this call did has changed the host since."""
    host_changed: bool = False
    name_checked: bool = False
    """The node-wide VG name check ran after this call's last file/loop change (right before acting)."""
    name_conflict: str | None = None
    """Its answer: why the name cannot be taken, or None when it is free."""
    ambiguous: str | None = None
    """The existing VG's name is carried by another VG too (VGNameConflict): why, naming both UUIDs."""

    def changed_host(self) -> None:
        self.latest = None
        self.host_changed = True

    def fail(self, reason: str, message: str) -> None:
        self.failures.append((reason, message))
        self.events.append(("Warning", reason, message))

    def warn(self, reason: str, message: str) -> None:
        self.events.append(("Warning", reason, message))
