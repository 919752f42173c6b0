"""Garbage collection for real: LVMVolumeGroupSet children go through ownerReferences, deleted by
kube-controller-manager's garbage collector (background and foreground deletion)."""

from __future__ import annotations

import json
import secrets
from pathlib import Path

import pytest

from devkit.envtest import Cluster

REPO = Path(__file__).resolve().parents[2]
FD = {"name": "a", "directory": "/var/lib/disklet/file-devices", "size": "1Gi"}


@pytest.fixture(autouse=True)
def _leave_the_server_as_found(real_kube):
    """The API tier shares one server: what these tests create (sets, children, Nodes, Leases) is
    deleted afterwards by ``real_kube`` (tests/api/conftest.py), so no later test's operator sees it."""
    yield


def _set_with_child(envtest: Cluster, finalizer: str | None = None) -> tuple[str, str]:
    envtest.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(REPO / "crds"))
    envtest.kubectl("wait", "--for", "condition=Established", "--timeout", "60s", "crd/lvmvolumegroupsets.disklet.io")
    name = f"gc-{secrets.token_hex(3)}"
    envtest.apply({"apiVersion": "disklet.io/v1alpha1", "kind": "LVMVolumeGroupSet", "metadata": {"name": name},
                   "spec": {"nodeSelector": {}, "strategy": "PerNode", "lvmVolumeGroupTemplate": {
                       "type": "Local", "actualVGNameOnTheNode": "vg0", "fileDevices": [FD]}}})
    owner = envtest.get("lvmvolumegroupset", name)
    assert owner is not None
    child = f"{name}-n1"
    meta = {"name": child, "ownerReferences": [{
        "apiVersion": "disklet.io/v1alpha1", "kind": "LVMVolumeGroupSet", "name": name,
        "uid": owner["metadata"]["uid"], "controller": True, "blockOwnerDeletion": True}]}
    if finalizer:
        meta["finalizers"] = [finalizer]
    envtest.apply({"apiVersion": "disklet.io/v1alpha1", "kind": "LVMVolumeGroup", "metadata": meta,
                   "spec": {"type": "Local", "local": {"nodeName": "n1"}, "actualVGNameOnTheNode": "vg0",
                            "fileDevices": [FD]}})
    return name, child


@pytest.mark.timeout(120)
@pytest.mark.parametrize("policy", ["background", "foreground"])
def test_set_deletion_collects_children(envtest: Cluster, policy: str) -> None:
    name, child = _set_with_child(envtest)
    envtest.kubectl("delete", "lvmvolumegroupset", name, f"--cascade={policy}", "--wait=false")
    envtest.wait_for(lambda: envtest.get("lvmvolumegroup", child) is None, timeout=60,
                     what=f"the garbage collector to delete {child}")
    envtest.wait_for(lambda: envtest.get("lvmvolumegroupset", name) is None, timeout=60, what=f"{name} gone")


@pytest.mark.timeout(120)
def test_foreground_deletion_waits_for_the_childs_finalizer(envtest: Cluster) -> None:
    """A child whose agent has not released it holds the set (foreground) until it is released."""
    name, child = _set_with_child(envtest, finalizer="disklet.io/agent")
    envtest.kubectl("delete", "lvmvolumegroupset", name, "--cascade=foreground", "--wait=false")
    envtest.wait_for(lambda: (envtest.get("lvmvolumegroup", child) or {}).get("metadata", {}).get("deletionTimestamp"),
                     timeout=60, what=f"{child} marked for deletion by the garbage collector")
    assert envtest.get("lvmvolumegroupset", name) is not None, "the set went before its child"
    envtest.kubectl("patch", "lvmvolumegroup", child, "--type=merge", "-p", json.dumps({"metadata": {"finalizers": None}}))
    envtest.wait_for(lambda: envtest.get("lvmvolumegroup", child) is None, timeout=60, what=f"{child} gone")
    envtest.wait_for(lambda: envtest.get("lvmvolumegroupset", name) is None, timeout=60, what=f"{name} gone")
