"""What handlers report to ``disklet.metrics``, in disklet's own terms (one place for operator and agent).

Handlers call these rather than the metric objects so the label values and the status → gauge
translation live here once:

    with reconcile_timer("LVMVolumeGroup") as outcome:   # count + duration; an exception is retry/error
        ...
        outcome.result = REFUSED                         # or RETRY / ERROR
    record_refusal(code); record_status_write(kind)
    gauges = LvgGauges(); gauges.publish(lvg, vg, status); gauges.forget(lvg)
    set_managed_loop_devices(count_managed_loops(node, statuses))

``lvg_status_events`` turns two LVMVolumeGroup statuses into the Events of a transition: the spec
became applied, file devices appeared or disappeared (the agent posts them next to the engine's
own step Events: VGCreated, VGExtended, ThinPoolReconciled, the failure reasons, ...).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator
from typing import Any

from disklet import metrics
from disklet.api.lvm import LVMVolumeGroupStatus, NodeFileDevice
from disklet.units import quantity_bytes

SUCCESS, REFUSED, RETRY, ERROR = metrics.SUCCESS, metrics.REFUSED, metrics.RETRY, metrics.ERROR
ReconcileRecord = metrics.ReconcileRecord
"""What ``reconcile_timer`` yields: set ``.result`` to one of the four results above."""

Event = tuple[str, str, str]
"""(type, reason, message) as ``kopf.event`` takes them."""


@contextlib.contextmanager
def reconcile_timer(kind: str) -> Iterator[ReconcileRecord]:
    """``disklet.metrics.timed_reconcile``: set ``.result`` inside; exceptions count as retry/error."""
    with metrics.timed_reconcile(kind) as outcome:
        yield outcome


def record_refusal(code: str) -> None:
    """One refusal with its machine-readable code (call once per transition, not per retry)."""
    metrics.record_refusal(str(code))


def record_status_write(kind: str) -> None:
    """One status patch of ``kind`` sent to the API server."""
    metrics.record_status_write(kind)


def start_metrics_server(port: int) -> Any:
    """Serve /metrics on ``port`` (0 or less: disabled); returns the server or None."""
    if port <= 0:
        return None
    return metrics.start_metrics_server(port)


def observe_host_commands(observers: list[Any]) -> None:
    """Add the host-command timer to a HostRunner's observers (once)."""
    if metrics.observe_host_command not in observers:
        observers.append(metrics.observe_host_command)


def _bytes(value: str | None) -> int | None:
    if not value:
        return None
    try:
        return quantity_bytes(value)
    except (ValueError, TypeError, ArithmeticError):
        return None


class LvgGauges:
    """VG and thin-pool gauges of one agent's LVMVolumeGroups, from the statuses it writes.

    Remembers which series each LVG published, so a deleted LVG, a renamed VG or a thin pool that
    is gone stops being exported instead of showing its last value forever.
    """

    def __init__(self) -> None:
        self._vg: dict[str, str] = {}
        self._pools: dict[str, set[tuple[str, str]]] = {}

    def publish(self, lvg: str, vg: str, status: LVMVolumeGroupStatus | None) -> None:
        size = _bytes(status.vg_size) if status else None
        free = _bytes(status.vg_free) if status else None
        old_vg = self._vg.get(lvg)
        if old_vg is not None and (old_vg != vg or size is None or free is None):
            metrics.forget_vg(old_vg, lvg)
            del self._vg[lvg]
        if size is not None and free is not None:
            metrics.set_vg_capacity(vg, lvg, size, free)
            self._vg[lvg] = vg
        pools: set[tuple[str, str]] = set()
        for tp in (status.thin_pools if status else None) or []:
            pool_size = _bytes(tp.actual_size)
            if pool_size is None:
                continue
            metrics.set_thin_pool(vg, tp.name, pool_size, _bytes(tp.used_size) or 0, data_percent=tp.data_percent,
                                  metadata_percent=tp.metadata_percent, metadata_size_bytes=_bytes(tp.metadata_size))
            pools.add((vg, tp.name))
        for gone_vg, pool in self._pools.get(lvg, set()) - pools:
            metrics.forget_thin_pool(gone_vg, pool)
        if pools:
            self._pools[lvg] = pools
        else:
            self._pools.pop(lvg, None)

    def forget(self, lvg: str) -> None:
        """Drop every series of ``lvg`` (its VG is gone)."""
        vg = self._vg.pop(lvg, None)
        if vg is not None:
            metrics.forget_vg(vg, lvg)
        for pool_vg, pool in self._pools.pop(lvg, set()):
            metrics.forget_thin_pool(pool_vg, pool)


def _node_file_devices(status: LVMVolumeGroupStatus | None, node: str) -> list[NodeFileDevice]:
    for entry in (status.nodes if status else None) or []:
        if entry.name == node:
            return list(entry.file_devices or [])
    return []


def count_managed_loops(node: str, statuses: Iterable[LVMVolumeGroupStatus | None]) -> int:
    """Loop devices backing file PVs of ``node`` across its LVMVolumeGroups' statuses. (pure)"""
    loops = {fd.loop_device for st in statuses for fd in _node_file_devices(st, node) if fd.loop_device}
    return len(loops)


def set_managed_loop_devices(count: int) -> None:
    metrics.set_managed_loop_devices(count)


def lvg_status_events(node: str, vg: str, old: LVMVolumeGroupStatus | None,
                      new: LVMVolumeGroupStatus | None) -> list[Event]:
    """Normal Events of the change ``old`` → ``new`` on ``node``: Applied, file devices in/out. (pure)"""
    events: list[Event] = []
    if new is not None and new.configuration_applied and not (old is not None and old.configuration_applied):
        gen = f" (generation {new.observed_generation})" if new.observed_generation is not None else ""
        events.append(("Normal", "Applied", f"volume group {vg} matches the spec{gen}"))
    return events + file_device_events(node, old, new)


def file_device_events(node: str, old: LVMVolumeGroupStatus | None, new: LVMVolumeGroupStatus | None) -> list[Event]:
    """Normal Events for file devices of ``node`` that became PVs or stopped being PVs. (pure)"""
    before = {fd.name: fd for fd in _node_file_devices(old, node)}
    after = {fd.name: fd for fd in _node_file_devices(new, node)}
    events: list[Event] = []
    for name in sorted(after.keys() - before.keys()):
        fd = after[name]
        size = f", {fd.size}" if fd.size else ""
        events.append(("Normal", "FileDeviceProvisioned",
                       f"fileDevices[{name}]: {fd.file_path} attached as {fd.loop_device}{size}"))
    for name in sorted(before.keys() - after.keys()):
        fd = before[name]
        events.append(("Normal", "FileDeviceRemoved",
                       f"fileDevices[{name}]: {fd.file_path} ({fd.loop_device}) is no longer a PV of the VG"))
    return events
