"""The DiskLayout pipeline as the agent's handler runs it on a controller-managed node (resolve the
body → the gate's plan → apply the plan's checked artifact), and builders of structured layouts.
Shared by the host tier's real-disko apply tests and the VM tier."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from disklet_agent.config import AgentConfig
from disklet_agent.disklayout.apply import ApplyOutcome, apply_layout, expectation_from
from disklet_agent.disklayout.gate import ApplyPlan, plan_apply

from disklet.api.disklayout import DiskLayoutSpec
from disklet.hostcmd import HostRunner
from disklet.layout import resolve_body

Partition = tuple[str, str, dict[str, Any]]
"""(name, size, content) of one GPT partition."""
Disk = tuple[str, str, list[Partition]]
"""(name, device, partitions) of one disk."""


@dataclass
class Result:
    plan: ApplyPlan
    body: str
    outcome: ApplyOutcome | None
    """None when the gate refused (``plan.ok`` is False): nothing ran."""


def run_pipeline(spec: DiskLayoutSpec, *, runner: HostRunner, config: AgentConfig) -> Result:
    """Gate, then apply: disko gets the plan's checked artifact, with the resolved targets for the
    last-moment checks and the expectation the result is verified against."""
    body, _source = resolve_body(spec)
    plan = plan_apply(body, runner=runner, config=config)
    if not plan.ok:
        return Result(plan, body, None)
    out = apply_layout(plan.artifact or body, runner=runner, config=config,
                       expect=expectation_from(plan.devices_value, plan.resolved),
                       timeout_seconds=spec.timeout_seconds, rebuild=spec.rebuild, targets=dict(plan.resolved))
    return Result(plan, body, out)


def assert_applied(r: Result) -> Result:
    assert r.plan.ok, f"refused/failed before disko: {r.plan.code}: {r.plan.message}"
    assert r.outcome is not None and r.outcome.ok, r.outcome.message if r.outcome else ""
    return r


def structured(disks: Sequence[Disk], vgs: tuple[str, ...] = (), *, node: str) -> DiskLayoutSpec:
    """A structured DiskLayout for ``node`` (and the VGs its lvm_pv partitions join)."""
    layout: dict[str, Any] = {"disks": [
        {"name": name, "device": dev, "gpt": {"partitions": [
            {"name": p, "size": size, "content": content} for p, size, content in parts]}}
        for name, dev, parts in disks]}
    if vgs:
        layout["lvmVolumeGroups"] = [{"name": v} for v in vgs]
    return DiskLayoutSpec.model_validate({"nodeName": node, "diskLayout": layout})


def fs(fmt: str, mountpoint: str) -> dict[str, Any]:
    """A file system partition's content (nofail: a test mount never blocks a boot)."""
    return {"type": "filesystem", "format": fmt, "mountpoint": mountpoint, "mountOptions": ["nofail"]}
