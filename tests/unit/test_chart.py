"""The Helm chart: lint, render with default and varied values, and check what it would deploy.

Needs helm (scripts/bootstrap.sh puts it in .tools/bin): skipped locally without it, failed in CI.
Rendered manifests are validated offline against the Kubernetes OpenAPI schemas with
kubernetes-validate (kubectl's client dry-run needs a server for discovery).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from tests.unit.test_chart_support import (
    ALL_ON,
    CHART,
    NAMESPACE,
    ROOT,
    by_kind,
    env_of,
    in_ci,
    one,
    render,
    run_helm,
    template,
)

# Kinds the default render must produce, with their apiVersions.
DEFAULT_KINDS = {
    ("v1", "ServiceAccount"): 2,
    ("rbac.authorization.k8s.io/v1", "ClusterRole"): 2,
    ("rbac.authorization.k8s.io/v1", "ClusterRoleBinding"): 2,
    ("rbac.authorization.k8s.io/v1", "Role"): 3,
    ("rbac.authorization.k8s.io/v1", "RoleBinding"): 3,
    ("apps/v1", "Deployment"): 1,
    ("apps/v1", "DaemonSet"): 1,
    ("v1", "Service"): 2,
    ("admissionregistration.k8s.io/v1", "ValidatingAdmissionPolicy"): 1,
    ("admissionregistration.k8s.io/v1", "ValidatingAdmissionPolicyBinding"): 1,
    ("apiextensions.k8s.io/v1", "CustomResourceDefinition"): 5,
}
KUBE_VERSIONS = ("1.30", "1.35")


@pytest.fixture(scope="module")
def default_docs():
    return render()


@pytest.fixture(scope="module")
def all_on_docs():
    return render(*ALL_ON)


@pytest.mark.parametrize("sets", [(), ALL_ON], ids=["defaults", "all-on"])
def test_helm_lint_strict(sets):
    args = [a for s in sets for a in ("--set", s)]
    proc = run_helm("lint", "--strict", str(CHART), *args)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "0 chart(s) failed" in proc.stdout


def test_chart_crds_are_the_generated_crds():
    generated = {p.name: p.read_text() for p in (ROOT / "crds").glob("disklet.io_*.yaml")}
    shipped = {p.name: p.read_text() for p in (CHART / "files" / "crds").glob("disklet.io_*.yaml")}
    assert generated, "crds/ is empty"
    assert set(shipped) == set(generated), "run `make chart-crds`"
    for name, text in generated.items():
        assert shipped[name] == text, f"charts/disklet/files/crds/{name} differs from crds/{name}: run `make chart-crds`"


def test_default_render_kinds_and_api_versions(default_docs):
    counts: dict[tuple[str, str], int] = {}
    for d in default_docs:
        key = (d["apiVersion"], d["kind"])
        counts[key] = counts.get(key, 0) + 1
    assert counts == DEFAULT_KINDS


def test_every_namespaced_object_is_in_the_release_namespace(all_on_docs):
    cluster_scoped = {"ClusterRole", "ClusterRoleBinding", "CustomResourceDefinition",
                      "ValidatingAdmissionPolicy", "ValidatingAdmissionPolicyBinding"}
    for d in all_on_docs:
        if d["kind"] in cluster_scoped:
            assert "namespace" not in d["metadata"]
        elif d["metadata"]["name"] == "disklet-events":
            # Events about cluster-scoped objects exist only in "default" (docs/observability.md#events).
            assert d["metadata"]["namespace"] == "default" and d["kind"] in ("Role", "RoleBinding")
        else:
            assert d["metadata"]["namespace"] == NAMESPACE, d["metadata"]["name"]
        assert d["metadata"]["labels"]["app.kubernetes.io/part-of"] == "disklet"


def test_rbac_never_uses_wildcards(all_on_docs):
    roles = by_kind(all_on_docs, "ClusterRole") + by_kind(all_on_docs, "Role")
    assert len(roles) == 6
    for role in roles:
        for rule in role["rules"]:
            for key in ("apiGroups", "resources", "verbs", "resourceNames", "nonResourceURLs"):
                assert "*" not in rule.get(key, []), f"{role['metadata']['name']}: {rule}"
                assert not any("*" in v for v in rule.get(key, [])), f"{role['metadata']['name']}: {rule}"
            assert not {"escalate", "bind", "impersonate"} & set(rule["verbs"])
            assert "secrets" not in rule["resources"]


def permissions(role: dict) -> dict[tuple[str, str], set[str]]:
    out: dict[tuple[str, str], set[str]] = {}
    for rule in role["rules"]:
        for group in rule["apiGroups"]:
            for resource in rule["resources"]:
                out.setdefault((group, resource), set()).update(rule["verbs"])
    return out


def test_agent_rbac_is_least_privilege(default_docs):
    cluster = permissions(one(default_docs, "ClusterRole", "-agent"))
    assert cluster == {
        ("disklet.io", "disklayouts"): {"get", "list", "watch", "patch"},
        ("disklet.io", "lvmvolumegroups"): {"get", "list", "watch", "patch"},
        ("disklet.io", "disklayouts/status"): {"get", "patch"},
        ("disklet.io", "lvmvolumegroups/status"): {"get", "patch"},
        ("disklet.io", "blockdevices"): {"get", "list", "watch", "create", "patch", "delete"},
        ("disklet.io", "blockdevices/status"): {"get", "patch"},
    }  # no CRD access: the agent's Kopf does not scan CRDs (docs/agent.md, "API requests at idle")
    ns = permissions(one(default_docs, "Role", "-agent"))
    assert ns == {
        ("", "events"): {"create", "patch"},
        ("events.k8s.io", "events"): {"create", "patch"},
        ("coordination.k8s.io", "leases"): {"get", "create", "patch"},
    }


def test_operator_rbac(default_docs, all_on_docs):
    cluster = permissions(one(default_docs, "ClusterRole", "-operator"))
    assert cluster[("disklet.io", "lvmvolumegroups")] == {"get", "list", "watch", "create", "update", "patch", "delete"}
    assert cluster[("disklet.io", "lvmvolumegroupsets/status")] >= {"patch"}
    assert cluster[("disklet.io", "disklayouts/status")] >= {"patch"}
    assert cluster[("", "nodes")] == {"get", "list", "watch"}
    assert "create" not in cluster[("disklet.io", "disklayouts")]
    assert ("disklet.io", "blockdevices") in cluster and cluster[("disklet.io", "blockdevices")] == {"get", "list", "watch"}
    assert cluster[("", "namespaces")] == {"get", "list", "watch"}  # Kopf's --namespace mode follows it
    ns = permissions(one(default_docs, "Role", "-operator"))
    assert ns[("coordination.k8s.io", "leases")] == {"get", "list", "watch"}
    assert ("kopf.dev", "kopfpeerings") not in ns
    peering_ns = permissions(one(all_on_docs, "Role", "-operator"))
    assert peering_ns[("kopf.dev", "kopfpeerings")] == {"get", "list", "watch", "patch"}


def test_bindings_point_at_the_chart_service_accounts(default_docs):
    accounts = {d["metadata"]["name"] for d in by_kind(default_docs, "ServiceAccount")}
    roles = {(d["kind"], d["metadata"]["name"]) for d in by_kind(default_docs, "ClusterRole") + by_kind(default_docs, "Role")}
    for binding in by_kind(default_docs, "ClusterRoleBinding") + by_kind(default_docs, "RoleBinding"):
        assert (binding["roleRef"]["kind"], binding["roleRef"]["name"]) in roles
        for subject in binding["subjects"]:
            assert subject["name"] in accounts and subject["namespace"] == NAMESPACE


def test_agent_daemonset(default_docs):
    ds = one(default_docs, "DaemonSet", "-agent")
    pod = ds["spec"]["template"]["spec"]
    assert pod["hostPID"] is True
    assert pod["serviceAccountName"].endswith("-agent")
    (c,) = pod["containers"]
    assert c["securityContext"]["privileged"] is True
    assert c["command"] == ["disklet-agent"] and c["args"] == ["run"]
    assert c["image"] == "ghcr.io/disklet/disklet-agent:0.1.0"
    env = env_of(c)
    assert env["NODE_NAME"] == ("fieldRef", "spec.nodeName")
    assert env["DISKLET_NAMESPACE"] == ("fieldRef", "metadata.namespace")
    assert env["DISKLET_NSENTER"] == "true"
    assert env["FILE_DEVICES_DIRECTORY"] == "/var/lib/disklet/file-devices"
    assert env["DISKLET_SCAN_INTERVAL_SECONDS"] == "30"
    assert env["DISKLET_LOG_FORMAT"] == "json" and env["DISKLET_LOG_LEVEL"] == "info"
    mounts = {m["mountPath"]: m["name"] for m in c["volumeMounts"]}
    host_paths = {v["name"]: v["hostPath"]["path"] for v in pod["volumes"]}
    for path in ("/dev", "/sys", "/run/udev", "/etc/disklet", "/var/lib/disklet/file-devices"):
        assert path in mounts, path
        assert host_paths[mounts[path]] == path, "host path mounted at the same path"
    assert "tolerations" not in pod  # control-plane nodes are opt-in (test_chart_privilege.py)
    assert pod["nodeSelector"] == {"kubernetes.io/os": "linux"}


def test_agent_values_reach_the_pod():
    docs = render("fileDevicesDirectory=/srv/disklet/files/", "agent.scanIntervalSeconds=10",
                  "logFormat=console", "logLevel=debug", "agent.systemMounts={/,/boot}",
                  "image.tag=1.2.3", "image.registry=registry.local/x",
                  values={"agent": {"nodeSelector": {"disklet.io/storage": "true"}}})
    pod = one(docs, "DaemonSet")["spec"]["template"]["spec"]
    (c,) = pod["containers"]
    env = env_of(c)
    assert env["FILE_DEVICES_DIRECTORY"] == "/srv/disklet/files"  # trailing slash cleaned
    assert env["DISKLET_SCAN_INTERVAL_SECONDS"] == "10"
    assert env["DISKLET_RESYNC_INTERVAL_SECONDS"] == "600"
    assert env["DISKLET_LOG_FORMAT"] == "console" and env["DISKLET_LOG_LEVEL"] == "debug"
    assert env["DISKLET_SYSTEM_MOUNTS"] == "/,/boot"
    assert pod["nodeSelector"] == {"kubernetes.io/os": "linux", "disklet.io/storage": "true"}  # merged with the default
    assert {v["hostPath"]["path"] for v in pod["volumes"]} >= {"/srv/disklet/files"}
    assert c["image"] == "registry.local/x/disklet-agent:1.2.3"
    op = one(docs, "Deployment")["spec"]["template"]["spec"]["containers"][0]
    assert op["image"] == "registry.local/x/disklet-operator:1.2.3"


def test_operator_deployment_standalone_by_default(default_docs):
    dep = one(default_docs, "Deployment", "-operator")
    assert dep["spec"]["replicas"] == 1
    assert dep["spec"]["strategy"]["type"] == "Recreate"
    pod = dep["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    (c,) = pod["containers"]
    assert c["command"] == ["disklet-operator"]
    assert c["args"] == [f"--namespace={NAMESPACE}", "--standalone", "--liveness=http://0.0.0.0:8080/healthz"]
    assert c["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "health"}
    assert {p["name"]: p["containerPort"] for p in c["ports"]} == {"health": 8080, "metrics": 9090}
    assert c["securityContext"]["readOnlyRootFilesystem"] is True
    assert c["securityContext"]["allowPrivilegeEscalation"] is False
    assert c["securityContext"]["capabilities"] == {"drop": ["ALL"]}
    assert "/tmp" in {m["mountPath"] for m in c["volumeMounts"]}
    assert env_of(c)["POD_ID"] == ("fieldRef", "metadata.name")
    assert not by_kind(default_docs, "KopfPeering")


def test_operator_with_peering(all_on_docs):
    dep = one(all_on_docs, "Deployment", "-operator")
    assert dep["spec"]["replicas"] == 2
    assert dep["spec"]["strategy"]["type"] == "RollingUpdate"
    args = dep["spec"]["template"]["spec"]["containers"][0]["args"]
    assert "--peering=disklet-operator" in args and "--standalone" not in args
    peering = one(all_on_docs, "KopfPeering")
    assert peering["apiVersion"] == "kopf.dev/v1"
    assert peering["metadata"] == {**peering["metadata"], "name": "disklet-operator", "namespace": NAMESPACE}
    crd = yaml.safe_load((CHART / "files" / "crds" / "kopf.dev_kopfpeerings.yaml").read_text())
    assert crd["spec"]["group"] == "kopf.dev" and crd["spec"]["scope"] == "Namespaced"
    assert crd["spec"]["names"]["plural"] == "kopfpeerings"


def test_services_select_the_pods(all_on_docs):
    pods = {d["metadata"]["name"]: d["spec"]["template"]["metadata"]["labels"]
            for d in by_kind(all_on_docs, "Deployment") + by_kind(all_on_docs, "DaemonSet")}
    for workload in by_kind(all_on_docs, "Deployment") + by_kind(all_on_docs, "DaemonSet"):
        selector = workload["spec"]["selector"]["matchLabels"]
        assert selector.items() <= pods[workload["metadata"]["name"]].items()
    for svc in by_kind(all_on_docs, "Service"):
        matched = [n for n, labels in pods.items() if svc["spec"]["selector"].items() <= labels.items()]
        assert len(matched) == 1, svc["metadata"]["name"]
        assert svc["spec"]["ports"][0]["targetPort"] == "metrics"
    for sm in by_kind(all_on_docs, "ServiceMonitor"):
        services = [s for s in by_kind(all_on_docs, "Service")
                    if sm["spec"]["selector"]["matchLabels"].items() <= s["metadata"]["labels"].items()]
        assert len(services) == 1, sm["metadata"]["name"]
        assert sm["spec"]["endpoints"][0]["port"] == "metrics"


def test_optional_objects_are_value_gated(default_docs, all_on_docs):
    for kind in ("ServiceMonitor", "ConfigMap", "KopfPeering"):
        assert not by_kind(default_docs, kind)
    assert len(by_kind(all_on_docs, "ServiceMonitor")) == 2
    ksm = one(all_on_docs, "ConfigMap", "-kube-state-metrics")
    assert yaml.safe_load(ksm["data"]["custom-resource-state.yaml"]) == yaml.safe_load(
        (CHART / "files" / "kube-state-metrics-customresourcestate.yaml").read_text())
    dash = one(all_on_docs, "ConfigMap", "-grafana-dashboard")
    assert dash["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert json.loads(dash["data"]["disklet.json"]) == json.loads((CHART / "dashboards" / "disklet.json").read_text())
    ksm_role = permissions(one(all_on_docs, "ClusterRole", "-kube-state-metrics"))
    assert ksm_role == {("disklet.io", "disklayouts"): {"list", "watch"},
                        ("disklet.io", "lvmvolumegroups"): {"list", "watch"},
                        ("disklet.io", "blockdevices"): {"list", "watch"},
                        ("apiextensions.k8s.io", "customresourcedefinitions"): {"list", "watch"}}


@pytest.mark.parametrize(("sets", "message"), [
    (("operator.replicaCount=2",), "peering"),
    (("fileDevicesDirectory=/",), "fileDevicesDirectory"),
    (("fileDevicesDirectory=relative/dir",), "fileDevicesDirectory"),
    (("fileDevicesDirectory=",), "fileDevicesDirectory"),
    (("fileDevicesDirectory=null",), "fileDevicesDirectory"),
    (("image.tag=latest",), "tag"),
    (("image.registry=",), "registry"),
    (("logFormat=xml",), "logFormat"),
    (("agent.scanIntervalSeconds=0",), "scanIntervalSeconds"),
    (("agent.resyncIntervalSeconds=-1",), "resyncIntervalSeconds"),
    (("operator.unknownKey=1",), "unknownKey"),
    (("kubeStateMetrics.rbac.enabled=true", "kubeStateMetrics.rbac.serviceAccountName="), "serviceAccountName"),
])
def test_invalid_or_missing_values_fail_to_render(sets, message):
    proc = template(*sets, check=False)
    assert proc.returncode != 0, f"--set {sets} rendered"
    assert message in proc.stderr, proc.stderr


def test_rendered_manifests_match_kubernetes_schemas(default_docs, all_on_docs):
    try:
        import kubernetes_validate
    except ImportError:
        if in_ci():
            pytest.fail("kubernetes-validate is missing (pip install -e '.[test]')")
        pytest.skip("kubernetes-validate not installed (pip install -e '.[test]')")
    crds = [yaml.safe_load(p.read_text()) for p in sorted((CHART / "files" / "crds").glob("*.yaml"))]
    checked = 0
    for version in KUBE_VERSIONS:
        for doc in [*default_docs, *all_on_docs, *crds]:
            if doc["apiVersion"].split("/")[0] in ("monitoring.coreos.com", "kopf.dev"):
                continue  # not Kubernetes kinds; checked structurally above
            kubernetes_validate.validate(doc, version, strict=True)
            checked += 1
    assert checked > 2 * len(DEFAULT_KINDS)


def test_schema_validation_catches_a_broken_manifest(default_docs):
    """The schema check above can fail: a misspelt field is rejected."""
    kubernetes_validate = pytest.importorskip("kubernetes_validate")
    import copy
    ds = copy.deepcopy(one(default_docs, "DaemonSet"))
    ds["spec"]["template"]["spec"]["hostPid"] = True
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(ds, KUBE_VERSIONS[0], strict=True)


def test_values_file_documents_every_top_level_key():
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    schema = json.loads((CHART / "values.schema.json").read_text())
    assert set(values) <= set(schema["properties"])
    doc = Path(ROOT / "docs" / "helm.md").read_text()
    for key in values:
        assert f"`{key}" in doc, f"docs/helm.md does not mention value {key}"


def test_events_about_cluster_scoped_objects_are_granted_in_default_only(default_docs):
    """kube-apiserver keeps an Event about a cluster-scoped object only in "default", where
    `kubectl describe` finds it: both components may create, read (to count) and patch Events there."""
    role = next(d for d in by_kind(default_docs, "Role") if d["metadata"]["name"] == "disklet-events")
    assert role["metadata"]["namespace"] == "default"
    assert role["rules"] == [{"apiGroups": [""], "resources": ["events"], "verbs": ["create", "get", "patch"]}]
    binding = next(d for d in by_kind(default_docs, "RoleBinding") if d["metadata"]["name"] == "disklet-events")
    assert binding["metadata"]["namespace"] == "default" and binding["roleRef"]["name"] == "disklet-events"
    assert {(s["name"], s["namespace"]) for s in binding["subjects"]} == {
        ("disklet-operator", NAMESPACE), ("disklet-agent", NAMESPACE)}
