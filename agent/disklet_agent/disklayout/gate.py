"""The gate before any apply (handler and CLI alike).

check (sandboxed evaluation → allowlist → literal artifact) → snapshot → resolve → eligibility and
identity → classify → partition labels, existing VGs and pools → mountpoints resolved on the host
(symbolic links) → live mounts → append-only.

``plan_apply`` never writes anything. Its result says whether the layout may be applied and, if
not, whether it is *refused* (live state or forbidden content, with a code; retried) or *failed*
(the layout itself is broken). Only ``plan.artifact`` may be handed to disko.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from disklet.api.disklayout import RefusalCode
from disklet.hostcmd import HostRunner
from disklet.layout.checked import CheckedLayout
from disklet.layout.mounts import MountPolicy
from disklet_agent.config import AgentConfig
from disklet_agent.host.layout_reads import HostLayoutReader
from disklet_agent.host.lsblk import ProbeFailed
from disklet_agent.logic.topology import BlockNode, BlockTopology

from .classifier import Verdict, classify_targets, layout_verdict
from .identity import DiskIdentity, duplicate_identities, eligibility_problem, read_identities

CURRENT_NAME = "current.nix"


def disk_dir(config: AgentConfig) -> Path:
    return config.etc_dir / "disk"


def current_path(config: AgentConfig) -> Path:
    return disk_dir(config) / CURRENT_NAME


def mount_policy(config: AgentConfig) -> MountPolicy:
    """The node's mountpoint policy: configured roots, plus the agent's own directories denied."""
    return MountPolicy.of(config.mount_roots, extra_denied=[config.file_devices_dir, "/etc/disklet",
                                                            "/var/lib/disklet"])


class LayoutReader(Protocol):
    """The node reads of the gate and the apply pipeline (``host.layout_reads.HostLayoutReader`` on a
    node, a fake in tests). Each raises ``ProbeFailed`` when it cannot answer (fail closed)."""

    def topology(self) -> BlockTopology: ...
    def resolve(self, targets: Sequence[str], /) -> dict[str, str | None]: ...
    def mounts(self) -> list[tuple[str, str]]: ...
    def volume_groups(self) -> set[str]: ...
    def pv_members(self) -> list[tuple[str, str]]: ...
    def zpools(self) -> set[str]: ...
    def imported_zpools(self) -> set[str] | None: ...
    def real_paths(self, paths: Sequence[str], /) -> dict[str, str]: ...


def host_reader(runner: HostRunner, config: AgentConfig) -> LayoutReader:
    return HostLayoutReader(runner, config.lvm_extra_config)


@dataclass(kw_only=True)
class ApplyPlan:
    """What the gate found. ``ok`` → apply ``artifact``; else ``failed`` (bad layout) or refused with ``code``."""

    ok: bool
    failed: bool
    code: RefusalCode | None
    message: str
    targets: list[str] = field(default_factory=list)
    resolved: dict[str, str | None] = field(default_factory=dict)
    verdicts: list[Verdict] = field(default_factory=list)
    applied_targets: set[str] = field(default_factory=set)
    devices_value: dict[str, Any] = field(default_factory=dict)
    topology: BlockTopology | None = None
    method: str = ""
    artifact: str = ""
    """The literal Nix that was checked: the only text apply_layout may run."""
    layout_hash: str = ""


def _with_resolved_devices(devices_value: dict[str, Any], resolved: dict[str, str | None]) -> dict[str, Any]:
    """A copy whose disk devices are kernel names, so by-id and /dev/sdX spellings compare equal."""
    value = copy.deepcopy(devices_value)
    disks = value.get("disk")
    if isinstance(disks, dict):
        for disk in disks.values():
            if isinstance(disk, dict) and isinstance(disk.get("device"), str):
                disk["device"] = resolved.get(disk["device"]) or disk["device"]
    return value


def layout_labels(devices_value: dict[str, Any]) -> set[str]:
    """The GPT partition labels disko will write (``disk-<disk>-<partition>``)."""
    out: set[str] = set()
    disks = devices_value.get("disk")
    for dname, disk in (disks.items() if isinstance(disks, dict) else []):
        content = disk.get("content") if isinstance(disk, dict) else None
        parts = content.get("partitions") if isinstance(content, dict) else None
        for pname in parts if isinstance(parts, dict) else []:
            out.add(f"disk-{dname}-{pname}")
    return out


def _descendants(nodes: Sequence[BlockNode]) -> set[str]:
    return {p for node in nodes for n in node.walk() for p in (n.path, n.kname)}


def _refuse(plan: ApplyPlan, code: RefusalCode, problems: Sequence[str]) -> ApplyPlan:
    plan.ok, plan.code = False, code
    plan.message = f"{code}: " + "; ".join(problems)
    return plan


@dataclass
class AppliedLayout:
    """The node's applied layout (``current.nix``) as the gate needs it."""

    devices_value: dict[str, Any]
    targets: list[str]
    """Its targets as written."""
    identities: dict[str, DiskIdentity] | None
    """Recorded identities; None for a ``current.nix`` written before identities were recorded."""


@dataclass
class NodeFacts:
    """Everything the gate's decision reads from the node, read before it decides.

    A read that failed holds its error text instead of a value; the decision refuses with it at the
    step that needs the value (and only there), so a failed read never reads as "nothing there".
    The mounts, VGs and pools are read only when the layout declares mountpoints, VGs or pools.
    """

    topology: BlockTopology | None = None
    topology_error: str | None = None
    applied: AppliedLayout | None = None
    applied_error: str | None = None
    resolved: dict[str, str | None] = field(default_factory=dict)
    """Every target of the new and the applied layout → kernel path (None: missing)."""
    volume_groups: set[str] | None = None
    volume_groups_error: str | None = None
    zpools: set[str] | None = None
    zpools_error: str | None = None
    mounts: list[tuple[str, str]] | None = None
    mounts_error: str | None = None
    real_paths: dict[str, str] | None = None
    """Every path the layout mounts, and every allowed root → the path the host resolves it to
    (``realpath -m``: symbolic links followed); read only when the layout mounts something."""
    real_paths_error: str | None = None


def read_node_facts(checked: CheckedLayout, *, reader: LayoutReader, runner: HostRunner,
                    current_file: Path, roots: Sequence[str] = ()) -> NodeFacts:
    """The gate's reads (no decision): the topology, the applied layout, the targets' kernel
    paths, and the VGs, pools and mounts the layout could collide with."""
    from disklet.layout import LayoutError, MalformedLayout, NixUnavailable, extract_targets
    from disklet.layout.schema import mountpoints_of

    facts = NodeFacts()
    try:
        facts.topology = reader.topology()
    except ProbeFailed as exc:
        facts.topology_error = str(exc)
        return facts
    if current_file.exists():
        try:
            applied = extract_targets(current_file.read_text(encoding="utf-8"), runner)
            facts.applied = AppliedLayout(applied.devices_value, list(applied.devices),
                                          read_identities(current_file.parent))
        except (OSError, UnicodeDecodeError, ValueError, MalformedLayout, LayoutError, NixUnavailable) as exc:
            facts.applied_error = str(exc)
            return facts
    targets = list(checked.targets)
    applied_raw = facts.applied.targets if facts.applied else []
    facts.resolved = reader.resolve([*targets, *[t for t in applied_raw if t not in targets]])
    if checked.devices_value.get("lvm_vg"):
        try:
            facts.volume_groups = reader.volume_groups()
        except ProbeFailed as exc:
            facts.volume_groups_error = str(exc)
    if checked.devices_value.get("zpool"):
        try:
            facts.zpools = reader.zpools()
        except ProbeFailed as exc:
            facts.zpools_error = str(exc)
    mountpoints = mountpoints_of(checked.devices_value)
    if mountpoints:
        try:
            facts.real_paths = reader.real_paths([*mountpoints, *roots])
        except ProbeFailed as exc:
            facts.real_paths_error = str(exc)
        try:
            facts.mounts = reader.mounts()
        except ProbeFailed as exc:
            facts.mounts_error = str(exc)
    return facts


def plan_apply(body: str, *, runner: HostRunner, config: AgentConfig, reader: LayoutReader | None = None,
               current_file: Path | None = None, allow_destructive: bool = False,
               aliases: Mapping[str, str] | None = None) -> ApplyPlan:
    """Decide whether ``body`` may be applied on this node right now (no writes): check the body,
    read the node (:func:`read_node_facts`), decide (:func:`decide_plan`, pure).

    ``aliases``: applied targets that are now at another kernel path (a disk chosen by a selector
    and pinned by its identity, renamed since; :mod:`.selection`). The recorded identity is still
    checked against the live disk at the new path."""
    from disklet.layout import LayoutError, MalformedLayout, NixUnavailable
    from disklet.layout.checked import check_layout
    from disklet.layout.schema import SchemaViolation

    try:
        checked = check_layout(body, runner, policy=mount_policy(config))
    except SchemaViolation as exc:
        return ApplyPlan(ok=False, failed=False, code=exc.code, message=f"{exc.code}: {exc}")
    except (MalformedLayout, LayoutError) as exc:
        return ApplyPlan(ok=False, failed=True, code=None, message=f"malformed layout: {exc}")
    except NixUnavailable as exc:
        return ApplyPlan(ok=False, failed=True, code=None,
                         message=f"cannot evaluate the layout on this node: {exc}")
    plan = ApplyPlan(ok=False, failed=False, code=None, message="", targets=list(checked.targets),
                     devices_value=checked.devices_value, method=checked.method, artifact=checked.artifact,
                     layout_hash=checked.layout_hash)
    if not plan.targets:
        return _refuse(plan, RefusalCode.NO_TARGET_DEVICES,
                       ["the layout names no /dev/* target devices (no disko.devices.disk.<name>.device and "
                        "no zpool topology members)"])
    cur = current_file or current_path(config)
    facts = read_node_facts(checked, reader=reader or host_reader(runner, config), runner=runner, current_file=cur,
                            roots=[r for r in mount_policy(config).roots if r.startswith("/")])
    facts.resolved.update(aliases or {})
    return decide_plan(plan, facts, config=config, current_file=cur, allow_destructive=allow_destructive)


Refusal = tuple[RefusalCode, list[str]]
"""A refusal code and the problems behind it."""


def decide_plan(plan: ApplyPlan, facts: NodeFacts, *, config: AgentConfig, current_file: Path,
                allow_destructive: bool = False) -> ApplyPlan:
    """The gate's decision over ``facts`` (pure): fills in and returns ``plan``. The checks run in
    order and the first that refuses decides."""
    if facts.topology is None:
        return _refuse(plan, RefusalCode.LSBLK_PROBE_FAILED,
                       [f"could not snapshot the node's disks, refusing (fail closed): {facts.topology_error}"])
    topology = plan.topology = facts.topology
    if facts.applied_error is not None:
        return _refuse(plan, RefusalCode.STATE_UNKNOWN,
                       [f"unknown: the applied layout {current_file} or its identity record cannot be read or "
                        f"evaluated ({facts.applied_error}); refusing because neither ownership of the targets "
                        "nor the append-only rule can be checked"])
    plan.resolved = {t: facts.resolved.get(t) for t in plan.targets}
    nodes = {t: topology.find(rp) for t in plan.targets if (rp := facts.resolved.get(t))}

    refusal = _eligibility(nodes, config)
    if refusal is None:
        ours, refusal = _ownership(plan.targets, facts, topology)
        if refusal is None:
            plan.applied_targets = ours
    if refusal is None:
        refusal = _duplicates(nodes)
    if refusal is not None:
        return _refuse(plan, *refusal)

    # 4. Live state of every target and its descendants (the classifier).
    plan.verdicts = classify_targets(plan.targets, topology, resolved=plan.resolved,
                                     system_mounts=config.system_mounts, volume_mounts=config.volume_mounts,
                                     applied_targets=plan.applied_targets)
    lv = layout_verdict(plan.verdicts)
    if not lv.safe:
        plan.code, plan.message = lv.code, lv.message
        return plan

    for check in (lambda: _label_collisions(plan, topology, nodes),
                  lambda: _name_collisions(plan, facts),
                  lambda: _mount_checks(plan, facts, nodes, config),
                  lambda: _append_only(plan, facts, allow_destructive)):
        if (refusal := check()) is not None:
            return _refuse(plan, *refusal)
    plan.ok, plan.code, plan.message = True, None, lv.message
    return plan


def _eligibility(nodes: dict[str, BlockNode | None], config: AgentConfig) -> Refusal | None:
    """1. Only whole disks (loop devices with the test switch), never partitions, dm, rbd, nbd, md, ..."""
    problems = [why for node in nodes.values() if node is not None
                and (why := eligibility_problem(node, allow_loop=config.allow_loop_targets))]
    return (RefusalCode.NOT_WHOLE_DISK, problems) if problems else None


def _ownership(targets: list[str], facts: NodeFacts, topology: BlockTopology) -> tuple[set[str], Refusal | None]:
    """2. An applied target is ours only when the live disk is the one we recorded: (ours, refusal)."""
    applied_raw = facts.applied.targets if facts.applied else []
    recorded = facts.applied.identities if facts.applied else None
    ours: set[str] = set()
    problems: list[str] = []
    for t in applied_raw:
        rp = facts.resolved.get(t)
        node = topology.find(rp) if rp else None
        if node is None:
            continue
        if recorded is None:  # a current.nix written before identities were recorded: path match only
            ours |= {t, rp or t}
            continue
        rec = recorded.get(t)
        why = "no identity was recorded for it" if rec is None else rec.mismatch(DiskIdentity.of(node))
        if why is None:
            ours |= {t, rp or t}
        elif t in targets:
            problems.append(f"{t} ({rp}) is named by the applied layout but is not the disk it was applied to: {why}")
    return ours, (RefusalCode.IDENTITY_CHANGED, problems) if problems else None


def _duplicates(nodes: dict[str, BlockNode | None]) -> Refusal | None:
    """3. One disk, one target (multipath: two paths, one WWN)."""
    dups = duplicate_identities([(t, n) for t, n in nodes.items() if n is not None])
    return (RefusalCode.DUPLICATE_TARGET, dups) if dups else None


def _label_collisions(plan: ApplyPlan, topology: BlockTopology, nodes: dict[str, BlockNode | None]) -> Refusal | None:
    """5. Partition labels must not collide with labels already on the node (other than our own disks')."""
    mine = _descendants([n for n in nodes.values() if n is not None])
    labels = layout_labels(plan.devices_value)
    clashes = sorted(f"{n.partlabel} (on {n.path})" for n in topology.walk()
                     if n.partlabel in labels and n.path not in mine)
    if not clashes:
        return None
    return (RefusalCode.PARTITION_LABEL_COLLISION,
            ["partition labels of this layout already exist on the node (disko would format whatever "
             "/dev/disk/by-partlabel/<label> points at): " + ", ".join(clashes)])


def _name_collisions(plan: ApplyPlan, facts: NodeFacts) -> Refusal | None:
    """6. A VG the layout declares must not already exist, unless the applied layout created it.
    6b. Same for pools: disko runs `zpool import -f <name>` first, so an existing or importable pool
    of that name would be force-imported instead of created."""
    applied_value = facts.applied.devices_value if facts.applied else {}
    kinds = (("lvm_vg", facts.volume_groups, facts.volume_groups_error, RefusalCode.VOLUME_GROUP_EXISTS,
              "volume group(s) {} already exist on the node and are not from the applied layout; disko would add "
              "LVs to them instead of creating them"),
             ("zpool", facts.zpools, facts.zpools_error, RefusalCode.ZPOOL_EXISTS,
              "ZFS pool(s) {} already exist or can be imported on the node and are not from the applied layout; "
              "disko would force-import them instead of creating them"))
    for key, live, error, code, message in kinds:
        declared = plan.devices_value.get(key) or {}
        if not declared:
            continue
        if live is None:
            return RefusalCode.STATE_UNKNOWN, [f"unknown: {error}"]
        applied = set(applied_value.get(key) or {})
        taken = sorted(name for name in declared if name in live and name not in applied)
        if taken:
            return code, [message.format(", ".join(taken))]
    return None


def _mount_checks(plan: ApplyPlan, facts: NodeFacts, nodes: dict[str, BlockNode | None],
                  config: AgentConfig) -> Refusal | None:
    """7. Every path the layout mounts (named or derived, e.g. ZFS), as the host resolves it right now:
    mount follows symbolic links, so the resolved path is judged by the policy too.
    8. Never mount on or above a live mount that is not one of our own filesystems (the path as
    written and as resolved)."""
    from disklet.layout.schema import mountpoints_of

    mountpoints = mountpoints_of(plan.devices_value)
    if not mountpoints:
        return None
    policy = mount_policy(config)
    if facts.real_paths is None or any(mp not in facts.real_paths for mp in mountpoints):
        return (RefusalCode.STATE_UNKNOWN,
                [f"unknown: {facts.real_paths_error or 'the mountpoints were not resolved on the node'}"])
    real = facts.real_paths
    escapes = [why for mp in mountpoints if (why := policy.resolved_problem(mp, real[mp], real))]
    if escapes:
        return RefusalCode.MOUNTPOINT_RESOLVES_ELSEWHERE, escapes
    if facts.mounts is None:
        return RefusalCode.STATE_UNKNOWN, [f"unknown: {facts.mounts_error}"]
    ours = plan.applied_targets
    own = _descendants([n for t, n in nodes.items() if n is not None and (t in ours or n.path in ours)])
    over = sorted({f"{mp} would cover {target} (from {source or '?'})"
                   + (f" (it resolves to {path})" if path != mp else "")
                   for mp in mountpoints for path in sorted({mp, real[mp]})
                   for target, source in facts.mounts if policy.shadows(path, target) and source not in own})
    return (RefusalCode.MOUNTPOINT_OVER_LIVE_MOUNT, over) if over else None


def _append_only(plan: ApplyPlan, facts: NodeFacts, allow_destructive: bool) -> Refusal | None:
    """9. Day 2: applied disks stay, applied partitions only get appended to."""
    from disklet.layout.appendonly import append_only_findings

    if facts.applied is None:
        return None
    findings = append_only_findings(_with_resolved_devices(facts.applied.devices_value, facts.resolved),
                                    _with_resolved_devices(plan.devices_value, facts.resolved),
                                    allow_destructive=allow_destructive)
    if not findings:
        return None
    code = findings[0][0]
    problems = [p for c, p in findings if c == code] + [f"{c}: {p}" for c, p in findings if c != code]
    if code is RefusalCode.PARTITIONS_NOT_APPEND_ONLY:
        problems[0] = ("partitions of an applied disk may only be appended (no reorder, rename, resize or "
                       "insert): " + problems[0])
    return code, problems
