"""The agent's DiskLayout pipeline inside the VM: disko's own scripts on the VM's real disks.

Like tests/host/test_disko_real_apply.py, but the targets are real disks (NVMe/SCSI/SATA with
identities), udev makes the by-partlabel links, and device-mapper activates what LVM creates. The
test disko accepts real disks only inside the test VM and only those named in
``DISKO_TEST_VM_DISKS``; mounts go under the sandbox's root. ``nixos-rebuild``/``systemd-run`` stay
the recording fakes (no NixOS in the guest).
"""

from __future__ import annotations

import inspect
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from disklet_agent.config import AgentConfig
from disklet_agent.disklayout.apply import ApplyOutcome, apply_layout, expectation_from
from disklet_agent.disklayout.gate import ApplyPlan, plan_apply

from devkit import disko
from disklet.api.disklayout import DiskLayoutSpec
from disklet.layout import resolve_body
from tests.fake_commands import FAKE_NIXOS_REBUILD, FAKE_SYSTEMD_RUN
from tests.vm.conftest import RUNNER


@dataclass
class Node:
    """One agent's view: its /etc/disklet under ``host``, disko's mounts under ``sandbox/root``."""

    config: AgentConfig
    sandbox: Path
    env: dict[str, str]

    @property
    def root(self) -> Path:
        return self.sandbox / "root"

    @property
    def current(self) -> Path:
        return self.config.etc_dir / "disk" / "current.nix"

    def mounted(self, mountpoint: str) -> Path:
        return self.root / mountpoint.lstrip("/")


def node(host: Path, sandbox: Path, disks: list[str]) -> Node:
    """An agent node whose state lives in ``host`` (kept across boots when it is on the state disk)."""
    sandbox.mkdir(parents=True, exist_ok=True)
    (sandbox / "root").mkdir(exist_ok=True)
    bin_ = sandbox / "bin"
    bin_.mkdir(exist_ok=True)
    for name, text in (("systemd-run", FAKE_SYSTEMD_RUN), ("nixos-rebuild", FAKE_NIXOS_REBUILD)):
        (bin_ / name).write_text(text)
        (bin_ / name).chmod(0o755)
    env = {disko.ENV_SANDBOX: str(sandbox), disko.ENV_ROOT: str(sandbox / "root"),
           disko.ENV_VM_DISKS: ",".join(disks), "FAKE_LOG": str(sandbox / "calls.jsonl")}
    config = AgentConfig(node_name="vm-node", host_root=host, system_mounts=["/", "/opt/disklet"], volume_mounts=[],
                         disko_command=[disko.DISKO_COMMAND], systemd_run_command=[str(bin_ / "systemd-run")],
                         nixos_rebuild_command=[str(bin_ / "nixos-rebuild")], command_timeout_seconds=300)
    (config.etc_dir / "disk").mkdir(parents=True, exist_ok=True)
    (config.etc_dir / "disk-management-mode").write_text("controller-managed\n")
    return Node(config, sandbox, env)


@dataclass
class Result:
    plan: ApplyPlan
    outcome: ApplyOutcome | None


def run(n: Node, spec: DiskLayoutSpec) -> Result:
    """What the agent's DiskLayout handler does once the node is controller-managed."""
    os.environ.update(n.env)  # the test disko reads its sandbox, mount root and allowed disks from here
    body, _source = resolve_body(spec)
    plan = plan_apply(body, runner=RUNNER, config=n.config)
    if not plan.ok:
        return Result(plan, None)
    extra: dict[str, Any] = {}
    if "targets" in inspect.signature(apply_layout).parameters:
        extra["targets"] = dict(plan.resolved)
    out = apply_layout(plan.artifact or body, runner=RUNNER, config=n.config,
                       expect=expectation_from(plan.devices_value, plan.resolved),
                       timeout_seconds=spec.timeout_seconds, rebuild=spec.rebuild, **extra)
    return Result(plan, out)


def applied(n: Node, spec: DiskLayoutSpec) -> Result:
    r = run(n, spec)
    assert r.plan.ok, f"refused/failed before disko: {r.plan.code}: {r.plan.message}"
    assert r.outcome is not None and r.outcome.ok, r.outcome.message if r.outcome else ""
    return r


def structured(disks: list[tuple[str, str, list[tuple[str, str, dict[str, Any]]]]],
               vgs: tuple[str, ...] = ()) -> DiskLayoutSpec:
    layout: dict[str, Any] = {"disks": [
        {"name": name, "device": dev, "gpt": {"partitions": [
            {"name": p, "size": size, "content": content} for p, size, content in parts]}}
        for name, dev, parts in disks]}
    if vgs:
        layout["lvmVolumeGroups"] = [{"name": v} for v in vgs]
    return DiskLayoutSpec.model_validate({"nodeName": "vm-node", "diskLayout": layout})


def fs(fmt: str, mountpoint: str) -> dict[str, Any]:
    return {"type": "filesystem", "format": fmt, "mountpoint": mountpoint, "mountOptions": ["nofail"]}
