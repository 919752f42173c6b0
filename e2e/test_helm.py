"""The Helm chart installs and uninstalls cleanly on a real cluster (images are placeholders: no pod
needs to start for this check)."""

from __future__ import annotations

from typing import Any

import pytest

from e2e import harness as h


@pytest.mark.timeout(240)
def test_helm_install_and_uninstall_leave_nothing(e2e: Any, real_only: None) -> None:
    # not the harness namespace (the agent's Lease lives there): deleting it would strand later scenarios
    release, namespace = f"e2e-{e2e.run}", f"disklet-helm-{e2e.run}"
    helm = [h.tool("helm"), "--kubeconfig", e2e.kube.kubeconfig]
    chart = str(h.REPO / "charts" / "disklet")
    before = {k.plural: {o["metadata"]["name"] for o in e2e.kube.list(k)} for k in (h.DL, h.LVG, h.LVGSET)}
    try:
        h.sh([*helm, "install", release, chart, "--namespace", namespace, "--create-namespace",
              "--set", "image.registry=registry.invalid/disklet-e2e", "--set", "image.tag=e2e-placeholder",
              # the harness applied the CRDs with kubectl: they stay kubectl-managed (docs/helm.md "CRDs")
              "--set", "crds.managed=false",
              "--timeout", "120s"], timeout=180)
        status = h.sh([*helm, "status", release, "--namespace", namespace, "-o", "json"]).stdout
        assert '"status":"deployed"' in status.replace(" ", ""), status
        for crd in ("disklayouts", "lvmvolumegroups", "lvmvolumegroupsets", "blockdevices"):
            assert e2e.kube.get(h.CRD, f"{crd}.disklet.io") is not None, f"CRD {crd} missing after install"
    finally:
        h.sh([*helm, "uninstall", release, "--namespace", namespace, "--wait", "--timeout", "120s"],
             timeout=180, check=False)
        e2e.kube.kubectl("delete", "namespace", namespace, "--ignore-not-found", "--wait=false", check=False)
    left = e2e.kube.kubectl("get", "clusterroles,clusterrolebindings", "-l", f"app.kubernetes.io/instance={release}",
                            "-o", "name").stdout.split()
    assert left == [], f"helm uninstall left cluster-scoped objects: {left}"
    after = {k.plural: {o["metadata"]["name"] for o in e2e.kube.list(k)} for k in (h.DL, h.LVG, h.LVGSET)}
    assert after == before, f"custom objects changed across install/uninstall: before {before}, after {after}"
