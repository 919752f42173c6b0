"""Thin-pool health, pure: read fill levels from an ``lvs`` report, judge them against thresholds.

The agent asks ``lvs`` for :data:`LV_HEALTH_COLUMNS` on top of its usual columns (one report, no
extra command) and this module turns each thin pool's row into a :class:`PoolFill`: data %,
metadata %, chunk size and metadata LV size. :func:`fullness_conditions` raises
``ThinPoolNearlyFull`` / ``ThinPoolMetadataNearlyFull`` on the LVMVolumeGroup when any pool is at
or above its threshold (chart values, docs/lvm.md). Metadata fullness matters most: a thin pool
whose metadata runs out switches to read-only or fails, however much data space is left.

No I/O here; tests feed recorded ``lvs`` reports (device-mapper is not available on the build
machines, so the percentages can only come from recordings there).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from disklet.api.common import Condition, set_condition

LV_HEALTH_COLUMNS = ("metadata_percent", "chunk_size", "lv_metadata_size")
"""Extra ``lvs`` columns (``data_percent`` is already read for every LV)."""
DATA_NEARLY_FULL = "ThinPoolNearlyFull"
METADATA_NEARLY_FULL = "ThinPoolMetadataNearlyFull"
DEFAULT_DATA_THRESHOLD = 80.0
DEFAULT_METADATA_THRESHOLD = 75.0
R_ABOVE = "AboveThreshold"
R_BELOW = "BelowThreshold"


def _percent(value: Any) -> float | None:
    if value in (None, ""):
        return None
    try:
        out = float(str(value).strip().rstrip("%"))
    except ValueError:
        return None
    return out if 0.0 <= out <= 100.0 else None


def _bytes(value: Any) -> int | None:
    """A ``--units b --nosuffix`` size ("4194304"; tolerates a trailing B)."""
    if value in (None, ""):
        return None
    try:
        return int(float(str(value).strip().rstrip("Bb")))
    except ValueError:
        return None


@dataclass(frozen=True)
class PoolFill:
    vg: str
    name: str
    data_percent: float | None
    metadata_percent: float | None
    chunk_size: int | None
    metadata_size: int | None


def fill_of(row: Mapping[str, Any]) -> PoolFill:
    """One thin pool's fill from one ``lvs`` report row (``--units b --nosuffix``)."""
    return PoolFill(vg=str(row.get("vg_name", "")), name=str(row.get("lv_name", "")),
                    data_percent=_percent(row.get("data_percent")),
                    metadata_percent=_percent(row.get("metadata_percent")),
                    chunk_size=_bytes(row.get("chunk_size")), metadata_size=_bytes(row.get("lv_metadata_size")))


def parse_lvs_report(stdout: str) -> list[PoolFill]:
    """Every thin pool (segtype ``thin-pool``) of an ``lvs --reportformat json`` report."""
    data = json.loads(stdout)
    rows = [r for section in data.get("report", []) for r in section.get("lv", [])]
    return [fill_of(r) for r in rows if r.get("segtype") == "thin-pool"]


@dataclass(frozen=True)
class Thresholds:
    data_percent: float = DEFAULT_DATA_THRESHOLD
    metadata_percent: float = DEFAULT_METADATA_THRESHOLD


def _over(pools: Sequence[Any], attr: str, limit: float) -> list[str]:
    out = []
    for p in pools:
        value = getattr(p, attr, None)
        if value is not None and value >= limit:
            out.append(str(p.name))
    return out


def fullness_conditions(conditions: Iterable[Condition], pools: Sequence[Any] | None, thresholds: Thresholds,
                        generation: int | None, now: str | None = None) -> list[Condition]:
    """Upsert the two fullness conditions from ``pools`` (anything with ``name``, ``data_percent``,
    ``metadata_percent``: :class:`PoolFill` or the status model). No thin pools: both removed."""
    conds = [c for c in conditions if c.type not in (DATA_NEARLY_FULL, METADATA_NEARLY_FULL)]
    known = [p for p in pools or () if getattr(p, "data_percent", None) is not None
             or getattr(p, "metadata_percent", None) is not None]
    if not known:
        return conds
    old = {c.type: c for c in conditions}
    out = conds + [old[t] for t in (DATA_NEARLY_FULL, METADATA_NEARLY_FULL) if t in old]
    for type_, attr, limit, what in ((DATA_NEARLY_FULL, "data_percent", thresholds.data_percent, "data"),
                                     (METADATA_NEARLY_FULL, "metadata_percent", thresholds.metadata_percent,
                                      "metadata")):
        over = _over(known, attr, limit)
        if over:
            out = set_condition(out, type_, "True", R_ABOVE,
                                f"thin pool {what} at or above {limit:g}%: {', '.join(over)} (status.thinPools has the figures)", generation, now)
        else:
            out = set_condition(out, type_, "False", R_BELOW,
                                f"every thin pool's {what} is below {limit:g}%", generation, now)
    return out
