"""On a real kube-apiserver: `helm install` then `helm upgrade` to a chart with a changed CRD upgrades
it; `helm uninstall` keeps the CRDs; CRDs first applied with `kubectl apply --server-side` become
helm-managed by the documented steps (docs/helm.md "CRDs"), and back.

Needs kube-apiserver (``KUBEBUILDER_ASSETS``, default ../shared/envtest next to the repository),
etcd, helm and kubectl; skipped locally without them, failed in CI. Starts its own etcd and
apiserver once for the module (no controller-manager needed) and stops them by PID.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from tests.unit.test_chart_support import CHART, ROOT, in_ci

pytestmark = pytest.mark.api
RELEASE, NAMESPACE = "disklet", "disklet-system"


def _assets() -> Path:
    if os.environ.get("KUBEBUILDER_ASSETS"):
        return Path(os.environ["KUBEBUILDER_ASSETS"])
    candidates = [ROOT.parent / "shared" / "envtest", ROOT.parent.parent / "shared" / "envtest"]  # clone, worktree
    return next((c for c in candidates if c.is_dir()), candidates[0])


def _tool(name: str) -> str | None:
    local = ROOT / ".tools" / "bin" / name
    return str(local) if local.is_file() else shutil.which(name)


def _need() -> tuple[str, str]:
    helm, kubectl = _tool("helm"), _tool("kubectl")
    missing = [n for n, ok in (("kube-apiserver", (_assets() / "kube-apiserver").is_file()),
                               ("etcd", shutil.which("etcd")), ("helm", helm), ("kubectl", kubectl)) if not ok]
    if missing:
        (pytest.fail if in_ci() else pytest.skip)(f"real API server test needs {', '.join(missing)}")
    assert helm and kubectl
    return helm, kubectl


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Cluster:
    def __init__(self, workdir: Path, helm: str, kubectl: str):
        self.dir, self.helm_bin, self.kubectl_bin = workdir, helm, kubectl
        self.kubeconfig = workdir / "kubeconfig"
        self.procs: list[subprocess.Popen[bytes]] = []

    def start(self) -> None:
        w = self.dir
        ep, pp, ap = _port(), _port(), _port()
        self.procs.append(subprocess.Popen(  # noqa: S603
            ["etcd", "--data-dir", str(w / "etcd"), "--listen-client-urls", f"http://127.0.0.1:{ep}",
             "--advertise-client-urls", f"http://127.0.0.1:{ep}", "--listen-peer-urls", f"http://127.0.0.1:{pp}",
             "--initial-advertise-peer-urls", f"http://127.0.0.1:{pp}",
             "--initial-cluster", f"default=http://127.0.0.1:{pp}"],
            stdout=open(w / "etcd.log", "wb"), stderr=subprocess.STDOUT))  # noqa: SIM115
        subprocess.run(["openssl", "genrsa", "-out", str(w / "sa.key"), "2048"], check=True,  # noqa: S603,S607
                       capture_output=True, timeout=60)
        subprocess.run(["openssl", "rsa", "-in", str(w / "sa.key"), "-pubout", "-out", str(w / "sa.pub")],  # noqa: S603,S607
                       check=True, capture_output=True, timeout=60)
        (w / "tokens.csv").write_text('admin-token,admin,admin-uid,"system:masters"\n')
        self.procs.append(subprocess.Popen(  # noqa: S603
            [str(_assets() / "kube-apiserver"), f"--etcd-servers=http://127.0.0.1:{ep}", f"--cert-dir={w / 'pki'}",
             f"--secure-port={ap}", "--bind-address=127.0.0.1", "--advertise-address=127.0.0.1",
             "--service-account-issuer=https://kubernetes.default.svc", f"--service-account-key-file={w / 'sa.pub'}",
             f"--service-account-signing-key-file={w / 'sa.key'}", f"--token-auth-file={w / 'tokens.csv'}",
             "--authorization-mode=RBAC", "--service-cluster-ip-range=10.96.0.0/24",
             "--endpoint-reconciler-type=none", "--allow-privileged=true"],
            stdout=open(w / "apiserver.log", "wb"), stderr=subprocess.STDOUT))  # noqa: SIM115
        self.kubeconfig.write_text(yaml.safe_dump({
            "apiVersion": "v1", "kind": "Config", "current-context": "envtest",
            "clusters": [{"name": "envtest", "cluster": {"server": f"https://127.0.0.1:{ap}",
                                                         "certificate-authority": str(w / "pki" / "apiserver.crt")}}],
            "users": [{"name": "admin", "user": {"token": "admin-token"}}],
            "contexts": [{"name": "envtest", "context": {"cluster": "envtest", "user": "admin"}}]}))
        deadline = time.monotonic() + 120
        while self.kubectl("get", "--raw", "/readyz", check=False).returncode != 0:
            assert time.monotonic() < deadline, (w / "apiserver.log").read_text()[-2000:]
            time.sleep(0.5)

    def stop(self) -> None:
        for proc in reversed(self.procs):  # apiserver first, then etcd
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=30)

    def _run(self, argv: list[str], check: bool) -> subprocess.CompletedProcess[str]:
        env = {**os.environ, "KUBECONFIG": str(self.kubeconfig), "HELM_CACHE_HOME": str(self.dir / "hc"),
               "HELM_CONFIG_HOME": str(self.dir / "hcf"), "HELM_DATA_HOME": str(self.dir / "hd")}
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=180, env=env)  # noqa: S603
        if check:
            assert proc.returncode == 0, f"{argv}: {proc.stdout}\n{proc.stderr}"
        return proc

    def kubectl(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return self._run([self.kubectl_bin, *args], check)

    def helm(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return self._run([self.helm_bin, *args, "--namespace", NAMESPACE], check)

    def crd(self, name: str) -> dict:
        return yaml.safe_load(self.kubectl("get", "crd", name, "-o", "yaml").stdout)


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    helm, kubectl = _need()
    with tempfile.TemporaryDirectory(prefix="disklet-crd-upgrade-") as tmp:
        c = Cluster(Path(tmp), helm, kubectl)
        try:
            c.start()
            yield c
        finally:
            c.stop()


def _chart_copy(dest: Path, extra_column: str | None = None) -> Path:
    """The chart, optionally with one more DiskLayout printer column (a changed CRD)."""
    shutil.copytree(CHART, dest)
    for path in (dest / "files" / "crds").glob("disklet.io_*.yaml"):
        crd = yaml.safe_load(path.read_text())
        for version in crd["spec"]["versions"]:
            meta = version["schema"]["openAPIV3Schema"].get("properties", {}).get("metadata")
            if meta and set(meta) - {"type"}:
                # A real server allows nothing but `type` on metadata; #16 fixes the generator. No-op after.
                version["schema"]["openAPIV3Schema"]["properties"]["metadata"] = {"type": "object"}
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
        "nodeName": "node-a", "layoutNix": '{ disko.devices.disk.d = { type = "disk"; device = "/dev/sdb"; }; }'}}))
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
    cluster.kubectl("delete", "disklayout", "ready-dl")
    cluster.kubectl("delete", "crd", "--all")
