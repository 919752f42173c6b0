"""kctl support-bundle: what goes in (objects, Events, pods, logs, per-node agent views) and what never
does (Secrets, values other than disklet's own settings)."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path
from typing import Any

import yaml
from kctl_fixtures import BD, DL, LVG, block_device, disk_layout, kctl, lvg

from disklet import __version__
from disklet.cli import supportbundle
from disklet.cli.kube import KubeError

NS = "disklet-system"
SECRET_VALUE = "hunter2-do-not-leak"


def pod(name: str, component: str, node: str, restarts: int = 0, namespace: str = NS) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": namespace, "creationTimestamp": "2024-05-01T10:00:00Z",
                         "labels": {"app.kubernetes.io/component": component, "app.kubernetes.io/name": "disklet",
                                    "helm.sh/chart": "disklet-0.1.0", "app.kubernetes.io/version": "0.1.0"},
                         "annotations": {"checksum/config": "abc123", "vault.example/token": SECRET_VALUE},
                         "managedFields": [{"manager": "kubelet"}]},
            "spec": {"nodeName": node, "containers": [{"name": component, "command": [f"disklet-{component}"],
                                                       "args": ["run", f"--token={SECRET_VALUE}"], "env": [
                {"name": "API_TOKEN", "value": SECRET_VALUE},
                {"name": "FILE_DEVICES_DIRECTORY", "value": "/srv/disklet/files"},
                {"name": "FROM_SECRET", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}},
                {"name": "NODE_NAME", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}}]}],
                     "initContainers": [{"name": "init", "image": "busybox", "env": [
                         {"name": "INIT_SECRET", "value": SECRET_VALUE}]}]},
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
                     pod("unrelated", "web", "node-a")],
            "nodes": [{"kind": "Node", "metadata": {"name": "node-a", "labels": {"disk": "fast"}},
                       "status": {"images": [{"names": ["big"]}], "nodeInfo": {"kubeletVersion": "v1.31.0"}}}],
            "leases": [{"kind": "Lease", "metadata": {"name": "disklet-agent-node-a", "namespace": NS},
                        "spec": {"holderIdentity": "node-a", "renewTime": "2024-05-01T10:00:00.000000Z"}},
                       {"kind": "Lease", "metadata": {"name": "kube-scheduler", "namespace": NS}}]}
        self.log_queries: list[tuple[str, list[tuple[str, Any]]]] = []
        self.pod_queries: list[dict[str, Any]] = []

    async def list_objects(self, kind: Any, **kw: Any) -> list[dict[str, Any]]:
        if kind.plural == "pods":
            self.pod_queries.append(kw)
            if kw.get("namespace"):
                return [dict(o) for o in self.objects["pods"] if o["metadata"]["namespace"] == kw["namespace"]]
            return [dict(o) for o in self.objects["pods"] if o["metadata"]["labels"].get("app.kubernetes.io/name")
                    == "disklet" and o["metadata"]["labels"]["app.kubernetes.io/component"] in ("operator", "agent")]
        return [json.loads(json.dumps(o)) for o in self.objects[kind.plural]]

    async def request(self, method: str, path: str, **_: Any) -> Any:
        assert (method, path) == ("GET", "/version")
        return {"gitVersion": "v1.31.0", "platform": "linux/amd64"}

    async def get(self, kind: Any, name: str) -> dict[str, Any] | None:
        from disklet.api.crdgen import crd_for
        from disklet.api.resources import ALL_RESOURCES

        return next((crd_for(r) for r in ALL_RESOURCES if f"{r.plural}.disklet.io" == name), None)

    async def text(self, path: str, *, query: Any = (), what: str = "") -> str:
        self.log_queries.append((path, list(query)))
        if "disklet-agent-b" in path:
            raise KubeError("logs unavailable (HTTP 500)")
        return f"log of {path}\n"


async def test_collect_gathers_everything_and_redacts_environment_values():
    kube = FakeKube()
    execs: list[tuple[str, list[str]]] = []

    async def exec_(pod_name: str, container: str | None, argv: list[str], namespace: str) -> tuple[int, str, str]:
        assert namespace == NS
        execs.append((pod_name, argv))
        if "lvm-report" in argv and pod_name.endswith("-b"):
            return 1, '{"pvs": {"error": "x"}}', "pvs: failed"
        return 0, json.dumps({"argv": argv}), ""

    b = await supportbundle.collect(kube, NS, 50, exec_)
    assert set(b.files) == {
        "objects/disklayouts.yaml", "objects/lvmvolumegroups.yaml", "objects/lvmvolumegroupsets.yaml",
        "objects/blockdevices.yaml", "events.yaml", "pods.yaml", "nodes.yaml", "leases.yaml", "versions.yaml",
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
    assert env["FILE_DEVICES_DIRECTORY"]["value"] == "/srv/disklet/files", "disklet's own settings are kept"
    assert "managedFields" not in pods[0]["metadata"]
    assert [n["metadata"]["name"] for n in yaml.safe_load(b.files["nodes.yaml"])["items"]] == ["node-a"]
    assert "images" not in yaml.safe_load(b.files["nodes.yaml"])["items"][0]["status"]
    assert [le["metadata"]["name"] for le in yaml.safe_load(b.files["leases.yaml"])["items"]] == ["disklet-agent-node-a"]
    versions = yaml.safe_load(b.files["versions.yaml"])
    assert versions["server"]["gitVersion"] == "v1.31.0" and versions["kctl"] == __version__
    assert versions["chart"] == ["disklet-0.1.0 (app 0.1.0)"]
    assert all(c["sameSchemaAsThisKctl"] for c in versions["crds"].values()) and len(versions["crds"]) == 4
    assert ("tailLines", "50") in kube.log_queries[0][1]
    assert sorted(execs) == [("disklet-agent-a", ["disklet-agent", "disks", "-o", "json"]),
                             ("disklet-agent-a", ["disklet-agent", "lvm-report"]),
                             ("disklet-agent-b", ["disklet-agent", "disks", "-o", "json"]),
                             ("disklet-agent-b", ["disklet-agent", "lvm-report"])]
    assert any(p.startswith("logs/disklet-agent-b/agent.log: logs unavailable") for p in b.problems), b.problems
    assert any(p.startswith("nodes/node-b/lvm.json: `disklet-agent lvm-report` exited 1") for p in b.problems)
    files = files_of(supportbundle.tarball(b, "top"))
    assert "index.yaml" in files and SECRET_VALUE not in "".join(files.values())


def test_every_container_list_args_and_annotations_are_redacted_but_disklets_settings_stay():
    p = pod("disklet-agent-a", "agent", "node-a")
    p["spec"]["ephemeralContainers"] = [{"name": "debugger", "image": "busybox", "args": ["sh", "-c", SECRET_VALUE],
                                         "env": [{"name": "DEBUG_TOKEN", "value": SECRET_VALUE},
                                                 {"name": "DISKLET_LOG_LEVEL", "value": "debug"}],
                                         "envFrom": [{"secretRef": {"name": "s"}}]}]
    out = supportbundle.scrub_pod(p)
    assert SECRET_VALUE not in json.dumps(out)
    eph = out["spec"]["ephemeralContainers"][0]
    assert eph["env"] == [{"name": "DEBUG_TOKEN", "value": "<redacted>"}, {"name": "DISKLET_LOG_LEVEL", "value": "debug"}]
    assert eph["envFrom"] == "<redacted>" and eph["args"] == ["<redacted>", "<redacted>", "<redacted>"]
    assert out["spec"]["initContainers"][0]["env"] == [{"name": "INIT_SECRET", "value": "<redacted>"}]
    main = out["spec"]["containers"][0]
    assert main["command"] == ["disklet-agent"] and main["args"] == ["run", "<redacted>"]
    assert out["metadata"]["annotations"] == {"checksum/config": "abc123", "vault.example/token": "<redacted>"}
    assert out["metadata"]["labels"]["helm.sh/chart"] == "disklet-0.1.0"


def test_every_setting_the_chart_sets_is_known_to_the_bundle():
    """A new chart setting is either harmless (listed in SAFE_ENV) or redacted on purpose: this test makes
    someone decide."""
    import re

    chart = Path(__file__).resolve().parents[2] / "charts" / "disklet" / "templates"
    names = {m for f in chart.glob("*.yaml") for m in re.findall(r"- name: ([A-Z][A-Z0-9_]+)", f.read_text())}
    assert names and names <= supportbundle.SAFE_ENV, names - supportbundle.SAFE_ENV


async def test_pods_are_found_when_the_chart_is_in_another_namespace():
    kube = FakeKube()
    kube.objects["pods"] = [pod("disklet-operator-1", "operator", "node-a", namespace="storage"),
                            pod("disklet-agent-a", "agent", "node-a", namespace="storage")]

    execs = []

    async def exec_(pod_name: str, container: str | None, argv: list[str], namespace: str) -> tuple[int, str, str]:
        execs.append((namespace, pod_name))
        return 0, "{}", ""

    b = await supportbundle.collect(kube, NS, 10, exec_)
    assert [p["metadata"]["name"] for p in yaml.safe_load(b.files["pods.yaml"])["items"]] == \
        ["disklet-operator-1", "disklet-agent-a"]
    assert "logs/disklet-agent-a/agent.log" in b.files and "nodes/node-a/disks.json" in b.files
    assert any("found them in storage (pass -n storage next time)" in p for p in b.problems), b.problems
    assert any("/namespaces/storage/pods/disklet-agent-a/log" in q[0] for q in kube.log_queries)
    assert set(execs) == {("storage", "disklet-agent-a")}, "the agent is exec'd in its own namespace"


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


async def test_the_bundle_has_nodes_leases_versions_and_finds_the_chart_in_another_namespace(real_kube,
                                                                                           tmp_path: Path):
    kube = real_kube
    other = "disklet-test"
    agent = pod("disklet-agent-a", "agent", "node-a", namespace=other)
    del agent["metadata"]["managedFields"]
    for c in agent["spec"]["containers"] + agent["spec"]["initContainers"]:
        c["image"] = "registry.invalid/disklet-agent:0"
    kube.seed("v1/pods", agent)
    kube.seed("v1/nodes", {"apiVersion": "v1", "kind": "Node", "metadata": {"name": "node-a", "labels": {"disk": "fast"}}})
    kube.seed("coordination.k8s.io/v1/leases", {
        "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
        "metadata": {"name": "disklet-agent-node-a", "namespace": other},
        "spec": {"holderIdentity": "node-a", "leaseDurationSeconds": 60}})
    out = tmp_path / "bundle.tar.gz"
    r = await kctl(kube, "support-bundle", "--tarball", str(out))  # -n disklet-system (the default)
    assert r.code == 0, r.err
    files = files_of(out.read_bytes())
    pods = yaml.safe_load(files["pods.yaml"])["items"]
    assert [(p["metadata"]["namespace"], p["metadata"]["name"]) for p in pods] == [(other, "disklet-agent-a")]
    env = {e["name"]: e.get("value") for e in pods[0]["spec"]["containers"][0]["env"]}
    assert env["FILE_DEVICES_DIRECTORY"] == "/srv/disklet/files" and env["API_TOKEN"] == "<redacted>"
    assert SECRET_VALUE not in "".join(files.values())
    assert "node-a" in [n["metadata"]["name"] for n in yaml.safe_load(files["nodes.yaml"])["items"]]
    leases = yaml.safe_load(files["leases.yaml"])["items"]
    assert [le["spec"]["holderIdentity"] for le in leases] == ["node-a"]
    versions = yaml.safe_load(files["versions.yaml"])
    assert versions["server"]["gitVersion"].startswith("v1.") and versions["kctl"] == __version__
    assert set(versions["crds"]) == {f"{p}.disklet.io" for p in ("disklayouts", "lvmvolumegroups",
                                                                  "lvmvolumegroupsets", "blockdevices")}
    assert all(c["sameSchemaAsThisKctl"] is True for c in versions["crds"].values()), versions["crds"]
    assert versions["chart"] == ["disklet-0.1.0 (app 0.1.0)"]
    index = yaml.safe_load(files["index.yaml"])
    assert any(f"found them in {other}" in p for p in index["problems"]), index["problems"]
