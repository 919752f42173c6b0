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
import json
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from disklet.api.disklayout import RefusalCode
from disklet.hostcmd import HostRunner
from disklet.layout.mounts import MountPolicy
from disklet_agent.config import AgentConfig
from disklet_agent.host.lsblk import BlockNode, BlockTopology, ProbeFailed, read_block_topology
from disklet_agent.host.paths import ResolveFailed, resolve_paths

from .classifier import Verdict, classify_targets, layout_verdict
from .identity import DiskIdentity, duplicate_identities, eligibility_problem, read_identities

RESOLVE_TIMEOUT = 15.0
CURRENT_NAME = "current.nix"


def disk_dir(config: AgentConfig) -> Path:
    return config.etc_dir / "disk"


def current_path(config: AgentConfig) -> Path:
    return disk_dir(config) / CURRENT_NAME


def resolve_targets(runner: HostRunner, targets: Sequence[str]) -> dict[str, str | None]:
    """``realpath -e`` each target on the host (by-id/by-path/by-partlabel → kernel name); None = missing."""
    out: dict[str, str | None] = {}
    for t in targets:
        if t in out:
            continue
        res = runner.run(["realpath", "-e", "--", t], timeout=RESOLVE_TIMEOUT)
        path = res.stdout.strip() if res.ok else ""
        out[t] = path if path.startswith("/") and "\n" not in path else None
    return out


def mount_policy(config: AgentConfig) -> MountPolicy:
    """The node's mountpoint policy: configured roots, plus the agent's own directories denied."""
    return MountPolicy.of(config.mount_roots, extra_denied=[config.file_devices_dir, "/etc/disklet",
                                                            "/var/lib/disklet"])


def read_live_mounts(runner: HostRunner) -> list[tuple[str, str]]:
    """(mount target, source) of every mount on the host (``findmnt``: all types, not only block)."""
    res = runner.run(["findmnt", "--json", "--list", "--output", "TARGET,SOURCE"], timeout=RESOLVE_TIMEOUT)
    if not res.ok:
        raise ProbeFailed(f"cannot list the node's mounts: {res.describe()}")
    try:
        data = json.loads(res.stdout)
        return [(str(f.get("target") or ""), str(f.get("source") or "")) for f in data["filesystems"]]
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise ProbeFailed(f"findmnt printed unreadable JSON: {exc}") from exc


def read_volume_groups(runner: HostRunner, config: AgentConfig) -> set[str]:
    argv = ["vgs", "--noheadings", "-o", "vg_name"]
    if config.lvm_extra_config:
        argv[1:1] = ["--config", config.lvm_extra_config]
    res = runner.run(argv, timeout=60)
    if not res.ok:
        raise ProbeFailed(f"cannot list the node's volume groups: {res.describe()}")
    return {line.strip() for line in res.stdout.splitlines() if line.strip()}


def read_zpools(runner: HostRunner) -> set[str]:
    """Pools imported (``zpool list``) or importable (``zpool import``) on the node; empty without ZFS."""
    names: set[str] = set()
    res = runner.run(["zpool", "list", "-H", "-o", "name"], timeout=60)
    if res.returncode == 127:
        return names  # no ZFS tools: no pool can exist (and disko could not create one either)
    if not res.ok:
        raise ProbeFailed(f"cannot list the node's ZFS pools: {res.describe()}")
    names |= {line.strip() for line in res.stdout.splitlines() if line.strip()}
    res = runner.run(["zpool", "import"], timeout=60)
    if not res.ok and "no pools available" not in (res.stdout + res.stderr):
        raise ProbeFailed(f"cannot list the node's importable ZFS pools: {res.describe()}")
    names |= {m.group(1) for m in re.finditer(r"^\s*pool:\s*(\S+)\s*$", res.stdout, re.M)}
    return names


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


def plan_apply(body: str, *, runner: HostRunner, config: AgentConfig,
               read_topology: Callable[[HostRunner], BlockTopology] = read_block_topology,
               current_file: Path | None = None, allow_destructive: bool = False,
               read_mounts: Callable[[HostRunner], list[tuple[str, str]]] = read_live_mounts,
               read_vgs: Callable[[HostRunner, AgentConfig], set[str]] = read_volume_groups,
               read_pools: Callable[[HostRunner], set[str]] = read_zpools,
               read_paths: Callable[[HostRunner, Sequence[str]], dict[str, str]] = resolve_paths) -> ApplyPlan:
    """Decide whether ``body`` may be applied on this node right now (no writes)."""
    from disklet.layout import LayoutError, MalformedLayout, NixUnavailable, extract_targets
    from disklet.layout.appendonly import append_only_findings
    from disklet.layout.checked import check_layout
    from disklet.layout.schema import SchemaViolation, mountpoints_of

    try:
        checked = check_layout(body, runner, policy=mount_policy(config))
    except SchemaViolation as exc:
        return ApplyPlan(ok=False, failed=False, code=exc.code, message=f"{exc.code}: {exc}")
    except (MalformedLayout, LayoutError) as exc:
        return ApplyPlan(ok=False, failed=True, code=None, message=f"malformed layout: {exc}")
    except NixUnavailable as exc:
        return ApplyPlan(ok=False, failed=True, code=None,
                         message=f"cannot evaluate the layout on this node: {exc}")
    targets = list(checked.targets)
    plan = ApplyPlan(ok=False, failed=False, code=None, message="", targets=targets, devices_value=checked.devices_value,
                     method=checked.method, artifact=checked.artifact, layout_hash=checked.layout_hash)
    if not targets:
        return _refuse(plan, RefusalCode.NO_TARGET_DEVICES,
                       ["the layout names no /dev/* target devices (no disko.devices.disk.<name>.device and "
                        "no zpool topology members)"])

    try:
        topology = read_topology(runner)
    except ProbeFailed as exc:
        return _refuse(plan, RefusalCode.LSBLK_PROBE_FAILED,
                       [f"could not snapshot the node's disks, refusing (fail closed): {exc}"])
    plan.topology = topology

    # What is already ours: the targets of the applied layout, proven by their recorded identity.
    cur = current_file or current_path(config)
    applied_value: dict[str, Any] | None = None
    applied_raw: list[str] = []
    recorded: dict[str, DiskIdentity] | None = None
    if cur.exists():
        try:
            applied = extract_targets(cur.read_text(encoding="utf-8"), runner)
            applied_value, applied_raw = applied.devices_value, list(applied.devices)
            recorded = read_identities(cur.parent)
        except (OSError, UnicodeDecodeError, ValueError, MalformedLayout, LayoutError, NixUnavailable) as exc:
            return _refuse(plan, RefusalCode.STATE_UNKNOWN,
                           [f"unknown: the applied layout {cur} or its identity record cannot be read or evaluated "
                            f"({exc}); refusing because neither ownership of the targets nor the append-only rule "
                            "can be checked"])

    resolved = resolve_targets(runner, [*targets, *[t for t in applied_raw if t not in targets]])
    plan.resolved = {t: resolved[t] for t in targets}
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
    labels = layout_labels(checked.devices_value)
    clashes = sorted(f"{n.partlabel} (on {n.path})" for n in topology.walk()
                     if n.partlabel in labels and n.path not in mine)
    if clashes:
        return _refuse(plan, RefusalCode.PARTITION_LABEL_COLLISION,
                       ["partition labels of this layout already exist on the node (disko would format whatever "
                        "/dev/disk/by-partlabel/<label> points at): " + ", ".join(clashes)])

    # 6. A VG the layout declares must not already exist, unless the applied layout created it.
    vgs = checked.devices_value.get("lvm_vg") or {}
    if vgs:
        try:
            live_vgs = read_vgs(runner, config)
        except ProbeFailed as exc:
            return _refuse(plan, RefusalCode.STATE_UNKNOWN, [f"unknown: {exc}"])
        applied_vgs = set((applied_value or {}).get("lvm_vg") or {})
        taken = sorted(v for v in vgs if v in live_vgs and v not in applied_vgs)
        if taken:
            return _refuse(plan, RefusalCode.VOLUME_GROUP_EXISTS,
                           [f"volume group(s) {', '.join(taken)} already exist on the node and are not from the "
                            "applied layout; disko would add LVs to them instead of creating them"])

    # 6b. Same for pools: disko runs `zpool import -f <name>` first, so an existing or importable pool
    #     of that name would be force-imported instead of created.
    pools = checked.devices_value.get("zpool") or {}
    if pools:
        try:
            live_pools = read_pools(runner)
        except ProbeFailed as exc:
            return _refuse(plan, RefusalCode.STATE_UNKNOWN, [f"unknown: {exc}"])
        applied_pools = set((applied_value or {}).get("zpool") or {})
        taken = sorted(p for p in pools if p in live_pools and p not in applied_pools)
        if taken:
            return _refuse(plan, RefusalCode.ZPOOL_EXISTS,
                           [f"ZFS pool(s) {', '.join(taken)} already exist or can be imported on the node and are not "
                            "from the applied layout; disko would force-import them instead of creating them"])

    # 7. Every path the layout mounts (named or derived, e.g. ZFS), resolved on the host right now:
    #    mount follows symbolic links, so the resolved path is judged by the policy too.
    mountpoints = mountpoints_of(checked.devices_value)
    if mountpoints:
        policy = mount_policy(config)
        try:
            real = read_paths(runner, [*mountpoints, *policy.roots])
        except (ResolveFailed, KeyError) as exc:
            return _refuse(plan, RefusalCode.STATE_UNKNOWN, [f"unknown: {exc}"])
        escapes = [why for mp in mountpoints if (why := policy.resolved_problem(mp, real[mp], real))]
        if escapes:
            return _refuse(plan, RefusalCode.MOUNTPOINT_RESOLVES_ELSEWHERE, escapes)

    # 8. Never mount on or above a live mount that is not one of our own filesystems (the path as
    #    written and as resolved).
    if mountpoints:
        try:
            live = read_mounts(runner)
        except ProbeFailed as exc:
            return _refuse(plan, RefusalCode.STATE_UNKNOWN, [f"unknown: {exc}"])
        own = _descendants([n for t, n in nodes.items() if n is not None and (t in ours or n.path in ours)])
        spelled = {mp: sorted({mp, real[mp]}) for mp in mountpoints}
        over = sorted({f"{mp} would cover {target} (from {source or '?'})"
                       + (f" (it resolves to {path})" if path != mp else "")
                       for mp in mountpoints for path in spelled[mp]
                       for target, source in live if policy.shadows(path, target) and source not in own})
        if over:
            return _refuse(plan, RefusalCode.MOUNTPOINT_OVER_LIVE_MOUNT, over)

    # 9. Day 2: applied disks stay, applied partitions only get appended to.
    if applied_value is not None:
        findings = append_only_findings(_with_resolved_devices(applied_value, resolved),
                                        _with_resolved_devices(checked.devices_value, resolved),
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
