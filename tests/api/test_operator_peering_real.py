"""The operator never waits silently (real API server): no peering object → exit 2 with a warning
that says what to do; the chart's ``logFormat: console`` is accepted; replicas get distinct priorities."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from disklet_operator.peering import replica_priority

from devkit.envtest import Cluster

REPO = Path(__file__).resolve().parents[2]


def _operator(envtest: Cluster, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, KUBECONFIG=envtest.kubeconfig, DISKLET_METRICS_PORT="0",
               PYTHONPATH=os.pathsep.join(str(REPO / p) for p in ("", "operator", "agent")))
    argv = [sys.executable, "-c", "import sys; from disklet_operator.main import main; sys.exit(main())", *args]
    return subprocess.run(argv, env=env, capture_output=True, text=True, timeout=timeout, check=False)


@pytest.mark.timeout(120)
def test_missing_peering_fails_fast_with_a_warning(envtest: Cluster) -> None:
    res = _operator(envtest, "--log-format", "console", "--log-level", "info")
    assert res.returncode == 2, res.stderr[-2000:]
    assert "warning" in res.stderr.lower() and "--standalone" in res.stderr, res.stderr[-2000:]
    assert "clusterkopfpeerings.kopf.dev" in res.stderr, res.stderr[-2000:]


def test_replicas_get_distinct_priorities() -> None:
    pods = [f"disklet-operator-7d9f8c6b5-{s}" for s in ("abcde", "fghij", "klmno", "pqrst")]
    prios = {replica_priority({"POD_ID": p}) for p in pods}
    assert len(prios) == len(pods) and all(p > 0 for p in prios)
    assert replica_priority({"POD_ID": pods[0]}) == replica_priority({"POD_ID": pods[0]})  # stable
    assert replica_priority({"DISKLET_PEERING_PRIORITY": "7", "POD_ID": pods[0]}) == 7
