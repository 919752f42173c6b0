"""Shared helpers for the LVM engine host tests: a sandboxed engine and a cleanup that always runs.

Every test works under its own temporary base directory with random VG/LVG names (other engineers
run loop/LVM tests on this machine at the same time) and touches only loops whose backing file
lies in its own tmp dir.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from disklet_agent.config import AgentConfig
from disklet_agent.lvm.engine import HostLvgEngine

from disklet.api.lvm import FileDevice, LocalSpec, LVMVolumeGroupSpec, ThinPool
from disklet.hostcmd import HostRunner

ACTIVATION_OFF = "global{activation=0}"


def loops_under(root: Path) -> list[tuple[str, str]]:
    """(loop, backing file) of every loop whose backing file lies under ``root`` (deleted ones too)."""
    out = subprocess.run(["losetup", "-J", "-l", "-O", "NAME,BACK-FILE"], capture_output=True, text=True,
                         check=True).stdout
    rows = json.loads(out or '{"loopdevices": []}').get("loopdevices", [])
    real = os.path.realpath(root)
    found = []
    for r in rows:
        back = (r.get("back-file") or "").removesuffix(" (deleted)")
        if back.startswith(real + "/") or back.startswith(str(root) + "/"):
            found.append((r["name"], back))
    return found


def lvm_config_for(loops: list[str]) -> str:
    accepts = ", ".join(f'"a|^{lp}$|"' for lp in loops)
    rules = f"{accepts}, " if accepts else ""
    return (f'devices {{ global_filter = [ {rules}"r|.*|" ] use_devicesfile = 0 obtain_device_list_from_udev = 0 }} '
            f"{ACTIVATION_OFF}")


def lvm(cmd: str, loops: list[str], *args: str, check: bool = False) -> subprocess.CompletedProcess[str]:
    """Run an LVM command that can see ONLY ``loops`` (test verification and cleanup)."""
    return subprocess.run([cmd, "--config", lvm_config_for(loops), *args], capture_output=True, text=True,
                          check=check, timeout=120)


def report(cmd: str, loops: list[str], columns: str) -> list[dict[str, str]]:
    res = lvm(cmd, loops, "--reportformat", "json", "--units", "b", "--nosuffix", "-o", columns, check=True)
    key = {"pvs": "pv", "vgs": "vg", "lvs": "lv"}[cmd]
    return [row for sect in json.loads(res.stdout)["report"] for row in sect.get(key, [])]


def cleanup_tree(root: Path) -> list[str]:
    """Remove every VG/PV/loop/mount this test created under ``root``; returns what could not be removed."""
    problems: list[str] = []
    for _ in range(2):
        loops = [lp for lp, _ in loops_under(root)]
        if loops:
            try:
                vg_uuids = {r["vg_uuid"] for r in report("pvs", loops, "pv_name,vg_uuid") if r.get("vg_uuid")}
            except (subprocess.CalledProcessError, ValueError) as exc:
                vg_uuids = set()
                problems.append(f"pvs: {exc}")
            for vg_uuid in vg_uuids:
                lvm("vgremove", loops, "-f", "-y", "--select", f"vg_uuid={vg_uuid}")
            for lp in loops:
                lvm("pvremove", loops, "-ff", "-y", lp)
                subprocess.run(["losetup", "-d", lp], capture_output=True, check=False)
        mounts = [line.split()[1] for line in Path("/proc/mounts").read_text().splitlines()
                  if line.split()[1].startswith(str(root))]
        for m in sorted(mounts, reverse=True):
            subprocess.run(["umount", "-l", m], capture_output=True, check=False)
    left = loops_under(root)
    if left:
        problems.append(f"loops left: {left}")
    shutil.rmtree(root, ignore_errors=True)
    return problems


@dataclass
class LvmEnv:
    root: Path
    base: Path
    suffix: str
    runner: HostRunner
    config: AgentConfig
    engine: HostLvgEngine
    made: list[str] = field(default_factory=list)

    @property
    def lvg(self) -> str:
        return f"lvg-{self.suffix}"

    @property
    def vg(self) -> str:
        return f"dkt{self.suffix}"

    def spec(self, entries: list[tuple[str, str]] | None = None, *, directory: str | None = None,
             pools: list[tuple[str, str]] | None = None) -> LVMVolumeGroupSpec:
        d = directory or str(self.base)
        return LVMVolumeGroupSpec(
            local=LocalSpec(node_name=self.config.node_name), actual_vg_name_on_the_node=self.vg,
            file_devices=[FileDevice(name=n, directory=d, size=s) for n, s in (entries or [])] or None,
            thin_pools=[ThinPool(name=n, size=s) for n, s in pools] if pools else None)

    def with_runner(self, runner: HostRunner) -> LvmEnv:
        """Use another runner (a fault-injecting wrapper) for the engine: every LVM command goes
        through it, so no persistent lvm shell."""
        self.runner = runner
        self.config = self.config.model_copy(update={"lvm_shell": False})
        self.engine = HostLvgEngine(runner, self.config)
        return self

    def rebase(self, base: Path) -> LvmEnv:
        """Use another base directory (inside ``root``, so cleanup still finds its loops)."""
        self.base = base
        self.config = self.config.model_copy(update={"file_devices_dir": str(base)})
        self.engine = HostLvgEngine(self.runner, self.config)
        return self

    def file(self, entry: str, directory: Path | None = None) -> Path:
        return (directory or self.base) / f"disklet-{self.lvg}.{entry}.img"

    def our_loops(self) -> list[str]:
        return [lp for lp, _ in loops_under(self.root)]

    def loops_of(self, path: Path) -> list[str]:
        real = os.path.realpath(path)
        return [lp for lp, back in loops_under(self.root) if back == real]

    def pvs(self) -> list[dict[str, str]]:
        loops = self.our_loops()
        return report("pvs", loops, "pv_name,pv_uuid,vg_name,vg_uuid,pv_size,dev_size") if loops else []

    def vgs(self) -> list[dict[str, str]]:
        loops = self.our_loops()
        return report("vgs", loops, "vg_name,vg_uuid,vg_size,vg_tags,pv_count") if loops else []


def make_env(tmp_path: Path, *, base: Path | None = None, runner: HostRunner | None = None) -> LvmEnv:
    suffix = uuid.uuid4().hex[:8]
    root = tmp_path / f"lvm-{suffix}"
    root.mkdir()
    base = base or root / "file-devices"
    run = runner or HostRunner(default_timeout=120)
    cfg = AgentConfig(node_name="node-a", file_devices_dir=str(base), lvm_extra_config=ACTIVATION_OFF,
                      command_timeout_seconds=120)
    return LvmEnv(root=root, base=base, suffix=suffix, runner=run, config=cfg, engine=HostLvgEngine(run, cfg))


@pytest.fixture(name="lvm_env")
def lvm_env_fixture(tmp_path: Path) -> Iterator[LvmEnv]:
    env = make_env(tmp_path)
    try:
        yield env
    finally:
        problems = cleanup_tree(env.root)
        assert not problems, problems
