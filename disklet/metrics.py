"""Prometheus metrics of the operator and the agent (docs/design/product.md#observability; every metric is in docs/metrics.md).

All metrics live in one dedicated registry, ``REGISTRY``, so what ``start_metrics_server`` serves
is exactly what the docs list (plus the standard ``process_*``/``python_*`` collectors). Callers
use the small helpers below rather than the metric objects, so label values stay bounded:

    runner.observers.append(observe_host_command)         # every host command, timed
    with timed_reconcile("LVMVolumeGroup") as outcome:    # reconcile count + duration
        ...
        outcome.result = REFUSED                          # or raise: recorded as "error"/"retry"
    record_refusal(code)                                  # a DiskLayout refusal, by code
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    start_http_server,
)

if TYPE_CHECKING:
    from disklet.hostcmd import CommandResult

PREFIX = "disklet"

REGISTRY = CollectorRegistry(auto_describe=True)
"""The registry every disklet metric is registered in (and the one the metrics server serves)."""
ProcessCollector(registry=REGISTRY)
PlatformCollector(registry=REGISTRY)

# Reconcile results: the only values of the ``result`` label (bounded cardinality).
SUCCESS = "success"
"""The reconcile converged (or had nothing to do)."""
REFUSED = "refused"
"""A safety guard refused the change; status.refusalReason says why."""
RETRY = "retry"
"""A temporary error; Kopf retries the handler."""
ERROR = "error"
"""The handler failed (permanent error or an unexpected exception)."""
RESULTS: frozenset[str] = frozenset({SUCCESS, REFUSED, RETRY, ERROR})

# Reconcile durations span a quick no-op status check to a disko + nixos-rebuild run.
RECONCILE_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800)
# Host commands: lsblk/vgs take milliseconds, fallocate of a big file or disko take minutes.
HOST_COMMAND_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900)

LABEL_NAMES: dict[str, tuple[str, ...]] = {}
"""Metric name (without the ``disklet_`` prefix) → its label names, as exported."""


def _metric(cls: Any, name: str, doc: str, labels: Sequence[str] = (), **kw: Any) -> Any:
    """One metric of :data:`REGISTRY` under the ``disklet_`` prefix; its label names are recorded."""
    LABEL_NAMES[name] = tuple(labels)
    return cls(name, doc, list(labels), namespace=PREFIX, registry=REGISTRY, **kw)


RECONCILES = _metric(
    Counter, "reconciles", "Reconciles by resource kind and result (success, refused, retry, error).",
    ["kind", "result"])
RECONCILE_SECONDS = _metric(
    Histogram, "reconcile_duration_seconds", "Duration of one reconcile, by resource kind.",
    ["kind"], buckets=RECONCILE_BUCKETS)
HOST_COMMAND_SECONDS = _metric(
    Histogram, "host_command_duration_seconds",
    "Duration of host commands, by command (basename after nsenter; 'lvm <subcommand>' for lvm).",
    ["command"], buckets=HOST_COMMAND_BUCKETS)
HOST_COMMAND_FAILURES = _metric(
    Counter, "host_command_failures", "Host commands that did not succeed, by command and reason (exit, timeout).",
    ["command", "reason"])
REFUSALS = _metric(
    Counter, "refusals", "Refused DiskLayout applies, by refusal code (docs/refusal-codes.md).",
    ["code"])
STATUS_WRITES = _metric(
    Counter, "status_writes", "Status patches written to the API server, by resource kind.",
    ["kind"])
MANAGED_LOOP_DEVICES = _metric(
    Gauge, "managed_loop_devices", "Loop devices this agent attached for file-backed LVM devices.")
def _vg_gauge(name: str, doc: str) -> Any:
    """A gauge per managed VG (labels ``vg``, ``lvg``: set and forgotten together)."""
    return _metric(Gauge, name, doc, ["vg", "lvg"])


def _thin_pool_gauge(name: str, doc: str) -> Any:
    """A gauge per thin pool (labels ``vg``, ``pool``: set and forgotten together)."""
    return _metric(Gauge, name, doc, ["vg", "pool"])


VG_SIZE_BYTES = _vg_gauge("vg_size_bytes", "Size of a managed volume group, in bytes.")
VG_FREE_BYTES = _vg_gauge("vg_free_bytes", "Unallocated space of a managed volume group, in bytes.")
THIN_POOL_SIZE_BYTES = _thin_pool_gauge("thin_pool_size_bytes", "Size of a thin pool, in bytes.")
THIN_POOL_USED_BYTES = _thin_pool_gauge("thin_pool_used_bytes", "Data used in a thin pool, in bytes.")
THIN_POOL_DATA_PERCENT = _thin_pool_gauge(
    "thin_pool_data_percent", "Data fullness of a thin pool, in percent (lvs data_percent).")
THIN_POOL_METADATA_PERCENT = _thin_pool_gauge(
    "thin_pool_metadata_percent", "Metadata fullness of a thin pool, in percent (lvs metadata_percent).")
THIN_POOL_METADATA_SIZE_BYTES = _thin_pool_gauge(
    "thin_pool_metadata_size_bytes", "Size of a thin pool's metadata LV, in bytes.")
_THIN_POOL_GAUGES = (THIN_POOL_SIZE_BYTES, THIN_POOL_USED_BYTES, THIN_POOL_DATA_PERCENT, THIN_POOL_METADATA_PERCENT,
                     THIN_POOL_METADATA_SIZE_BYTES)


def command_label(argv: Sequence[str]) -> str:
    """The ``command`` label of a host command: basename after any nsenter prefix; ``lvm <sub>``."""
    args = [str(a) for a in argv]
    if args and os.path.basename(args[0]) == "nsenter":
        args = args[args.index("--") + 1:] if "--" in args else args[:1]
    if not args:
        return "unknown"
    name = os.path.basename(args[0]) or "unknown"
    if name == "lvm" and len(args) > 1 and not args[1].startswith("-"):
        return f"lvm {args[1]}"
    return name


def observe_host_command(result: CommandResult) -> None:
    """HostRunner observer: time every host command and count its failures."""
    label = command_label(result.argv)
    HOST_COMMAND_SECONDS.labels(command=label).observe(max(result.duration, 0.0))
    if result.timed_out:
        HOST_COMMAND_FAILURES.labels(command=label, reason="timeout").inc()
    elif result.returncode != 0:
        HOST_COMMAND_FAILURES.labels(command=label, reason="exit").inc()


def record_reconcile(kind: str, result: str, seconds: float) -> None:
    """Count one reconcile of ``kind`` with ``result`` (one of RESULTS) and observe its duration."""
    if result not in RESULTS:
        raise ValueError(f"reconcile result {result!r} is not one of {sorted(RESULTS)}")
    RECONCILES.labels(kind=kind, result=result).inc()
    RECONCILE_SECONDS.labels(kind=kind).observe(max(seconds, 0.0))


@dataclass
class ReconcileRecord:
    """What ``timed_reconcile`` records; set ``result`` to REFUSED (etc.) inside the block."""

    kind: str
    result: str = SUCCESS


def _result_of(exc: BaseException) -> str:
    try:
        import kopf
    except ImportError:  # pragma: no cover - kopf is a dependency
        return ERROR
    return RETRY if isinstance(exc, kopf.TemporaryError) else ERROR


@contextmanager
def timed_reconcile(kind: str) -> Iterator[ReconcileRecord]:
    """Time a reconcile; an exception counts as ``retry`` (kopf.TemporaryError) or ``error``.

    Cancellation (operator shutdown) is not a reconcile outcome and is not recorded.
    """
    outcome = ReconcileRecord(kind)
    start = time.perf_counter()
    try:
        yield outcome
    except (GeneratorExit, KeyboardInterrupt, SystemExit):
        raise
    except BaseException as exc:
        if _is_cancellation(exc):
            raise
        if outcome.result == SUCCESS:
            outcome.result = _result_of(exc)
        record_reconcile(kind, outcome.result, time.perf_counter() - start)
        raise
    record_reconcile(kind, outcome.result, time.perf_counter() - start)


def _is_cancellation(exc: BaseException) -> bool:
    import asyncio
    return isinstance(exc, asyncio.CancelledError)


def record_refusal(code: str) -> None:
    """Count one refusal with its machine-readable code."""
    REFUSALS.labels(code=str(code)).inc()


def record_status_write(kind: str) -> None:
    """Count one status patch of ``kind``."""
    STATUS_WRITES.labels(kind=kind).inc()


def set_managed_loop_devices(count: int) -> None:
    MANAGED_LOOP_DEVICES.set(count)


def set_vg_capacity(vg: str, lvg: str, size_bytes: int, free_bytes: int) -> None:
    """Publish a VG's size and free space (call after each LVM report)."""
    VG_SIZE_BYTES.labels(vg=vg, lvg=lvg).set(size_bytes)
    VG_FREE_BYTES.labels(vg=vg, lvg=lvg).set(free_bytes)


def forget_vg(vg: str, lvg: str) -> None:
    """Drop a removed VG's series so dashboards do not show a stale VG."""
    for gauge in (VG_SIZE_BYTES, VG_FREE_BYTES):
        _remove(gauge, vg, lvg)


def set_thin_pool(vg: str, pool: str, size_bytes: int, used_bytes: int, *, data_percent: float | None = None,
                  metadata_percent: float | None = None, metadata_size_bytes: int | None = None) -> None:
    """Publish a thin pool's size, used data and (when the agent read them) fullness figures."""
    THIN_POOL_SIZE_BYTES.labels(vg=vg, pool=pool).set(size_bytes)
    THIN_POOL_USED_BYTES.labels(vg=vg, pool=pool).set(used_bytes)
    for gauge, value in ((THIN_POOL_DATA_PERCENT, data_percent), (THIN_POOL_METADATA_PERCENT, metadata_percent),
                         (THIN_POOL_METADATA_SIZE_BYTES, metadata_size_bytes)):
        if value is None:
            _remove(gauge, vg, pool)
        else:
            gauge.labels(vg=vg, pool=pool).set(value)


def forget_thin_pool(vg: str, pool: str) -> None:
    for gauge in _THIN_POOL_GAUGES:
        _remove(gauge, vg, pool)


def _remove(metric: Any, *labels: str) -> None:
    try:
        metric.remove(*labels)
    except KeyError:
        pass


def start_metrics_server(port: int, addr: str = "0.0.0.0") -> Any:  # noqa: S104 - a pod serves on all interfaces
    """Serve ``REGISTRY`` at ``http://addr:port/metrics`` from a daemon thread; returns the server.

    ``port=0`` picks a free port (``server.server_port`` tells which).
    """
    server, _thread = start_http_server(port, addr=addr, registry=REGISTRY)
    return server


def exported_metric_names() -> set[str]:
    """Names of the disklet metric families in REGISTRY as Prometheus exposes them."""
    names: set[str] = set()
    for family in REGISTRY.collect():
        if not family.name.startswith(PREFIX + "_"):
            continue
        names.add(family.name + "_total" if family.type == "counter" else family.name)
    return names
