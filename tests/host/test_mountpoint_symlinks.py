"""A symbolic link planted under an allowed root cannot redirect a mount (real realpath, real nix,
real lsblk, a real loop device as the target; the gate runs its host commands through the agent's
runner, as on a node).

``mount -o X-mount.mkdir`` follows links in every component, so ``<root>/db -> /etc`` would turn the
mountpoint ``<root>/db/data`` into ``/etc/data``. The gate resolves every mountpoint on the host
right before disko and judges the resolved path.
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from disklet_agent.config import AgentConfig
from disklet_agent.disklayout.gate import plan_apply
from disklet_agent.host.layout_reads import resolve_paths

from disklet.api.disklayout import RefusalCode
from disklet.hostcmd import HostRunner
from tests.host.blockdev_helpers import Sandbox, open_sandbox

pytestmark = pytest.mark.host
RUNNER = HostRunner()


@pytest.fixture
def sandbox(tmp_path: Path) -> Iterator[Sandbox]:
    with open_sandbox(tmp_path) as sb:
        yield sb


@pytest.fixture
def root() -> Iterator[Path]:
    """An allowed root of this test's own under /mnt (/tmp is on the denylist); removed afterwards."""
    base = Path("/mnt") / f"disklet-test-{uuid.uuid4().hex[:10]}"
    base.mkdir(parents=True)
    try:
        yield base
    finally:
        shutil.rmtree(base, ignore_errors=True)


def _body(device: str, mountpoint: str) -> str:
    return ('{ disko.devices.disk.a = { type = "disk"; device = "' + device + '"; content = { type = "gpt"; '
            'partitions.p = { size = "100%"; content = { type = "filesystem"; format = "ext4"; '
            'mountpoint = "' + mountpoint + '"; }; }; }; }; }')


def _plan(sandbox: Sandbox, root: Path, mountpoint: str, tmp_path: Path):  # type: ignore[no-untyped-def]
    cfg = AgentConfig(host_root=tmp_path / "host", system_mounts=["/"], volume_mounts=[], allow_loop_targets=True,
                      mount_roots=[str(root)])
    return plan_apply(_body(sandbox.loop(), mountpoint), runner=RUNNER, config=cfg)


def test_a_link_to_etc_under_the_allowed_root_is_refused(sandbox: Sandbox, root: Path, tmp_path: Path) -> None:
    os.symlink("/etc", root / "db")
    plan = _plan(sandbox, root, f"{root}/db/data", tmp_path)
    assert not plan.ok and not plan.failed, plan.message
    assert plan.code is RefusalCode.MOUNTPOINT_RESOLVES_ELSEWHERE, plan.message
    assert f"'{root}/db/data' resolves on the node to '/etc/data'" in plan.message
    assert not Path("/etc/data").exists()  # nothing was created where the link points


def test_a_link_to_a_sibling_root_is_refused_and_one_inside_the_root_is_not(sandbox: Sandbox, root: Path,
                                                                           tmp_path: Path) -> None:
    other = Path(f"{root}-other")
    other.mkdir()
    try:
        os.symlink(other, root / "away")
        plan = _plan(sandbox, root, f"{root}/away/x", tmp_path)
        assert plan.code is RefusalCode.MOUNTPOINT_RESOLVES_ELSEWHERE and "outside its allowed root" in plan.message
    finally:
        shutil.rmtree(other, ignore_errors=True)
    (root / "real").mkdir()
    os.symlink(root / "real", root / "inside")
    plan = _plan(sandbox, root, f"{root}/inside/x", tmp_path)
    assert plan.ok, plan.message


def test_a_link_planted_over_a_live_mount_is_seen_at_its_target(sandbox: Sandbox, root: Path, tmp_path: Path) -> None:
    busy = sandbox.loop()
    sandbox.mkfs(busy)
    (root / "real" / "vol").mkdir(parents=True)
    sandbox.mount(busy, root / "real" / "vol")
    os.symlink(root / "real", root / "db")
    plan = _plan(sandbox, root, f"{root}/db", tmp_path)
    assert plan.code is RefusalCode.MOUNTPOINT_OVER_LIVE_MOUNT, plan.message
    assert f"it resolves to {root}/real" in plan.message


def test_resolve_paths_follows_every_component_and_keeps_missing_ones(root: Path) -> None:
    (root / "a").mkdir()
    os.symlink(root / "a", root / "l1")
    os.symlink(root / "l1", root / "l2")
    got = resolve_paths(RUNNER, [f"{root}/l2/missing/x", f"{root}/a"])
    assert got == {f"{root}/l2/missing/x": f"{root}/a/missing/x", f"{root}/a": f"{root}/a"}
