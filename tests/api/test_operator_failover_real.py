"""Operator failover on a real API server: two replicas with the chart's peering (KopfPeering,
the chart's RBAC with peering enabled) get distinct priorities; the active one is killed
(SIGKILL, no goodbye) and the other takes over."""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from disklet_operator.peering import replica_priority

from devkit.envtest import Cluster

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "charts" / "disklet"


def _lvg(name: str) -> dict:
    return {"apiVersion": "disklet.io/v1alpha1", "kind": "LVMVolumeGroup", "metadata": {"name": name},
            "spec": {"type": "Local", "local": {"nodeName": "failover-node"}, "actualVGNameOnTheNode": "vg0",
                     "fileDevices": [{"name": "a", "directory": "/var/lib/disklet/file-devices", "size": "1Gi"}]}}


def _has_conditions(envtest: Cluster, name: str) -> bool:
    obj = envtest.get("lvmvolumegroup", name) or {}
    return any(c.get("type") == "Ready" for c in (obj.get("status") or {}).get("conditions") or [])


@pytest.mark.timeout(300)
def test_the_standby_replica_takes_over_when_the_active_one_dies(envtest: Cluster, tmp_path: Path) -> None:
    ns = f"failover-{secrets.token_hex(3)}"
    envtest.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(CHART / "files" / "crds"))
    envtest.kubectl("wait", "--for", "condition=Established", "--timeout", "60s", "crd", "--all")
    values = {"operator": {"peering": {"enabled": True}, "replicaCount": 2}}
    docs = envtest.apply_chart_rbac(CHART, ns, ns, values=values)  # release = ns: unique cluster-scoped names
    sa = next(d["metadata"]["name"] for d in docs if d["kind"] == "ServiceAccount" and d["metadata"]["name"].endswith("operator"))
    envtest.apply({"apiVersion": "kopf.dev/v1", "kind": "KopfPeering", "metadata": {"name": "disklet-operator", "namespace": ns}})
    kubeconfig = envtest.service_account_kubeconfig(sa, ns, tmp_path / "operator.kubeconfig")
    procs: dict[str, subprocess.Popen[bytes]] = {}
    logs: dict[str, Path] = {}
    try:
        for pod in ("disklet-operator-aaaaa", "disklet-operator-bbbbb"):
            env = dict(os.environ, KUBECONFIG=str(kubeconfig), POD_ID=pod, DISKLET_NAMESPACE=ns,
                       PYTHONPATH=os.pathsep.join(str(REPO / p) for p in ("", "operator", "agent")))
            logs[pod] = tmp_path / f"{pod}.log"
            with logs[pod].open("wb") as fh:
                procs[pod] = subprocess.Popen(
                    [sys.executable, "-c", "import sys; from disklet_operator.main import main; sys.exit(main())",
                     "--namespace", ns, "--peering", "disklet-operator", "--metrics-port", "0", "--log-format", "text"],
                    env=env, stdout=fh, stderr=subprocess.STDOUT, start_new_session=True)
        prio = {pod: replica_priority({"POD_ID": pod}) for pod in procs}
        assert len(set(prio.values())) == 2, prio
        active = max(prio, key=lambda p: prio[p])
        standby = min(prio, key=lambda p: prio[p])

        def peers() -> dict:
            obj = envtest.get("kopfpeering", "disklet-operator", "-n", ns) or {}
            return obj.get("status") or {}

        envtest.wait_for(lambda: len(peers()) >= 2, timeout=90, what="both replicas in the KopfPeering status")
        envtest.apply(_lvg(f"{ns}-before"))
        envtest.wait_for(lambda: _has_conditions(envtest, f"{ns}-before"), timeout=90,
                         what="the active replica to write conditions")
        os.killpg(procs[active].pid, signal.SIGKILL)  # a crash: no peering goodbye, the peer entry expires
        procs[active].wait(10)
        envtest.apply(_lvg(f"{ns}-after"))
        envtest.wait_for(lambda: _has_conditions(envtest, f"{ns}-after"), timeout=200,
                         what=f"the standby {standby} to take over")
        assert procs[standby].poll() is None, logs[standby].read_text()[-3000:]
        text = logs[standby].read_text(errors="replace")
        assert "forbidden" not in text.lower(), text[-3000:]
    finally:
        for p in procs.values():
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGTERM)
                try:
                    p.wait(20)
                except subprocess.TimeoutExpired:
                    os.killpg(p.pid, signal.SIGKILL)
                    p.wait(5)
        for suffix in ("before", "after"):
            envtest.kubectl("delete", "lvmvolumegroup", f"{ns}-{suffix}", "--ignore-not-found", "--wait=false")
            envtest.kubectl("patch", "lvmvolumegroup", f"{ns}-{suffix}", "--type=merge", "-p",
                            '{"metadata":{"finalizers":null}}', check=False)
        for d in docs:
            if d["kind"].startswith("Cluster"):
                envtest.delete(d["kind"].lower(), d["metadata"]["name"], wait=False)
        envtest.delete("namespace", ns, wait=False)
