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
                            roots=mount_policy(config).roots)
    facts.resolved.update(aliases or {})
    return decide_plan(plan, facts, config=config, current_file=cur, allow_destructive=allow_destructive)


def decide_plan(plan: ApplyPlan, facts: NodeFacts, *, config: AgentConfig, current_file: Path,
                allow_destructive: bool = False) -> ApplyPlan:
    """The gate's decision over ``facts`` (pure): fills in and returns ``plan``."""
    from disklet.layout.appendonly import append_only_findings
    from disklet.layout.schema import mountpoints_of

    targets = plan.targets
    if facts.topology is None:
        return _refuse(plan, RefusalCode.LSBLK_PROBE_FAILED,
                       [f"could not snapshot the node's disks, refusing (fail closed): {facts.topology_error}"])
    topology = plan.topology = facts.topology

    # What is already ours: the targets of the applied layout, proven by their recorded identity.
    if facts.applied_error is not None:
        return _refuse(plan, RefusalCode.STATE_UNKNOWN,
                       [f"unknown: the applied layout {current_file} or its identity record cannot be read or "
                        f"evaluated ({facts.applied_error}); refusing because neither ownership of the targets "
                        "nor the append-only rule can be checked"])
    applied_value = facts.applied.devices_value if facts.applied else None
    applied_raw = facts.applied.targets if facts.applied else []
    recorded = facts.applied.identities if facts.applied else None

    resolved = facts.resolved
    plan.resolved = {t: resolved.get(t) for t in targets}
    nodes = {t: topology.find(rp) for t in targets if (rp := resolved.get(t))}

    # 1. Only whole disks (loop devices with the test switch), never partitions, dm, rbd, nbd, md, ...
    problems = [why for t, node in nodes.items() if node is not None
                and (why := eligibility_problem(node, allow_loop=config.allow_loop_targets))]
    if problems:
        return _refuse(plan, RefusalCode.NOT_WHOLE_DISK, problems)

    # 2. An applied target is ours only when the live disk is the one we recorded.
    ours: set[str] = set()
    identity_problems: list[str] = []
    for t in applied_raw:
        rp = resolved.get(t)
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
            identity_problems.append(f"{t} ({rp}) is named by the applied layout but is not the disk it was "
                                     f"applied to: {why}")
    if identity_problems:
        return _refuse(plan, RefusalCode.IDENTITY_CHANGED, identity_problems)
    plan.applied_targets = ours

    # 3. One disk, one target (multipath: two paths, one WWN).
    dups = duplicate_identities([(t, n) for t, n in nodes.items() if n is not None])
    if dups:
        return _refuse(plan, RefusalCode.DUPLICATE_TARGET, dups)

    # 4. Live state of every target and its descendants (the classifier).
    verdicts = classify_targets(targets, topology, resolved=plan.resolved, system_mounts=config.system_mounts,
                                volume_mounts=config.volume_mounts, applied_targets=ours)
    lv = layout_verdict(verdicts)
    plan.verdicts = verdicts
    if not lv.safe:
        plan.code, plan.message = lv.code, lv.message
        return plan

    target_nodes = [n for n in nodes.values() if n is not None]
    mine = _descendants(target_nodes)
    # 5. Partition labels must not collide with labels already on the node (other than our own disks').
    labels = layout_labels(plan.devices_value)
    clashes = sorted(f"{n.partlabel} (on {n.path})" for n in topology.walk()
                     if n.partlabel in labels and n.path not in mine)
    if clashes:
        return _refuse(plan, RefusalCode.PARTITION_LABEL_COLLISION,
                       ["partition labels of this layout already exist on the node (disko would format whatever "
                        "/dev/disk/by-partlabel/<label> points at): " + ", ".join(clashes)])

    # 6. A VG the layout declares must not already exist, unless the applied layout created it.
    vgs = plan.devices_value.get("lvm_vg") or {}
    if vgs:
        if facts.volume_groups is None:
            return _refuse(plan, RefusalCode.STATE_UNKNOWN, [f"unknown: {facts.volume_groups_error}"])
        applied_vgs = set((applied_value or {}).get("lvm_vg") or {})
        taken = sorted(v for v in vgs if v in facts.volume_groups and v not in applied_vgs)
        if taken:
            return _refuse(plan, RefusalCode.VOLUME_GROUP_EXISTS,
                           [f"volume group(s) {', '.join(taken)} already exist on the node and are not from the "
                            "applied layout; disko would add LVs to them instead of creating them"])

    # 6b. Same for pools: disko runs `zpool import -f <name>` first, so an existing or importable pool
    #     of that name would be force-imported instead of created.
    pools = plan.devices_value.get("zpool") or {}
    if pools:
        if facts.zpools is None:
            return _refuse(plan, RefusalCode.STATE_UNKNOWN, [f"unknown: {facts.zpools_error}"])
        applied_pools = set((applied_value or {}).get("zpool") or {})
        taken = sorted(p for p in pools if p in facts.zpools and p not in applied_pools)
        if taken:
            return _refuse(plan, RefusalCode.ZPOOL_EXISTS,
                           [f"ZFS pool(s) {', '.join(taken)} already exist or can be imported on the node and are not "
                            "from the applied layout; disko would force-import them instead of creating them"])

    # 7. Every path the layout mounts (named or derived, e.g. ZFS), as the host resolves it right now:
    #    mount follows symbolic links, so the resolved path is judged by the policy too.
    mountpoints = mountpoints_of(plan.devices_value)
    policy = mount_policy(config)
    real: dict[str, str] = {}
    if mountpoints:
        if facts.real_paths is None or any(mp not in facts.real_paths for mp in mountpoints):
            return _refuse(plan, RefusalCode.STATE_UNKNOWN,
                           [f"unknown: {facts.real_paths_error or 'the mountpoints were not resolved on the node'}"])
        real = facts.real_paths
        escapes = [why for mp in mountpoints if (why := policy.resolved_problem(mp, real[mp], real))]
        if escapes:
            return _refuse(plan, RefusalCode.MOUNTPOINT_RESOLVES_ELSEWHERE, escapes)

    # 8. Never mount on or above a live mount that is not one of our own filesystems (the path as
    #    written and as resolved).
    if mountpoints:
        if facts.mounts is None:
            return _refuse(plan, RefusalCode.STATE_UNKNOWN, [f"unknown: {facts.mounts_error}"])
        own = _descendants([n for t, n in nodes.items() if n is not None and (t in ours or n.path in ours)])
        over = sorted({f"{mp} would cover {target} (from {source or '?'})"
                       + (f" (it resolves to {path})" if path != mp else "")
                       for mp in mountpoints for path in sorted({mp, real[mp]})
                       for target, source in facts.mounts if policy.shadows(path, target) and source not in own})
        if over:
            return _refuse(plan, RefusalCode.MOUNTPOINT_OVER_LIVE_MOUNT, over)

    # 9. Day 2: applied disks stay, applied partitions only get appended to.
    if applied_value is not None:
        findings = append_only_findings(_with_resolved_devices(applied_value, resolved),
                                        _with_resolved_devices(plan.devices_value, resolved),
                                        allow_destructive=allow_destructive)
        if findings:
            code = findings[0][0]
            problems = [p for c, p in findings if c == code] + [f"{c}: {p}" for c, p in findings if c != code]
            if code is RefusalCode.PARTITIONS_NOT_APPEND_ONLY:
                problems[0] = ("partitions of an applied disk may only be appended (no reorder, rename, resize or "
                               "insert): " + problems[0])
            return _refuse(plan, code, problems)
    plan.ok, plan.code, plan.message = True, None, lv.message
    return plan
