"""The kctl commands: thin async glue between manifests, the cluster (kube.py) and views."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any, TextIO

from disklet.api.disklayout import DiskLayoutSpec, Phase
from disklet.api.resources import (
    BLOCK_DEVICE,
    DISK_LAYOUT,
    LVM_VOLUME_GROUP,
    LVM_VOLUME_GROUP_SET,
    NODE_LABEL,
    Resource,
)
from disklet.layout import PreflightResult
from disklet.layout.batch import preflight_many

from . import views
from .agentexec import (
    AGENT_SELECTOR,
    AgentPodError,
    apply_disk_argv,
    disks_argv,
    pick_agent_pod,
    pod_field_selector,
)
from .kube import EVENTS, NODES, PODS, Kind, Kube, KubeError, NotFound
from .manifests import Manifest, ManifestError, load_manifests
from .output import as_list, dump, field, table

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


@dataclass
class Ctx:
    out: TextIO
    err: TextIO
    kubeconfig: str | None = None
    context: str | None = None
    namespace: str = "disklet-system"

    async def connect(self) -> Kube:
        return await Kube.connect(self.kubeconfig, self.context)

    def say(self, text: str = "") -> None:
        self.out.write(text if text.endswith("\n") else text + "\n")

    def error(self, text: str) -> None:
        self.err.write(f"error: {text}\n")

    def warn(self, text: str) -> None:
        self.err.write(f"warning: {text}\n")


@dataclass(frozen=True)
class ResourceView:
    resource: Resource
    headers: tuple[str, ...]
    wide: tuple[str, ...]
    row: Any
    node_path: str


VIEWS: dict[str, ResourceView] = {
    DISK_LAYOUT.plural: ResourceView(DISK_LAYOUT, views.DISK_LAYOUT_HEADERS, views.DISK_LAYOUT_WIDE,
                                     views.disk_layout_row, "spec.nodeName"),
    LVM_VOLUME_GROUP.plural: ResourceView(LVM_VOLUME_GROUP, views.LVG_HEADERS, views.LVG_WIDE, views.lvg_row,
                                          "spec.local.nodeName"),
    LVM_VOLUME_GROUP_SET.plural: ResourceView(LVM_VOLUME_GROUP_SET, views.LVGSET_HEADERS, (), views.lvgset_row, ""),
    BLOCK_DEVICE.plural: ResourceView(BLOCK_DEVICE, views.BD_HEADERS, views.BD_WIDE, views.bd_row, "status.nodeName"),
}
ALIASES: dict[str, str] = {}
for _plural, _view in VIEWS.items():
    _r = _view.resource
    for _alias in (_r.plural, _r.singular, *_r.short_names, _r.kind.lower()):
        ALIASES[_alias] = _plural
ALIASES.update({"disk-layouts": "disklayouts", "disk-layout": "disklayouts", "lvm-volume-groups": "lvmvolumegroups",
                "lvm-volume-group": "lvmvolumegroups", "block-devices": "blockdevices", "block-device": "blockdevices",
                "lvm-volume-group-sets": "lvmvolumegroupsets"})
DISK_LAYOUT_NAMES = {a for a, p in ALIASES.items() if p == DISK_LAYOUT.plural}


def resolve_type(name: str) -> ResourceView | None:
    plural = ALIASES.get(name.lower())
    return VIEWS[plural] if plural else None


def kind_of(res: Resource) -> Kind:
    return Kind.of(res)


def _load(ctx: Ctx, path: str) -> list[Manifest] | None:
    try:
        return load_manifests(path)
    except ManifestError as exc:
        ctx.error(f"refusing the whole batch, nothing was sent ({len(exc.problems)} problem(s)):")
        for p in exc.problems:
            ctx.err.write(f"  {p}\n")
        ctx.err.write("  hint: fix the documents above and re-run; `kctl diff -f PATH --offline` checks without a cluster\n")
        return None


async def _preflight_all(manifests: list[Manifest]) -> dict[int, PreflightResult]:
    """Pre-flight every DiskLayout of the batch in one evaluator run (docs/layouts.md, "Batch pre-flight")."""
    layouts = [m for m in manifests if isinstance(m.spec, DiskLayoutSpec)]
    items = [(m.spec, m.base_dir) for m in layouts if isinstance(m.spec, DiskLayoutSpec)]
    results = await asyncio.to_thread(preflight_many, items)
    return {id(m): pf for m, pf in zip(layouts, results, strict=True)}


def _preflight_line(pf: PreflightResult) -> str:
    text = f"pre-flight: {pf.phase.value}"
    if pf.refusal_reason:
        text += f" ({pf.refusal_reason.value})"
    return text + f": {pf.message}"


# ---------------------------------------------------------------------------- diff
async def cmd_diff(ctx: Ctx, path: str, offline: bool) -> int:
    manifests = _load(ctx, path)
    if manifests is None:
        return EXIT_FAILED
    kube: Kube | None = None
    code = EXIT_OK
    counts = {"new": 0, "changed": 0, "unchanged": 0}
    preflights = await _preflight_all(manifests)
    try:
        if not offline:
            kube = await ctx.connect()
        for m in manifests:
            live = await kube.get(kind_of(m.resource), m.name) if kube else None
            if isinstance(m.spec, DiskLayoutSpec):
                ok, state = await _diff_disk_layout(ctx, m, live, offline, preflights[id(m)])
                if not ok:
                    code = EXIT_FAILED
            else:
                state = _diff_spec(ctx, m, live, offline)
            if state:
                counts[state] += 1
            ctx.say()
    except KubeError as exc:
        ctx.error(str(exc))
        ctx.err.write("  hint: `kctl diff --offline -f PATH` pre-flights without the cluster\n")
        return EXIT_FAILED
    finally:
        if kube:
            await kube.close()
    summary = f"{len(manifests)} object(s)"
    if not offline:
        summary += f": {counts['new']} new, {counts['changed']} changed, {counts['unchanged']} unchanged"
    summary += "; nothing was written"
    if code != EXIT_OK:
        summary += "; some layouts would not be applied (see pre-flight above)"
    ctx.say(summary)
    return code


async def _diff_disk_layout(ctx: Ctx, m: Manifest, live: dict[str, Any] | None, offline: bool,
                            pf: PreflightResult) -> tuple[bool, str]:
    assert isinstance(m.spec, DiskLayoutSpec)
    ctx.say(f"{m.ref} (node {m.spec.node_name}, from {m.source})")
    ctx.say(f"  {_preflight_line(pf)}")
    ctx.say(f"  target devices: {', '.join(pf.target_devices) or '<none>'}")
    if pf.layout_hash:
        ctx.say(f"  layout hash: {pf.layout_hash}")
    ok = pf.phase == Phase.PENDING
    if pf.body is None:
        return ok, ""
    if offline:
        ctx.say("  cluster: not compared (--offline); resolved body:")
        ctx.out.write(views.unified_body_diff(m.name, None, pf.body))
        return ok, ""
    if live is None:
        ctx.say(f"  cluster: new (no {m.ref} in the cluster)")
        ctx.out.write(views.unified_body_diff(m.name, None, pf.body))
        return ok, "new"
    live_body, how = views.live_layout_body(live)
    status = live.get("status") or {}
    ctx.say(f"  cluster: generation {field(live, 'metadata.generation')}, phase {status.get('phase') or '<none>'}"
            f"{' (' + status['refusalReason'] + ')' if status.get('refusalReason') else ''}; body from {how}")
    changes = views.setting_changes(live.get("spec") or {}, m.spec)
    for change in changes:
        ctx.say(f"  change: {change}")
    body_diff = views.unified_body_diff(m.name, live_body, pf.body)
    if body_diff:
        ctx.out.write(body_diff)
    else:
        ctx.say("  layout body: no changes")
    return ok, "changed" if body_diff or changes else "unchanged"


def _diff_spec(ctx: Ctx, m: Manifest, live: dict[str, Any] | None, offline: bool) -> str:
    ctx.say(f"{m.ref} (from {m.source})")
    if offline:
        ctx.say("  cluster: not compared (--offline); the manifest is valid")
        return ""
    text = views.spec_yaml_diff(m.ref, None if live is None else live.get("spec") or {}, m.obj["spec"])
    if live is None:
        ctx.say(f"  cluster: new (no {m.ref} in the cluster)")
    if text:
        ctx.out.write(text)
        return "new" if live is None else "changed"
    ctx.say("  spec: no changes")
    return "unchanged"


# ---------------------------------------------------------------------------- apply
def comparable(obj: dict[str, Any] | None) -> Any:
    """What decides created/configured/unchanged: spec, labels, annotations."""
    if obj is None:
        return None
    meta = obj.get("metadata") or {}
    return {"spec": obj.get("spec"), "labels": meta.get("labels") or {}, "annotations": meta.get("annotations") or {}}


async def cmd_apply(ctx: Ctx, path: str, force_conflicts: bool, skip_preflight: bool) -> int:
    manifests = _load(ctx, path)
    if manifests is None:
        return EXIT_FAILED
    if not skip_preflight:
        refused = []
        preflights = await _preflight_all(manifests)
        for m in manifests:
            if isinstance(m.spec, DiskLayoutSpec):
                pf = preflights[id(m)]
                if pf.phase != Phase.PENDING:
                    refused.append(f"{m.source} {m.ref}: {_preflight_line(pf)}")
        if refused:
            ctx.error(f"refusing the whole batch, nothing was sent: {len(refused)} layout(s) fail pre-flight:")
            for line in refused:
                ctx.err.write(f"  {line}\n")
            ctx.err.write("  hint: `kctl diff -f PATH` shows the resolved body and targets; --skip-preflight "
                          "leaves the judgement to the operator\n")
            return EXIT_FAILED
    code = EXIT_OK
    try:
        async with await ctx.connect() as kube:
            for m in manifests:
                kind = kind_of(m.resource)
                try:
                    before = await kube.get(kind, m.name)
                    after = await kube.apply(kind, m.obj, force=force_conflicts)
                except KubeError as exc:
                    ctx.error(str(exc))
                    code = EXIT_FAILED
                    continue
                if before is None:
                    verdict = "created"
                elif comparable(before) == comparable(after):
                    verdict = "unchanged"
                else:
                    verdict = "configured"
                ctx.say(f"{m.ref} {verdict}")
    except KubeError as exc:
        ctx.error(str(exc))
        return EXIT_FAILED
    return code


# ---------------------------------------------------------------------------- get / describe / delete
async def cmd_get(ctx: Ctx, type_name: str, name: str | None, node: str | None, output: str | None) -> int:
    view = resolve_type(type_name)
    if view is None:
        ctx.error(f"unknown resource type {type_name!r}; use one of: disk-layouts (dl), lvmvolumegroups (lvg), "
                  "lvmvolumegroupsets (lvgset), blockdevices (bd)")
        return EXIT_USAGE
    try:
        async with await ctx.connect() as kube:
            kind = kind_of(view.resource)
            if name:
                obj = await kube.get(kind, name)
                if obj is None:
                    ctx.error(f"{view.resource.kind}/{name} not found\n  hint: `kctl get {type_name}` lists them")
                    return EXIT_FAILED
                items = [obj]
            else:
                items = await kube.list_objects(kind)
    except KubeError as exc:
        ctx.error(str(exc))
        return EXIT_FAILED
    if node:
        if not view.node_path:
            ctx.error(f"--node does not apply to {view.resource.plural} (they are not per node)")
            return EXIT_USAGE
        items = [o for o in items if field(o, view.node_path) == node]
    items.sort(key=views.name_of)
    if output in ("yaml", "json"):
        ctx.out.write(dump(items[0] if name else as_list(items), output))
        return EXIT_OK
    if output == "name":
        for o in items:
            ctx.say(f"{view.resource.singular}.{view.resource.group}/{views.name_of(o)}")
        return EXIT_OK
    if not items:
        ctx.err.write("No resources found" + (f" for node {node}" if node else "") + ".\n")
        return EXIT_OK
    wide = output == "wide"
    ctx.out.write(table(view.headers + (view.wide if wide else ()), [view.row(o, wide) for o in items]))
    return EXIT_OK


async def cmd_describe(ctx: Ctx, type_name: str, name: str) -> int:
    try:
        async with await ctx.connect() as kube:
            if type_name.lower() in ("node", "nodes", "no"):
                return await _describe_node(ctx, kube, name)
            if type_name.lower() not in DISK_LAYOUT_NAMES:
                ctx.error(f"kctl describe knows disk-layout and node, not {type_name!r}\n"
                          f"  hint: `kctl get {type_name} {name} -o yaml` shows any disklet object")
                return EXIT_USAGE
            obj = await kube.get(kind_of(DISK_LAYOUT), name)
            if obj is None:
                ctx.error(f"DiskLayout/{name} not found\n  hint: `kctl get disk-layouts` lists them")
                return EXIT_FAILED
            events = await kube.list_objects(EVENTS, field_selector=f"involvedObject.name={name},"
                                                                    f"involvedObject.kind={DISK_LAYOUT.kind}")
    except KubeError as exc:
        ctx.error(str(exc))
        return EXIT_FAILED
    ctx.out.write(views.describe_disk_layout(obj, events))
    return EXIT_OK


async def _node_objects(kube: Kube, node: str, res: Resource, node_path: str) -> list[dict[str, Any]]:
    """A node's objects by the ``disklet.io/node`` label, plus any the label does not yet cover."""
    labelled = await kube.list_objects(kind_of(res), label_selector=f"{NODE_LABEL}={node}")
    if labelled:
        return sorted(labelled, key=views.name_of)
    everything = await kube.list_objects(kind_of(res))
    return sorted((o for o in everything if field(o, node_path) == node), key=views.name_of)


async def _describe_node(ctx: Ctx, kube: Kube, node: str) -> int:
    node_obj = await kube.get(NODES, node)
    layouts = [o for o in await kube.list_objects(kind_of(DISK_LAYOUT)) if field(o, "spec.nodeName") == node]
    lvgs = await _node_objects(kube, node, LVM_VOLUME_GROUP, "spec.local.nodeName")
    bds = await _node_objects(kube, node, BLOCK_DEVICE, "status.nodeName")
    if node_obj is None and not (layouts or lvgs or bds):
        ctx.error(f"node {node!r} not found and no disklet object names it\n  hint: `kubectl get nodes`")
        return EXIT_FAILED
    ctx.out.write(views.describe_node(node, node_obj, layouts, lvgs, bds))
    return EXIT_OK


async def cmd_delete(ctx: Ctx, type_name: str, name: str) -> int:
    if type_name.lower() not in DISK_LAYOUT_NAMES:
        ctx.error(f"kctl delete only deletes disk-layouts, not {type_name!r}\n"
                  "  hint: LVM volume groups hold data; delete them deliberately with kubectl")
        return EXIT_USAGE
    try:
        async with await ctx.connect() as kube:
            await kube.delete(kind_of(DISK_LAYOUT), name)
    except NotFound:
        ctx.error(f"DiskLayout/{name} not found (nothing deleted)\n  hint: `kctl get disk-layouts` lists them")
        return EXIT_FAILED
    except KubeError as exc:
        ctx.error(str(exc))
        return EXIT_FAILED
    ctx.say(f"DiskLayout/{name} deleted")
    ctx.say("The node is untouched: its disks, mounts and the persisted layout (/etc/disklet/disk/current.nix) "
            "stay in place.")
    return EXIT_OK


# ---------------------------------------------------------------------------- node
async def cmd_node_disks(ctx: Ctx, node: str, live: bool, output: str | None) -> int:
    if live:
        return await _exec_agent(ctx, node, disks_argv(output or "table"), None)
    try:
        async with await ctx.connect() as kube:
            bds = await _node_objects(kube, node, BLOCK_DEVICE, "status.nodeName")
    except KubeError as exc:
        ctx.error(str(exc))
        return EXIT_FAILED
    if output in ("yaml", "json"):
        ctx.out.write(dump(as_list(bds), output))
        return EXIT_OK
    if not bds:
        ctx.err.write(f"No BlockDevices for node {node}. Is the disklet agent running there? "
                      "(`kctl node disks NODE --live` asks the agent directly)\n")
        return EXIT_OK
    ctx.out.write(table(views.NODE_DISK_HEADERS, views.node_disk_rows(bds)))
    return EXIT_OK


async def find_agent_pod(kube: Kube, node: str, namespace: str) -> tuple[str, str | None]:
    pods = await kube.list_objects(PODS, namespace=namespace, label_selector=AGENT_SELECTOR,
                                   field_selector=pod_field_selector(node))
    return pick_agent_pod(pods, node, namespace)


async def _exec_agent(ctx: Ctx, node: str, argv: list[str], stdin: bytes | None) -> int:
    def write(stream: TextIO) -> Any:
        def sink(data: bytes) -> None:
            stream.write(data.decode("utf-8", errors="replace"))
            stream.flush()
        return sink
    try:
        async with await ctx.connect() as kube:
            pod, container = await find_agent_pod(kube, node, ctx.namespace)
            ctx.err.write(f"# {ctx.namespace}/{pod}: {' '.join(argv)}\n")
            return await kube.exec(ctx.namespace, pod, container, argv, stdin, write(ctx.out), write(ctx.err))
    except (KubeError, AgentPodError) as exc:
        ctx.error(str(exc))
        return EXIT_FAILED


async def cmd_node_apply_disk(ctx: Ctx, node: str, path: str, apply: bool, rebuild: bool, timeout_seconds: int,
                              output: str | None, deprecated: bool) -> int:
    if deprecated:
        ctx.warn("`kctl node apply-disko` is deprecated and will be removed; use `kctl node apply-disk`")
    try:
        with open(path, "rb") as fh:
            body = fh.read()
    except OSError as exc:
        ctx.error(f"cannot read {path}: {exc.strerror}")
        return EXIT_FAILED
    argv = apply_disk_argv(apply=apply, rebuild=rebuild, timeout_seconds=timeout_seconds)
    if output == "json":
        argv += ["-o", "json"]
    return await _exec_agent(ctx, node, argv, body)

