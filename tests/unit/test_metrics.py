"""disklet.metrics: the registry matches docs/metrics.md, and the helpers record real samples."""

from __future__ import annotations

import re
import sys
import urllib.request
from pathlib import Path

import kopf
import pytest

from disklet import metrics
from disklet.hostcmd import HostRunner

DOCS = Path(__file__).resolve().parents[2] / "docs" / "metrics.md"
ROW = re.compile(r"^\|\s*`(disklet_[a-z0-9_]+)`\s*\|\s*(counter|gauge|histogram)\s*\|\s*([^|]*)\|")


def documented_metrics() -> dict[str, tuple[str, set[str]]]:
    rows = {}
    for line in DOCS.read_text().splitlines():
        m = ROW.match(line)
        if m:
            labels = set(re.findall(r"`([a-z_]+)`", m.group(3)))
            rows[m.group(1)] = (m.group(2), labels)
    return rows


def registry_metrics() -> dict[str, tuple[str, set[str]]]:
    out = {}
    for collector in (metrics.RECONCILES, metrics.RECONCILE_SECONDS, metrics.HOST_COMMAND_SECONDS,
                      metrics.HOST_COMMAND_FAILURES, metrics.REFUSALS, metrics.STATUS_WRITES,
                      metrics.MANAGED_LOOP_DEVICES, metrics.VG_SIZE_BYTES, metrics.VG_FREE_BYTES,
                      metrics.THIN_POOL_SIZE_BYTES, metrics.THIN_POOL_USED_BYTES, metrics.THIN_POOL_DATA_PERCENT,
                      metrics.THIN_POOL_METADATA_PERCENT, metrics.THIN_POOL_METADATA_SIZE_BYTES):
        (family,) = collector.describe()
        name = family.name + "_total" if family.type == "counter" else family.name
        out[name] = (family.type, set(metrics.LABEL_NAMES[family.name.removeprefix(metrics.PREFIX + '_')]))
    return out


def sample(name: str, labels: dict[str, str] | None = None) -> float:
    value = metrics.REGISTRY.get_sample_value(name, labels or {})
    return 0.0 if value is None else value


def test_every_documented_metric_is_exported_and_vice_versa():
    documented = documented_metrics()
    assert len(documented) >= 11
    assert set(documented) == metrics.exported_metric_names()


def test_documented_types_and_labels_match_registry():
    assert documented_metrics() == registry_metrics()


def test_all_metric_names_are_prefixed():
    assert all(name.startswith("disklet_") for name in metrics.exported_metric_names())


@pytest.mark.parametrize(("argv", "label"), [
    (["nsenter", "-t", "1", "-m", "-u", "-i", "-n", "-p", "--", "/usr/sbin/lvm", "vgs", "--reportformat", "json"],
     "lvm vgs"),
    (["lvm", "pvcreate", "/dev/loop3"], "lvm pvcreate"),
    (["lvm", "--version"], "lvm"),
    (["/usr/sbin/losetup", "--json", "--list"], "losetup"),
    (["nsenter", "-t", "1", "-m", "--", "lsblk", "-J"], "lsblk"),
    (["vgs", "--noheadings"], "vgs"),
])
def test_command_label(argv, label):
    assert metrics.command_label(argv) == label


def test_observe_host_command_times_real_commands_through_the_runner():
    runner = HostRunner()
    runner.observers.append(metrics.observe_host_command)
    before_count = sample("disklet_host_command_duration_seconds_count", {"command": Path(sys.executable).name})
    before_fail = sample("disklet_host_command_failures_total",
                         {"command": Path(sys.executable).name, "reason": "exit"})
    before_timeout = sample("disklet_host_command_failures_total",
                            {"command": Path(sys.executable).name, "reason": "timeout"})
    assert runner.run([sys.executable, "-c", "pass"]).ok
    assert runner.run([sys.executable, "-c", "raise SystemExit(3)"]).returncode == 3
    assert runner.run([sys.executable, "-c", "import time; time.sleep(5)"], timeout=0.2).timed_out
    name = Path(sys.executable).name
    assert sample("disklet_host_command_duration_seconds_count", {"command": name}) == before_count + 3
    assert sample("disklet_host_command_failures_total", {"command": name, "reason": "exit"}) == before_fail + 1
    assert sample("disklet_host_command_failures_total", {"command": name, "reason": "timeout"}) == before_timeout + 1
    # The sleeping command was killed at ~0.2 s, so the sum grew by at least that much.
    assert sample("disklet_host_command_duration_seconds_sum", {"command": name}) >= 0.2


def test_timed_reconcile_records_results_and_durations():
    kind = "TestKindTimed"
    with metrics.timed_reconcile(kind):
        pass
    with metrics.timed_reconcile(kind) as outcome:
        outcome.result = metrics.REFUSED
    with pytest.raises(kopf.TemporaryError), metrics.timed_reconcile(kind):
        raise kopf.TemporaryError("later", delay=1)
    with pytest.raises(RuntimeError), metrics.timed_reconcile(kind):
        raise RuntimeError("boom")
    for result in (metrics.SUCCESS, metrics.REFUSED, metrics.RETRY, metrics.ERROR):
        assert sample("disklet_reconciles_total", {"kind": kind, "result": result}) == 1, result
    assert sample("disklet_reconcile_duration_seconds_count", {"kind": kind}) == 4


async def test_timed_reconcile_ignores_cancellation():
    import asyncio
    kind = "TestKindCancelled"
    with pytest.raises(asyncio.CancelledError), metrics.timed_reconcile(kind):
        raise asyncio.CancelledError()
    assert sample("disklet_reconcile_duration_seconds_count", {"kind": kind}) == 0


def test_record_reconcile_rejects_unbounded_results():
    with pytest.raises(ValueError):
        metrics.record_reconcile("DiskLayout", "weird", 0.1)


def test_capacity_gauges_set_and_forget():
    metrics.set_vg_capacity("vg-test", "lvg-test", 10 * 1024**3, 4 * 1024**3)
    metrics.set_thin_pool("vg-test", "pool0", 2 * 1024**3, 512 * 1024**2)
    assert sample("disklet_vg_size_bytes", {"vg": "vg-test", "lvg": "lvg-test"}) == 10 * 1024**3
    assert sample("disklet_vg_free_bytes", {"vg": "vg-test", "lvg": "lvg-test"}) == 4 * 1024**3
    assert sample("disklet_thin_pool_used_bytes", {"vg": "vg-test", "pool": "pool0"}) == 512 * 1024**2
    metrics.forget_vg("vg-test", "lvg-test")
    metrics.forget_thin_pool("vg-test", "pool0")
    metrics.forget_vg("vg-test", "lvg-test")  # forgetting twice is harmless
    assert metrics.REGISTRY.get_sample_value("disklet_vg_size_bytes", {"vg": "vg-test", "lvg": "lvg-test"}) is None
    assert metrics.REGISTRY.get_sample_value("disklet_thin_pool_size_bytes", {"vg": "vg-test", "pool": "pool0"}) is None


def test_metrics_server_serves_the_registry():
    metrics.record_refusal("target_device_is_active_lvm_pv")
    metrics.record_status_write("DiskLayout")
    metrics.set_managed_loop_devices(3)
    server = metrics.start_metrics_server(0, addr="127.0.0.1")
    try:
        body = urllib.request.urlopen(f"http://127.0.0.1:{server.server_port}/metrics", timeout=5).read().decode()
    finally:
        server.shutdown()
        server.server_close()
    assert 'disklet_refusals_total{code="target_device_is_active_lvm_pv"}' in body
    assert 'disklet_status_writes_total{kind="DiskLayout"}' in body
    assert "disklet_managed_loop_devices 3.0" in body
    assert "process_cpu_seconds_total" in body
