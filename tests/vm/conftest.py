"""vm tier: tests that run inside a throw-away VM on a real kernel (devkit/vm, docs/testing.md).

Each module declares its disks (``VM_DISKS`` or ``VM_BOOTS``); on the host the harness boots the
guest once per boot of the module and reports each test's guest outcome under its own name. The
helpers below run in the guest only: the disks are found by the serials the module declared, and
everything a test creates on them is wiped by the ``wipe`` fixture (tests of one boot share the
disks).
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from disklet_agent.config import AgentConfig

from devkit.vm import GUEST_ENV
from disklet.hostcmd import HostRunner

NODE = "vm-node"
RUNNER = HostRunner(default_timeout=120)


@pytest.fixture(autouse=True)
def _guest_only() -> None:
    """These tests only ever run inside the guest (on the host the harness stands in for them)."""
    if os.environ.get(GUEST_ENV) != "1":
        pytest.fail("a vm test ran outside the VM: run it through pytest on the host (devkit/vm)")


def sh(*argv: str, check: bool = True, timeout: float = 120) -> str:
    res = subprocess.run(list(argv), capture_output=True, text=True, timeout=timeout, check=False)  # noqa: S603
    if check and res.returncode != 0:
        raise AssertionError(f"{' '.join(argv)} exited {res.returncode}: {res.stderr.strip() or res.stdout.strip()}")
    return res.stdout


def lsblk_disks() -> list[dict[str, Any]]:
    out = sh("lsblk", "-J", "-b", "-d", "-o", "NAME,PATH,KNAME,SERIAL,WWN,MODEL,TRAN,ROTA,TYPE,SIZE")
    return list(json.loads(out)["blockdevices"])


def disks_by_serial(serial: str) -> list[str]:
    """Every path of the disk with ``serial`` (two for a disk attached twice)."""
    return sorted(d["path"] for d in lsblk_disks() if (d.get("serial") or "").strip() == serial)


def disk(serial: str) -> str:
    paths = disks_by_serial(serial)
    assert len(paths) == 1, f"expected one disk with serial {serial}, found {paths}: {lsblk_disks()}"
    return paths[0]


def lvm_report(cmd: str, *args: str, columns: str) -> list[dict[str, str]]:
    out = sh(cmd, "--reportformat", "json", "--units", "b", "--nosuffix", "-o", columns, *args)
    key = {"pvs": "pv", "vgs": "vg", "lvs": "lv"}[cmd]
    return [row for sect in json.loads(out)["report"] for row in sect.get(key, [])]


def wipe_disks(paths: list[str]) -> None:
    """Remove every mount, VG, PV and signature on ``paths`` (and their partitions)."""
    for line in reversed(Path("/proc/mounts").read_text().splitlines()):
        src, mnt = line.split()[:2]
        if mnt.startswith("/mnt/vm") or mnt.startswith("/var/lib/disklet"):
            sh("umount", "-l", mnt, check=False)
    for p in paths:
        for row in lvm_report("pvs", "--select", f"pv_name=~^{p}", columns="pv_name,vg_name"):
            if row.get("vg_name"):
                sh("vgremove", "-ff", "-y", "--", row["vg_name"], check=False)
            sh("pvremove", "-ff", "-y", "--", row["pv_name"], check=False)
    sh("udevadm", "settle", "-t", "30", check=False)
    for p in paths:
        sh("wipefs", "-a", "-f", "--", p, check=False)
    sh("udevadm", "settle", "-t", "30", check=False)


@pytest.fixture
def wipe() -> Iterator[list[str]]:
    """Append disk paths a test uses: they are wiped afterwards (also when it fails)."""
    used: list[str] = []
    yield used
    wipe_disks(used)


def agent_config(tmp_path: Path, **overrides: Any) -> AgentConfig:
    """The agent's settings as the chart sets them, on a real kernel: activation ON, the lvm shell."""
    base = tmp_path / "file-devices"
    base.mkdir(exist_ok=True)
    values: dict[str, Any] = {"node_name": NODE, "file_devices_dir": str(base), "command_timeout_seconds": 120,
                              "system_mounts": ["/", "/opt/disklet"]}
    values.update(overrides)
    return AgentConfig(**values)


def block_device_names() -> dict[str, str]:
    """{kernel path: BlockDevice name} as this node's agent names its devices (identity hash)."""
    from disklet_agent.host.lsblk import read_block_topology
    from disklet_agent.logic.blockdevices import desired_block_devices

    return {d.status.path: d.name for d in desired_block_devices(read_block_topology(RUNNER), {}, NODE, None)}
