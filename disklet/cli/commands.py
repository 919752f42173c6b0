"""The kctl commands: thin async glue between manifests, the cluster (kube.py) and views.

Every command honours the one ``-o`` flag set (:class:`disklet.cli.output.Output`): without ``-o``
(or with ``-o wide``) it prints its human report; with a machine format it prints the objects it
read, wrote or would write, rendered by :func:`disklet.cli.output.render`.
"""

from __future__ import annotations

import asyncio
import io
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, TextIO

from disklet.advice import DOCS_URL, next_step
from disklet.api.disklayout import DEFAULT_MOUNT_ROOTS, DiskLayoutSpec, Phase
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
from disklet.layout.mounts import MountPolicy

from . import lvmdiff, views
from .agentexec import (
    AGENT_SELECTOR,
    AgentPodError,
    apply_disk_argv,
    disks_argv,
    pick_agent_pod,
    pod_field_selector,
)
from .kube import EVENTS, NODES, PODS, Kind, Kube, KubeError, NotFound
from .kubeconfig import HINT as KUBECONFIG_HINT
from .kubeconfig import kubeconfig_problem
from .manifests import Manifest, ManifestError, load_manifests
from .output import (
    KIND_NAME_COLUMN,
    MIN_CELL,
    Output,
    custom_columns,
    field,
    printer_columns,
    render,
    sort_objects,
    table,
    table_columns,
)

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
DIFF_NONE, DIFF_CHANGES, DIFF_ERROR = 0, 1, 2
"""``kctl diff`` exits like ``kubectl diff``: 0 no differences, 1 differences, >1 an error."""


@dataclass
class Ctx:
    out: TextIO
    err: TextIO
    kubeconfig: str | None = None
    context: str | None = None
    namespace: str = "disklet-system"
    output: Output = Output()
    prog: str = "kctl"
    """How the user called us (``kubectl disklet`` as the kubectl plugin): hints name the same command."""

    async def connect(self) -> Kube:
        problem = kubeconfig_problem(self.kubeconfig, self.context)
        if problem:
            raise KubeError(f"{problem} ({KUBECONFIG_HINT})")
        return await Kube.connect(self.kubeconfig, self.context)

    def emit(self, objs: list[dict[str, Any]], single: bool = False, columns: Any = None) -> None:
        """The command's objects in the ``-o`` format (machine output)."""
        self.out.write(render(objs, self.output, single=single, columns=columns))

    def say(self, text: str = "") -> None:
        self.out.write(text if text.endswith("\n") else text + "\n")

    def error(self, text: str) -> None:
        self.err.write(f"error: {text}\n")

    def warn(self, text: str) -> None:
        self.err.write(f"warning: {text}\n")


@dataclass(frozen=True)
class ResourceView:
    resource: Resource
    node_path: str
    delete_note: str
    """What deleting the object does on the node (printed by ``kctl delete``)."""


VIEWS: dict[str, ResourceView] = {
    DISK_LAYOUT.plural: ResourceView(
        DISK_LAYOUT, "spec.nodeName",
        "The node is untouched: its disks, mounts and the persisted layout (/etc/disklet/disk/current.nix) "
        "stay in place."),
    LVM_VOLUME_GROUP.plural: ResourceView(
        LVM_VOLUME_GROUP, "spec.local.nodeName",
        "The node's agent removes the volume group only if it proves ownership (our tag) and the VG holds no "
        "logical volumes; otherwise the object stays Terminating and says why (" + DOCS_URL + "/lvm.md)."),
    LVM_VOLUME_GROUP_SET.plural: ResourceView(
        LVM_VOLUME_GROUP_SET, "",
        "The LVMVolumeGroups the set stamped are garbage-collected with it, each under the rule above "
        "(" + DOCS_URL + "/lvm.md)."),
    BLOCK_DEVICE.plural: ResourceView(
        BLOCK_DEVICE, "status.nodeName",
        "Nothing on the node changes; the agent re-creates the BlockDevice at its next discovery while the "
        "device exists."),
}
TYPE_HELP = "disklayouts (dl), lvmvolumegroups (lvg), lvmvolumegroupsets (lvgset), blockdevices (bd)"
ALIASES: dict[str, str] = {}
for _plural, _view in VIEWS.items():
    _r = _view.resource
    for _alias in (_r.plural, _r.singular, *_r.short_names, _r.kind.lower()):
        ALIASES[_alias] = _plural
ALIASES.update({"disk-layouts": "disklayouts", "disk-layout": "disklayouts", "lvm-volume-groups": "lvmvolumegroups",
                "lvm-volume-group": "lvmvolumegroups", "block-devices": "blockdevices", "block-device": "blockdevices",
                "lvm-volume-group-sets": "lvmvolumegroupsets"})


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


async def _preflight_all(manifests: list[Manifest], kube: Kube | None = None,
                         namespace: str | None = None) -> tuple[dict[int, PreflightResult], dict[int, str]]:
    """Pre-flight every DiskLayout of the batch in one evaluator run per set of mount roots
    (docs/layouts.md, "Batch pre-flight"), with the roots the node's agent published on its Lease
    (docs/kctl.md, "What diff reads from the cluster"); also one line per layout saying which."""
    layouts = [m for m in manifests if isinstance(m.spec, DiskLayoutSpec)]
    groups: dict[tuple[str, ...] | None, list[Manifest]] = {}
    notes: dict[int, str] = {}
    for m in layouts:
        assert isinstance(m.spec, DiskLayoutSpec)
        roots, notes[id(m)] = await _mount_roots(kube, m.spec.node_name, namespace)
        groups.setdefault(roots, []).append(m)
    out: dict[int, PreflightResult] = {}
    for roots, group in groups.items():
        items = [(m.spec, m.base_dir) for m in group if isinstance(m.spec, DiskLayoutSpec)]
        policy = MountPolicy.of(roots) if roots else None
        results = await asyncio.to_thread(preflight_many, items, None, policy)
        out.update({id(m): pf for m, pf in zip(group, results, strict=True)})
    return out, notes


async def _mount_roots(kube: Kube | None, node: str, namespace: str | None) -> tuple[tuple[str, ...] | None, str]:
    """The mount roots node's agent published (None: the defaults) and a line saying where they came from."""
    default = ", ".join(DEFAULT_MOUNT_ROOTS)
    if kube is None:
        return None, f"mount roots: {default} (assumed: --offline reads no agent's setting)"
    got = await lvmdiff.read_agent_lease(kube, node, namespace)
    if got.error is not None:
        return None, f"mount roots: {default} (default: cannot read Lease {got.where}: {got.error})"
    _, roots = got.facts
    if roots:
        return tuple(roots), f"mount roots: {', '.join(roots)} (published by the agent of node {node})"
    return None, f"mount roots: {default} (default: the agent of node {node} has published none)"


def _preflight_line(pf: PreflightResult) -> str:
    text = f"pre-flight: {pf.phase.value}"
    if pf.refusal_reason:
        text += f" ({pf.refusal_reason.value})"
    return text + f": {pf.message}"


# ---------------------------------------------------------------------------- diff
@dataclass
class Verdict:
    """One manifest as ``kctl diff`` judges it (and ``kctl apply`` before it sends anything)."""

    manifest: Manifest
    ok: bool
    """False: the plan refuses it (pre-flight, the agent's rules, the API server's transition rules)."""
    state: str
    """new | changed | unchanged | "" (not compared)."""
    report: str
    """What ``kctl diff`` prints for it."""


async def plan_batch(kube: Kube | None, manifests: list[Manifest], offline: bool,
                     lvm: lvmdiff.Options | None = None) -> list[Verdict]:
    """The plan ``kctl diff`` prints and ``kctl apply`` enforces: one verdict per manifest (no writes)."""
    preflights, roots_notes = await _preflight_all(manifests, kube if not offline else None,
                                                   lvm.namespace if lvm else None)
    owners = await _layout_owners(kube, manifests)
    out: list[Verdict] = []
    for m in manifests:
        report = Ctx(out=io.StringIO(), err=io.StringIO())
        live = await kube.get(kind_of(m.resource), m.name) if kube else None
        if isinstance(m.spec, DiskLayoutSpec):
            ok, state = await _diff_disk_layout(report, m, live, offline, preflights[id(m)], kube,
                                                roots_notes.get(id(m)))
            if owners.get(id(m)):
                ok = False
                owner, where = owners[id(m)]
                report.say(f"  refused: another_disk_layout_for_node: node {m.spec.node_name} already has DiskLayout "
                           f"{owner} ({where}); only one DiskLayout per node is allowed")
                report.say(f"  next step: {next_step('another_disk_layout_for_node')}")
        elif m.kind in lvmdiff.LVM_KINDS:  # per-node plan (disklet/cli/lvmdiff.py)
            ok, state = await lvmdiff.diff_one(report, kube, m, live, lvm or lvmdiff.Options(offline=offline))
        else:
            ok, state = True, _diff_spec(report, m, live, offline)
        assert isinstance(report.out, io.StringIO)
        out.append(Verdict(m, ok, state, report.out.getvalue()))
    return out


async def _layout_owners(kube: Kube | None, manifests: list[Manifest]) -> dict[int, tuple[str, str]]:
    """id(manifest) → (the DiskLayout that already holds its node, where it is) for every DiskLayout
    manifest the operator would refuse as a second layout of its node: an older one in the cluster
    (older: created first, by name within the same second — the operator's rule). Two layouts for
    one node within a batch are refused earlier, when the batch is loaded."""
    layouts = [m for m in manifests if isinstance(m.spec, DiskLayoutSpec)]
    if not layouts:
        return {}
    live = await kube.list_objects(kind_of(DISK_LAYOUT)) if kube else []
    out: dict[int, tuple[str, str]] = {}
    for m in layouts:
        assert isinstance(m.spec, DiskLayoutSpec)
        node = m.spec.node_name
        mine = next((o for o in live if views.name_of(o) == m.name), None)
        key = (field(mine, "metadata.creationTimestamp") or "~", m.name) if mine else ("~", m.name)
        older = sorted((field(o, "metadata.creationTimestamp") or "", views.name_of(o)) for o in live
                       if field(o, "spec.nodeName") == node and views.name_of(o) != m.name
                       and not field(o, "metadata.deletionTimestamp"))
        if older and older[0] < key:
            out[id(m)] = (older[0][1], "in the cluster")
    return out


async def cmd_diff(ctx: Ctx, path: str, offline: bool, lvm: lvmdiff.Options | None = None) -> int:
    """Exit 0: no differences; 1: differences; 2: an error (invalid batch, failed pre-flight, API error)."""
    quiet = ctx.output.structured
    manifests = _load(ctx, path)
    if manifests is None:
        return DIFF_ERROR
    kube: Kube | None = None
    try:
        if not offline:
            kube = await ctx.connect()
        verdicts = await plan_batch(kube, manifests, offline, lvm)
    except KubeError as exc:
        ctx.error(str(exc))
        ctx.err.write(f"  hint: `{ctx.prog} diff --offline -f PATH` pre-flights without the cluster\n")
        return DIFF_ERROR
    finally:
        if kube:
            await kube.close()
    counts = {"new": 0, "changed": 0, "unchanged": 0}
    results: list[dict[str, Any]] = []
    for v in verdicts:
        if v.state:
            counts[v.state] += 1
        results.append({**v.manifest.obj, "diff": {"state": v.state or "not-compared", "source": v.manifest.source}})
        if not quiet:
            ctx.out.write(v.report + "\n")
    failed = not all(v.ok for v in verdicts)
    if quiet:
        ctx.emit([r for r in results if r["diff"]["state"] != "unchanged"] if ctx.output.format == "name" else results)
    else:
        summary = f"{len(manifests)} object(s)"
        if not offline:
            summary += f": {counts['new']} new, {counts['changed']} changed, {counts['unchanged']} unchanged"
        summary += "; nothing was written"
        if failed:
            summary += "; some objects would be refused (see above)"
        ctx.say(summary)
    if failed:
        return DIFF_ERROR
    return DIFF_CHANGES if counts["new"] or counts["changed"] else DIFF_NONE


async def _diff_disk_layout(ctx: Ctx, m: Manifest, live: dict[str, Any] | None, offline: bool,
                            pf: PreflightResult, kube: Kube | None = None,
                            roots_note: str | None = None) -> tuple[bool, str]:
    assert isinstance(m.spec, DiskLayoutSpec)
    ctx.say(f"{m.ref} (node {m.spec.node_name}, from {m.source})")
    if roots_note:
        ctx.say(f"  {roots_note}")
    ctx.say(f"  {_preflight_line(pf)}")
    if pf.refusal_reason:
        ctx.say(f"  next step: {next_step(pf.refusal_reason.value)}")
    ctx.say(f"  target devices: {', '.join(pf.target_devices) or '<none>'}")
    if pf.layout_hash:
        ctx.say(f"  layout hash: {pf.layout_hash}")
    ok = pf.phase == Phase.PENDING
    if pf.phase == Phase.PENDING and m.spec.disk_layout is not None and any(
            d.match is not None for d in m.spec.disk_layout.disks):
        ok = await _diff_selectors(ctx, m.spec, live, kube if not offline else None) and ok
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


async def _diff_selectors(ctx: Ctx, spec: DiskLayoutSpec, live: dict[str, Any] | None, kube: Kube | None) -> bool:
    """Per node: which disk each ``match`` resolves to and why the others do not (from the node's BlockDevices)."""
    from disklet.layout.selectors import inventory_resolution

    assert spec.disk_layout is not None
    node = spec.node_name
    if kube is None:
        for d in spec.disk_layout.disks:
            if d.match is not None:
                ctx.say(f"  disk {d.name}: match {d.match!r}: cannot resolve offline (the agent resolves it on node "
                        f"{node} at apply time; run without --offline to see it against the node's BlockDevices)")
        return True
    bds = await _node_objects(kube, node, BLOCK_DEVICE, "status.nodeName")
    pinned = list(((live or {}).get("status") or {}).get("targetIdentities") or [])
    ok, lines = inventory_resolution(spec.disk_layout, bds, pinned)
    ctx.say(f"  selectors on node {node} (from its {len(bds)} BlockDevice(s); the agent decides from its live scan):")
    for line in lines:
        ctx.say(f"    {line}")
    return ok


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


async def cmd_apply(ctx: Ctx, path: str, force_conflicts: bool, force_refused: bool,
                    lvm: lvmdiff.Options | None = None, dry_run: str = "none") -> int:
    """Server-side apply every manifest, after the plan ``kctl diff`` prints accepts every one of them.

    ``force_refused``: send them even when the plan refuses some (the operator and agents judge them);
    ``dry_run``: ``client`` sends nothing, ``server`` sends a server-side dry run (``dryRun=All``)."""
    manifests = _load(ctx, path)
    if manifests is None:
        return EXIT_FAILED
    code = EXIT_OK
    applied: list[dict[str, Any]] = []
    suffix = {"client": " (dry run)", "server": " (server dry run)"}.get(dry_run, "")
    try:
        async with await ctx.connect() as kube:
            verdicts = await plan_batch(kube, manifests, False, lvm)
            refused = [v for v in verdicts if not v.ok]
            if refused and not force_refused:
                _refuse_batch(ctx, refused)
                return EXIT_FAILED
            for v in refused:
                ctx.warn(f"{v.manifest.ref}: sent although the plan refuses it (--force-refused)")
            for v in verdicts:
                m = v.manifest
                kind = kind_of(m.resource)
                try:
                    before = await kube.get(kind, m.name)
                    if dry_run == "client":
                        after = {**(before or {}), **m.obj}
                    else:
                        after = await kube.apply(kind, m.obj, force=force_conflicts, dry_run=dry_run == "server")
                except KubeError as exc:
                    ctx.error(_apply_error(str(exc)))
                    code = EXIT_FAILED
                    continue
                applied.append(after)
                if before is None:
                    verdict = "created"
                elif dry_run == "client":
                    verdict = "unchanged" if v.state == "unchanged" else "configured"
                elif comparable(before) == comparable(after):
                    verdict = "unchanged"
                else:
                    verdict = "configured"
                if not ctx.output.structured:
                    ctx.say(f"{m.ref} {verdict}{suffix}")
    except KubeError as exc:
        ctx.error(str(exc))
        return EXIT_FAILED
    if ctx.output.structured:
        ctx.emit(applied, single=len(manifests) == 1)
    return code


def _refuse_batch(ctx: Ctx, refused: list[Verdict]) -> None:
    """Why nothing was sent: each refused object's verdict lines, as ``kctl diff`` printed them."""
    ctx.error(f"refusing the whole batch, nothing was sent: {len(refused)} object(s) would be refused "
              "(the plan `kctl diff` prints):")
    for v in refused:
        ctx.err.write(f"  {v.manifest.source} {v.manifest.ref}:\n")
        node = ""
        for line in v.report.splitlines():
            text = line.strip()
            if text.startswith("node "):
                node = text.split(":", 1)[0] + ": "
            elif text.startswith(("REFUSED", "server dry run: REFUSED")):
                ctx.err.write(f"    {node}{text}\n")
            elif text.startswith(("pre-flight: refused", "pre-flight: failed", "refused:", "next step:")):
                ctx.err.write(f"    {text}\n")
    ctx.err.write(f"  hint: `{ctx.prog} diff -f PATH` shows the whole plan; fix the manifests and re-run. "
                  "--force-refused sends them anyway (the operator and agents then refuse them, and an "
                  "LVMVolumeGroup's file devices cannot be removed or moved afterwards)\n")


def _apply_error(message: str) -> str:
    """The API server's refusal, with a true hint where the CRD's message cannot know the whole story."""
    if "is immutable" in message and "file device" in message:
        message += ("\n  hint: a file device entry can never be removed, so a wrong directory cannot be fixed in "
                    "this object: delete the LVMVolumeGroup (its agent releases it when it created nothing, "
                    f"{DOCS_URL}/lvm.md) and create it again")
    return message


# ---------------------------------------------------------------------------- get / describe / delete
def _unknown_type(ctx: Ctx, type_name: str) -> int:
    ctx.error(f"unknown resource type {type_name!r}; use one of: {TYPE_HELP}")
    return EXIT_USAGE


async def _select(ctx: Ctx, kube: Kube, view: ResourceView, names: list[str], selector: str | None,
                  node: str | None) -> tuple[list[dict[str, Any]], list[str]]:
    """(objects, names not found): by name, else by label selector (server-side), then --node (client-side)."""
    kind = kind_of(view.resource)
    missing: list[str] = []
    if names:
        items = []
        for name in names:
            obj = await kube.get(kind, name)
            if obj is None:
                missing.append(name)
            else:
                items.append(obj)
    else:
        items = await kube.list_objects(kind, label_selector=selector)
    if node:
        items = [o for o in items if field(o, view.node_path) == node]
    return sorted(items, key=views.name_of), missing


def _not_found(ctx: Ctx, view: ResourceView, missing: list[str]) -> None:
    for name in missing:
        ctx.error(f"{view.resource.kind}/{name} not found\n  hint: `kctl get {view.resource.plural}` lists them")


def parse_get_targets(type_name: str, names: list[str]) -> tuple[list[tuple[ResourceView, list[str]]], str | None]:
    """``get``'s operands as kubectl takes them: ``TYPE[,TYPE...] [NAME...]`` or ``TYPE/NAME...``.

    Returns ((view, names) per type in the order given, error). Names after a type list apply to
    every type; the ``TYPE/NAME`` form may not be mixed with bare names."""
    operands = [type_name, *names]
    if any("/" in op for op in operands):
        grouped: dict[str, tuple[ResourceView, list[str]]] = {}
        for op in operands:
            kind_text, slash, name = op.partition("/")
            if not slash or not kind_text or not name or "/" in name:
                return [], (f"{op!r}: with the TYPE/NAME form every operand must be TYPE/NAME "
                            "(e.g. kctl get dl/prod-data lvg/vg-data-a)")
            view = resolve_type(kind_text)
            if view is None:
                return [], f"unknown resource type {kind_text!r}; use one of: {TYPE_HELP}"
            entry = grouped.setdefault(view.resource.plural, (view, []))
            if name not in entry[1]:
                entry[1].append(name)
        return list(grouped.values()), None
    targets: list[tuple[ResourceView, list[str]]] = []
    for part in type_name.split(","):
        view = resolve_type(part)
        if view is None:
            return [], f"unknown resource type {part!r}; use one of: {TYPE_HELP}"
        if all(v.resource.plural != view.resource.plural for v, _ in targets):
            targets.append((view, list(names)))
    return targets, None


async def cmd_get(ctx: Ctx, type_name: str, names: list[str], node: str | None, selector: str | None = None,
                  watch: bool = False, request_timeout: int | None = None) -> int:
    targets, problem = parse_get_targets(type_name, names)
    if problem:
        ctx.error(problem)
        return EXIT_USAGE
    for view, _ in targets:
        if node and not view.node_path:
            ctx.error(f"--node does not apply to {view.resource.plural} (they are not per node)")
            return EXIT_USAGE
    if watch and len(targets) > 1:
        ctx.error("-w watches one type at a time; run one `kctl get TYPE -w` per type")
        return EXIT_USAGE
    sections: list[tuple[ResourceView, list[dict[str, Any]]]] = []
    any_missing = False
    try:
        async with await ctx.connect() as kube:
            if watch:
                view, wanted = targets[0]
                return await _watch(ctx, kube, view, wanted, selector, node, printer_columns(view.resource),
                                    request_timeout)
            for view, wanted in targets:
                items, missing = await _select(ctx, kube, view, wanted, selector, node)
                _not_found(ctx, view, missing)
                any_missing = any_missing or bool(missing)
                sections.append((view, items))
    except KubeError as exc:
        ctx.error(str(exc))
        return EXIT_FAILED
    asked_by_name = any(wanted for _, wanted in targets)
    if len(targets) == 1:
        view, items = sections[0]
        wanted = targets[0][1]
        if ctx.output.structured:
            if items or not wanted:
                ctx.emit(items, single=len(wanted) == 1, columns=printer_columns(view.resource))
        elif items:
            ctx.emit(items, columns=printer_columns(view.resource))
    else:
        _emit_kinds(ctx, sections, asked_by_name)
    if not any(items for _, items in sections) and not asked_by_name and not ctx.output.structured:
        ctx.err.write("No resources found" + (f" for node {node}" if node else "") + ".\n")
    return EXIT_FAILED if any_missing else EXIT_OK


def _emit_kinds(ctx: Ctx, sections: list[tuple[ResourceView, list[dict[str, Any]]]], asked_by_name: bool) -> None:
    """Several types at once, as ``kubectl get a,b``: one List for machine formats; for tables one
    section per type that has objects, blank-line separated, names as ``kind.group/name``."""
    everything = [_with_kind(view, obj) for view, items in sections for obj in items]
    if ctx.output.structured:
        if everything or not asked_by_name:
            ctx.emit(everything)
        return
    shown = 0
    for view, items in sections:
        if not items:
            continue
        columns = [KIND_NAME_COLUMN, *printer_columns(view.resource)[1:]]
        if shown:
            ctx.out.write("\n")
        ctx.emit([_with_kind(view, obj) for obj in items], columns=columns)
        shown += 1


def _with_kind(view: ResourceView, obj: dict[str, Any]) -> dict[str, Any]:
    kind = kind_of(view.resource)
    obj.setdefault("apiVersion", f"{kind.group}/{kind.version}")
    obj.setdefault("kind", kind.kind)
    return obj


async def _watch(ctx: Ctx, kube: Kube, view: ResourceView, names: list[str], selector: str | None,
                 node: str | None, columns: Any, request_timeout: int | None) -> int:
    """``get -w`` as kubectl: list and print, then one line (or document) per change after that list."""
    kind = kind_of(view.resource)
    listing = await kube.request("GET", kind.path(), query=[("labelSelector", selector)] if selector else [],
                                 what=f"list {kind.plural}")
    version = str(field(listing, "metadata.resourceVersion", "")) or None
    headers_done = ctx.output.no_headers or ctx.output.structured
    tabular = ctx.output.format in (None, "wide", "custom-columns")
    cols = table_columns(custom_columns(ctx.output.arg) if ctx.output.format == "custom-columns" else columns,
                         ctx.output)
    widths = [max(MIN_CELL, len(c.header)) if not ctx.output.no_headers else MIN_CELL for c in cols]

    def wanted(obj: dict[str, Any]) -> bool:
        return not ((names and views.name_of(obj) not in names) or (node and field(obj, view.node_path) != node))

    def row(cells: list[str]) -> str:
        """One line padded to the widths printed so far: an empty cell keeps its column (kubectl's -w)."""
        for i, text in enumerate(cells):
            widths[i] = max(widths[i], len(text))
        return "   ".join(t.ljust(widths[i]) if i < len(cells) - 1 else t for i, t in enumerate(cells)).rstrip() + "\n"

    def show(obj: dict[str, Any]) -> None:
        nonlocal headers_done
        obj.setdefault("apiVersion", f"{kind.group}/{kind.version}")
        obj.setdefault("kind", kind.kind)
        if tabular:
            ctx.out.write(row([c.value(obj) for c in cols]))
            ctx.out.flush()
            return
        text = render([obj], Output(ctx.output.format, ctx.output.arg, no_headers=headers_done,
                                    show_managed_fields=ctx.output.show_managed_fields), single=True, columns=columns)
        headers_done = True
        ctx.out.write(text if ctx.output.format != "jsonpath" or text.endswith("\n") else text + "\n")
        ctx.out.flush()

    first = [o for o in (listing or {}).get("items") or [] if wanted(o)]
    first = sort_objects(sorted(first, key=views.name_of), ctx.output.sort_by) if ctx.output.sort_by else \
        sorted(first, key=views.name_of)
    if tabular:
        cells = [[c.value(o) for c in cols] for o in first]
        for line in cells:
            for i, text in enumerate(line):
                widths[i] = max(widths[i], len(text))
        if not ctx.output.no_headers:
            ctx.out.write(row([c.header for c in cols]))
        for line in cells:
            ctx.out.write(row(line))
        ctx.out.flush()
        first = []
    for obj in first:
        show(obj)
    async for event in kube.watch(kind, label_selector=selector, timeout_seconds=request_timeout,
                                  resource_version=version):
        if event.get("type") in ("ADDED", "MODIFIED", "DELETED") and wanted(event.get("object") or {}):
            show(event.get("object") or {})
    return EXIT_OK


async def cmd_describe(ctx: Ctx, type_name: str, names: list[str], selector: str | None = None) -> int:
    if type_name.lower() in ("node", "nodes", "no"):
        if not names:
            ctx.error("describe node needs a NODE name")
            return EXIT_USAGE
        try:
            async with await ctx.connect() as kube:
                code = EXIT_OK
                for name in names:
                    code = max(code, await _describe_node(ctx, kube, name))
                return code
        except KubeError as exc:
            ctx.error(str(exc))
            return EXIT_FAILED
    view = resolve_type(type_name)
    if view is None:
        ctx.error(f"unknown resource type {type_name!r}; use one of: {TYPE_HELP}, node")
        return EXIT_USAGE
    try:
        async with await ctx.connect() as kube:
            items, missing = await _select(ctx, kube, view, names, selector, None)
            _not_found(ctx, view, missing)
            pages = []
            for obj in items:
                events = await kube.list_objects(EVENTS, field_selector=describe_event_selector(obj, view.resource.kind))
                pages.append((obj, events))
    except KubeError as exc:
        ctx.error(str(exc))
        return EXIT_FAILED
    if ctx.output.structured:
        ctx.emit([o for o, _ in pages], single=len(names) == 1, columns=printer_columns(view.resource))
    else:
        texts = []
        for obj, events in pages:
            if view.resource is DISK_LAYOUT:
                texts.append(views.describe_disk_layout(obj, events))
            else:
                texts.append(views.describe_object(obj, events, printer_columns(view.resource)))
        ctx.out.write("\n\n".join(texts))
        if not pages and not names:
            ctx.err.write("No resources found.\n")
    return EXIT_FAILED if missing else EXIT_OK


def describe_event_selector(obj: Mapping[str, Any], kind: str) -> str:
    """The Events of exactly this object (across all namespaces): by kind, name and UID, as ``kubectl
    describe`` matches them (disklet.kube.events) — a re-created object never shows its
    predecessor's. No namespace term, so Kopf's own Events about the object (filed in the
    component's namespace) are shown too."""
    meta = obj.get("metadata") or {}
    selector = f"involvedObject.name={meta.get('name', '')},involvedObject.kind={kind}"
    return selector + (f",involvedObject.uid={meta['uid']}" if meta.get("uid") else "")


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
    if ctx.output.structured:
        ctx.emit(([node_obj] if node_obj else []) + layouts + lvgs + bds)
    else:
        ctx.out.write(views.describe_node(node, node_obj, layouts, lvgs, bds))
    return EXIT_OK


async def cmd_delete(ctx: Ctx, type_name: str, names: list[str], selector: str | None = None,
                     dry_run: str = "none") -> int:
    view = resolve_type(type_name)
    if view is None:
        return _unknown_type(ctx, type_name)
    if not names and not selector:
        ctx.error(f"delete needs NAME... or -l SELECTOR (kctl never deletes every {view.resource.kind} at once)")
        return EXIT_USAGE
    kind = kind_of(view.resource)
    code = EXIT_OK
    deleted: list[dict[str, Any]] = []
    try:
        async with await ctx.connect() as kube:
            targets = names or [views.name_of(o) for o in await kube.list_objects(kind, label_selector=selector)]
            for name in targets:
                try:
                    obj = await kube.get(kind, name)
                    if obj is not None and dry_run == "server":
                        await kube.request("DELETE", kind.path(name), query=[("dryRun", "All")],
                                           what=f"delete {kind.kind}/{name} (server dry run)")
                    elif obj is not None and dry_run != "client":
                        await kube.delete(kind, name)
                except NotFound:
                    obj = None
                if obj is None:
                    ctx.error(f"{view.resource.kind}/{name} not found (nothing deleted)\n"
                              f"  hint: `kctl get {view.resource.plural}` lists them")
                    code = EXIT_FAILED
                    continue
                deleted.append(obj)
                if not ctx.output.structured:
                    ctx.say(f"{view.resource.kind}/{name} deleted"
                            + {"client": " (dry run)", "server": " (server dry run)"}.get(dry_run, ""))
    except KubeError as exc:
        ctx.error(str(exc))
        return EXIT_FAILED
    if ctx.output.structured:
        ctx.emit(deleted, single=len(names) == 1)
    elif deleted and dry_run == "none":
        ctx.say(view.delete_note)
    elif not names:
        ctx.err.write("No resources found.\n")
    return code


# ---------------------------------------------------------------------------- node
async def cmd_node_disks(ctx: Ctx, node: str, live: bool) -> int:
    if live:
        if ctx.output.structured:
            return await _exec_agent_objects(ctx, node, disks_argv("json"), None)
        return await _exec_agent(ctx, node, disks_argv("table"), None)
    try:
        async with await ctx.connect() as kube:
            bds = await _node_objects(kube, node, BLOCK_DEVICE, "status.nodeName")
    except KubeError as exc:
        ctx.error(str(exc))
        return EXIT_FAILED
    if ctx.output.structured:
        ctx.emit(bds, columns=printer_columns(BLOCK_DEVICE))
        return EXIT_OK
    if not bds:
        ctx.err.write(f"No BlockDevices for node {node}. Is the disklet agent running there? "
                      "(`kctl node disks NODE --live` asks the agent directly)\n")
        return EXIT_OK
    ctx.out.write(table(views.NODE_DISK_HEADERS, views.node_disk_rows(bds), no_headers=ctx.output.no_headers))
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


def agent_objects(text: str, kind: str, node: str) -> list[dict[str, Any]]:
    """The agent's ``-o json`` report as one object for the ``-o`` renderers (kind names what it is)."""
    try:
        data = json.loads(text)
    except ValueError:
        return []
    return [{"apiVersion": "agent.disklet.io/v1", "kind": kind, "metadata": {"name": node}, "report": data}]


async def _exec_agent_objects(ctx: Ctx, node: str, argv: list[str], stdin: bytes | None,
                              kind: str = "NodeDisks") -> int:
    """Run the agent command with ``-o json`` and print its report through the ``-o`` renderers."""
    chunks: list[str] = []

    def collect(data: bytes) -> None:
        chunks.append(data.decode("utf-8", errors="replace"))

    def to_err(data: bytes) -> None:
        ctx.err.write(data.decode("utf-8", errors="replace"))
    try:
        async with await ctx.connect() as kube:
            pod, container = await find_agent_pod(kube, node, ctx.namespace)
            ctx.err.write(f"# {ctx.namespace}/{pod}: {' '.join(argv)}\n")
            code = await kube.exec(ctx.namespace, pod, container, argv, stdin, collect, to_err)
    except (KubeError, AgentPodError) as exc:
        ctx.error(str(exc))
        return EXIT_FAILED
    objs = agent_objects("".join(chunks), kind, node)
    if not objs:
        ctx.out.write("".join(chunks))
    else:
        ctx.emit(objs, single=True)
    return code


async def cmd_node_apply_disk(ctx: Ctx, node: str, path: str, apply: bool, rebuild: bool, timeout_seconds: int,
                              deprecated: bool, allow_destructive_changes: bool = False) -> int:
    if deprecated:
        ctx.warn("`kctl node apply-disko` is deprecated and will be removed; use `kctl node apply-disk`")
    try:
        with open(path, "rb") as fh:
            body = fh.read()
    except OSError as exc:
        ctx.error(f"cannot read {path}: {exc.strerror}")
        return EXIT_FAILED
    argv = apply_disk_argv(apply=apply, rebuild=rebuild, timeout_seconds=timeout_seconds,
                           allow_destructive_changes=allow_destructive_changes)
    if ctx.output.structured:
        return await _exec_agent_objects(ctx, node, argv + ["-o", "json"], body, kind="ApplyDiskReport")
    return await _exec_agent(ctx, node, argv, body)


# ---------------------------------------------------------------------------- support-bundle
async def cmd_support_bundle(ctx: Ctx, tarball_path: str | None, tail: int, nodes: list[str]) -> int:
    """Write one .tar.gz of disklet objects, Events, pods, logs and per-node agent views (no Secrets)."""
    import time

    from . import supportbundle

    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
    top = f"disklet-support-{stamp}"
    path = tarball_path or f"{top}.tar.gz"
    try:
        async with await ctx.connect() as kube:
            bundle = await supportbundle.collect(kube, ctx.namespace, tail,
                                                 supportbundle.exec_via(kube), nodes or None)
    except KubeError as exc:
        ctx.error(str(exc))
        return EXIT_FAILED
    data = supportbundle.tarball(bundle, top)
    try:
        with open(path, "xb") as fh:
            fh.write(data)
    except OSError as exc:
        ctx.error(f"cannot write {path}: {exc.strerror}\n  hint: pass --tarball FILE (an existing file is never "
                  "overwritten)")
        return EXIT_FAILED
    report = {"apiVersion": "kctl.disklet.io/v1", "kind": "SupportBundle", "metadata": {"name": path},
              "files": sorted(bundle.files), "problems": bundle.problems}
    if ctx.output.structured:
        ctx.emit([report], single=True)
        return EXIT_OK
    ctx.say(f"wrote {path}: {len(bundle.files)} file(s), {len(data)} bytes; no Secrets; values other than "
            "disklet's own settings redacted")
    for problem in bundle.problems:
        ctx.warn(problem)
    ctx.say(f"Attach it to your bug report; {DOCS_URL}/troubleshooting.md#what-is-in-the-bundle says what each file holds.")
    return EXIT_OK
