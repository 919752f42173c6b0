"""``kctl support-bundle``: one tarball with what a maintainer needs from a broken cluster.

Contents (``index.yaml`` lists every file and every problem met while collecting):

- ``objects/<plural>.yaml``: every DiskLayout, LVMVolumeGroup, LVMVolumeGroupSet, BlockDevice
  (``managedFields`` and last-applied annotations dropped);
- ``events.yaml``: the Events whose ``involvedObject`` is a disklet object (all namespaces);
- ``pods.yaml``: the operator and agent pods (found in ``--namespace``, else by the chart's labels in
  any namespace), scrubbed (:func:`scrub_pod`): in every container list (``containers``,
  ``initContainers``, ``ephemeralContainers``) an environment value is kept only for disklet's own
  settings (:data:`SAFE_ENV`, e.g. ``FILE_DEVICES_DIRECTORY``, which explains most file-device
  refusals) and downward-API references; every other value, every Secret/ConfigMap reference and
  ``envFrom`` is ``<redacted>``; ``args``/``command`` words are kept only when they are disklet's own
  (:data:`SAFE_ARGS`); pod annotations keep their keys, and their values only for
  :data:`SAFE_ANNOTATIONS`, so a token passed through ``extraEnv``, an extra argument or an
  annotation never leaves the cluster;
- ``nodes.yaml``: the Nodes (labels, taints, conditions, addresses, nodeInfo; no images list);
- ``leases.yaml``: the agents' Leases (``disklet-agent-<node>``: who reported last, when);
- ``versions.yaml``: the API server's version, each disklet CRD (served/storage versions, the chart
  that installed it, whether its schema equals this kctl's), the chart (the pods' ``helm.sh/chart``
  labels) and kctl's own version;
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

from disklet import GROUP, __version__
from disklet.api.resources import ALL_RESOURCES
from disklet.kube.lease import LEASE_PREFIX

from .agentexec import AgentPodError, disks_argv, lvm_report_argv, pick_agent_pod
from .kube import EVENTS, NODES, PODS, Kind, KubeError
from .output import as_list, field

LEASES = Kind("coordination.k8s.io", "v1", "leases", "Lease", namespaced=True)
CRDS = Kind("apiextensions.k8s.io", "v1", "customresourcedefinitions", "CustomResourceDefinition", namespaced=False)
DEFAULT_TAIL = 1000
REDACTED = "<redacted>"
COMPONENTS = ("operator", "agent")
DROPPED_ANNOTATIONS = ("kubectl.kubernetes.io/last-applied-configuration",)
SAFE_ENV = frozenset({
    # what the chart sets (charts/disklet/templates): identity, paths, intervals, thresholds, policy
    "NODE_NAME", "POD_NAME", "POD_ID", "FILE_DEVICES_DIRECTORY", "DISKLET_NAMESPACE", "DISKLET_NSENTER",
    "DISKLET_NSENTER_TARGET",
    "DISKLET_SCAN_INTERVAL_SECONDS", "DISKLET_RESYNC_INTERVAL_SECONDS", "DISKLET_REFUSED_RETRY_SECONDS",
    "DISKLET_FREE_SPACE_RESERVE_PERCENT", "DISKLET_COMMAND_TIMEOUT_SECONDS",
    "DISKLET_THIN_POOL_DATA_THRESHOLD_PERCENT", "DISKLET_THIN_POOL_METADATA_THRESHOLD_PERCENT",
    "DISKLET_SYSTEM_MOUNTS", "DISKLET_MOUNT_ROOTS", "DISKLET_VOLUME_MOUNTS", "DISKLET_METRICS_PORT",
    "DISKLET_LIVENESS_ENDPOINT", "DISKLET_LOG_FORMAT", "DISKLET_LOG_LEVEL", "DISKLET_PEERING_PRIORITY",
    # switches and command paths a maintainer must see (a test switch left on explains a lot)
    "DISKLET_ALLOW_LOOP_TARGETS", "DISKLET_LAYOUT_FILE_ANYWHERE", "DISKLET_HOST_ROOT", "DISKLET_LVM_SHELL",
    "DISKLET_DISKO_COMMAND", "DISKLET_NIXOS_REBUILD_COMMAND", "DISKLET_SYSTEMD_RUN_COMMAND",
})
"""Environment variables whose values are disklet's own harmless settings: kept. Every other value is redacted."""
SAFE_ARGS = frozenset({"run", "--standalone", "--namespace", "--peering", "--verbose", "--debug", "--liveness",
                       "disklet-agent", "disklet-operator"})
"""``args``/``command`` words (or ``--flag`` of ``--flag=value``) kept as they are; any other word is redacted."""
SAFE_ANNOTATIONS = frozenset({"kubectl.kubernetes.io/restartedAt", "kubectl.kubernetes.io/default-container",
                              "kubernetes.io/config.seen", "kubernetes.io/config.source", "checksum/config",
                              "container.apparmor.security.beta.kubernetes.io/agent",
                              "container.apparmor.security.beta.kubernetes.io/operator"})
"""Pod annotations whose values are kept; the others keep only their key."""
CONTAINER_LISTS = ("containers", "initContainers", "ephemeralContainers")
CHART_SELECTOR = "app.kubernetes.io/name=disklet,app.kubernetes.io/component in (operator,agent)"
"""The chart's labels on the operator and agent pods: how pods are found outside --namespace."""


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


def _safe_word(word: Any) -> Any:
    text = str(word)
    return word if text in SAFE_ARGS or text.split("=", 1)[0] in SAFE_ARGS else REDACTED


def scrub_pod(pod: dict[str, Any]) -> dict[str, Any]:
    """A pod as the bundle keeps it (module docstring): disklet's own settings stay, every other value goes."""
    out = scrub_object(pod)
    meta = out.get("metadata") or {}
    if meta.get("annotations"):
        meta["annotations"] = {k: (v if k in SAFE_ANNOTATIONS else REDACTED) for k, v in meta["annotations"].items()}
    spec = out.get("spec") or {}
    for container in (c for key in CONTAINER_LISTS for c in spec.get(key) or []):
        for env in container.get("env") or []:
            ref = env.get("valueFrom") or {}
            if "value" in env and env.get("name") not in SAFE_ENV:
                env["value"] = REDACTED
            if ref and not ("fieldRef" in ref or "resourceFieldRef" in ref):
                env["valueFrom"] = REDACTED
        if container.get("envFrom"):
            container["envFrom"] = REDACTED
        for key in ("command", "args"):
            if container.get(key):
                container[key] = [_safe_word(w) for w in container[key]]
    return out


def is_disklet_event(event: dict[str, Any]) -> bool:
    involved = event.get("involvedObject") or {}
    kinds = {r.kind for r in ALL_RESOURCES}
    return str(involved.get("apiVersion", "")).startswith(GROUP + "/") or involved.get("kind") in kinds


Exec = Callable[[str, str | None, list[str], str], Awaitable[tuple[int, str, str]]]
"""(pod, container, argv, namespace) -> (exit code, stdout, stderr)."""


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
    pods = await _pods(kube, b, namespace)
    b.add_yaml("pods.yaml", as_list([scrub_pod(p) for p in pods]))
    for pod in pods:
        await _logs(kube, b, str(field(pod, "metadata.namespace") or namespace), pod, tail)
    await _cluster(kube, b, pods)
    agent_nodes = sorted({str(field(p, "spec.nodeName")) for p in pods
                          if field(p, "metadata.labels", {}).get("app.kubernetes.io/component") == "agent"
                          and field(p, "spec.nodeName")})
    for node in nodes or agent_nodes:
        await _node(b, pods, namespace, node, exec_)
    return b


async def _pods(kube: Any, b: Bundle, namespace: str) -> list[dict[str, Any]]:
    """The operator and agent pods in ``namespace``; when there are none, the chart's pods in any namespace."""
    try:
        pods = [p for p in await kube.list_objects(PODS, namespace=namespace)
                if field(p, "metadata.labels", {}).get("app.kubernetes.io/component") in COMPONENTS]
    except KubeError as exc:
        b.problems.append(f"pods in {namespace}: {exc}")
        pods = []
    if pods:
        return pods
    try:
        pods = list(await kube.list_objects(PODS, label_selector=CHART_SELECTOR))
    except KubeError as exc:
        b.problems.append(f"pods labelled {CHART_SELECTOR} in any namespace: {str(exc).splitlines()[0]}")
    where = sorted({str(field(p, "metadata.namespace")) for p in pods})
    if pods:
        b.problems.append(f"no disklet pods in namespace {namespace!r}; found them in {', '.join(where)} "
                          f"(pass -n {where[0]} next time)")
    else:
        b.problems.append(f"no disklet operator or agent pods in namespace {namespace!r} nor labelled "
                          f"{CHART_SELECTOR} in any namespace (is the chart installed?)")
    return pods


def scrub_node(node: dict[str, Any]) -> dict[str, Any]:
    out = scrub_object(node)
    (out.get("status") or {}).pop("images", None)
    return out


async def _cluster(kube: Any, b: Bundle, pods: list[dict[str, Any]]) -> None:
    """nodes.yaml, leases.yaml (the agents'), versions.yaml."""
    try:
        b.add_yaml("nodes.yaml", as_list([scrub_node(n) for n in await kube.list_objects(NODES)]))
    except KubeError as exc:
        b.problems.append(f"nodes: {str(exc).splitlines()[0]}")
    found = sorted({str(field(p, "metadata.namespace")) for p in pods if field(p, "metadata.namespace")})
    namespaces: list[str | None] = [*found] if found else [None]
    leases: list[dict[str, Any]] = []
    for ns in namespaces:
        try:
            leases += [scrub_object(le) for le in await kube.list_objects(LEASES, namespace=ns)
                       if str(field(le, "metadata.name", "")).startswith(LEASE_PREFIX)]
        except KubeError as exc:
            b.problems.append(f"leases{' in ' + ns if ns else ''}: {str(exc).splitlines()[0]}")
    b.add_yaml("leases.yaml", as_list(sorted(leases, key=lambda le: str(field(le, "metadata.name")))))
    versions: dict[str, Any] = {"kctl": __version__}
    try:
        server = await kube.request("GET", "/version", what="server version")
        versions["server"] = {k: server.get(k) for k in ("gitVersion", "platform", "goVersion", "buildDate")}
    except KubeError as exc:
        b.problems.append(f"versions: server: {str(exc).splitlines()[0]}")
    versions["crds"] = await _crd_versions(kube, b)
    charts = sorted({f"{field(p, 'metadata.labels', {}).get('helm.sh/chart')} (app "
                     f"{field(p, 'metadata.labels', {}).get('app.kubernetes.io/version')})"
                     for p in pods if field(p, "metadata.labels", {}).get("helm.sh/chart")})
    versions["chart"] = charts or "unknown (no pod carries a helm.sh/chart label)"
    images = sorted({str(c.get("image")) for p in pods for c in field(p, "spec.containers", []) if c.get("image")})
    versions["images"] = images
    b.add_yaml("versions.yaml", versions)


async def _crd_versions(kube: Any, b: Bundle) -> dict[str, Any]:
    from disklet.api.crdgen import crd_for

    out: dict[str, Any] = {}
    for res in ALL_RESOURCES:
        name = f"{res.plural}.{GROUP}"
        try:
            crd = await kube.get(CRDS, name)
        except KubeError as exc:
            b.problems.append(f"versions: crd {name}: {str(exc).splitlines()[0]}")
            continue
        if crd is None:
            out[name] = "missing"
            continue
        mine = crd_for(res)
        labels = field(crd, "metadata.labels", {})
        out[name] = {
            "served": [v["name"] for v in field(crd, "spec.versions", []) if v.get("served")],
            "storage": [v["name"] for v in field(crd, "spec.versions", []) if v.get("storage")],
            "chart": labels.get("helm.sh/chart") or "not installed by the chart",
            "sameSchemaAsThisKctl": _schemas(crd) == _schemas(mine),
        }
    return out


def _schemas(crd: dict[str, Any]) -> list[Any]:
    return [(v.get("name"), v.get("schema")) for v in field(crd, "spec.versions", [])]


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
    where = {str(field(p, "metadata.name")): str(field(p, "metadata.namespace") or namespace) for p in agents}
    try:
        pod, container = pick_agent_pod(agents, node, namespace)
    except AgentPodError as exc:
        b.problems.append(f"nodes/{node}: {str(exc).splitlines()[0]}")
        return
    for filename, argv in (("disks.json", disks_argv("json")), ("lvm.json", lvm_report_argv())):
        path = f"nodes/{node}/{filename}"
        try:
            code, out, err = await exec_(pod, container, argv, where.get(pod, namespace))
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


def exec_via(kube: Any) -> Exec:
    async def run(pod: str, container: str | None, argv: list[str], namespace: str) -> tuple[int, str, str]:
        out: list[bytes] = []
        err: list[bytes] = []
        code = await kube.exec(namespace, pod, container, argv, None, out.append, err.append)
        return code, b"".join(out).decode("utf-8", "replace"), b"".join(err).decode("utf-8", "replace")
    return run

