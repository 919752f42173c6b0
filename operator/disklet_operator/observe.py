"""Metrics hooks: ``disklet.metrics`` when it is importable, no-ops otherwise (the operator must run anyway)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

try:
    from disklet import metrics as _metrics
except ImportError:  # pragma: no cover - disklet.metrics ships with disklet
    _metrics = None  # type: ignore[assignment]


@dataclass
class _Outcome:
    kind: str
    result: str = "success"


@contextlib.contextmanager
def reconcile_timer(kind: str) -> Iterator[Any]:
    """``disklet.metrics.timed_reconcile`` (set ``.result = "refused"`` inside), or a stand-in."""
    if _metrics is None:
        yield _Outcome(kind)
        return
    with _metrics.timed_reconcile(kind) as outcome:
        yield outcome


def record_refusal(code: str) -> None:
    if _metrics is not None:
        _metrics.record_refusal(str(code))


def start_metrics_server(port: int) -> Any:
    """Serve /metrics on ``port`` (0 or less: disabled); returns the server or None."""
    if _metrics is None or port <= 0:
        return None
    return _metrics.start_metrics_server(port)
