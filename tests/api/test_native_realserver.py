"""On a real kube-apiserver: `helm install` then `helm upgrade` to a chart with a changed CRD upgrades
it; `helm uninstall` keeps the CRDs; CRDs first applied with `kubectl apply --server-side` become
helm-managed by the documented steps (docs/helm.md "CRDs"), and back; `kubectl wait
--for=condition=Ready` works on DiskLayouts; `kubectl get` and `kctl get` print the same table.

These tests install and delete cluster-scoped CRDs, so they run on a control plane of their own
(devkit/envtest.py, no controller-manager needed) rather than the session's shared one.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from devkit.envtest import ControlPlane, assets_dir, tool, unavailable_reason
from tests.unit.test_chart_support import CHART, in_ci

pytestmark = pytest.mark.api
RELEASE, NAMESPACE = "disklet", "disklet-system"


class Cluster:
    def __init__(self, cp: ControlPlane, home: Path):
        self.cp, self.home = cp, home
        self.kubeconfig = Path(cp.kubeconfig)

    def kubectl(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return self._run([tool("kubectl"), *args], check)

    def helm(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return self._run([tool("helm"), *args, "--namespace", NAMESPACE], check)

    def _run(self, argv: list[str], check: bool) -> subprocess.CompletedProcess[str]:
        env = {**os.environ, "KUBECONFIG": str(self.kubeconfig), "HELM_CACHE_HOME": str(self.home / "c"),
               "HELM_CONFIG_HOME": str(self.home / "cf"), "HELM_DATA_HOME": str(self.home / "d")}
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=180, env=env)  # noqa: S603
        if check:
            assert proc.returncode == 0, f"{argv}: {proc.stdout}\n{proc.stderr}"
        return proc

    def crd(self, name: str) -> dict:
        return yaml.safe_load(self.kubectl("get", "crd", name, "-o", "yaml").stdout)


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    reason = unavailable_reason()
    if reason:
        (pytest.fail if in_ci() else pytest.skip)(reason)
    try:
        tool("helm"), tool("kubectl")
    except FileNotFoundError as exc:
        (pytest.fail if in_ci() else pytest.skip)(str(exc))
    assets = assets_dir()
    assert assets is not None
    cp = ControlPlane(assets=assets, controller_manager=False).start()
    try:
        with tempfile.TemporaryDirectory(prefix="disklet-helm-") as home:
            yield Cluster(cp, Path(home))
    finally:
        cp.stop()


def _chart_copy(dest: Path, extra_column: str | None = None) -> Path:
    """The chart, optionally with one more DiskLayout printer column (a changed CRD)."""
    shutil.copytree(CHART, dest)
    for path in (dest / "files" / "crds").glob("disklet.io_*.yaml"):
        crd = yaml.safe_load(path.read_text())
        for version in crd["spec"]["versions"]:
            if extra_column and crd["spec"]["names"]["kind"] == "DiskLayout":
                version["additionalPrinterColumns"].insert(
                    0, {"name": extra_column, "type": "string", "jsonPath": ".status.phase"})
        path.write_text(yaml.safe_dump(crd, sort_keys=False))
    return dest


def _columns(cluster: Cluster) -> list[str]:
    crd = cluster.crd("disklayouts.disklet.io")
    return [c["name"] for c in crd["spec"]["versions"][0]["additionalPrinterColumns"]]


def test_helm_upgrade_upgrades_the_crds_and_uninstall_keeps_them(cluster: Cluster, tmp_path: Path):
    v1, v2 = _chart_copy(tmp_path / "v1"), _chart_copy(tmp_path / "v2", extra_column="Upgraded")
    cluster.helm("install", RELEASE, str(v1), "--create-namespace")
    assert "Upgraded" not in _columns(cluster)
    crd = cluster.crd("disklayouts.disklet.io")
    assert crd["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
    cluster.helm("upgrade", RELEASE, str(v2))
    assert _columns(cluster)[0] == "Upgraded", "helm upgrade upgraded the CRD"
    out = cluster.helm("uninstall", RELEASE).stdout
    assert "kept due to the resource policy" in out
    names = cluster.kubectl("get", "crd", "-o", "name").stdout.split()
    assert "customresourcedefinition.apiextensions.k8s.io/disklayouts.disklet.io" in names
    cluster.kubectl("delete", "crd", "--all")


def test_kubectl_applied_crds_become_helm_managed_and_back(cluster: Cluster, tmp_path: Path):
    v1, v2 = _chart_copy(tmp_path / "v1"), _chart_copy(tmp_path / "v2", extra_column="Upgraded")
    crds = v1 / "files" / "crds"
    cluster.kubectl("apply", "--server-side", "-f", str(crds))
    refused = cluster.helm("install", RELEASE, str(v1), "--create-namespace", check=False)
    assert refused.returncode != 0 and "invalid ownership metadata" in refused.stderr
    # docs/helm.md: adopt the CRDs into the release, then take the fields over once.
    for name in cluster.kubectl("get", "crd", "-o", "name").stdout.split():
        cluster.kubectl("label", name, "app.kubernetes.io/managed-by=Helm", "--overwrite")
        cluster.kubectl("annotate", name, f"meta.helm.sh/release-name={RELEASE}",
                        f"meta.helm.sh/release-namespace={NAMESPACE}", "--overwrite")
    cluster.helm("install", RELEASE, str(v1), "--create-namespace")
    conflict = cluster.helm("upgrade", RELEASE, str(v2), check=False)
    assert conflict.returncode != 0 and 'conflict with "kubectl"' in conflict.stderr, conflict.stderr
    cluster.helm("upgrade", RELEASE, str(v2), "--force-conflicts")
    assert _columns(cluster)[0] == "Upgraded"
    cluster.helm("upgrade", RELEASE, str(v1))  # kubectl owns nothing any more: no flag needed
    assert "Upgraded" not in _columns(cluster)
    # ... and back: helm stops managing them (kept), kubectl takes the fields over.
    cluster.helm("upgrade", RELEASE, str(v1), "--set", "crds.managed=false")
    cluster.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(v2 / "files" / "crds"))
    assert _columns(cluster)[0] == "Upgraded"
    cluster.helm("uninstall", RELEASE)
    cluster.kubectl("delete", "crd", "--all")


# ---------------------------------------------------------------------------- kubectl and kctl agree
async def test_kubectl_wait_ready_and_kubectl_and_kctl_print_the_same_columns(cluster: Cluster, tmp_path: Path):
    """On the real server: the DiskLayout status the agent writes for an applied layout satisfies
    `kubectl wait --for=condition=Ready`; a refused one does not; `kubectl get` and `kubectl disklet get`
    print the same columns, DEVICES as text."""
    import io
    import json

    from disklet.api.disklayout_ready import devices_text, with_ready
    from disklet.cli.main import run

    v1 = _chart_copy(tmp_path / "v1")
    cluster.kubectl("apply", "--server-side", "-f", str(v1 / "files" / "crds"))
    cluster.kubectl("wait", "--for=condition=Established", "crd/disklayouts.disklet.io", "--timeout=60s")
    manifest = tmp_path / "dl.yaml"
    manifest.write_text(yaml.safe_dump({"kind": "DiskLayout", "metadata": {"name": "ready-dl"}, "spec": {
        "nodeName": "node-a", "layoutNix": '{ disko.devices.disk.d = { type = "disk"; device = "/dev/sdb"; content = { '
        'type = "gpt"; partitions.p = { size = "100%"; content = { type = "filesystem"; format = "ext4"; '
        'mountpoint = "/srv/p"; }; }; }; }; }'}}))
    out, err = io.StringIO(), io.StringIO()
    assert await run(["apply", "-f", str(manifest), "--skip-preflight", "--kubeconfig", str(cluster.kubeconfig)],
                     out, err) == 0, err.getvalue()

    def status(phase: str, applied: int | None) -> dict:
        conds = with_ready([], phase, 1, applied, "msg", "target_device_has_active_mount" if phase == "refused"
                           else None, 1, now="2026-01-01T00:00:00Z")
        st = {"phase": phase, "layoutGeneration": 1, "targetDevices": ["/dev/sdb", "/dev/sdc"],
              "targetDevicesText": devices_text(["/dev/sdb", "/dev/sdc"]), "observedGeneration": 1,
              "conditions": [c.to_wire() for c in conds]}
        if applied is not None:
            st["appliedLayoutGeneration"] = applied
        return {"status": st}

    cluster.kubectl("patch", "disklayout", "ready-dl", "--subresource=status", "--type=merge",
                    "-p", json.dumps(status("refused", None)))
    waited = cluster.kubectl("wait", "--for=condition=Ready", "disklayout/ready-dl", "--timeout=2s", check=False)
    assert waited.returncode != 0, "a refused layout is not Ready"
    cluster.kubectl("patch", "disklayout", "ready-dl", "--subresource=status", "--type=merge",
                    "-p", json.dumps(status("applied", 1)))
    waited = cluster.kubectl("wait", "--for=condition=Ready", "disklayout/ready-dl", "--timeout=30s")
    assert "condition met" in waited.stdout

    for wide in ((), ("-o", "wide")):
        kubectl_lines = cluster.kubectl("get", "disklayouts", *wide).stdout.splitlines()
        out, err = io.StringIO(), io.StringIO()
        assert await run(["get", "dl", *wide, "--kubeconfig", str(cluster.kubeconfig)], out, err) == 0, err.getvalue()
        kctl_lines = out.getvalue().splitlines()
        assert kctl_lines[0].split() == kubectl_lines[0].split(), (kctl_lines[0], kubectl_lines[0])
        assert kctl_lines[1].split()[:-1] == kubectl_lines[1].split()[:-1]  # all but AGE
        assert "/dev/sdb,/dev/sdc" in kubectl_lines[1], "DEVICES reads as text in kubectl too"
    # -w on the real server: the existing object first, then the server ends the watch (timeoutSeconds)
    out, err = io.StringIO(), io.StringIO()
    code = await run(["get", "dl", "-w", "--request-timeout", "2", "--kubeconfig", str(cluster.kubeconfig)], out, err)
    lines = out.getvalue().splitlines()
    assert code == 0 and len(lines) == 2 and lines[1].startswith("ready-dl "), (code, out.getvalue(), err.getvalue())
    cluster.kubectl("delete", "disklayout", "ready-dl")
    cluster.kubectl("delete", "crd", "--all")
