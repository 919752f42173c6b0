"""Dashboards without code: the kube-state-metrics config matches the CRDs, and every metric the
Grafana dashboard queries exists (ours from docs/metrics.md, or one the kube-state-metrics config defines)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml

from disklet.api.disklayout import Phase
from disklet.api.lvm import LVGPhase

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "disklet"
DASHBOARD = CHART / "dashboards" / "disklet.json"
KSM_CONFIG = CHART / "files" / "kube-state-metrics-customresourcestate.yaml"
METRICS_DOC = ROOT / "docs" / "metrics.md"
HELM_DOC = ROOT / "docs" / "helm.md"

PROMQL_KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "bool", "and", "or",
                   "unless", "offset", "inf", "nan"}


def our_metric_names() -> set[str]:
    """Series names our processes export, from the docs/metrics.md table (histograms expanded)."""
    names = set()
    for m in re.finditer(r"^\|\s*`(disklet_[a-z0-9_]+)`\s*\|\s*(counter|gauge|histogram)\s*\|",
                         METRICS_DOC.read_text(), re.MULTILINE):
        name, kind = m.groups()
        names.add(name)
        if kind == "histogram":
            names.update({f"{name}_bucket", f"{name}_sum", f"{name}_count"})
    assert names, "docs/metrics.md lists no metrics"
    return names


def ksm_config() -> dict:
    return yaml.safe_load(KSM_CONFIG.read_text())


def ksm_metric_names() -> set[str]:
    names = set()
    for resource in ksm_config()["spec"]["resources"]:
        prefix = resource.get("metricNamePrefix", "kube_customresource")
        for metric in resource["metrics"]:
            names.add(f"{prefix}_{metric['name']}" if prefix else metric["name"])
    return names


def promql_metric_names(expr: str) -> set[str]:
    """Metric names in a PromQL expression: identifiers that are not functions, keywords or labels."""
    e = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)                          # string literals
    e = re.sub(r"\{[^}]*\}", "", e)                                      # label matchers
    e = re.sub(r"\[[^\]]*\]", "", e)                                     # range selectors
    e = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", e)  # label lists
    names = set()
    for m in re.finditer(r"(?<![\w$.])([a-zA-Z_:][a-zA-Z0-9_:]*)", e):
        ident = m.group(1)
        rest = e[m.end():].lstrip()
        if rest.startswith("(") or ident.lower() in PROMQL_KEYWORDS:
            continue  # a function call or a keyword
        names.add(ident)
    return names


def dashboard() -> dict:
    return json.loads(DASHBOARD.read_text())


def all_panels(panels: list[dict]) -> list[dict]:
    out = []
    for p in panels:
        out.append(p)
        out.extend(all_panels(p.get("panels", [])))
    return out


def dashboard_queries() -> list[str]:
    queries = [t["expr"] for p in all_panels(dashboard()["panels"]) for t in p.get("targets", [])]
    for var in dashboard()["templating"]["list"]:
        if var["type"] == "query":
            query = var["query"]["query"] if isinstance(var["query"], dict) else var["query"]
            m = re.fullmatch(r"label_values\((\w+),\s*(\w+)\)", query)
            r = re.fullmatch(r"query_result\((.+)\)", query)
            assert m or r, f"unsupported variable query {query!r}"
            queries.append(m.group(1) if m else r.group(1))  # type: ignore[union-attr]
    return queries


@pytest.mark.parametrize(("expr", "names"), [
    ('sum by (code) (increase(disklet_refusals_total{node=~"$node"}[$__range]))', {"disklet_refusals_total"}),
    ("histogram_quantile(0.95, sum by (le, kind) (rate(x_bucket[5m])))", {"x_bucket"}),
    ("a / on (vg) group_left b", {"a", "b"}),
    ('kube_x{phase=~"refused|failed"} == 1', {"kube_x"}),
])
def test_promql_metric_names(expr, names):
    assert promql_metric_names(expr) == names


def test_dashboard_is_valid_grafana_json():
    d = dashboard()
    assert d["title"] and d["uid"] == "disklet-overview"
    panels = all_panels(d["panels"])
    ids = [p["id"] for p in panels]
    assert len(ids) == len(set(ids)), "panel ids are unique"
    for p in panels:
        if p["type"] == "row":
            continue
        assert p["targets"], p["title"]
        assert p["datasource"]["uid"] == "${datasource}", p["title"]
        assert {"h", "w", "x", "y"} <= set(p["gridPos"])
    titles = " ".join(p["title"].lower() for p in panels)
    for topic in ("refusals by code", "phase per node", "vg size", "reconcile rate", "reconcile duration",
                  "host command duration"):
        assert topic in titles, topic


def test_every_dashboard_metric_is_exported_or_defined():
    known = our_metric_names() | ksm_metric_names()
    used: set[str] = set()
    for expr in dashboard_queries():
        names = promql_metric_names(expr)
        assert names, f"no metric in {expr!r}"
        unknown = names - known
        assert not unknown, f"{expr!r} uses metrics nobody exports: {sorted(unknown)}"
        used |= names
    # The dashboard shows both sources: our own metrics and the kube-state-metrics CR state.
    assert used & ksm_metric_names() and used & our_metric_names()


def test_dashboard_check_can_fail():
    assert "disklet_not_a_metric" not in our_metric_names() | ksm_metric_names()
    assert promql_metric_names("rate(disklet_not_a_metric[5m])") == {"disklet_not_a_metric"}


def crd_schema(kind: str) -> dict:
    for path in (CHART / "files" / "crds").glob("disklet.io_*.yaml"):
        crd = yaml.safe_load(path.read_text())
        if crd["spec"]["names"]["kind"] == kind:
            return crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    raise AssertionError(f"no CRD for {kind}")


def schema_at(schema: dict, path: list[str]) -> dict:
    node = schema
    for part in path:
        if node.get("type") == "array":
            node = node["items"]
        if part in ("name", "namespace", "labels", "annotations") and "properties" not in node:
            return {"type": "string"}  # metadata is not in CRD schemas
        props = node.get("properties")
        assert props and part in props, f"{path}: no field {part!r}"
        node = props[part]
    return node


def test_ksm_config_paths_exist_in_the_crds():
    for resource in ksm_config()["spec"]["resources"]:
        gvk = resource["groupVersionKind"]
        assert gvk["group"] == "disklet.io" and gvk["version"] == "v1alpha1"
        schema = crd_schema(gvk["kind"])
        for label, path in resource.get("labelsFromPath", {}).items():
            if path[0] != "metadata":
                assert schema_at(schema, path).get("type") == "string", (gvk["kind"], label)
        for metric in resource["metrics"]:
            each = metric["each"]
            spec = each[{"Gauge": "gauge", "StateSet": "stateSet", "Info": "info"}[each["type"]]]
            base = spec.get("path", [])
            node = schema_at(schema, base) if base else schema
            for rel in (spec.get("labelsFromPath") or {}).values():
                schema_at(node if base else schema, rel)
            if "valueFrom" in spec:
                schema_at(node, spec["valueFrom"])


def test_ksm_phase_lists_match_the_api_enums():
    lists = {}
    for resource in ksm_config()["spec"]["resources"]:
        for metric in resource["metrics"]:
            if metric["each"]["type"] == "StateSet":
                lists[resource["groupVersionKind"]["kind"]] = metric["each"]["stateSet"]["list"]
    assert lists["DiskLayout"] == [p.value for p in Phase]
    assert lists["LVMVolumeGroup"] == [p.value for p in LVGPhase]


def test_ksm_config_exports_what_the_brief_needs():
    names = ksm_metric_names()
    for needed in ("kube_disklet_disklayout_phase", "kube_disklet_disklayout_status",
                   "kube_disklet_lvmvolumegroup_phase", "kube_disklet_lvmvolumegroup_condition",
                   "kube_disklet_lvmvolumegroup_vg_size_bytes", "kube_disklet_lvmvolumegroup_vg_free_bytes",
                   "kube_disklet_lvmvolumegroup_allocated_bytes"):
        assert needed in names
    by_kind = {r["groupVersionKind"]["kind"]: r for r in ksm_config()["spec"]["resources"]}
    assert by_kind["DiskLayout"]["labelsFromPath"]["node"] == ["spec", "nodeName"]
    info = next(m for m in by_kind["DiskLayout"]["metrics"] if m["each"]["type"] == "Info")
    assert info["each"]["info"]["labelsFromPath"]["refusal_reason"] == ["status", "refusalReason"]


def test_every_ksm_metric_is_documented():
    doc = HELM_DOC.read_text()
    for name in ksm_metric_names():
        assert f"`{name}`" in doc, f"docs/helm.md does not list {name}"


def test_node_variable_is_filled_from_every_per_node_kind():
    """An LVM-only (or BlockDevice-only) cluster still lists its nodes."""
    [var] = [v for v in dashboard()["templating"]["list"] if v["name"] == "node"]
    query = var["query"]["query"] if isinstance(var["query"], dict) else var["query"]
    names = promql_metric_names(re.fullmatch(r"query_result\((.+)\)", query).group(1))  # type: ignore[union-attr]
    kinds = {r["groupVersionKind"]["kind"]: r for r in ksm_config()["spec"]["resources"]}
    for kind in ("DiskLayout", "LVMVolumeGroup", "BlockDevice"):
        assert "node" in kinds[kind]["labelsFromPath"], kind
        prefix = kinds[kind]["metricNamePrefix"]
        assert names & {f"{prefix}_{m['name']}" for m in kinds[kind]["metrics"]}, f"$node misses {kind}"
    assert names & our_metric_names(), "and the agents' own metrics"
    assert var["regex"] == '/node="([^"]+)"/'


def test_docs_metrics_md_names_exactly_the_shipped_ksm_metrics():
    doc = (ROOT / "docs" / "metrics.md").read_text()
    documented = {n for n in re.findall(r"\bkube_[a-z_]+\b", doc) if not n.endswith("_")}  # not prefixes
    assert documented == ksm_metric_names(), (sorted(documented - ksm_metric_names()),
                                              sorted(ksm_metric_names() - documented))
