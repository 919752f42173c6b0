"""The registries the console scripts build, checked through public seams only (the API objects
they write, the Events they post), never through Kopf's private registry attributes.

- The operator's production registry (``build_registry()``) logs in by itself — no test login
  handler — and serves DiskLayouts and LVMVolumeGroups.
- The agent's DiskLayout handlers in ``installer-only`` mode report the mode with a condition and
  an Event, and never put a finalizer on the DiskLayout (deleting one never waits for a node).

On the real API server.
"""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import pytest
from agent_fixtures import agent_running
from disklet_agent.config import AgentConfig
from disklet_operator.main import build_registry, configure_settings
from operator_fixtures import (
    DL,
    LVG,
    condition,
    disk_layout,
    node_object,
    posted_events,
    status_of,
    volume_group,
)

from devkit.kopfrun import kopf_running, wait_for
from disklet.api.resources import DISK_LAYOUT, LVM_VOLUME_GROUP
from disklet.kube.client import KubeClient

pytestmark = pytest.mark.api


@pytest.fixture()
def kube(real_kube):
    return real_kube


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:6]}"


async def test_operator_registry_logs_in_by_itself_and_serves_disklayouts_and_lvgs(kube: Any, monkeypatch):
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    monkeypatch.setenv("KUBECONFIG", str(kube.kubeconfig))  # what `disklet-operator` reads outside a pod
    node, dl, lvg = unique("reg-node"), unique("reg-dl"), unique("reg-lvg")
    kube.seed("v1/nodes", node_object(node))
    async with kopf_running(build_registry(), configure=lambda s: configure_settings(s, namespace="disklet-reg")):
        async with KubeClient(kube.endpoint()) as client:
            await client.create(DISK_LAYOUT, disk_layout(dl, node))
            await client.create(LVM_VOLUME_GROUP, volume_group(lvg, node))
        await wait_for(lambda: status_of(kube, DL, dl).get("phase") == "pending", timeout=60,
                       message="the DiskLayout pre-flight wrote phase pending")
        await wait_for(lambda: condition(status_of(kube, LVG, lvg), "NodeReady"), timeout=60,
                       message="the LVMVolumeGroup got its NodeReady condition")
    assert status_of(kube, DL, dl)["layoutHash"]
    assert condition(status_of(kube, LVG, lvg), "AgentReady")["status"] == "False"  # no agent Lease


async def test_agent_installer_only_reports_the_mode_and_never_adds_a_finalizer(kube: Any, monkeypatch,
                                                                                tmp_path: Path):
    node, name = unique("reg-n"), unique("reg-inst")
    body = disk_layout(name, node, nix="{ disko.devices = { }; }")
    body["metadata"]["labels"] = {"disklet.io/node": node}
    body["status"] = {"phase": "pending", "layoutGeneration": 1, "observedGeneration": 1}
    kube.seed(DL, body)
    config = AgentConfig(node_name=node, host_root=tmp_path, scan_interval_seconds=0.3, refused_retry_seconds=0.3)
    async with agent_running(kube, monkeypatch, node, config=config):
        status = await wait_for(lambda: (st := status_of(kube, DL, name)).get("nodeMode") and st, timeout=30,
                                message="the agent reported the node's management mode")
        await wait_for(lambda: any(e.get("reason") == "InstallerOnly" for e in posted_events(kube, name)),
                       timeout=30, message="an InstallerOnly Event")
    assert status["nodeMode"] == "installer-only" and status["phase"] == "pending"
    cond = next(c for c in status["conditions"] if c.get("reason") == "InstallerOnly")
    assert "echo controller-managed | sudo tee" in cond["message"]
    assert not (kube.read(DL, name)["metadata"].get("finalizers") or [])
