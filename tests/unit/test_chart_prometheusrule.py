"""The chart's PrometheusRule: off by default, one value turns it on, and every alert reads a metric
that disklet (docs/metrics.md), the shipped kube-state-metrics config or kube-state-metrics itself exports."""

from __future__ import annotations

import re

import yaml
from test_chart_support import CHART, by_kind, env_of, one, render

from disklet import metrics

ALERTS = {"DiskletThinPoolDataNearlyFull", "DiskletThinPoolMetadataNearlyFull", "DiskletVolumeGroupNearlyFull",
          "DiskletLVMVolumeGroupNotReady", "DiskletDiskLayoutRefusedOrFailed", "DiskletAgentMissing"}


def _ksm_metric_names() -> set[str]:
    cfg = yaml.safe_load((CHART / "files" / "kube-state-metrics-customresourcestate.yaml").read_text())
    return {f"{r['metricNamePrefix']}_{m['name']}" for r in cfg["spec"]["resources"] for m in r["metrics"]}


def test_off_by_default_and_one_value_enables_it():
    assert not by_kind(render(), "PrometheusRule")
    docs = render("metrics.prometheusRule.enabled=true", "kubeStateMetrics.customResourceState.enabled=true")
    (rule,) = by_kind(docs, "PrometheusRule")
    alerts = {r["alert"]: r for g in rule["spec"]["groups"] for r in g["rules"]}
    assert set(alerts) == ALERTS
    known = metrics.exported_metric_names() | _ksm_metric_names()
    for name, r in alerts.items():
        used = set(re.findall(r"\b((?:disklet|kube_disklet|kube_daemonset)_[a-z_]+)", r["expr"]))
        assert used, name
        assert all(m in known or m.startswith("kube_daemonset_status_") for m in used), (name, used)
        assert "{{ $labels" in r["annotations"]["summary"] or "{{ $value" in r["annotations"]["summary"], name


def test_thresholds_reach_the_alerts_and_the_agent():
    docs = render("metrics.prometheusRule.enabled=true", "agent.thinPool.dataThresholdPercent=90",
                  "agent.thinPool.metadataThresholdPercent=60")
    (rule,) = by_kind(docs, "PrometheusRule")
    exprs = {r["alert"]: r["expr"] for g in rule["spec"]["groups"] for r in g["rules"]}
    assert exprs["DiskletThinPoolDataNearlyFull"].endswith(">= 90")
    assert exprs["DiskletThinPoolMetadataNearlyFull"].endswith(">= 60")
    env = env_of(one(docs, "DaemonSet")["spec"]["template"]["spec"]["containers"][0])
    assert env["DISKLET_THIN_POOL_DATA_THRESHOLD_PERCENT"] == "90"
    assert env["DISKLET_THIN_POOL_METADATA_THRESHOLD_PERCENT"] == "60"
