"""The node tier: the chart's own pods on a real node (docs/testing.md, "The node tier").

One session: the envtest control plane plus a node (devkit/node.py: containerd, kubelet named
``localhost``, kube-scheduler), the operator and agent images loaded into the node, ONE
``helm install`` that the scenarios share (they run in file order; the last ones upgrade and
uninstall it). Everything the session made on the host — VGs, loop devices, mounts, backing
files, ``/etc/disklet`` when it did not exist — is removed at the end, and the node's own
teardown proves that no process, shim, mount, network namespace or bridge is left.

Without the prerequisites (assets with kubelet and kube-scheduler, root, containerd, the image
archives of ``make images``) the tier is ONE skipped line saying what is missing; with
``CI=true`` that is an error instead.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from devkit.envtest import Cluster, ControlPlane
from devkit.node import Node, node_unavailable_reason
from devkit.pytest_envtest import skip_tier_as_one_line
from tests.node import release as rel

HERE = Path(__file__).parent
TIMINGS: dict[str, float] = {}
"""Seconds per phase of the session (node start/stop, image import, helm install), printed at the end."""


def _reason() -> str | None:
    if os.environ.get("E2E_KUBECONFIG"):
        return "node tier skipped: it starts its own node (unset E2E_KUBECONFIG)"
    return node_unavailable_reason() or rel.images_missing()


@pytest.hookimpl(trylast=True)  # after -m/-k deselection: only tests that will run count
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    mine = [i for i in items if HERE in Path(str(i.fspath)).parents]
    for item in mine:
        item.add_marker(pytest.mark.node)
        if item.get_closest_marker("timeout") is None:
            item.add_marker(pytest.mark.timeout(300))
    skip_tier_as_one_line(config, items, mine, _reason() if mine else None)


@pytest.fixture(scope="session")
def node(envtest: Cluster) -> Iterator[Node]:
    """The session's node on the session's control plane (started once, proven gone at the end)."""
    if not isinstance(envtest, ControlPlane):
        pytest.skip("node tier: needs the local envtest control plane")
    n = Node(envtest).start()
    try:
        yield n
    finally:
        try:
            n.stop()
        finally:
            TIMINGS.update({f"node {k}": v for k, v in n.timings.items()})


@pytest.fixture(scope="session")
def host(node: Node) -> Iterator[rel.Host]:
    """What the scenarios make on the host (sandbox directory, loops, VGs), undone at the end."""
    h = rel.Host.create()
    try:
        yield h
    finally:
        h.cleanup()


@pytest.fixture(scope="session")
def release(node: Node, host: rel.Host) -> Iterator[rel.Release]:
    """The chart installed once for the session (images loaded into the node first)."""
    r = rel.Release.install(node, host)
    TIMINGS.update(r.timings)
    try:
        yield r
    finally:
        r.teardown()


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if TIMINGS:
        terminalreporter.write_line("node tier phases: " + ", ".join(f"{k} {v:.1f}s" for k, v in TIMINGS.items()))
