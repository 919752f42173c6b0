"""kctl diff reads the cluster's truth: each agent publishes its file-devices base directory and
mount roots on its Lease, and the LVM plan uses the node's own directory instead of the default
(a good manifest is no longer called REFUSED when the chart's fileDevicesDirectory is elsewhere);
--offline and a node without a publishing agent say what they assumed."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from disklet_agent.handlers.lease import renew_lease
from disklet_agent.kube import AgentKube

from devkit.realkube import RealKube
from disklet.kube.lease import FILE_DEVICES_ANNOTATION, MOUNT_ROOTS_ANNOTATION, agent_facts, lease_name
from tests.api.kctl_fixtures import kctl

pytestmark = pytest.mark.api

NS = "disklet-system"
ELSEWHERE = "/srv/disklet-files"


@pytest.fixture()
def kube(real_kube: RealKube) -> RealKube:
    real_kube.ensure_namespace(NS)
    return real_kube


def lvg_manifest(tmp_path: Path, node: str) -> Path:
    path = tmp_path / f"lvg-{node}.yaml"
    path.write_text(yaml.safe_dump({
        "apiVersion": "disklet.io/v1alpha1", "kind": "LVMVolumeGroup", "metadata": {"name": f"data-{node}"},
        "spec": {"type": "Local", "local": {"nodeName": node}, "actualVGNameOnTheNode": "data",
                 "fileDevices": [{"name": "f1", "directory": ELSEWHERE, "size": "1Gi"}]}}))
    return path


async def test_the_agent_publishes_its_settings_and_diff_plans_with_them(kube: RealKube, tmp_path: Path) -> None:
    agent = AgentKube(kube.endpoint())
    try:
        await renew_lease(agent, "facts-n1", NS, agent_facts(ELSEWHERE, ["/srv", "/data"]))
        await renew_lease(agent, "facts-n1", NS, agent_facts(ELSEWHERE, ["/srv", "/data"]))  # the renewal path
    finally:
        await agent.close()
    notes = kube.read("coordination.k8s.io/v1/leases", lease_name("facts-n1"), NS)["metadata"]["annotations"]
    assert notes[FILE_DEVICES_ANNOTATION] == ELSEWHERE and notes[MOUNT_ROOTS_ANNOTATION] == "/srv,/data"

    r = await kctl(kube, "diff", "-f", str(lvg_manifest(tmp_path, "facts-n1")))
    assert r.code == 1, (r.out, r.err)  # differences (new), not refused
    assert f"file-devices base directory: {ELSEWHERE} (published by the agent of node facts-n1" in r.out, r.out
    assert "REFUSED" not in r.out, r.out

    # A node whose agent never published: the default, said as such — and the plan refuses.
    r = await kctl(kube, "diff", "-f", str(lvg_manifest(tmp_path, "facts-n2")))
    assert r.code == 2 and "REFUSED" in r.out, r.out
    assert "file-devices base directory: /var/lib/disklet/file-devices (default: the agent of node facts-n2 has " \
           "no Lease there yet" in r.out, r.out

    r = await kctl(kube, "diff", "--offline", "-f", str(lvg_manifest(tmp_path, "facts-n1")))
    assert "(assumed: --offline reads no agent's setting" in r.out, r.out
    r = await kctl(kube, "diff", "--offline", "--file-devices-dir", ELSEWHERE, "-f", str(lvg_manifest(tmp_path, "facts-n1")))
    assert f"file-devices base directory: {ELSEWHERE} (--file-devices-dir)" in r.out and "REFUSED" not in r.out, r.out


async def test_disklayout_diff_uses_the_mount_roots_the_agent_published(kube: RealKube, tmp_path: Path) -> None:
    agent = AgentKube(kube.endpoint())
    try:
        await renew_lease(agent, "roots-n1", NS, agent_facts("/var/lib/disklet/file-devices", ["/srv"]))
    finally:
        await agent.close()

    def layout(node: str, mountpoint: str) -> Path:
        path = tmp_path / f"dl-{node}-{mountpoint.strip('/').replace('/', '-')}.yaml"
        path.write_text(yaml.safe_dump({
            "apiVersion": "disklet.io/v1alpha1", "kind": "DiskLayout", "metadata": {"name": f"dl-{node}"},
            "spec": {"nodeName": node, "diskLayout": {"disks": [{"name": "d", "device": "/dev/vdb", "gpt": {
                "partitions": [{"name": "p", "size": "100%", "content": {
                    "type": "filesystem", "format": "ext4", "mountpoint": mountpoint}}]}}]}}}))
        return path

    r = await kctl(kube, "diff", "-f", str(layout("roots-n1", "/data/x")))  # /data: a default root, not this agent's
    assert r.code == 2 and "mountpoint_not_allowed" in r.out, r.out
    assert "mount roots: /srv (published by the agent of node roots-n1)" in r.out, r.out
    r = await kctl(kube, "diff", "-f", str(layout("roots-n1", "/srv/x")))
    assert r.code == 1 and "pre-flight: pending" in r.out, r.out
    r = await kctl(kube, "diff", "-f", str(layout("roots-n2", "/data/x")))  # no agent: the defaults, said so
    assert r.code == 1 and "(default: the agent of node roots-n2 has published none)" in r.out, r.out
    r = await kctl(kube, "diff", "--offline", "-f", str(layout("roots-n1", "/data/x")))
    assert "(assumed: --offline reads no agent's setting)" in r.out, r.out
