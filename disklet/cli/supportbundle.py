"""``kctl support-bundle``: one tarball with what a maintainer needs from a broken cluster.

Contents (``index.yaml`` lists every file and every problem met while collecting):

- ``objects/<plural>.yaml``: every DiskLayout, LVMVolumeGroup, LVMVolumeGroupSet, BlockDevice
  (``managedFields`` and last-applied annotations dropped);
- ``events.yaml``: the Events whose ``involvedObject`` is a disklet object (all namespaces);
- ``pods.yaml``: the operator and agent pods, scrubbed: environment *values* are replaced by
  ``<redacted>`` (only downward-API references stay), so a token passed through ``extraEnv``
  never leaves the cluster;
- ``logs/<pod>/<container>.log``: the last N lines per container (``--tail``), plus the previous
  container's when it restarted;
- ``nodes/<node>/disks.json`` and ``nodes/<node>/lvm.json``: the agent's live view of the node
  (``disklet-agent disks -o json`` and ``disklet-agent lvm-report``, both read-only, via exec).

Secrets are never read: kctl lists no Secret or ConfigMap, and the writer refuses any document of
kind Secret as a last guard.
"""

from __future__ import annotations

import io
import json
import tarfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from dataclasses import field as dc_field
from typing import Any

import yaml

from disklet import GROUP
from disklet.api.resources import ALL_RESOURCES

from .agentexec import AgentPodError, disks_argv, lvm_report_argv, pick_agent_pod
from .kube import EVENTS, PODS, Kind, KubeError
from .output import as_list, field

DEFAULT_TAIL = 1000
REDACTED = "<redacted>"
COMPONENTS = ("operator", "agent")
DROPPED_ANNOTATIONS = ("kubectl.kubernetes.io/last-applied-configuration",)


@dataclass
class Bundle:
    files: dict[str, bytes] = dc_field(default_factory=dict)
    problems: list[str] = dc_field(default_factory=list)

    def add(self, path: str, data: str | bytes) -> None:
        self.files[path] = data.encode() if isinstance(data, str) else data

    def add_yaml(self, path: str, data: Any) -> None:
        self.add(path, yaml.safe_dump(data, sort_keys=False))

    def index(self) -> dict[str, Any]:
        return {"kind": "SupportBundleIndex", "files": sorted(self.files), "problems": self.problems}


def scrub_object(obj: dict[str, Any]) -> dict[str, Any]:
    """A copy without managedFields and last-applied annotations."""
    out = json.loads(json.dumps(obj))
    meta = out.get("metadata") or {}
    meta.pop("managedFields", None)
    annotations = meta.get("annotations") or {}
    for key in DROPPED_ANNOTATIONS:
        annotations.pop(key, None)
    return out


def scrub_pod(pod: dict[str, Any]) -> dict[str, Any]:
    """A pod with every literal environment value and secret/configMap reference redacted."""
    out = scrub_object(pod)
    spec = out.get("spec") or {}
    for container in (spec.get("containers") or []) + (spec.get("initContainers") or []):
        for env in container.get("env") or []:
            if "value" in env:
                env["value"] = REDACTED
            ref = env.get("valueFrom") or {}
            if "secretKeyRef" in ref or "configMapKeyRef" in ref:
                env["valueFrom"] = REDACTED
        if container.get("envFrom"):
            container["envFrom"] = REDACTED
    return out


def is_disklet_event(event: dict[str, Any]) -> bool:
    involved = event.get("involvedObject") or {}
    kinds = {r.kind for r in ALL_RESOURCES}
    return str(involved.get("apiVersion", "")).startswith(GROUP + "/") or involved.get("kind") in kinds


Exec = Callable[[str, str | None, list[str]], Awaitable[tuple[int, str, str]]]
"""(pod, container, argv) -> (exit code, stdout, stderr)."""


async def collect(kube: Any, namespace: str, tail: int, exec_: Exec, nodes: list[str] | None = None) -> Bundle:
    """Everything the bundle holds; a failing part is recorded in ``problems``, never fatal."""
    b = Bundle()
    for res in ALL_RESOURCES:
        try:
            items = await kube.list_objects(Kind.of(res))
            b.add_yaml(f"objects/{res.plural}.yaml", as_list([scrub_object(o) for o in items]))
        except KubeError as exc:
            b.problems.append(f"objects/{res.plural}: {exc}")
    try:
        events = [scrub_object(e) for e in await kube.list_objects(EVENTS) if is_disklet_event(e)]
        b.add_yaml("events.yaml", as_list(sorted(events, key=lambda e: str(
            e.get("lastTimestamp") or e.get("eventTime") or field(e, "metadata.creationTimestamp", "")))))
    except KubeError as exc:
        b.problems.append(f"events: {exc}")
    try:
        pods = [p for p in await kube.list_objects(PODS, namespace=namespace)
                if field(p, "metadata.labels", {}).get("app.kubernetes.io/component") in COMPONENTS]
    except KubeError as exc:
        b.problems.append(f"pods in {namespace}: {exc}")
        pods = []
    if not pods:
        b.problems.append(f"no disklet operator or agent pods in namespace {namespace!r} (wrong --namespace?)")
    b.add_yaml("pods.yaml", as_list([scrub_pod(p) for p in pods]))
    for pod in pods:
        await _logs(kube, b, namespace, pod, tail)
    agent_nodes = sorted({str(field(p, "spec.nodeName")) for p in pods
                          if field(p, "metadata.labels", {}).get("app.kubernetes.io/component") == "agent"
                          and field(p, "spec.nodeName")})
    for node in nodes or agent_nodes:
        await _node(b, pods, namespace, node, exec_)
    return b


async def _logs(kube: Any, b: Bundle, namespace: str, pod: dict[str, Any], tail: int) -> None:
    name = str(field(pod, "metadata.name"))
    restarted = {c.get("name"): c.get("restartCount", 0) for c in field(pod, "status.containerStatuses", [])}
    for container in [c.get("name") for c in field(pod, "spec.containers", [])]:
        for previous in ((False, True) if restarted.get(container) else (False,)):
            query: list[tuple[str, Any]] = [("container", container), ("tailLines", str(tail))]
            if previous:
                query.append(("previous", "true"))
            path = f"logs/{name}/{container}{'.previous' if previous else ''}.log"
            try:
                b.add(path, await kube.text(PODS.path(name, namespace) + "/log", query=query,
                                            what=f"logs of {namespace}/{name}/{container}"))
            except KubeError as exc:
                b.problems.append(f"{path}: {str(exc).splitlines()[0]}")


async def _node(b: Bundle, pods: list[dict[str, Any]], namespace: str, node: str, exec_: Exec) -> None:
    agents = [p for p in pods if field(p, "metadata.labels", {}).get("app.kubernetes.io/component") == "agent"]
    try:
        pod, container = pick_agent_pod(agents, node, namespace)
    except AgentPodError as exc:
        b.problems.append(f"nodes/{node}: {str(exc).splitlines()[0]}")
        return
    for filename, argv in (("disks.json", disks_argv("json")), ("lvm.json", lvm_report_argv())):
        path = f"nodes/{node}/{filename}"
        try:
            code, out, err = await exec_(pod, container, argv)
        except KubeError as exc:
            b.problems.append(f"{path}: {str(exc).splitlines()[0]}")
            continue
        b.add(path, out)
        if code != 0:
            b.problems.append(f"{path}: `{' '.join(argv)}` exited {code}: {err.strip()[:500]}")


def tarball(b: Bundle, top: str) -> bytes:
    """The bundle as a .tar.gz under ``top/`` (refuses a Secret, whatever put it there)."""
    for path, data in b.files.items():
        if path.endswith(".yaml"):
            for doc in yaml.safe_load_all(data):
                items = (doc or {}).get("items") or [doc or {}]
                if any(isinstance(i, dict) and i.get("kind") == "Secret" for i in items):
                    raise ValueError(f"refusing to write a Secret into the support bundle ({path})")
    buf = io.BytesIO()
    now = int(time.time())
    files = {**b.files, "index.yaml": yaml.safe_dump(b.index(), sort_keys=False).encode()}
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for path in sorted(files):
            info = tarfile.TarInfo(f"{top}/{path}")
            info.size, info.mtime, info.mode = len(files[path]), now, 0o600
            tar.addfile(info, io.BytesIO(files[path]))
    return buf.getvalue()


def exec_via(kube: Any, namespace: str) -> Exec:
    async def run(pod: str, container: str | None, argv: list[str]) -> tuple[int, str, str]:
        out: list[bytes] = []
        err: list[bytes] = []
        code = await kube.exec(namespace, pod, container, argv, None, out.append, err.append)
        return code, b"".join(out).decode("utf-8", "replace"), b"".join(err).decode("utf-8", "replace")
    return run

