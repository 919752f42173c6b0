"""Thin pools for real: the agent's LVM engine on real disks with device-mapper and activation on.

Proves what the host tier cannot (no device-mapper there): a pool is created at the size the
sizing rules give, is active, its data and metadata percentages in status are the kernel's own
(read back from ``lvs``), a thin LV really filled raises ``ThinPoolNearlyFull``, metadata fullness
is judged from the real metadata percentage, the pool grows with its VG, and the recorded ``lvs``
report the unit tests use has the shape the real ``lvs`` prints.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from disklet_agent.host.lvm import LV_COLUMNS
from disklet_agent.lvm.engine import HostLvgEngine

from devkit.vm import Disk
from disklet.api.common import get_condition
from disklet.api.lvm import LocalSpec, LVMVolumeGroupSpec, LVMVolumeGroupStatus, ThinPool
from disklet.lvm.sizing import thin_pool_target
from disklet.lvm.thinpool import DATA_NEARLY_FULL, METADATA_NEARLY_FULL, parse_lvs_report
from tests.vm.conftest import NODE, RUNNER, agent_config, block_device_names, disk, lvm_report, sh

VM_DISKS = (
    Disk("nvme", size="2Gi", serial="TPNVME01"),
    Disk("scsi", size="2Gi", serial="TPSCSI01", wwn="0x5000c500aa000001", rotational=True),
)
RECORDED = Path(__file__).resolve().parents[1] / "unit" / "lvs_reports" / "thin-pools.json"


def spec(vg: str, *pools: tuple[str, str]) -> LVMVolumeGroupSpec:
    return LVMVolumeGroupSpec(local=LocalSpec(node_name=NODE), actual_vg_name_on_the_node=vg,
                              block_device_selector={"matchLabels": {"disklet.io/test": vg}},
                              thin_pools=[ThinPool(name=n, size=s) for n, s in pools])


def pool_row(vg: str, pool: str) -> dict[str, str]:
    rows = lvm_report("lvs", "--select", f"vg_name={vg} && lv_name={pool}",
                      columns="lv_name,lv_size,lv_attr,data_percent,metadata_percent,chunk_size,lv_metadata_size,"
                              "segtype")
    assert len(rows) == 1, rows
    return rows[0]


def settled_pool_row(vg: str, pool: str, tries: int = 30) -> dict[str, str]:
    """The pool's row once its figures stop moving: after writes, dm-thin commits its metadata within
    about a second (its commit period), and the metadata percentage read before that commit differs
    from the one after it (12.3 then 11.72 in one run). Two equal reads a second apart = settled."""
    row = pool_row(vg, pool)
    for _ in range(tries):
        time.sleep(1.0)
        again = pool_row(vg, pool)
        if (again["data_percent"], again["metadata_percent"]) == (row["data_percent"], row["metadata_percent"]):
            return again
        row = again
    raise AssertionError(f"thin pool {vg}/{pool} figures still moving after {tries} s: {row}")


def vg_row(vg: str) -> dict[str, str]:
    [row] = lvm_report("vgs", "--select", f"vg_name={vg}", columns="vg_name,vg_size,vg_free,vg_extent_size,pv_count")
    return row


@pytest.fixture
def engine(tmp_path):
    """The agent's LVM engine on the guest's real LVM (closed after the test)."""
    eng = HostLvgEngine(RUNNER, agent_config(tmp_path))
    try:
        yield eng
    finally:
        eng.close()


def taken(wipe: list[str], *serials: str) -> list[tuple[str, str]]:
    """(BlockDevice name, device path) of the disks with these serials, wiped after the test."""
    devices = [disk(serial) for serial in serials]
    wipe.extend(devices)
    names = block_device_names()
    return [(names[dev], dev) for dev in devices]


def assert_ok(status: LVMVolumeGroupStatus) -> None:
    bad = [c for c in status.conditions or [] if c.type in ("VGConfigurationApplied", "VGReady") and c.status != "True"]
    assert not bad, [c.model_dump() for c in bad]


def test_pool_is_created_active_at_the_sized_extents_with_real_percentages(wipe, engine):
    [(bd, nvme)] = taken(wipe, "TPNVME01")
    out = engine.reconcile("lvg-tp", spec("vgtp", ("tp", "50%")), None, [(bd, nvme)])
    assert_ok(out.status)
    vg = vg_row("vgtp")
    extent = int(vg["vg_extent_size"])
    row = pool_row("vgtp", "tp")
    # the sizing rule: 50% of the VG, rounded down to whole extents
    assert int(row["lv_size"]) == thin_pool_target("50%", int(vg["vg_size"]), extent).extents * extent
    assert row["segtype"] == "thin-pool" and row["lv_attr"][0] == "t" and row["lv_attr"][4] == "a", row
    table = sh("dmsetup", "table")
    assert any(line.startswith("vgtp-tp") and " thin-pool " in line for line in table.splitlines()), table
    [tp] = out.status.thin_pools or []
    assert tp.ready and tp.data_percent == float(row["data_percent"]) == 0.0
    assert tp.metadata_percent == float(row["metadata_percent"]) and tp.metadata_percent > 0
    assert tp.chunk_size is not None and int(row["chunk_size"]) > 0
    assert get_condition(out.status.conditions, DATA_NEARLY_FULL).status == "False"
    # the same spec again: nothing to do on the host
    again = engine.reconcile("lvg-tp", spec("vgtp", ("tp", "50%")), out.status, [(bd, nvme)])
    assert not again.host_changed and int(pool_row("vgtp", "tp")["lv_size"]) == int(row["lv_size"])


def test_a_really_filled_thin_lv_raises_the_nearly_full_conditions(tmp_path, wipe, engine):
    [(bd, nvme)] = taken(wipe, "TPNVME01")
    out = engine.reconcile("lvg-fill", spec("vgfill", ("tp", "128Mi")), None, [(bd, nvme)])
    assert_ok(out.status)
    sh("lvcreate", "--yes", "-q", "--type", "thin", "--virtualsize", "256M", "--thinpool", "tp", "--name", "vol",
       "--", "vgfill")
    # 116 MiB of 128: about 90 % of the pool's data, written through the active thin LV
    sh("dd", "if=/dev/zero", "of=/dev/vgfill/vol", "bs=1M", "count=116", "oflag=direct", "status=none")
    row = settled_pool_row("vgfill", "tp")
    data, meta = float(row["data_percent"]), float(row["metadata_percent"])
    assert data >= 85.0, row
    st = engine.reconcile("lvg-fill", spec("vgfill", ("tp", "128Mi")), out.status, [(bd, nvme)]).status
    [tp] = st.thin_pools or []
    assert (tp.data_percent, tp.metadata_percent) == (data, meta), "status must carry the kernel's figures"
    full = get_condition(st.conditions, DATA_NEARLY_FULL)
    assert full.status == "True" and "tp" in full.message, full
    assert get_condition(st.conditions, METADATA_NEARLY_FULL).status == "False"
    # Filling metadata for real takes gigabytes of writes; the judgement of the real metadata
    # percentage is proven with thresholds around the kernel's figure.
    assert meta > 0
    # The kernel's metadata figure moves a little between reads (the pool commits its metadata):
    # the threshold is half of it for "at or above", one point over it for "below".
    at = HostLvgEngine(RUNNER, agent_config(tmp_path, thin_pool_metadata_threshold_percent=meta / 2))
    above = HostLvgEngine(RUNNER, agent_config(tmp_path, thin_pool_metadata_threshold_percent=min(meta + 1, 100)))
    try:
        st_at = at.reconcile("lvg-fill", spec("vgfill", ("tp", "128Mi")), st, [(bd, nvme)]).status
        st_above = above.reconcile("lvg-fill", spec("vgfill", ("tp", "128Mi")), st, [(bd, nvme)]).status
    finally:
        at.close()
        above.close()
    assert get_condition(st_at.conditions, METADATA_NEARLY_FULL).status == "True", (meta, st_at.thin_pools)
    assert get_condition(st_above.conditions, METADATA_NEARLY_FULL).status == "False"


def test_pool_grows_with_its_size_and_with_the_vg(wipe, engine):
    (bd_nvme, nvme), (bd_scsi, scsi) = taken(wipe, "TPNVME01", "TPSCSI01")
    st = engine.reconcile("lvg-grow", spec("vggrow", ("tp", "40%")), None, [(bd_nvme, nvme)]).status
    assert_ok(st)
    sh("lvcreate", "--yes", "-q", "--type", "thin", "--virtualsize", "64M", "--thinpool", "tp", "--name", "vol",
       "--", "vggrow")
    sh("mkfs.ext4", "-q", "/dev/vggrow/vol")
    first = int(pool_row("vggrow", "tp")["lv_size"])
    st = engine.reconcile("lvg-grow", spec("vggrow", ("tp", "80%")), st, [(bd_nvme, nvme)]).status
    assert_ok(st)
    vg = vg_row("vggrow")
    extent = int(vg["vg_extent_size"])
    second = int(pool_row("vggrow", "tp")["lv_size"])
    assert second == thin_pool_target("80%", int(vg["vg_size"]), extent).extents * extent > first
    both = [(bd_nvme, nvme), (bd_scsi, scsi)]
    st = engine.reconcile("lvg-grow", spec("vggrow", ("tp", "80%")), st, both).status
    assert_ok(st)
    vg = vg_row("vggrow")
    assert vg["pv_count"] == "2"
    third = int(pool_row("vggrow", "tp")["lv_size"])
    assert third == thin_pool_target("80%", int(vg["vg_size"]), extent).extents * extent > second
    [tp] = st.thin_pools or []
    assert tp.ready and tp.actual_size is not None
    sh("fsck.ext4", "-n", "/dev/vggrow/vol")  # the thin LV on the grown pool is intact


def test_the_recorded_lvs_report_has_the_real_reports_shape(wipe, engine):
    """tests/unit/test_thinpool.py judges a recorded report: the real lvs must print the same shape."""
    [(bd, nvme)] = taken(wipe, "TPNVME01")
    engine.reconcile("lvg-rec", spec("vgrec", ("tp", "25%"), ("tp2", "25%")), None, [(bd, nvme)])
    sh("lvcreate", "--yes", "-q", "--type", "thin", "--virtualsize", "32M", "--thinpool", "tp", "--name", "vol",
       "--", "vgrec")
    sh("lvchange", "-an", "--", "vgrec/tp2")  # the recording has an inactive pool: make one for real
    argv = ["lvs", "--reportformat", "json", "--units", "b", "--nosuffix", "-o", ",".join(LV_COLUMNS), "--", "vgrec"]
    real = json.loads(sh(*argv))
    recorded = json.loads(RECORDED.read_text(encoding="utf-8"))
    rows = {r["lv_name"]: r for s in real["report"] for r in s["lv"]}
    rec = {r["lv_name"]: r for s in recorded["report"] for r in s["lv"]}
    # The recording was taken through the lvm shell the agent runs, which adds its command "log"
    # section next to "report"; a plain lvs prints "report" only.
    assert set(real) <= set(recorded) == {"report", "log"}, (set(real), set(recorded))
    assert set(rows["tp"]) == set(rec["tp"]) == set(LV_COLUMNS), "report columns differ"
    by_role = {"active pool": (rows["tp"], rec["tp"]), "thin volume": (rows["vol"], rec["pvc-0a1b2c"]),
               "inactive pool": (rows["tp2"], rec["inactive-pool"])}
    for role, (r, expected) in by_role.items():
        for key, value in expected.items():
            got = r[key]
            assert (got == "") == (value == ""), f"{role} {key}: real {got!r}, recorded {value!r}"
            if key.endswith("percent") and value:
                assert got.count(".") == 1 and len(got.split(".")[1]) == 2, f"{role} {key}: {got!r}"
            if key in ("lv_size", "chunk_size", "lv_metadata_size") and value:
                assert got.isdigit(), f"{role} {key}: {got!r} (bytes, no suffix)"
        assert r["segtype"] == expected["segtype"] and r["lv_attr"][0] == expected["lv_attr"][0], role
        assert r["lv_attr"][4] == expected["lv_attr"][4], f"{role} activation attr: {r['lv_attr']!r}"
    pools = {p.name: p for p in parse_lvs_report(json.dumps(real))}
    assert sorted(pools) == ["tp", "tp2"] and pools["tp2"].data_percent is None
    assert pools["tp"].data_percent == 0.0 and pools["tp"].metadata_percent is not None
    assert pytest.approx(pools["tp"].chunk_size) == int(rows["tp"]["chunk_size"])
