"""Thin-pool sizing (docs/design/lvm.md rule 12) and growth thresholds (rule 6)."""

from __future__ import annotations

import pytest

from disklet.lvm.sizing import (
    file_needs_growth,
    plan_thin_pool,
    pv_needs_resize,
    thin_pool_target,
)

MI = 1024**2
GI = 1024**3
EXT = 4 * MI


def test_percent_rounds_down_to_whole_extents() -> None:
    vg = 10 * GI + 3 * MI  # not extent aligned (raw sum of devices)
    t = thin_pool_target("50%", vg, EXT)
    assert t.extents == (vg * 50 // 100) // EXT and not t.full
    assert t.extents * EXT <= vg * 50 // 100


def test_two_half_pools_fit_the_vg() -> None:
    vg = 10 * GI + 3 * MI
    assert 2 * thin_pool_target("50%", vg, EXT).extents <= vg // EXT


def test_absolute_rounds_up() -> None:
    t = thin_pool_target("5Mi", 10 * GI, EXT)
    assert t.extents == 2 and not t.full


def test_hundred_percent_and_oversized_absolute_use_all_free_space() -> None:
    assert thin_pool_target("100%", 10 * GI + 1, EXT).full
    assert thin_pool_target("10Gi", 10 * GI, EXT).full
    assert thin_pool_target("20Gi", 10 * GI, EXT).full


def test_hundred_percent_pool_fits_on_create() -> None:
    a = plan_thin_pool("100%", vg_size=GI - 4 * MI, vg_free=GI - 4 * MI, extent=EXT, current_size=None)
    assert (a.kind, a.extents) == ("create", None)


def test_full_pool_no_free_extents_is_a_noop_not_a_flap() -> None:
    a = plan_thin_pool("100%", vg_size=10 * GI, vg_free=0, extent=EXT, current_size=10 * GI - 8 * MI)
    assert a.kind == "none"
    a = plan_thin_pool("100%", vg_size=10 * GI, vg_free=2 * MI, extent=EXT, current_size=10 * GI - 8 * MI)
    assert a.kind == "none"


def test_full_pool_grows_into_added_capacity() -> None:
    a = plan_thin_pool("100%", vg_size=20 * GI, vg_free=10 * GI, extent=EXT, current_size=10 * GI)
    assert (a.kind, a.extents) == ("extend", None)


def test_pools_never_shrink_and_equal_is_noop() -> None:
    assert plan_thin_pool("1Gi", vg_size=10 * GI, vg_free=GI, extent=EXT, current_size=2 * GI).kind == "none"
    assert plan_thin_pool("2Gi", vg_size=10 * GI, vg_free=GI, extent=EXT, current_size=2 * GI).kind == "none"
    assert plan_thin_pool("10%", vg_size=10 * GI, vg_free=GI, extent=EXT, current_size=2 * GI).kind == "none"


def test_absolute_grow_to_exact_extents() -> None:
    a = plan_thin_pool("3Gi", vg_size=10 * GI, vg_free=5 * GI, extent=EXT, current_size=2 * GI)
    assert (a.kind, a.extents) == ("extend", 3 * GI // EXT)


def test_absolute_that_does_not_fit_is_an_error_with_numbers() -> None:
    a = plan_thin_pool("6Gi", vg_size=10 * GI, vg_free=1 * GI, extent=EXT, current_size=None)
    assert a.kind == "error" and str(1 * GI) in a.message


def test_percent_larger_than_free_takes_the_free_space() -> None:
    a = plan_thin_pool("90%", vg_size=10 * GI, vg_free=5 * GI, extent=EXT, current_size=None)
    assert (a.kind, a.extents) == ("create", None)


@pytest.mark.parametrize(("allocated", "apparent", "target", "grow"), [
    (GI, GI, GI, False),
    (GI, GI, GI + MI, False),          # within max(extent, 1Mi)
    (GI, GI, GI + 5 * MI, True),
    (GI // 2, GI, GI, True),           # sparse: allocated bytes count, not the apparent size
])
def test_file_growth_threshold(allocated: int, apparent: int, target: int, grow: bool) -> None:
    assert file_needs_growth(allocated, apparent, target, EXT) is grow


def test_pv_resize_threshold() -> None:
    assert not pv_needs_resize(GI - 4 * MI, GI, MI, EXT)
    assert pv_needs_resize(GI - 4 * MI, 2 * GI, MI, EXT)
