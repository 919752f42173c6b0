"""kubectl-style output: tables, ``-o yaml|json``, ages. Pure: strings in, strings out."""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from typing import Any

import yaml

from ..api.common import parse_rfc3339

NONE = "<none>"


parse_time = parse_rfc3339


def format_age(seconds: float) -> str:
    """kubectl's human duration: 45s, 5m30s, 3h20m, 2d4h, 400d (no negative ages)."""
    s = max(0, int(seconds))
    if s < 120:
        return f"{s}s"
    m, s = divmod(s, 60)
    if m < 10:
        return f"{m}m{s}s" if s else f"{m}m"
    if m < 180:
        return f"{m}m"
    h, m = divmod(m, 60)
    if h < 8:
        return f"{h}h{m}m" if m else f"{h}h"
    if h < 48:
        return f"{h}h"
    d, h = divmod(h, 24)
    if d < 8:
        return f"{d}d{h}h" if h else f"{d}d"
    return f"{d}d"


def age(timestamp: str | None, now: datetime | None = None) -> str:
    when = parse_time(timestamp)
    if when is None:
        return NONE
    return format_age(((now or datetime.now(UTC)) - when).total_seconds())


def cell(value: Any) -> str:
    """One table cell: lists joined by commas, None as <none>, booleans lowercase."""
    if value is None or value == "" or value == []:
        return NONE
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list | tuple):
        return ",".join(cell(v) for v in value)
    return str(value)


def table(headers: Sequence[str], rows: Iterable[Sequence[Any]], indent: str = "") -> str:
    """Left-aligned columns separated by three spaces, like ``kubectl get`` (no trailing blanks)."""
    text_rows = [[cell(c) for c in row] for row in rows]
    all_rows = [list(headers), *text_rows]
    widths = [max(len(r[i]) for r in all_rows) for i in range(len(headers))]
    lines = []
    for r in all_rows:
        parts = [r[i].ljust(widths[i]) if i < len(r) - 1 else r[i] for i in range(len(r))]
        lines.append((indent + "   ".join(parts)).rstrip())
    return "\n".join(lines) + "\n"


def dump(data: Any, fmt: str) -> str:
    """``-o yaml`` or ``-o json`` of an object or a list (as a kind: List)."""
    if fmt == "json":
        return json.dumps(data, indent=2, sort_keys=False) + "\n"
    if fmt == "yaml":
        return yaml.safe_dump(data, sort_keys=False, default_flow_style=False)
    raise ValueError(f"unknown output format {fmt!r} (use yaml or json)")


def as_list(items: list[dict[str, Any]]) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "List", "metadata": {"resourceVersion": ""}, "items": items}


def field(obj: Any, path: str, default: Any = None) -> Any:
    """``field(obj, "status.phase")``: a dotted lookup that never raises."""
    cur = obj
    for seg in path.split("."):
        if not isinstance(cur, dict):
            return default
        cur = cur.get(seg)
    return default if cur is None else cur


def key_values(pairs: Sequence[tuple[str, Any]], indent: str = "") -> str:
    """``Name:   value`` lines aligned like ``kubectl describe``."""
    width = max((len(k) for k, _ in pairs), default=0) + 2
    out = []
    for k, v in pairs:
        text = cell(v) if not isinstance(v, str) or v else NONE
        lines = text.splitlines() or [""]
        out.append(f"{indent}{(k + ':').ljust(width)}{lines[0]}".rstrip())
        for extra in lines[1:]:
            out.append(f"{indent}{' ' * width}{extra}".rstrip())
    return "\n".join(out) + "\n"
