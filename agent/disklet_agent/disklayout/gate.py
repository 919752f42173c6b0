"""The gate before any apply (handler and CLI alike): extract → snapshot → resolve → classify → append-only.

``plan_apply`` never writes anything. Its result says whether the layout may be applied and, if
not, whether it is *refused* (live state; retried) or *failed* (the layout itself is broken).
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from disklet.api.disklayout import RefusalCode
from disklet.hostcmd import HostRunner
from disklet_agent.config import AgentConfig
from disklet_agent.host.lsblk import BlockTopology, ProbeFailed, read_block_topology

from .classifier import Verdict, classify_targets, layout_verdict

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


@dataclass(kw_only=True)
class ApplyPlan:
    """What the gate found. ``ok`` → apply; else ``failed`` (bad layout) or refused with ``code``."""

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


def _with_resolved_devices(devices_value: dict[str, Any], resolved: dict[str, str | None]) -> dict[str, Any]:
    """A copy whose disk devices are kernel names, so by-id and /dev/sdX spellings compare equal."""
    value = copy.deepcopy(devices_value)
    disks = value.get("disk")
    if isinstance(disks, dict):
        for disk in disks.values():
            if isinstance(disk, dict) and isinstance(disk.get("device"), str):
                disk["device"] = resolved.get(disk["device"]) or disk["device"]
    return value


def plan_apply(body: str, *, runner: HostRunner, config: AgentConfig,
               read_topology: Callable[[HostRunner], BlockTopology] = read_block_topology,
               current_file: Path | None = None) -> ApplyPlan:
    """Decide whether ``body`` may be applied on this node right now (no writes)."""
    from disklet.layout import (
        LayoutError,
        MalformedLayout,
        NixUnavailable,
        check_append_only,
        extract_targets,
    )

    try:
        extraction = extract_targets(body, runner)
    except (MalformedLayout, LayoutError) as exc:
        return ApplyPlan(ok=False, failed=True, code=None, message=f"malformed layout: {exc}")
    except NixUnavailable as exc:
        return ApplyPlan(ok=False, failed=True, code=None,
                         message=f"cannot evaluate the layout on this node: {exc}")
    targets = list(extraction.devices)
    if not targets:
        return ApplyPlan(ok=False, failed=False, code=RefusalCode.NO_TARGET_DEVICES,
                         message="the layout names no /dev/* target devices (no disko.devices.disk.<name>.device and "
                         "no zpool topology members)", method=extraction.method,
                         devices_value=extraction.devices_value)

    try:
        topology = read_topology(runner)
    except ProbeFailed as exc:
        return ApplyPlan(ok=False, failed=False, code=RefusalCode.LSBLK_PROBE_FAILED,
                         message=f"could not snapshot the node's disks, refusing (fail closed): {exc}", targets=targets,
                         devices_value=extraction.devices_value, method=extraction.method)

    # What is already ours: the targets of the applied layout (as written and resolved).
    cur = current_file or current_path(config)
    applied_value: dict[str, Any] | None = None
    applied_raw: list[str] = []
    if cur.exists():
        try:
            applied = extract_targets(cur.read_text(encoding="utf-8"), runner)
            applied_value, applied_raw = applied.devices_value, list(applied.devices)
        except (OSError, UnicodeDecodeError, MalformedLayout, LayoutError, NixUnavailable) as exc:
            return ApplyPlan(ok=False, failed=False, code=RefusalCode.STATE_UNKNOWN,
                             message=f"unknown: the applied layout {cur} cannot be read or evaluated ({exc}); refusing because "
                             "neither ownership of the targets nor the append-only rule can be checked",
                             targets=targets, topology=topology, devices_value=extraction.devices_value,
                             method=extraction.method)

    resolved = resolve_targets(runner, [*targets, *[t for t in applied_raw if t not in targets]])
    applied_targets = set(applied_raw) | {p for t in applied_raw if (p := resolved.get(t))}
    verdicts = classify_targets(targets, topology, resolved={t: resolved[t] for t in targets},
                                system_mounts=config.system_mounts, volume_mounts=config.volume_mounts,
                                applied_targets=applied_targets)
    lv = layout_verdict(verdicts)
    plan = ApplyPlan(ok=lv.safe, failed=False, code=lv.code, message=lv.message, targets=targets,
                     resolved={t: resolved[t] for t in targets}, verdicts=verdicts,
                     applied_targets=applied_targets, devices_value=extraction.devices_value,
                     topology=topology, method=extraction.method)
    if not lv.safe:
        return plan
    if applied_value is not None:
        problems = check_append_only(_with_resolved_devices(applied_value, resolved),
                                     _with_resolved_devices(extraction.devices_value, resolved))
        if problems:
            plan.ok = False
            plan.code = RefusalCode.PARTITIONS_NOT_APPEND_ONLY
            plan.message = ("partitions of an applied disk may only be appended (no reorder, rename, resize or "
                            "insert): " + "; ".join(problems))
    return plan
