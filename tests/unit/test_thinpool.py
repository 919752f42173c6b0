"""Thin-pool health from recorded ``lvs`` reports (no device-mapper here: the reports are recorded
in the JSON shape lvm2 2.03 prints for ``lvs --reportformat json --units b --nosuffix``)."""

from __future__ import annotations

from pathlib import Path

from disklet_agent.host.lvm import LV_COLUMNS, parse_lvs
from disklet_agent.lvm.discovery import discover_status

from disklet.api.common import Condition
from disklet.api.lvm import LVMVolumeGroupSpec
from disklet.lvm.thinpool import (
    DATA_NEARLY_FULL,
    LV_HEALTH_COLUMNS,
    METADATA_NEARLY_FULL,
    Thresholds,
    fullness_conditions,
    parse_lvs_report,
)

REPORT = (Path(__file__).parent / "lvs_reports" / "thin-pools.json").read_text()


def test_every_thin_pool_is_parsed_with_data_metadata_chunk_and_metadata_size():
    pools = {p.name: p for p in parse_lvs_report(REPORT)}
    assert sorted(pools) == ["inactive-pool", "tp", "tp-meta-heavy"], "thin volumes are not pools"
    tp = pools["tp"]
    assert (tp.vg, tp.data_percent, tp.metadata_percent, tp.chunk_size, tp.metadata_size) == \
        ("vg-data", 91.37, 12.04, 65536, 12582912)
    assert pools["tp-meta-heavy"].metadata_percent == 88.52
    inactive = pools["inactive-pool"]
    assert inactive.data_percent is None and inactive.metadata_percent is None, "inactive: unknown, not 0"
    assert inactive.chunk_size == 65536


def test_the_agent_asks_for_the_health_columns_in_its_one_lvs_report():
    assert set(LV_HEALTH_COLUMNS) <= set(LV_COLUMNS)
    lvs = {lv.name: lv for lv in parse_lvs(REPORT)}
    assert lvs["tp"].fill is not None and lvs["tp"].fill.metadata_percent == 12.04
    assert lvs["pvc-0a1b2c"].fill is None


DEFAULTS = Thresholds()


def _conds(pools, thresholds=DEFAULTS, old=()):
    return {c.type: c for c in fullness_conditions(list(old), pools, thresholds, 4, now="T")}


def test_conditions_above_and_below_thresholds():
    pools = parse_lvs_report(REPORT)
    c = _conds(pools)
    assert (c[DATA_NEARLY_FULL].status, c[DATA_NEARLY_FULL].reason) == ("True", "AboveThreshold")
    assert "tp" in c[DATA_NEARLY_FULL].message and "tp-meta-heavy" not in c[DATA_NEARLY_FULL].message
    assert c[METADATA_NEARLY_FULL].status == "True" and "tp-meta-heavy" in c[METADATA_NEARLY_FULL].message
    relaxed = _conds(pools, Thresholds(data_percent=95, metadata_percent=90))
    assert relaxed[DATA_NEARLY_FULL].status == "False" and relaxed[METADATA_NEARLY_FULL].status == "False"
    at = _conds(pools, Thresholds(data_percent=91.37, metadata_percent=100))
    assert at[DATA_NEARLY_FULL].status == "True", "at the threshold counts"


def test_no_churn_and_no_conditions_without_known_pools():
    pools = parse_lvs_report(REPORT)
    first = fullness_conditions([], pools, Thresholds(), 4, now="T1")
    again = fullness_conditions(first, pools, Thresholds(), 4, now="T2")
    assert again == first, "same verdict: nothing rewritten, lastTransitionTime kept"
    other = Condition(type="VGReady", status="True", reason="Applied", last_transition_time="T")
    assert fullness_conditions([other, *first], [], Thresholds(), 4) == [other], "pools gone: conditions removed"
    inactive = [p for p in pools if p.name == "inactive-pool"]
    assert fullness_conditions([other], inactive, Thresholds(), 4) == [other], "unknown fill: no verdict"


def test_status_carries_the_figures(monkeypatch):
    """discover_status puts the parsed fill into status.thinPools (what gauges and alerts read)."""
    from disklet_agent.host.lvm import VG
    from disklet_agent.lvm.snapshot import LvmSnapshot

    lvs = [lv for lv in parse_lvs(REPORT) if lv.vg_name == "vg-data"]
    vg = VG(name="vg-data", uuid=lvs[0].vg_uuid, size=20 * 2**30, free=2**30, extent_size=4 * 2**20,
            tags=("disklet.io/owner=x",), pv_count=0, lv_count=3, missing_pv_count=0)
    snap = LvmSnapshot(lvs=lvs)
    spec = LVMVolumeGroupSpec.model_validate({"local": {"nodeName": "n"}, "actualVGNameOnTheNode": "vg-data",
                                              "blockDeviceSelector": {}, "thinPools": [{"name": "tp", "size": "50%"}]})
    st = discover_status("x", spec, snap, "n", vg)
    tp = st.thin_pools[0]
    assert (tp.data_percent, tp.metadata_percent, tp.chunk_size, tp.metadata_size) == (91.37, 12.04, "64Ki", "12Mi")
