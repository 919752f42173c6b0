"""Pure sizing: thin pools (docs/design/lvm.md rule 12) and file-device growth thresholds (rule 6)."""

from __future__ import annotations

from dataclasses import dataclass

from disklet.units import MIB, PERCENT_RE, quantity_bytes


@dataclass(frozen=True)
class ThinPoolTarget:
    extents: int
    """Requested data extents (percent rounds down, absolute rounds up)."""
    full: bool
    """The request reaches the VG size: use all free space (``100%FREE``)."""


def thin_pool_target(size: str, vg_size: int, extent: int) -> ThinPoolTarget:
    """Target of a pool; ``vg_size`` includes capacity being added in this reconcile."""
    if extent <= 0:
        raise ValueError("extent size must be positive")
    vg_extents = vg_size // extent
    m = PERCENT_RE.fullmatch(size)
    if m:
        pct = int(m.group(1))
        extents = (vg_size * pct // 100) // extent
        return ThinPoolTarget(extents=min(extents, vg_extents), full=pct >= 100 or extents >= vg_extents)
    wanted = quantity_bytes(size)
    extents = -(-wanted // extent)
    if wanted >= vg_size:
        return ThinPoolTarget(extents=vg_extents, full=True)
    return ThinPoolTarget(extents=extents, full=False)


@dataclass(frozen=True)
class ThinPoolAction:
    kind: str
    """``create``, ``extend``, ``none`` or ``error``."""
    extents: int | None = None
    """Absolute extents for create/extend; None means all free space."""
    message: str = ""


def plan_thin_pool(size: str, *, vg_size: int, vg_free: int, extent: int, current_size: int | None) -> ThinPoolAction:
    """What to do for one pool; a healthy pool never flaps and pools never shrink."""
    target = thin_pool_target(size, vg_size, extent)
    free_extents = vg_free // extent
    is_percent = bool(PERCENT_RE.fullmatch(size))
    if current_size is None:
        if target.full:
            if free_extents <= 0:
                return ThinPoolAction("error", message="the VG has no free extents for the thin pool")
            return ThinPoolAction("create", None)
        if target.extents > free_extents:
            if is_percent:
                return ThinPoolAction("create", None)
            return ThinPoolAction("error", message=f"thin pool size {size} needs {target.extents * extent} bytes but "
                                                   f"the VG has {vg_free} bytes free")
        return ThinPoolAction("create", max(target.extents, 1))
    current_extents = current_size // extent
    if target.full:
        # A 100% pool already fills the VG up to its metadata: grow only when a whole extent is free.
        return ThinPoolAction("extend", None) if free_extents > 0 else ThinPoolAction("none")
    if target.extents <= current_extents:
        return ThinPoolAction("none")  # never shrink; equal is a no-op success
    delta = target.extents - current_extents
    if delta > free_extents:
        if is_percent and free_extents > 0:
            return ThinPoolAction("extend", None)
        if is_percent:
            return ThinPoolAction("none")
        return ThinPoolAction("error", message=f"growing thin pool to {size} needs {delta * extent} more bytes but "
                                               f"the VG has {vg_free} bytes free")
    return ThinPoolAction("extend", target.extents)


def grow_threshold(extent: int) -> int:
    """Grow a file/PV only when the gap exceeds max(extent, 1Mi): rounding never causes churn."""
    return max(extent, MIB)


def file_needs_growth(allocated: int, apparent: int, target: int, extent: int) -> bool:
    return target - min(allocated, apparent) > grow_threshold(extent)


def loop_needs_refresh(loop_size: int, file_size: int, extent: int) -> bool:
    return file_size - loop_size > grow_threshold(extent)


def pv_needs_resize(pv_size: int, dev_size: int, pe_start: int, extent: int) -> bool:
    return dev_size - pe_start - pv_size >= grow_threshold(extent)
