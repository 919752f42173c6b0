"""Node authority with kubelet-issued tokens: the token the kubelet projected into the agent pod
carries its node; the agent made all its writes without one refusal; a pod-bound token of the same
ServiceAccount for another node is refused by the chart's ValidatingAdmissionPolicy."""

from __future__ import annotations

import re
from typing import Any

from devkit.envtest import NODE_NAME_CLAIM
from tests.node.release import GROUP, Host, Release

POLICY_WORDS = "ValidatingAdmissionPolicy"
REFUSAL = re.compile(r"\b403\b|forbidden|Forbidden", re.IGNORECASE)


def _local_block_device(release: Release) -> dict[str, Any]:
    items = (release.get(f"blockdevices.{GROUP}") or {}).get("items") or []
    mine = [b for b in items if (b.get("status") or {}).get("nodeName") == "localhost"]
    assert mine, "no BlockDevice of localhost (the agent reports the host's disks)"
    return mine[0]


def test_agent_token_is_kubelet_issued_for_its_node_and_its_writes_were_never_refused(
        release: Release, host: Host) -> None:
    cp = release.node.control_plane
    pod = release.pod("agent")["metadata"]["name"]
    token = release.kubectl("exec", "-n", release.namespace, pod, "--", "cat",
                            "/var/run/secrets/kubernetes.io/serviceaccount/token").stdout.strip()
    mine = cp.kubeconfig_for_token(token, host.sandbox / "agent-token.kubeconfig", release.namespace)
    who = cp.whoami(mine)["status"]["userInfo"]
    assert who["username"] == f"system:serviceaccount:{release.namespace}:{release.name}-agent", who
    assert who["extra"][NODE_NAME_CLAIM] == ["localhost"], who
    assert who["extra"]["authentication.kubernetes.io/pod-name"] == [pod], who
    # Everything the agent wrote so far (BlockDevices, LVMVolumeGroup and DiskLayout status,
    # finalizers, its Lease) went through with that token: not one refusal in its log.
    log = release.logs("agent", tail=100000)
    refused = [line for line in log.splitlines() if REFUSAL.search(line)]
    assert not refused, "the agent was refused:\n" + "\n".join(refused[:20])
    bd = _local_block_device(release)
    allowed = release.kubectl("--kubeconfig", str(mine), "patch", f"blockdevices.{GROUP}", bd["metadata"]["name"],
                              "--subresource=status", "--type=merge", "--dry-run=server",
                              "-p", '{"status":{"consumableReason":"node tier"}}', check=False)
    assert allowed.returncode == 0, allowed.stderr


def test_pod_bound_token_of_another_node_is_refused(release: Release, host: Host) -> None:
    cp = release.node.control_plane
    other = host.name("other")
    cp.create_node(other)
    try:
        cp.create_pod(host.name("other-pod"), release.namespace, other, service_account=f"{release.name}-agent")
        token = cp.token_for(f"{release.name}-agent", release.namespace, bound_pod=host.name("other-pod"))
        theirs = cp.kubeconfig_for_token(token, host.sandbox / "other-token.kubeconfig", release.namespace)
        assert cp.whoami(theirs)["status"]["userInfo"]["extra"][NODE_NAME_CLAIM] == [other]
        bd = _local_block_device(release)
        before = bd["status"]
        refused = release.kubectl("--kubeconfig", str(theirs), "patch", f"blockdevices.{GROUP}",
                                  bd["metadata"]["name"], "--subresource=status", "--type=merge",
                                  "-p", '{"status":{"consumableReason":"forged"}}', check=False)
        assert refused.returncode != 0 and POLICY_WORDS in refused.stderr, refused.stderr
        after = release.get(f"blockdevices.{GROUP}", bd["metadata"]["name"])
        assert after and after["status"].get("consumableReason") == before.get("consumableReason")
    finally:
        cp.force_delete_pod(host.name("other-pod"), release.namespace)
        cp.delete("node", other, wait=False)
