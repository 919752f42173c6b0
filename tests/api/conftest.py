"""API tier: Kopf handlers, kctl and the agent end to end against a Kubernetes API server.

Two backends with one helper API (``read``, ``read_all``, ``seed``, ``mutations``, ``session``,
``endpoint``, ``connection_info``, ``server_url``, ``kubeconfig``):

- ``real_kube``: the session's real kube-apiserver (``envtest``, devkit/pytest_envtest.py) with
  disklet's CRDs installed, as a :class:`devkit.realkube.RealKube`; after each test every disklet
  object, Node and Lease the test left behind is deleted (so names can be reused). Skips as one
  line without a control plane, fails under ``CI=true``.
- ``mock_kube``: the kmock-based mock (:class:`devkit.kubeapi.KubeAPI`), for what a real server
  cannot do on demand (held watches, refused requests); such tests say why with
  ``@pytest.mark.kmock("reason")``.
- ``kube``: a module's backend: the mock, unless the module overrides it (a module-level
  ``kube`` fixture returning ``real_kube``). docs/testing.md lists which file runs where and why.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import pytest_asyncio

from devkit.envtest import Cluster
from devkit.kubeapi import KubeAPI, served
from devkit.realkube import RealKube

REPO = Path(__file__).resolve().parents[2]
TEST_NAMESPACES = ("disklet-test", "disklet-test-system")
"""Where the API tests' agents keep their Leases (agent_fixtures, operator_fixtures.AGENT_NS)."""


@pytest_asyncio.fixture()
async def mock_kube(tmp_path: Path) -> AsyncIterator[KubeAPI]:
    """The API mock served on 127.0.0.1 (``.server_url``, a kubeconfig at ``.kubeconfig``)."""
    async with served(tmp_path) as api:
        yield api


@pytest.fixture()
def kube(mock_kube: KubeAPI) -> KubeAPI:
    """The backend of a module's tests: the mock unless the module overrides it with ``real_kube``."""
    return mock_kube


@pytest.fixture(scope="session")
def disklet_cluster(envtest: Cluster) -> Cluster:
    """The session's real API server with disklet's CRDs established and the test namespaces."""
    envtest.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(REPO / "crds"))
    envtest.kubectl("wait", "--for", "condition=Established", "--timeout", "60s",
                    *(f"crd/{p}.disklet.io" for p in ("disklayouts", "lvmvolumegroups", "lvmvolumegroupsets",
                                                      "blockdevices")))
    for ns in TEST_NAMESPACES:
        envtest.namespace(ns)
    return envtest


@pytest.fixture()
def real_kube(disklet_cluster: Cluster) -> Iterator[RealKube]:
    """The real server (see the module docstring); cleaned after the test."""
    client = RealKube(disklet_cluster.kubeconfig)
    keep = client.snapshot()
    try:
        yield client
    finally:
        try:
            client.clean(keep)
        finally:
            client.close()
