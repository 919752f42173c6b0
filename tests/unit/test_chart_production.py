"""Chart items a production install needs: PDB, overridable securityContexts, agent updateStrategy,
probes on by default, CRDs as templates (upgraded by `helm upgrade`, kept on uninstall), PodMonitor."""

from __future__ import annotations

import pytest
import yaml

from tests.unit.test_chart_support import CHART, ROOT, by_kind, one, render, template

PEERED = ("operator.replicaCount=2", "operator.peering.enabled=true")


def _container(doc: dict, name: str) -> dict:
    return next(c for c in doc["spec"]["template"]["spec"]["containers"] if c["name"] == name)


def test_operator_pdb_only_with_more_than_one_replica():
    assert not by_kind(render(), "PodDisruptionBudget")
    pdb = one(render(*PEERED), "PodDisruptionBudget")
    dep = one(render(*PEERED), "Deployment")
    assert pdb["spec"]["minAvailable"] == 1
    assert pdb["spec"]["selector"]["matchLabels"].items() <= dep["spec"]["template"]["metadata"]["labels"].items()
    assert not by_kind(render(*PEERED, "operator.podDisruptionBudget.enabled=false"), "PodDisruptionBudget")


def test_security_contexts_are_values_for_both_workloads():
    docs = render()
    dep, ds = one(docs, "Deployment"), one(docs, "DaemonSet")
    assert dep["spec"]["template"]["spec"]["securityContext"]["runAsNonRoot"] is True
    assert _container(dep, "operator")["securityContext"]["readOnlyRootFilesystem"] is True
    assert _container(ds, "agent")["securityContext"] == {"privileged": True, "runAsUser": 0}
    docs = render(values={"operator": {"podSecurityContext": {"runAsUser": 20000, "runAsGroup": None, "fsGroup": None,
                                                              "seccompProfile": None},
                                       "securityContext": {"readOnlyRootFilesystem": None, "capabilities": None}},
                          "agent": {"podSecurityContext": {"seccompProfile": {"type": "Unconfined"}},
                                    "securityContext": {"privileged": True, "runAsUser": 0,
                                                        "seLinuxOptions": {"type": "spc_t"}}}})
    dep, ds = one(docs, "Deployment"), one(docs, "DaemonSet")
    assert dep["spec"]["template"]["spec"]["securityContext"] == {"runAsUser": 20000, "runAsNonRoot": True}
    assert _container(dep, "operator")["securityContext"] == {"allowPrivilegeEscalation": False}
    dep = one(render(values={"operator": {"podSecurityContext": None}}), "Deployment")
    assert "securityContext" not in dep["spec"]["template"]["spec"]
    assert ds["spec"]["template"]["spec"]["securityContext"] == {"seccompProfile": {"type": "Unconfined"}}
    assert _container(ds, "agent")["securityContext"]["seLinuxOptions"] == {"type": "spc_t"}


def test_agent_update_strategy_is_a_value():
    ds = one(render(), "DaemonSet")
    assert ds["spec"]["updateStrategy"] == {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 1}}
    ds = one(render("agent.updateStrategy.rollingUpdate.maxUnavailable=10%"), "DaemonSet")
    assert ds["spec"]["updateStrategy"]["rollingUpdate"]["maxUnavailable"] == "10%"
    proc = template("agent.updateStrategy.type=Sometimes", check=False)
    assert proc.returncode != 0 and "updateStrategy" in proc.stderr


def test_agent_probes_on_by_default_on_ports_served_before_host_work():
    ds = one(render(), "DaemonSet")
    agent = _container(ds, "agent")
    ports = {p["name"]: p["containerPort"] for p in agent["ports"]}
    assert agent["livenessProbe"]["httpGet"] == {"path": "/metrics", "port": "metrics"}
    assert agent["readinessProbe"]["httpGet"] == {"path": "/healthz", "port": "health"}
    env = {e["name"]: e.get("value") for e in agent["env"]}
    assert env["DISKLET_LIVENESS_ENDPOINT"] == f"http://0.0.0.0:{ports['health']}/healthz"
    assert env["DISKLET_METRICS_PORT"] == str(ports["metrics"])
    ds = one(render(values={"agent": {"livenessProbe": None, "readinessProbe": None}}), "DaemonSet")
    assert "livenessProbe" not in _container(ds, "agent") and "readinessProbe" not in _container(ds, "agent")


def test_crds_are_templates_kept_on_uninstall_and_identical_to_the_generated_ones():
    assert not (CHART / "crds").exists(), "crds/ is installed once and never upgraded by helm"
    crds = {d["metadata"]["name"]: d for d in by_kind(render(), "CustomResourceDefinition")}
    generated = {}
    for p in sorted((ROOT / "crds").glob("disklet.io_*.yaml")):
        doc = yaml.safe_load(p.read_text())
        generated[doc["metadata"]["name"]] = doc
    assert set(generated) <= set(crds) and "kopfpeerings.kopf.dev" in crds
    for name, want in generated.items():
        got = crds[name]
        assert got["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
        assert got["spec"] == want["spec"], f"{name}: the chart renders the generated CRD unchanged"
    crds = by_kind(render("crds.keep=false"), "CustomResourceDefinition")
    assert crds and all("helm.sh/resource-policy" not in (c["metadata"].get("annotations") or {}) for c in crds)
    assert not by_kind(render("crds.managed=false"), "CustomResourceDefinition")


def test_pod_monitor_is_the_alternative_to_service_monitor():
    docs = render("metrics.podMonitor.enabled=true", "metrics.podMonitor.labels.release=prom")
    pms = by_kind(docs, "PodMonitor")
    assert len(pms) == 2 and not by_kind(docs, "ServiceMonitor")
    pods = [d["spec"]["template"]["metadata"]["labels"] for d in by_kind(docs, "Deployment") + by_kind(docs, "DaemonSet")]
    for pm in pms:
        assert pm["metadata"]["labels"]["release"] == "prom"
        assert sum(pm["spec"]["selector"]["matchLabels"].items() <= p.items() for p in pods) == 1
        assert pm["spec"]["podMetricsEndpoints"][0]["port"] == "metrics"
    proc = template("metrics.podMonitor.enabled=true", "metrics.serviceMonitor.enabled=true", check=False)
    assert proc.returncode != 0 and "alternatives" in proc.stderr


@pytest.mark.parametrize("sets", [("operator.podDisruptionBudget.minAvailable=-1",), ("crds.unknown=true",)])
def test_new_values_are_validated(sets):
    assert template(*sets, check=False).returncode != 0
