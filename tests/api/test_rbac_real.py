"""RBAC proven on a real API server: the chart's own ServiceAccounts and roles, asked as those
identities (impersonation, and `kubectl auth can-i --list` as the oracle)."""

from __future__ import annotations

import secrets
from pathlib import Path

import pytest

from devkit.envtest import Cluster

CHART = Path(__file__).resolve().parents[2] / "charts" / "disklet"


@pytest.fixture(scope="module")
def chart_rbac(envtest: Cluster) -> tuple[str, list[dict]]:
    ns = f"rbac-{secrets.token_hex(3)}"
    envtest.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(CHART / "files" / "crds"))
    envtest.kubectl("wait", "--for", "condition=Established", "--timeout", "60s", "crd", "-l",
                    "app.kubernetes.io/part-of=disklet")
    docs = envtest.apply_chart_rbac(CHART, ns, ns)  # release = ns: cluster-scoped names unique to this test
    yield ns, docs
    for d in docs:
        if d["kind"].startswith("Cluster"):
            envtest.delete(d["kind"].lower(), d["metadata"]["name"], wait=False)
    envtest.delete("namespace", ns, wait=False)


def _sa(docs: list[dict], suffix: str) -> str:
    names = [d["metadata"]["name"] for d in docs if d["kind"] == "ServiceAccount"]
    return next(n for n in names if n.endswith(suffix))


DENIED_TO_AGENT = [
    ("get", "secrets", None), ("list", "secrets", None), ("watch", "secrets", None),
    ("create", "lvmvolumegroups.disklet.io", None), ("delete", "lvmvolumegroups.disklet.io", None),
    ("patch", "lvmvolumegroupsets.disklet.io", None), ("update", "lvmvolumegroupsets.disklet.io", None),
    ("create", "disklayouts.disklet.io", None), ("delete", "disklayouts.disklet.io", None),
    ("get", "nodes", None), ("patch", "nodes", None), ("update", "nodes", None), ("delete", "nodes", None),
    ("update", "blockdevices.disklet.io", None),  # the agent patches; it never replaces objects
    ("create", "pods", None), ("create", "pods/exec", None), ("create", "serviceaccounts/token", None),
    ("patch", "customresourcedefinitions.apiextensions.k8s.io", None),
    ("create", "clusterrolebindings.rbac.authorization.k8s.io", None), ("escalate", "clusterroles", None),
    ("impersonate", "serviceaccounts", None),
]
DENIED_TO_OPERATOR = [
    ("get", "secrets", None), ("list", "secrets", None), ("create", "pods", None), ("patch", "nodes", None),
    ("delete", "disklayouts.disklet.io", None), ("create", "serviceaccounts/token", None),
    ("create", "clusterrolebindings.rbac.authorization.k8s.io", None), ("impersonate", "serviceaccounts", None),
]
NEEDED_BY_AGENT = [
    ("watch", "lvmvolumegroups.disklet.io", None), ("patch", "lvmvolumegroups.disklet.io", "status"),
    ("watch", "disklayouts.disklet.io", None), ("patch", "disklayouts.disklet.io", "status"),
    ("create", "blockdevices.disklet.io", None), ("patch", "blockdevices.disklet.io", "status"),
    ("delete", "blockdevices.disklet.io", None),
]
NEEDED_BY_OPERATOR = [
    ("create", "lvmvolumegroups.disklet.io", None), ("watch", "lvmvolumegroupsets.disklet.io", None),
    ("patch", "lvmvolumegroupsets.disklet.io", "status"), ("patch", "disklayouts.disklet.io", "status"),
    ("watch", "nodes", None),
]


@pytest.mark.parametrize("verb,resource,sub", DENIED_TO_AGENT, ids=lambda v: str(v))
def test_the_agent_cannot(envtest: Cluster, chart_rbac: tuple[str, list[dict]], verb: str, resource: str,
                          sub: str | None) -> None:
    ns, docs = chart_rbac
    sa = (_sa(docs, "agent"), ns)
    for where in (ns, "default", "kube-system"):
        assert not envtest.can_i(verb, resource, as_sa=sa, namespace=where, subresource=sub), \
            f"the agent may {verb} {resource} in {where}"


@pytest.mark.parametrize("verb,resource,sub", DENIED_TO_OPERATOR, ids=lambda v: str(v))
def test_the_operator_cannot(envtest: Cluster, chart_rbac: tuple[str, list[dict]], verb: str, resource: str,
                             sub: str | None) -> None:
    ns, docs = chart_rbac
    assert not envtest.can_i(verb, resource, as_sa=(_sa(docs, "operator"), ns), namespace=ns, subresource=sub)


def test_what_they_need_is_granted(envtest: Cluster, chart_rbac: tuple[str, list[dict]]) -> None:
    ns, docs = chart_rbac
    for who, needed in (("agent", NEEDED_BY_AGENT), ("operator", NEEDED_BY_OPERATOR)):
        for verb, resource, sub in needed:
            assert envtest.can_i(verb, resource, as_sa=(_sa(docs, who), ns), subresource=sub), \
                f"the {who} may not {verb} {resource}{'/' + sub if sub else ''}"


def test_can_i_list_as_the_agent_shows_no_secret_access(envtest: Cluster, chart_rbac: tuple[str, list[dict]],
                                                        tmp_path: Path) -> None:
    """The oracle, as the ServiceAccount itself (a TokenRequest token, not impersonation)."""
    ns, docs = chart_rbac
    kc = envtest.service_account_kubeconfig(_sa(docs, "agent"), ns, tmp_path / "agent.kubeconfig")
    try:
        out = envtest.kubectl("auth", "can-i", "--list", "-n", ns, kubeconfig=kc).stdout
    finally:
        kc.unlink(missing_ok=True)
    rows = [line.split()[0] for line in out.splitlines()[1:] if line.strip()]
    assert not any(r.startswith("secrets") or r == "*" or r.startswith("*.") for r in rows), out
