"""The two size grammars (docs/kctl.md#sizes) as the real kube-apiserver enforces them: a decimal
LVM size and a Kubernetes unit in a DiskLayout are refused, each with the right spelling."""

from __future__ import annotations

import json

import pytest

from devkit.envtest import Cluster

pytestmark = pytest.mark.api


def server_dry_run(cluster: Cluster, obj: dict) -> str:
    res = cluster.kubectl("create", "--dry-run=server", "-f", "-", input=json.dumps(obj), check=False)
    return res.stdout + res.stderr if res.returncode else ""


def lvg(**spec: object) -> dict:
    return {"apiVersion": "disklet.io/v1alpha1", "kind": "LVMVolumeGroup", "metadata": {"name": "sizes"},
            "spec": {"type": "Local", "local": {"nodeName": "node-1"}, "actualVGNameOnTheNode": "vg0",
                     "fileDevices": [{"name": "a", "directory": "/var/lib/disklet/file-devices", "size": "1Gi"}],
                     **spec}}


def layout(size: str) -> dict:
    fs = {"type": "filesystem", "format": "ext4"}
    return {"apiVersion": "disklet.io/v1alpha1", "kind": "DiskLayout", "metadata": {"name": "sizes"},
            "spec": {"nodeName": "node-1", "diskLayout": {"disks": [{"name": "d", "device": "/dev/vdb", "gpt": {
                "partitions": [{"name": "a", "size": size, "content": {**fs, "mountpoint": "/srv/a"}},
                               {"name": "b", "size": "100%", "content": {**fs, "mountpoint": "/srv/b"}}]}}]}}}


def test_thin_pool_decimal_size_is_refused_with_the_binary_spelling(disklet_cluster: Cluster) -> None:
    err = server_dry_run(disklet_cluster, lvg(thinPools=[{"name": "tp", "size": "1G"}]))
    assert "1G is a decimal size (1G is 10^9 bytes): use Mi, Gi, Ti or Pi; did you mean 1Gi?" in err, err
    assert server_dry_run(disklet_cluster, lvg(thinPools=[{"name": "tp", "size": "1Gi"}])) == ""


def test_disklayout_kubernetes_unit_is_refused_with_the_disko_spelling(disklet_cluster: Cluster) -> None:
    err = server_dry_run(disklet_cluster, layout("1Gi"))
    assert "1Gi is a Kubernetes unit: DiskLayout sizes are disko's, whose letters are already binary " \
           "(1G = 1 GiB); write 1G" in err, err
    assert server_dry_run(disklet_cluster, layout("1G")) == ""
