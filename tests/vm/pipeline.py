"""The agent's DiskLayout pipeline inside the VM: disko's own scripts on the VM's real disks.

Like tests/host/test_disko_real_apply.py, but the targets are real disks (NVMe/SCSI/SATA with
identities), udev makes the by-partlabel links, and device-mapper activates what LVM creates. The
test disko accepts real disks only inside the test VM and only those named in
``DISKO_TEST_VM_DISKS``; mounts go under the sandbox's root. ``nixos-rebuild``/``systemd-run`` stay
the recording fakes (no NixOS in the guest).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from disklet_agent.config import AgentConfig

from devkit import disko
from disklet.api.disklayout import DiskLayoutSpec
from tests.fake_commands import FAKE_NIXOS_REBUILD, FAKE_SYSTEMD_RUN
from tests.layout_pipeline import Disk, Result, assert_applied, run_pipeline
from tests.layout_pipeline import structured as layout_spec
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


def run(n: Node, spec: DiskLayoutSpec) -> Result:
    """What the agent's DiskLayout handler does once the node is controller-managed."""
    os.environ.update(n.env)  # the test disko reads its sandbox, mount root and allowed disks from here
    return run_pipeline(spec, runner=RUNNER, config=n.config)


def applied(n: Node, spec: DiskLayoutSpec) -> Result:
    return assert_applied(run(n, spec))


def structured(disks: list[Disk], vgs: tuple[str, ...] = ()) -> DiskLayoutSpec:
    return layout_spec(disks, vgs, node="vm-node")
