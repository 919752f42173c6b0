"""kctl support-bundle: what goes in (objects, Events, pods, logs, per-node agent views) and what never
does (Secrets, environment values)."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path
from typing import Any

import yaml
from kctl_fixtures import BD, DL, LVG, block_device, disk_layout, kctl, lvg

from disklet.cli import supportbundle
from disklet.cli.kube import KubeError

NS = "disklet-system"
SECRET_VALUE = "hunter2-do-not-leak"


def pod(name: str, component: str, node: str, restarts: int = 0) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": NS, "creationTimestamp": "2024-05-01T10:00:00Z",
                         "labels": {"app.kubernetes.io/component": component},
                         "managedFields": [{"manager": "kubelet"}]},
            "spec": {"nodeName": node, "containers": [{"name": component, "env": [
                {"name": "API_TOKEN", "value": SECRET_VALUE},
                {"name": "FROM_SECRET", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}},
                {"name": "NODE_NAME", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}}]}]},
            "status": {"phase": "Running", "containerStatuses": [{"name": component, "restartCount": restarts}]}}


def files_of(data: bytes) -> dict[str, str]:
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
        return {m.name.split("/", 1)[1]: tar.extractfile(m).read().decode() for m in tar.getmembers()}  # type: ignore[union-attr]


class FakeKube:
    """The calls collect() makes, answered from memory."""

    def __init__(self) -> None:
        self.objects: dict[str, list[dict[str, Any]]] = {
            "disklayouts": [disk_layout("node-a-data", "node-a")], "lvmvolumegroups": [lvg("vg-a", "node-a", "vg")],
            "lvmvolumegroupsets": [], "blockdevices": [block_device("node-a", "/dev/sdb", "1Ti")],
            "events": [{"kind": "Event", "metadata": {"name": "e1"}, "reason": "Refused",
                        "involvedObject": {"apiVersion": "disklet.io/v1alpha1", "kind": "DiskLayout", "name": "x"}},
                       {"kind": "Event", "metadata": {"name": "e2"}, "reason": "Pulled",
                        "involvedObject": {"apiVersion": "v1", "kind": "Pod", "name": "p"}}],
            "pods": [pod("disklet-operator-1", "operator", "node-a", restarts=2),
                     pod("disklet-agent-a", "agent", "node-a"), pod("disklet-agent-b", "agent", "node-b"),
                     pod("unrelated", "web", "node-a")]}
        self.log_queries: list[tuple[str, list[tuple[str, Any]]]] = []

    async def list_objects(self, kind: Any, **_: Any) -> list[dict[str, Any]]:
        return [dict(o) for o in self.objects[kind.plural]]

    async def text(self, path: str, *, query: Any = (), what: str = "") -> str:
        self.log_queries.append((path, list(query)))
        if "disklet-agent-b" in path:
            raise KubeError("logs unavailable (HTTP 500)")
        return f"log of {path}\n"


async def test_collect_gathers_everything_and_redacts_environment_values():
    kube = FakeKube()
    execs: list[tuple[str, list[str]]] = []

    async def exec_(pod_name: str, container: str | None, argv: list[str]) -> tuple[int, str, str]:
        execs.append((pod_name, argv))
        if "lvm-report" in argv and pod_name.endswith("-b"):
            return 1, '{"pvs": {"error": "x"}}', "pvs: failed"
        return 0, json.dumps({"argv": argv}), ""

    b = await supportbundle.collect(kube, NS, 50, exec_)
    assert set(b.files) == {
        "objects/disklayouts.yaml", "objects/lvmvolumegroups.yaml", "objects/lvmvolumegroupsets.yaml",
        "objects/blockdevices.yaml", "events.yaml", "pods.yaml",
        "logs/disklet-operator-1/operator.log", "logs/disklet-operator-1/operator.previous.log",
        "logs/disklet-agent-a/agent.log",
        "nodes/node-a/disks.json", "nodes/node-a/lvm.json", "nodes/node-b/disks.json", "nodes/node-b/lvm.json"}
    assert yaml.safe_load(b.files["objects/disklayouts.yaml"])["items"][0]["metadata"]["name"] == "node-a-data"
    assert [e["metadata"]["name"] for e in yaml.safe_load(b.files["events.yaml"])["items"]] == ["e1"]
    pods = yaml.safe_load(b.files["pods.yaml"])["items"]
    assert [p["metadata"]["name"] for p in pods] == ["disklet-operator-1", "disklet-agent-a", "disklet-agent-b"]
    env = {e["name"]: e for e in pods[0]["spec"]["containers"][0]["env"]}
    assert env["API_TOKEN"]["value"] == "<redacted>" and env["FROM_SECRET"]["valueFrom"] == "<redacted>"
    assert env["NODE_NAME"]["valueFrom"] == {"fieldRef": {"fieldPath": "spec.nodeName"}}
    assert "managedFields" not in pods[0]["metadata"]
    assert ("tailLines", "50") in kube.log_queries[0][1]
    assert sorted(execs) == [("disklet-agent-a", ["disklet-agent", "disks", "-o", "json"]),
                             ("disklet-agent-a", ["disklet-agent", "lvm-report"]),
                             ("disklet-agent-b", ["disklet-agent", "disks", "-o", "json"]),
                             ("disklet-agent-b", ["disklet-agent", "lvm-report"])]
    assert any(p.startswith("logs/disklet-agent-b/agent.log: logs unavailable") for p in b.problems), b.problems
    assert any(p.startswith("nodes/node-b/lvm.json: `disklet-agent lvm-report` exited 1") for p in b.problems)
    files = files_of(supportbundle.tarball(b, "top"))
    assert "index.yaml" in files and SECRET_VALUE not in "".join(files.values())


def test_the_writer_refuses_a_secret():
    b = supportbundle.Bundle()
    b.add_yaml("objects/x.yaml", {"kind": "List", "items": [{"kind": "Secret", "data": {"k": "dg=="}}]})
    try:
        supportbundle.tarball(b, "top")
    except ValueError as exc:
        assert "Secret" in str(exc)
    else:
        raise AssertionError("a Secret was written")


async def test_support_bundle_on_the_real_api_server(real_kube, tmp_path: Path):
    kube = real_kube
    agent = pod("disklet-agent-a", "agent", "node-a")
    del agent["metadata"]["managedFields"]  # server-owned on a real server
    agent["spec"]["containers"][0]["image"] = "registry.invalid/disklet-agent:0"
    kube.seed(DL, disk_layout("node-a-data", "node-a"))
    kube.seed(LVG, lvg("vg-a", "node-a", "vg_data"))
    kube.seed(BD, block_device("node-a", "/dev/sdb", "1Ti"))
    kube.seed("v1/secrets", {"metadata": {"name": "creds", "namespace": NS}, "data": {"token": "aHVudGVyMg=="}})
    kube.seed("v1/pods", agent)
    kube.seed("v1/events", {"metadata": {"name": "e1", "namespace": "default"}, "reason": "Applied",
                            "involvedObject": {"apiVersion": "disklet.io/v1alpha1", "kind": "DiskLayout",
                                               "name": "node-a-data"}})
    out = tmp_path / "bundle.tar.gz"
    r = await kctl(kube, "support-bundle", "--tarball", str(out), "--tail", "10")
    assert r.code == 0, r.err
    assert f"wrote {out}" in r.out
    files = files_of(out.read_bytes())
    assert "node-a-data" in files["objects/disklayouts.yaml"] and "vg-a" in files["objects/lvmvolumegroups.yaml"]
    assert "node-a-data" in files["events.yaml"]
    # (there is no kubelet, so the pod has no logs: logs/ is left out here; pods.yaml redaction and
    # the logs are asserted above with exact logs)
    everything = "".join(v for k, v in files.items() if not k.startswith("logs/"))
    assert SECRET_VALUE not in everything and "aHVudGVyMg==" not in everything and "creds" not in everything
    index = yaml.safe_load(files["index.yaml"])
    assert index["problems"] and all(isinstance(p, str) for p in index["problems"])  # no kubelet: no logs/exec
    assert "warning: " in r.err
    again = await kctl(kube, "support-bundle", "--tarball", str(out))
    assert again.code == 1 and "never overwritten" in again.err
    r = await kctl(kube, "support-bundle", "--tarball", str(tmp_path / "b2.tar.gz"), "-o", "json")
    report = json.loads(r.out)
    assert r.code == 0 and report["kind"] == "SupportBundle" and "events.yaml" in report["files"]
