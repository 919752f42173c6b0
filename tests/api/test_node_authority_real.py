"""Per-node authority on a real kube-apiserver: the chart's RBAC and ValidatingAdmissionPolicy.

Two Node objects A and B; a Pod of the agent's ServiceAccount bound to A (``spec.nodeName``); a
TokenRequest token bound to that Pod, which the API server stamps with A's name
(``authentication.kubernetes.io/node-name``). With that token, through the agent's own client
(:class:`disklet_agent.handlers.kubeclient.AgentKube`) and the write shapes the agent uses
(status merge patches, Kopf's finalizer/annotation patches, BlockDevice create/label/status/delete,
its Lease): everything on A works, everything on B is refused by the API server and B's objects
read back unchanged; spec and foreign metadata on A are refused too; the agent cannot read Secrets;
a token of the same ServiceAccount without the node claim can write nothing.

Needs the ``envtest`` fixture (devkit/envtest.py: ``KUBEBUILDER_ASSETS`` or ``E2E_KUBECONFIG``).
"""

from __future__ import annotations

import asyncio
import json
import secrets
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from disklet_agent.handlers.lease import renew_lease
from disklet_agent.kube import AgentKube

from disklet.api.resources import BLOCK_DEVICE, DISK_LAYOUT, LVM_VOLUME_GROUP, NODE_LABEL
from disklet.kube.client import ApiError
from disklet.kube.lease import lease_name
from disklet.kube.login import kubeconfig as endpoint_of

# The real-control-plane fixture (devkit/envtest.py, fixture ``envtest``); until it is present the
# module is skipped as a whole.
pytest.importorskip("devkit.envtest", reason="devkit/envtest.py (real control plane fixture) not present")

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "charts" / "disklet"
POLICY_KINDS = {"ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding",
                "ValidatingAdmissionPolicy", "ValidatingAdmissionPolicyBinding"}
POLICY_WORDS = "ValidatingAdmissionPolicy"


@dataclass
class Setup:
    cluster: Any
    namespace: str
    node_a: str
    node_b: str
    kubeconfig_a: Path
    kubeconfig_unbound: Path
    names: dict[str, str]


def _helm() -> str:
    from devkit.envtest import tool
    return tool("helm")


def _render(release: str, namespace: str) -> list[dict[str, Any]]:
    out = subprocess.run([_helm(), "template", release, str(CHART), "--namespace", namespace],  # noqa: S603
                         capture_output=True, text=True, check=True, timeout=120).stdout
    return [d for d in yaml.safe_load_all(out) if d and d["kind"] in POLICY_KINDS]


def _lvg(name: str, node: str) -> dict[str, Any]:
    return {"apiVersion": LVM_VOLUME_GROUP.api_version, "kind": LVM_VOLUME_GROUP.kind,
            "metadata": {"name": name, "labels": {NODE_LABEL: node}},
            "spec": {"local": {"nodeName": node}, "actualVGNameOnTheNode": "vg_auth",
                     "fileDevices": [{"name": "a", "directory": "/var/lib/disklet/file-devices", "size": "1Gi"}]}}


def _layout(name: str, node: str) -> dict[str, Any]:
    return {"apiVersion": DISK_LAYOUT.api_version, "kind": DISK_LAYOUT.kind,
            "metadata": {"name": name, "labels": {NODE_LABEL: node}},
            "spec": {"nodeName": node, "diskLayout": {"disks": [{
                "name": "data1", "device": "/dev/disk/by-id/auth-disk",
                "gpt": {"partitions": [{"name": "p", "size": "100%", "content": {
                    "type": "filesystem", "format": "ext4", "mountpoint": "/var/lib/auth"}}]}}]}}}


def _block_device(name: str, node: str) -> dict[str, Any]:
    return {"apiVersion": BLOCK_DEVICE.api_version, "kind": BLOCK_DEVICE.kind,
            "metadata": {"name": name, "labels": {"kubernetes.io/hostname": node, NODE_LABEL: node}}}


@pytest.fixture(scope="module")
def setup(envtest) -> Iterator[Setup]:
    c = envtest
    rid = secrets.token_hex(3)
    release, namespace = f"auth{rid}", f"dk-auth-{rid}"
    node_a, node_b = f"auth-{rid}-a", f"auth-{rid}-b"
    names = {"lvg_a": f"auth-{rid}-vg-a", "lvg_b": f"auth-{rid}-vg-b", "dl_a": f"auth-{rid}-dl-a",
             "dl_b": f"auth-{rid}-dl-b", "bd_b": f"auth-{rid}-dev-b", "pod": f"agent-{rid}"}
    tmp = Path(tempfile.mkdtemp(prefix="disklet-authority-"))
    objs = _render(release, namespace)
    cluster_scoped = [(d["kind"], d["metadata"]["name"]) for d in objs if "namespace" not in d["metadata"]]
    try:
        c.apply(str(REPO / "crds"))
        c.namespace(namespace)
        c.apply(objs)
        agent_sa = next(d["metadata"]["name"] for d in objs
                        if d["kind"] == "ServiceAccount" and d["metadata"]["name"].endswith("-agent"))
        c.create_node(node_a)
        c.create_node(node_b)
        c.create_pod(names["pod"], namespace, node_a, service_account=agent_sa)
        c.apply([_lvg(names["lvg_a"], node_a), _lvg(names["lvg_b"], node_b),
                 _layout(names["dl_a"], node_a), _layout(names["dl_b"], node_b),
                 _block_device(names["bd_b"], node_b)])
        kc_a = c.kubeconfig_for_token(c.token_for(agent_sa, namespace, bound_pod=names["pod"]), tmp / "agent-a")
        kc_unbound = c.kubeconfig_for_token(c.token_for(agent_sa, namespace), tmp / "unbound")
        s = Setup(c, namespace, node_a, node_b, kc_a, kc_unbound, names)
        _wait_until_enforced(s)
        yield s
    finally:
        c.force_delete_pod(names["pod"], namespace)
        for kind, name in (("lvmvolumegroup", names["lvg_a"]), ("lvmvolumegroup", names["lvg_b"])):
            c.kubectl("patch", kind, name, "--type=merge", "-p", '{"metadata":{"finalizers":null}}', check=False)
        c.delete("lvmvolumegroup", names["lvg_a"], names["lvg_b"], wait=False)
        c.delete("disklayout", names["dl_a"], names["dl_b"], wait=False)
        c.delete("blockdevice", "-l", f"{NODE_LABEL} in ({node_a},{node_b})", wait=False)
        for kind, name in cluster_scoped:
            c.delete(kind.lower(), name, wait=False)
        c.delete("node", node_a, node_b, wait=False)
        c.delete("namespace", namespace, wait=False)
        for f in tmp.iterdir():
            f.unlink()
        tmp.rmdir()


def _wait_until_enforced(s: Setup) -> None:
    """RBAC and the policy reach the server's caches a moment after they are created: wait until a
    server-side dry run (admitted but never stored) of a write the policy must refuse is refused
    by the policy, and an allowed one passes."""
    bad = json.dumps(_block_device(f"{s.node_b}.dev-{'0' * 40}", s.node_b))
    good = json.dumps(_block_device(f"{s.node_a}.dev-{'0' * 40}", s.node_a))

    def enforced() -> bool:
        refused = s.cluster.kubectl("create", "--dry-run=server", "-f", "-", input=bad, check=False,
                                    kubeconfig=s.kubeconfig_a)
        allowed = s.cluster.kubectl("create", "--dry-run=server", "-f", "-", input=good, check=False,
                                    kubeconfig=s.kubeconfig_a)
        return POLICY_WORDS in refused.stderr and allowed.returncode == 0

    s.cluster.wait_for(enforced, timeout=60, what="the node-authority policy to be enforced")


async def _refused(coro: Any, *words: str) -> ApiError:
    with pytest.raises(ApiError) as info:
        await coro
    err = info.value
    assert err.status == 403 and POLICY_WORDS in str(err), err  # refused by the policy, not by a schema
    for w in words:
        assert w in str(err), err
    return err


@pytest.fixture
async def agent_a(setup: Setup):
    # The kubeconfig login runs its own event loop: read it in a thread.
    kube = AgentKube(await asyncio.to_thread(endpoint_of, str(setup.kubeconfig_a)))
    yield kube
    await kube.close()


def _admin_get(s: Setup, kind: str, name: str) -> dict[str, Any]:
    obj = s.cluster.get(kind, name)
    assert obj is not None, f"{kind}/{name} is gone"
    return obj


async def test_status_of_its_own_node_yes_of_another_node_no(setup: Setup, agent_a: AgentKube):
    s = setup
    status = {"phase": "Pending", "conditions": []}
    done = await agent_a.patch_status(LVM_VOLUME_GROUP, s.names["lvg_a"], status)
    assert done["status"]["phase"] == "Pending"
    assert _admin_get(s, "lvmvolumegroup", s.names["lvg_a"])["status"]["phase"] == "Pending"

    await _refused(agent_a.patch_status(LVM_VOLUME_GROUP, s.names["lvg_b"], {"phase": "Ready"}),
                   f"it belongs to node {s.node_b}")
    assert "status" not in _admin_get(s, "lvmvolumegroup", s.names["lvg_b"])

    await agent_a.patch_status(DISK_LAYOUT, s.names["dl_a"], {"phase": "pending"})
    await _refused(agent_a.patch_status(DISK_LAYOUT, s.names["dl_b"], {"phase": "applied"}),
                   f"it belongs to node {s.node_b}")
    assert "status" not in _admin_get(s, "disklayout", s.names["dl_b"])


async def test_only_its_finalizer_and_annotations_on_its_own_objects(setup: Setup, agent_a: AgentKube):
    s = setup
    lvg = s.names["lvg_a"]
    # What Kopf writes with the agent's settings: its finalizer and agent.disklet.io/* progress.
    await agent_a.patch(LVM_VOLUME_GROUP, lvg, {"metadata": {
        "finalizers": ["disklet.io/agent"],
        "annotations": {"agent.disklet.io/disklet_lvg_reconcile": json.dumps({"started": "x"}),
                        "agent.disklet.io/last-handled-configuration": "{}"}}})
    got = _admin_get(s, "lvmvolumegroup", lvg)["metadata"]
    assert got["finalizers"] == ["disklet.io/agent"]
    assert "agent.disklet.io/disklet_lvg_reconcile" in got["annotations"]
    await agent_a.patch(LVM_VOLUME_GROUP, lvg, {"metadata": {"finalizers": None}})  # released

    await _refused(agent_a.patch(LVM_VOLUME_GROUP, lvg, {"spec": {"fileDevices": [
        {"name": "a", "directory": "/var/lib/disklet/file-devices", "size": "1Gi"},
        {"name": "b", "directory": "/var/lib/disklet/file-devices", "size": "1Gi"}]}}),
        "may change only the status")
    await _refused(agent_a.patch(LVM_VOLUME_GROUP, lvg, {"metadata": {"annotations": {"example.com/x": "1"}}}),
                   "agent.disklet.io/* annotations and labels")
    await _refused(agent_a.patch(LVM_VOLUME_GROUP, lvg, {"metadata": {"labels": {NODE_LABEL: s.node_b}}}),
                   "agent.disklet.io/* annotations and labels")
    await _refused(agent_a.patch(LVM_VOLUME_GROUP, lvg, {"metadata": {"finalizers": ["example.com/keep"]}}),
                   "may change only the status")
    after = _admin_get(s, "lvmvolumegroup", lvg)
    assert len(after["spec"]["fileDevices"]) == 1
    assert after["metadata"]["labels"][NODE_LABEL] == s.node_a
    assert "example.com/x" not in after["metadata"].get("annotations", {})
    assert not after["metadata"].get("finalizers")
    # Node B's object: not even the agent's own finalizer.
    await _refused(agent_a.patch(LVM_VOLUME_GROUP, s.names["lvg_b"], {"metadata": {"finalizers": ["disklet.io/agent"]}}),
                   f"it belongs to node {s.node_b}")


async def test_block_devices_of_its_own_node_only(setup: Setup, agent_a: AgentKube):
    s = setup
    mine = f"{s.node_a}.dev-{'1' * 40}"  # node-bound, as block_device_name makes them
    # The agent's create-then-status sequence (handlers/blockdevices.apply_plan).
    await agent_a.create(BLOCK_DEVICE, _block_device(mine, s.node_a))
    await agent_a.patch_status(BLOCK_DEVICE, mine, {"nodeName": s.node_a, "path": "/dev/sdx", "size": "1Gi",
                                                    "type": "disk", "consumable": True})
    await agent_a.patch(BLOCK_DEVICE, mine, {"metadata": {"labels": {"disklet.io/fstype": "none"}}})
    await _refused(agent_a.patch_status(BLOCK_DEVICE, mine, {"nodeName": s.node_b}), "another node")
    await _refused(agent_a.patch(BLOCK_DEVICE, mine, {"metadata": {"labels": {
        "kubernetes.io/hostname": s.node_b, NODE_LABEL: s.node_b}}}), f"not of node {s.node_b}")
    assert _admin_get(s, "blockdevice", mine)["status"]["nodeName"] == s.node_a
    await agent_a.delete(BLOCK_DEVICE, mine)
    assert s.cluster.get("blockdevice", mine) is None

    await _refused(agent_a.create(BLOCK_DEVICE, _block_device(f"{s.node_b}.dev-{'2' * 40}", s.node_b)),
                   f"not of node {s.node_b}")
    forged = _block_device(f"{s.node_a}.dev-{'3' * 40}", s.node_a)
    forged["metadata"]["labels"][NODE_LABEL] = s.node_b  # selected by B's LVMVolumeGroups
    await _refused(agent_a.create(BLOCK_DEVICE, forged), f"labelled {NODE_LABEL}={s.node_a}")
    await _refused(agent_a.delete(BLOCK_DEVICE, s.names["bd_b"]), f"it belongs to node {s.node_b}")
    await _refused(agent_a.patch_status(BLOCK_DEVICE, s.names["bd_b"], {
        "nodeName": s.node_b, "path": "/dev/sdy", "size": "1Gi", "type": "disk", "consumable": True}),
                   f"it belongs to node {s.node_b}")
    assert _admin_get(s, "blockdevice", s.names["bd_b"])["metadata"]["labels"][NODE_LABEL] == s.node_b


async def test_its_own_lease_only(setup: Setup, agent_a: AgentKube):
    s = setup
    lease = await renew_lease(agent_a, s.node_a, s.namespace)  # creates it, as the agent does
    assert lease["metadata"]["name"] == lease_name(s.node_a)
    assert (await renew_lease(agent_a, s.node_a, s.namespace))["spec"]["holderIdentity"] == s.node_a
    await _refused(renew_lease(agent_a, s.node_b, s.namespace), "leases of its own node")
    assert s.cluster.get("lease", lease_name(s.node_b), "-n", s.namespace) is None


def test_no_secrets_and_no_writes_without_the_node_claim(setup: Setup):
    s = setup
    secrets_read = s.cluster.kubectl("get", "secrets", "-n", s.namespace, check=False, kubeconfig=s.kubeconfig_a)
    assert secrets_read.returncode != 0 and "Forbidden" in secrets_read.stderr
    secrets_all = s.cluster.kubectl("get", "secrets", "-A", check=False, kubeconfig=s.kubeconfig_a)
    assert secrets_all.returncode != 0 and "Forbidden" in secrets_all.stderr
    extra = s.cluster.whoami(s.kubeconfig_a)["status"]["userInfo"]["extra"]
    assert extra["authentication.kubernetes.io/node-name"] == [s.node_a]

    unbound = s.cluster.kubectl("patch", "lvmvolumegroup", s.names["lvg_a"], "--subresource=status",
                                "--type=merge", "-p", '{"status":{"phase":"Ready"}}', check=False,
                                kubeconfig=s.kubeconfig_unbound)
    assert unbound.returncode != 0 and "carries no node claim" in unbound.stderr
    assert _admin_get(s, "lvmvolumegroup", s.names["lvg_a"]).get("status", {}).get("phase") != "Ready"


def test_the_real_agent_works_under_the_policy(setup: Setup, tmp_path: Path):
    """The agent process itself (Kopf, its client, its Lease and BlockDevice scan) with the token
    bound to node A: it adds its finalizer and Kopf annotations, reports status, creates its Lease,
    and releases the finalizer on delete — and the server never refused it. Read-only on the host:
    the LVMVolumeGroup selects no device, the BlockDevice scan only reads (lsblk)."""
    from e2e import harness as h

    s = setup
    name = f"{s.names['lvg_a']}-live"
    (tmp_path / "etc").mkdir()
    (tmp_path / "file-devices").mkdir()
    env = h.child_env({
        "NODE_NAME": s.node_a, "KUBECONFIG": str(s.kubeconfig_a), "DISKLET_HOST_ROOT": str(tmp_path),
        "FILE_DEVICES_DIRECTORY": str(tmp_path / "file-devices"), "DISKLET_NSENTER": "0",
        "DISKLET_SCAN_INTERVAL_SECONDS": "2", "DISKLET_METRICS_PORT": "0", "DISKLET_LIVENESS_ENDPOINT": "",
        "DISKLET_NAMESPACE": s.namespace, "DISKLET_LOG_FORMAT": "console",
        "DISKLET_LVM_EXTRA_CONFIG": "global{activation=0}"})
    lvg = _lvg(name, s.node_a)
    del lvg["spec"]["fileDevices"]
    lvg["spec"]["blockDeviceSelector"] = {"matchLabels": {"disklet.io/selects": "nothing"}}
    agent = h.Proc("agent", h.agent_argv(), env, tmp_path / "agent.log").start()
    try:
        s.cluster.apply(lvg)

        def handled() -> dict[str, Any] | None:
            obj = s.cluster.get("lvmvolumegroup", name)
            meta = (obj or {}).get("metadata", {})
            done = obj and "disklet.io/agent" in meta.get("finalizers", []) and (obj.get("status") or {}).get("phase") \
                and any(k.startswith("agent.disklet.io/") for k in meta.get("annotations", {}))
            return obj if done else None

        s.cluster.wait_for(handled, timeout=90, what=f"the agent to take {name} (finalizer, annotations, status)")
        s.cluster.wait_for(lambda: s.cluster.get("lease", lease_name(s.node_a), "-n", s.namespace), timeout=60,
                           what="the agent's Lease")
        s.cluster.delete("lvmvolumegroup", name, wait=False)
        s.cluster.wait_for(lambda: s.cluster.get("lvmvolumegroup", name) is None, timeout=90,
                           what=f"the agent to release its finalizer on {name}")
        for bd in (s.cluster.get("blockdevices", "-l", f"{NODE_LABEL}={s.node_a}") or {}).get("items", []):
            assert bd["status"]["nodeName"] == s.node_a  # whatever the scan found here is node A's
        log = (tmp_path / "agent.log").read_text(errors="replace")
        assert POLICY_WORDS not in log, agent.tail(40)
        # Every write was allowed, the Events about the (cluster-scoped) objects in "default" too.
        refused = [line for line in log.splitlines() if "Forbidden" in line or "cannot post Event" in line]
        assert not refused, "\n".join(refused)
    finally:
        agent.stop()
        s.cluster.kubectl("patch", "lvmvolumegroup", name, "--type=merge", "-p", '{"metadata":{"finalizers":null}}',
                          check=False)
        s.cluster.delete("lvmvolumegroup", name, wait=False)


async def test_block_device_names_are_bound_to_the_node(setup: Setup, agent_a: AgentKube):
    """Names are a hash of (node, identity, path) anyone can compute: node A's agent could create node
    B's future BlockDevice (labelled for A), and B then got 409 on create and 403 on delete, so B's
    device was never reported. The policy lets an agent create only ``<its node>.dev-<40 hex>``."""
    from disklet.api.blockdevice import block_device_name

    s = setup
    b_future = block_device_name(s.node_b, "wwn-0x5000c500a1b2c3d4", "/dev/sdb")
    assert b_future.startswith(f"{s.node_b}.dev-")
    await _refused(agent_a.create(BLOCK_DEVICE, _block_device(b_future, s.node_a)),
                   f"may only create BlockDevices named {s.node_a}.dev-")
    legacy = "dev-" + b_future.rsplit("dev-", 1)[1]  # the old, unbound form
    await _refused(agent_a.create(BLOCK_DEVICE, _block_device(legacy, s.node_a)), "may only create BlockDevices")
    for sneaky in (f"{s.node_a}.x.dev-{'4' * 40}", f"{s.node_a}.dev-{'4' * 39}", f"{s.node_a}.dev-{'g' * 40}"):
        await _refused(agent_a.create(BLOCK_DEVICE, _block_device(sneaky, s.node_a)), "may only create")
    own = block_device_name(s.node_a, "wwn-0x5000c500a1b2c3d4", "/dev/sdb")
    await agent_a.create(BLOCK_DEVICE, _block_device(own, s.node_a))
    await agent_a.delete(BLOCK_DEVICE, own)
    assert s.cluster.get("blockdevice", own) is None and s.cluster.get("blockdevice", b_future) is None
