"""``kctl diff`` for LVMVolumeGroups and LVMVolumeGroupSets: what would happen on each node.

Per node it prints the backing files to create or grow (path, size), the BlockDevices that would
become PVs (and the ones the agent would skip, with the reason), whether the VG is created or
extended, the thin pools, and what the agent would refuse and why. The checks are the agent's own
pure modules (``disklet.lvm.validation`` and ``disklet.lvm.sizing``, which the agent imports), fed by the node's BlockDevice inventory and the LVMVolumeGroup status the agent
reported. ``--offline`` uses the manifest alone (no inventory, no status: every VG is new);
``--dry-run=server`` also sends each object as a server-side dry-run apply, so the API server's
schema and CEL rules (grow-only file devices, immutable names) judge it too. Nothing is written.

A plan is a prediction from reported state: the agent re-reads the node's live state right before
it acts and may still refuse (e.g. a disk that changed since its BlockDevice was written).
"""

from __future__ import annotations

import posixpath
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError

from disklet.api.common import BlockDeviceSelector
from disklet.api.lvm import LVMVolumeGroupSetSpec, LVMVolumeGroupSpec, backing_file_name
from disklet.api.resources import BLOCK_DEVICE, LVM_VOLUME_GROUP, LVM_VOLUME_GROUP_SET, NODE_LABEL
from disklet.kube.client import LEASES
from disklet.kube.lease import lease_name, lease_namespace, published_facts
from disklet.labels import label_value, node_label_value
from disklet.lvm.names import child_name
from disklet.lvm.sizing import ThinPoolAction, plan_thin_pool
from disklet.lvm.transitions import transition_problems
from disklet.lvm.validation import validate_lvg
from disklet.units import QuantityError, bytes_to_quantity, quantity_bytes

from .kube import NODES, Kind, KubeError

LVM_KINDS = {LVM_VOLUME_GROUP.kind, LVM_VOLUME_GROUP_SET.kind}
DEFAULT_BASE_DIR = "/var/lib/disklet/file-devices"
DEFAULT_EXTENT = 4 * 1024 * 1024
SET_LABEL = "disklet.io/lvmvolumegroupset"


@dataclass(frozen=True)
class Options:
    offline: bool = False
    server_dry_run: bool = False
    base_dir: str | None = None
    """--file-devices-dir; None: what each node's agent published on its Lease (else the default)."""
    namespace: str | None = None
    """Where the agents' Leases live (kctl's -n; default disklet-system)."""


@dataclass(frozen=True)
class AgentLease:
    """What ``node``'s agent published on its Lease: ``lease`` None when there is none (or it could not be
    read: ``error``); ``where`` names it (``NS/NAME``) for the lines that say where a setting came from."""

    where: str
    lease: dict[str, Any] | None = None
    error: str | None = None

    @property
    def facts(self) -> tuple[str | None, list[str] | None]:
        return published_facts(self.lease)


async def read_agent_lease(kube: Any, node: str, namespace: str | None) -> AgentLease:
    """``node``'s agent Lease in ``namespace`` (default: where the chart puts the agents' Leases)."""
    ns = namespace or lease_namespace()
    where = f"{ns}/{lease_name(node)}"
    try:
        return AgentLease(where, await kube.get(LEASES, lease_name(node), ns))
    except KubeError as exc:
        return AgentLease(where, error=str(exc))


async def base_dir_of(kube: Any, node: str, opts: Options) -> tuple[str, str]:
    """The file-devices base directory to plan ``node`` with, and where it came from: the flag, the
    agent's own Lease annotation, or the default (offline, or no agent published one)."""
    if opts.base_dir:
        return opts.base_dir, "--file-devices-dir"
    if kube is None or opts.offline:
        return DEFAULT_BASE_DIR, ("assumed: --offline reads no agent's setting; --file-devices-dir DIR if the "
                                  "chart's fileDevicesDirectory differs")
    got = await read_agent_lease(kube, node, opts.namespace)
    if got.error is not None:
        return DEFAULT_BASE_DIR, f"default: cannot read Lease {got.where} ({got.error})"
    base, _ = got.facts
    if base:
        return base, f"published by the agent of node {node} (Lease {got.where})"
    why = "has no Lease there yet" if got.lease is None else "has not published one (an older agent)"
    return DEFAULT_BASE_DIR, f"default: the agent of node {node} {why}; -n NS if the agents run elsewhere"


async def _node_plan(kube: Any, opts: Options, lvg_name: str, spec: LVMVolumeGroupSpec, node: str,
                     *args: Any) -> NodePlan:
    base, source = await base_dir_of(kube, node, opts)
    plan = node_plan(lvg_name, spec, node, base, *args)
    plan.lines.insert(0, f"file-devices base directory: {base} ({source})")
    return plan


@dataclass
class NodePlan:
    node: str
    lvg: str
    lines: list[str] = field(default_factory=list)
    refused: list[str] = field(default_factory=list)


def _q(n: int | None) -> str:
    return bytes_to_quantity(n) if n else "0"


def _bytes(value: Any) -> int:
    try:
        return quantity_bytes(str(value)) if value else 0
    except QuantityError:
        return 0


@dataclass
class _VgGrowth:
    """How the VG would grow in this plan: its size and free space after the planned PVs, and how
    many PVs are new (the thin pools are planned against the grown VG)."""
    size: int
    free: int
    extent: int
    new_pvs: int = 0

    def add(self, n: int, new_pv: bool = False) -> None:
        self.size, self.free = self.size + n, self.free + n
        self.new_pvs += int(new_pv)


def _bd_status(bd: Mapping[str, Any]) -> Mapping[str, Any]:
    return bd.get("status") or {}


def _bd_labels(bd: Mapping[str, Any]) -> dict[str, Any]:
    return dict((bd.get("metadata") or {}).get("labels") or {})


def _by_path(bds: Iterable[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    return sorted(bds, key=lambda b: str(_bd_status(b).get("path")))


def _reported_files(st: Mapping[str, Any], node: str) -> dict[Any, Mapping[str, Any]]:
    """The file devices the agent of ``node`` reported, by name."""
    return {fd.get("name"): fd for n in st.get("nodes") or () if n.get("name") == node
            for fd in n.get("fileDevices") or ()}


def _file_lines(lvg_name: str, spec: LVMVolumeGroupSpec, reported: Mapping[Any, Mapping[str, Any]],
                growth: _VgGrowth) -> list[str]:
    """Create, grow or keep each backing file (the VG grows with what is created or grown)."""
    vg = spec.actual_vg_name_on_the_node
    lines = []
    for fd in spec.file_devices or ():
        path = posixpath.join(posixpath.normpath(fd.directory), backing_file_name(lvg_name, fd.name))
        want = fd.bytes()
        have = reported.get(fd.name)
        if have is None:
            lines.append(f"file {path}: create {fd.size} (fallocate), attach a loop device, pvcreate, add to VG {vg}")
            growth.add(want, new_pv=True)
            continue
        size = _bytes(have.get("size"))
        if size and size < want - growth.extent * 2:
            lines.append(f"file {path}: grow {_q(size)} → {fd.size} (PV resized, VG grows)")
            growth.add(want - size)
        else:
            lines.append(f"file {path}: exists ({have.get('loopDevice') or 'attached'}, PV {_q(size)})")
    return lines


def _unselected_lines(block_devices: list[Mapping[str, Any]], matched: list[Mapping[str, Any]],
                      sel: BlockDeviceSelector) -> list[str]:
    """Why each BlockDevice the selector does not take is left out."""
    lines = []
    if not matched:
        lines.append("block devices: none of the node's BlockDevices matches blockDeviceSelector")
    for bd in _by_path(b for b in block_devices if b not in matched):
        bst = _bd_status(bd)
        why = "match is false" if sel.matches(_bd_labels(bd)) else "labels do not match"
        lines.append(f"device {bst.get('path')} ({bst.get('size')}): not selected ({why})")
    return lines


def _other_selectors(lvg_name: str, others: Iterable[tuple[str, Mapping[str, Any]]]) -> list[tuple[str, BlockDeviceSelector]]:
    """(name, blockDeviceSelector) of the node's other LVMVolumeGroups that have one (a spec the
    model cannot read is left out)."""
    out = []
    for other_name, other_spec in others:
        try:
            other_sel = LVMVolumeGroupSpec.model_validate(dict(other_spec)).block_device_selector
        except ValidationError:
            continue
        if other_name != lvg_name and other_sel is not None:
            out.append((other_name, other_sel))
    return out


def _overlap_refusals(lvg_name: str, matched: list[Mapping[str, Any]],
                      others: Iterable[tuple[str, Mapping[str, Any]]]) -> list[str]:
    """A consumable device another LVMVolumeGroup of the node selects too: the agents take neither."""
    other_selectors = _other_selectors(lvg_name, others)
    refused = []
    for bd in matched:
        bst = _bd_status(bd)
        if bst.get("consumable") is not True:
            continue
        shared = [n for n, o in other_selectors if o.matches_device(_bd_labels(bd), bst)]
        if shared:
            names = ", ".join(shared)
            refused.append(f"blockDeviceSelector overlaps with LVMVolumeGroup {names} on "
                           f"device {bst.get('path')}: {lvg_name} and {names} both select it; "
                           "the agents take neither until the selections are disjoint")
    return refused


def _selected_lines(lvg_name: str, vg: str, matched: list[Mapping[str, Any]], st: Mapping[str, Any],
                    growth: _VgGrowth) -> list[str]:
    """Each selected device: already a PV of this VG, a new PV (the VG grows), or skipped and why."""
    exists = bool(st.get("vgUUID"))
    lines = []
    for bd in _by_path(matched):
        bst = _bd_status(bd)
        where = f"device {bst.get('path')} ({(bd.get('metadata') or {}).get('name')}, {bst.get('size')})"
        if bst.get("lvmVolumeGroupName") == lvg_name or (exists and bst.get("vgUUID") == st.get("vgUUID")):
            lines.append(f"{where}: already a PV of {vg}")
        elif bst.get("consumable"):
            lines.append(f"{where}: becomes a PV of {vg} (pvcreate, {'vgextend' if exists else 'vgcreate'})")
            growth.add(_bytes(bst.get("size")), new_pv=True)
        else:
            lines.append(f"{where}: skipped, not consumable ({bst.get('consumableReason') or 'no reason given'})")
    return lines


def _block_device_plan(lvg_name: str, spec: LVMVolumeGroupSpec, block_devices: list[Mapping[str, Any]] | None,
                       st: Mapping[str, Any], others: Iterable[tuple[str, Mapping[str, Any]]],
                       growth: _VgGrowth) -> tuple[list[str], list[str]]:
    """(lines, refusals) for the blockDeviceSelector: nothing without one, a note offline."""
    sel = spec.block_device_selector
    if sel is None:
        return [], []
    if block_devices is None:
        return ["block devices: not known offline (the node's BlockDevices decide)"], []
    matched = [bd for bd in block_devices if sel.matches_device(_bd_labels(bd), bd.get("status"))]
    lines = _unselected_lines(block_devices, matched, sel)
    refused = _overlap_refusals(lvg_name, matched, others)
    lines += _selected_lines(lvg_name, spec.actual_vg_name_on_the_node, matched, st, growth)
    return lines, refused


def _vg_line(lvg_name: str, vg: str, st: Mapping[str, Any], new_pvs: int) -> str:
    if not st.get("vgUUID"):
        return (f"VG {vg}: create (vgcreate with {new_pvs} PV(s), tagged as owned by {lvg_name})"
                if new_pvs else f"VG {vg}: would be created, but no PV source is available yet")
    return f"VG {vg}: exists ({st.get('vgUUID')}); " + (f"extend with {new_pvs} PV(s)" if new_pvs else "no new PVs")


def _thin_pool_plan(spec: LVMVolumeGroupSpec, st: Mapping[str, Any], growth: _VgGrowth) -> tuple[list[str], list[str]]:
    """(lines, refusals) for the thin pools, planned in order against the grown VG (a created pool
    takes its space from what the next ones can have)."""
    pools = {tp.get("name"): tp for tp in st.get("thinPools") or ()}
    lines: list[str] = []
    refused: list[str] = []
    for tp in spec.thin_pools or ():
        current = _bytes((pools.get(tp.name) or {}).get("actualSize")) or None
        if growth.size <= 0:
            lines.append(f"thin pool {tp.name} ({tp.size}): waits for the VG")
            continue
        try:
            action = plan_thin_pool(tp.size, vg_size=growth.size, vg_free=growth.free, extent=growth.extent,
                                    current_size=current)
        except (ValueError, QuantityError) as exc:
            refused.append(f"thinPools[{tp.name}]: {exc}")
            continue
        if action.kind not in ("create", "extend", "none"):
            refused.append(f"thinPools[{tp.name}]: {action.message}")
            continue
        lines.append(f"thin pool {tp.name} ({tp.size}): " + _thin_pool_action(action, current, growth))
    return lines, refused


def _thin_pool_action(action: ThinPoolAction, current: int | None, growth: _VgGrowth) -> str:
    """The text of a create/extend/none action; a create takes its space from the VG's free space."""
    extent = growth.extent
    target = "all free space" if action.extents is None else _q(action.extents * extent)
    if action.kind == "create":
        growth.free -= growth.free if action.extents is None else action.extents * extent
        return f"create, {target}"
    if action.kind == "extend":
        return f"grow {_q(current)} → {target}"
    return f"unchanged ({_q(current)})"


def node_plan(lvg_name: str, spec: LVMVolumeGroupSpec, node: str, base_dir: str,
              block_devices: list[Mapping[str, Any]] | None, status: Mapping[str, Any] | None,
              current_spec: Mapping[str, Any] | None = None,
              others: Iterable[tuple[str, Mapping[str, Any]]] = ()) -> NodePlan:
    """What the agent on ``node`` would do for ``spec`` (pure). ``block_devices``: the node's
    BlockDevice objects, None when unknown (offline); ``status``: the LVG's reported status, if any;
    ``current_spec``: the object's spec in the cluster (grow-only rules are checked against it);
    ``others``: the other LVMVolumeGroups of the node (name, spec): a consumable device both select
    is refused, naming both."""
    out = NodePlan(node=node, lvg=lvg_name)
    st = dict(status or {})
    out.refused += validate_lvg(lvg_name, spec, base_dir)
    out.refused += [f"the API server would refuse: {p}" for p in transition_problems(current_spec, spec.to_wire())]
    growth = _VgGrowth(size=_bytes(st.get("vgSize")), free=_bytes(st.get("vgFree")),
                       extent=_bytes(st.get("extentSize")) or DEFAULT_EXTENT)
    out.lines += _file_lines(lvg_name, spec, _reported_files(st, node), growth)
    lines, refused = _block_device_plan(lvg_name, spec, block_devices, st, others, growth)
    out.lines += lines
    out.refused += refused
    out.lines.insert(0, _vg_line(lvg_name, spec.actual_vg_name_on_the_node, st, growth.new_pvs))
    lines, refused = _thin_pool_plan(spec, st, growth)
    out.lines += lines
    out.refused += refused
    return out


def _lvgs_on(lvgs: Iterable[Mapping[str, Any]], node: str) -> list[tuple[str, Mapping[str, Any]]]:
    """(name, spec) of the LVMVolumeGroups of ``node``."""
    return [(str((o.get("metadata") or {}).get("name")), o.get("spec") or {}) for o in lvgs
            if ((o.get("spec") or {}).get("local") or {}).get("nodeName") == node]


def print_plan(ctx: Any, plan: NodePlan) -> None:
    ctx.say(f"  node {plan.node}: LVMVolumeGroup {plan.lvg}")
    for line in plan.lines:
        ctx.say(f"    {line}")
    for err in plan.refused:
        ctx.say(f"    REFUSED: {err}")


def _by_node(objs: Iterable[Mapping[str, Any]]) -> dict[str, list[Mapping[str, Any]]]:
    out: dict[str, list[Mapping[str, Any]]] = defaultdict(list)
    for o in objs:
        node = (o.get("status") or {}).get("nodeName")
        if node:
            out[str(node)].append(o)
    return out


async def diff_one(ctx: Any, kube: Any, m: Any, live: Mapping[str, Any] | None, opts: Options) -> tuple[bool, str]:
    """Print the per-node plan of one LVMVolumeGroup/LVMVolumeGroupSet manifest; (ok, state)."""
    ok = True
    state = ""
    ctx.say(f"{m.ref} (from {m.source})")
    if not opts.offline:
        state = "new" if live is None else ("unchanged" if (live.get("spec") or {}) == m.obj.get("spec") else "changed")
        ctx.say(f"  cluster: {state}" + ("" if live is None else f" (generation {(live.get('metadata') or {}).get('generation')})"))
    if opts.server_dry_run and kube is not None:
        try:
            # force: a dry run judges the object (schema, CEL), not which field manager owns what
            await kube.apply(Kind.of(m.resource), m.obj, dry_run=True, force=True)
            ctx.say("  server dry run: accepted (schema and CEL rules)")
        except KubeError as exc:
            ctx.say(f"  server dry run: REFUSED: {exc}")
            ok = False
    plans = await _plans(kube, m, live, opts)
    if not plans:
        ctx.say("  no node matches spec.nodeSelector: nothing would happen")
    for plan in plans:
        print_plan(ctx, plan)
        ok = ok and not plan.refused
    return ok, state


async def _plans(kube: Any, m: Any, live: Mapping[str, Any] | None, opts: Options) -> list[NodePlan]:
    if m.kind == LVM_VOLUME_GROUP.kind:
        spec: LVMVolumeGroupSpec = m.spec
        node = spec.local.node_name if spec.local else "<none>"
        bds = None
        others: list[tuple[str, Mapping[str, Any]]] = []
        if kube is not None and not opts.offline:
            bds = await kube.list_objects(Kind.of(BLOCK_DEVICE), label_selector=f"{NODE_LABEL}={node_label_value(node)}")
            others = _lvgs_on(await kube.list_objects(Kind.of(LVM_VOLUME_GROUP)), node)
        return [await _node_plan(kube, opts, m.name, spec, node, bds, (live or {}).get("status"),
                                 (live or {}).get("spec"), others)]
    set_spec: LVMVolumeGroupSetSpec = m.spec
    tmpl = set_spec.lvm_volume_group_template
    if kube is None or opts.offline:  # a representative node "node"; names shown as <set>-<node>
        plan = await _node_plan(None, Options(offline=True, base_dir=opts.base_dir), child_name(m.name, "node"),
                                tmpl.child_spec("node"), "<each matching node>", None, None)
        plan.lvg = f"{m.name}-<node>"
        plan.lines = [line.replace(f"{m.name}-node", plan.lvg) for line in plan.lines]
        plan.refused = [line.replace(f"{m.name}-node", plan.lvg) for line in plan.refused]
        return [plan]
    nodes = await kube.list_objects(NODES)
    matching = sorted(str(n["metadata"]["name"]) for n in nodes
                      if set_spec.node_selector.matches(dict(n["metadata"].get("labels") or {})))
    bds = _by_node(await kube.list_objects(Kind.of(BLOCK_DEVICE)))
    all_lvgs = await kube.list_objects(Kind.of(LVM_VOLUME_GROUP))
    children = {c["metadata"]["name"]: c for c in all_lvgs
                if ((c.get("metadata") or {}).get("labels") or {}).get(SET_LABEL) == label_value(m.name)}
    out = []
    for node in matching:
        name = child_name(m.name, node)
        try:
            spec = tmpl.child_spec(node)
        except ValidationError as exc:
            plan = NodePlan(node=node, lvg=name, refused=[str(exc)])
        else:
            child = children.get(name) or {}
            plan = await _node_plan(kube, opts, name, spec, node, bds.get(node, []), child.get("status"),
                                    child.get("spec"), _lvgs_on(all_lvgs, node))
        out.append(plan)
    return out


def add_arguments(parser: Any, dry_run: bool = True) -> None:
    if dry_run:
        parser.add_argument("--dry-run", choices=("none", "server"), default="none",
                            help="server: also send LVMVolumeGroup(Set)s as a server-side dry-run apply (schema + CEL)")
    parser.add_argument("--file-devices-dir", default=None, metavar="DIR",
                        help="the agents' base directory for file devices (chart value fileDevicesDirectory); "
                             "default: what each node's agent published on its Lease, else (and with --offline) "
                             f"{DEFAULT_BASE_DIR}")


def options(args: Any) -> Options:
    return Options(offline=bool(getattr(args, "offline", False)), server_dry_run=getattr(args, "dry_run", "none") == "server",
                   base_dir=getattr(args, "file_devices_dir", None),
                   namespace=getattr(args, "namespace", None))
