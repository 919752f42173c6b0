"""The classifier on real loop devices (root): every refusal reproducible here is proven live.

Mount paths are per-test temp dirs configured as "system" and "volume" mounts; each device is
created by this test and undone in a finalizer (see blockdev_helpers.Sandbox).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from disklet_agent.config import AgentConfig
from disklet_agent.disklayout.classifier import Verdict, classify_targets
from disklet_agent.disklayout.gate import plan_apply
from disklet_agent.host.layout_reads import resolve_targets
from disklet_agent.host.lsblk import read_block_topology

from disklet.api.disklayout import RefusalCode
from disklet.hostcmd import HostRunner
from tests.host.blockdev_helpers import Sandbox, open_sandbox, write_mbr

RUNNER = HostRunner()


@pytest.fixture
def sandbox(tmp_path: Path) -> Iterator[Sandbox]:
    with open_sandbox(tmp_path) as sb:
        yield sb


def classify(sb: Sandbox, targets: list[str], applied: set[str] | None = None) -> list[Verdict]:
    topology = read_block_topology(RUNNER)
    resolved = resolve_targets(RUNNER, targets)
    return classify_targets(targets, topology, resolved=resolved,
                            system_mounts=[str(sb.base / "sys"), "/"],
                            volume_mounts=[str(sb.base / "volumes") + "*", str(sb.base / "images")],
                            applied_targets=applied or set())


def one(sb: Sandbox, target: str, applied: set[str] | None = None) -> Verdict:
    [v] = classify(sb, [target], applied)
    return v


def test_clean_loop_is_safe(sandbox: Sandbox) -> None:
    dev = sandbox.loop()
    v = one(sandbox, dev)
    assert v.safe, v.detail
    assert v.resolved_path == dev


def test_system_mount_refused(sandbox: Sandbox) -> None:
    dev = sandbox.loop()
    sandbox.mkfs(dev)
    sandbox.mount(dev, sandbox.base / "sys")
    v = one(sandbox, dev)
    assert v.code is RefusalCode.ACTIVE_SYSTEM_MOUNT and str(sandbox.base / "sys") in v.detail


def test_volume_mount_refused(sandbox: Sandbox) -> None:
    dev = sandbox.loop()
    sandbox.mkfs(dev)
    sandbox.mount(dev, sandbox.base / "volumes1")
    assert one(sandbox, dev).code is RefusalCode.ACTIVE_KCORE_VOLUME


def test_other_mount_refused(sandbox: Sandbox) -> None:
    dev = sandbox.loop()
    sandbox.mkfs(dev)
    sandbox.mount(dev, sandbox.base / "elsewhere")
    assert one(sandbox, dev).code is RefusalCode.ACTIVE_MOUNT


def test_mounted_partition_refuses_the_whole_disk(sandbox: Sandbox) -> None:
    dev = sandbox.loop(partscan=True)
    write_mbr(dev, 2, 64)
    part = dev + "p2"
    assert Path(part).exists()
    sandbox.mkfs(part)
    sandbox.mount(part, sandbox.base / "images")
    v = one(sandbox, dev, applied={dev})  # even a disk we own
    assert v.code is RefusalCode.ACTIVE_KCORE_VOLUME and part in v.detail


def test_lvm_pv_refused(sandbox: Sandbox) -> None:
    dev = sandbox.loop()
    sandbox.pvcreate(dev)
    v = one(sandbox, dev)
    assert v.code is RefusalCode.ACTIVE_LVM_PV and "LVM2_member" in v.detail


def test_active_swap_refused(sandbox: Sandbox) -> None:
    dev = sandbox.loop()
    try:
        sandbox.swap(dev)
    except Exception as exc:  # noqa: BLE001
        pytest.skip(f"swapon not permitted here: {exc}")
    assert one(sandbox, dev).code is RefusalCode.ACTIVE_SWAP


def test_symlink_to_busy_device_is_judged_as_that_device(sandbox: Sandbox) -> None:
    dev = sandbox.loop()
    sandbox.mkfs(dev)
    sandbox.mount(dev, sandbox.base / "sys")
    link = sandbox.symlink(dev, "nvme-Busy_Disk")
    v = one(sandbox, link)
    assert v.target == link and v.resolved_path == dev
    assert v.code is RefusalCode.ACTIVE_SYSTEM_MOUNT


def test_old_filesystem_not_blank_unless_applied(sandbox: Sandbox) -> None:
    dev = sandbox.loop()
    sandbox.mkfs(dev)  # unmounted leftover filesystem
    v = one(sandbox, dev)
    assert v.code is RefusalCode.NOT_BLANK and "ext4" in v.detail
    assert one(sandbox, dev, applied={dev}).safe


def test_partition_table_not_blank(sandbox: Sandbox) -> None:
    dev = sandbox.loop(partscan=True)
    write_mbr(dev, 1, 64)
    v = one(sandbox, dev)
    assert v.code is RefusalCode.NOT_BLANK and "dos" in v.detail


def test_missing_and_duplicate_targets(sandbox: Sandbox) -> None:
    dev = sandbox.loop()
    link = sandbox.symlink(dev, "dup")
    missing = str(sandbox.base / "by-id" / "does-not-exist")
    vs = classify(sandbox, [dev, link, missing])
    assert [v.code for v in vs] == [RefusalCode.DUPLICATE_TARGET, RefusalCode.DUPLICATE_TARGET,
                                    RefusalCode.NOT_FOUND]


def test_gate_end_to_end_with_nix(sandbox: Sandbox, tmp_path: Path) -> None:
    """plan_apply: real nix evaluation, real lsblk, a by-id style link, append-only untouched."""
    busy = sandbox.loop()
    sandbox.mkfs(busy)
    sandbox.mount(busy, sandbox.base / "volumes7")
    link = dev_link(busy, f"{sandbox.tag}-busy")
    clean = sandbox.loop()
    try:
        _gate_end_to_end(sandbox, tmp_path, busy, link, clean)
    finally:
        os.unlink(link)


def dev_link(target: str, name: str) -> str:
    """A by-id style link where layouts may name devices (/dev/...); the caller removes it."""
    base = Path("/dev/disk/by-id")
    base.mkdir(parents=True, exist_ok=True)
    link = base / f"disklet-test-{name}"
    os.symlink(target, link)
    return str(link)


def _gate_end_to_end(sandbox: Sandbox, tmp_path: Path, busy: str, link: str, clean: str) -> None:
    body = ('{ disko.devices.disk = { a = { type = "disk"; device = "' + link + '"; content = { type = "gpt"; '
            'partitions.p = { size = "100%"; content = { type = "filesystem"; format = "ext4"; '
            'mountpoint = "/data"; }; }; }; }; b = { type = "disk"; device = "' + clean + '"; content = { type = "gpt"; partitions.p = { size = "100%"; '
            'content = { type = "filesystem"; format = "ext4"; mountpoint = "/srv/b"; }; }; }; }; }; }')
    cfg = AgentConfig(host_root=tmp_path / "root", system_mounts=["/"], allow_loop_targets=True,
                      volume_mounts=[str(sandbox.base / "volumes") + "*"])
    plan = plan_apply(body, runner=RUNNER, config=cfg)
    assert not plan.ok and not plan.failed
    assert plan.code is RefusalCode.ACTIVE_KCORE_VOLUME
    assert plan.resolved == {link: busy, clean: clean}
    assert link in plan.message and clean not in plan.message.split("target(s):")[1]

    plan2 = plan_apply(body.replace(link, clean + "x"), runner=RUNNER, config=cfg)
    assert plan2.code is RefusalCode.NOT_FOUND
