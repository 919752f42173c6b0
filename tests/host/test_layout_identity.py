"""Disk identity and the last-moment exclusive open, on real loop devices.

Loop devices are admitted as targets only through the explicit agent switch
(``allow_loop_targets`` / ``DISKLET_ALLOW_LOOP_TARGETS``) that these tests turn on.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from disklet_agent.disklayout.apply import apply_layout, exclusive_probe, record_identities
from disklet_agent.disklayout.gate import plan_apply
from disklet_agent.disklayout.identity import DiskIdentity, identities_text, read_identities
from disklet_agent.host.lsblk import read_block_topology

from disklet.api.disklayout import RefusalCode
from disklet.hostcmd import HostRunner
from disklet.layout.checked import check_layout
from tests.host.blockdev_helpers import open_sandbox
from tests.host.test_apply_pipeline import DISK, Env, layout

RUNNER = HostRunner()


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Env]:
    with open_sandbox(tmp_path) as sb:
        yield Env(tmp_path, sb, monkeypatch)


def _gpt(sb_dev: str) -> None:
    res = RUNNER.run(["sgdisk", "--clear", "--", sb_dev], timeout=30)
    assert res.ok, res.describe()


def test_identity_of_a_loop_device_is_read_from_the_node(env: Env) -> None:
    dev = env.sb.loop()
    _gpt(dev)
    ident = record_identities(read_block_topology(RUNNER), {dev: dev})[dev]
    assert ident.backing_file and ident.backing_file.startswith(str(env.sb.base)) and env.sb.tag in ident.backing_file
    assert ident.ptuuid and len(ident.ptuuid) == 36  # the GPT disk GUID, via blkid -p without udev
    assert ident.size == 64 << 20


def test_shifted_kernel_name_is_refused(env: Env) -> None:
    """current.nix names /dev/loopB, but the disk applied under that name was A: refuse, do not adopt."""
    a, b = env.sb.loop(), env.sb.loop()
    _gpt(a)
    _gpt(b)  # B holds a partition table: only "ours" would make it acceptable
    body = layout(b, 1)
    (env.etc / "disk" / "current.nix").write_text(check_layout(body, RUNNER).artifact)
    recorded_a = record_identities(read_block_topology(RUNNER), {a: a})[a]
    (env.etc / "disk" / "identity.json").write_text(identities_text({b: recorded_a}))
    plan = plan_apply(body, runner=RUNNER, config=env.config)
    assert not plan.ok and plan.code is RefusalCode.IDENTITY_CHANGED, plan.message
    assert "backing file" in plan.message or "GPT disk GUID" in plan.message
    # With B's own identity on record, B is ours again and may be re-applied.
    recorded_b = record_identities(read_block_topology(RUNNER), {b: b})[b]
    (env.etc / "disk" / "identity.json").write_text(identities_text({b: recorded_b}))
    assert plan_apply(body, runner=RUNNER, config=env.config).ok


def test_apply_records_identity_next_to_current_nix(env: Env) -> None:
    dev = env.sb.loop(partscan=True)
    env.monkeypatch.setenv("FAKE_DISKO", "partition")
    env.monkeypatch.setenv("FAKE_DEVICE", f"{dev}:1")
    plan = plan_apply(layout(dev, 1), runner=RUNNER, config=env.config)
    assert plan.ok, plan.message
    out = apply_layout(plan.artifact, runner=RUNNER, config=env.config, targets=dict(plan.resolved), rebuild=False)
    assert out.ok, out.message
    recorded = read_identities(env.etc / "disk")
    assert recorded is not None and set(recorded) == {dev}
    assert recorded[dev].backing_file and recorded[dev].ptuuid  # the MBR disk id the fake disko wrote
    assert out.identities[dev]["backingFile"] == recorded[dev].backing_file
    assert json.loads((env.etc / "disk" / "identity.json").read_text())["disks"][dev]["size"] == 64 << 20
    # Re-applying the same layout: the disk matches its record, so it is ours.
    again = plan_apply(layout(dev, 1), runner=RUNNER, config=env.config)
    assert again.ok, again.message


def test_exclusive_open_refuses_a_busy_target_before_disko(env: Env) -> None:
    dev = env.sb.loop()
    plan = plan_apply(layout(dev, 1), runner=RUNNER, config=env.config)
    assert plan.ok, plan.message
    holder = os.open(dev, os.O_RDONLY | os.O_EXCL)  # e.g. a mount or device-mapper appearing after the gate
    try:
        assert exclusive_probe([dev]) == [f"{dev}: in use (EBUSY)"]
        out = apply_layout(plan.artifact, runner=RUNNER, config=env.config, targets=dict(plan.resolved))
    finally:
        os.close(holder)
    assert not out.ok and out.refusal is RefusalCode.TARGET_BUSY and "EBUSY" in out.message
    assert env.calls("disko") == [] and not (env.etc / "disk" / "current.nix").exists()
    assert not list((env.etc / "disk").glob("staged-*.nix"))
    assert exclusive_probe([dev]) == []


def test_exclusive_open_sees_a_mount(env: Env, tmp_path: Path) -> None:
    dev = env.sb.loop()
    env.sb.mkfs(dev)
    env.sb.mount(dev, tmp_path / "mnt")
    assert exclusive_probe([dev]) == [f"{dev}: in use (EBUSY)"]


def test_identity_mismatch_reasons() -> None:
    rec = DiskIdentity(wwn="0x1", serial="S", model="M", size=10, ptuuid="g")
    assert rec.mismatch(DiskIdentity(wwn="0x1", serial="S", model="M", size=10, ptuuid="g")) is None
    assert "WWN" in (rec.mismatch(DiskIdentity(wwn="0x2", serial="S", model="M", size=10, ptuuid="g")) or "")
    assert "size" in (rec.mismatch(DiskIdentity(wwn="0x1", serial="S", model="M", size=11, ptuuid="g")) or "")
    assert "nothing stable" in (DiskIdentity(size=1).mismatch(DiskIdentity(size=1)) or "")


def test_partition_label_already_on_the_node_is_refused(env: Env) -> None:
    """Without udev the label comes from `blkid -p` (PART_ENTRY_NAME) of the other disk's partition."""
    other = env.sb.loop(partscan=True)
    res = RUNNER.run(["sgdisk", "--new=1:0:+8M", f"--change-name=1:disk-{DISK}-p0", "--", other], timeout=30)
    assert res.ok, res.describe()
    RUNNER.run(["partprobe", "--", other], timeout=30)
    target = env.sb.loop()
    plan = plan_apply(layout(target, 1), runner=RUNNER, config=env.config)
    assert not plan.ok and plan.code is RefusalCode.PARTITION_LABEL_COLLISION, plan.message
    assert f"disk-{DISK}-p0" in plan.message and other in plan.message


def test_mountpoint_over_a_live_mount_is_refused(env: Env) -> None:
    """A real tmpfs under /mnt (an allowed root) and the real findmnt: the layout would cover it."""
    import uuid

    base = Path("/mnt") / f"disklet-test-{uuid.uuid4().hex[:8]}"
    inner = base / "srv" / "inner"
    inner.mkdir(parents=True)
    try:
        assert RUNNER.run(["mount", "-t", "tmpfs", "-o", "size=1m", "--", "tmpfs", str(inner)], timeout=30).ok
        try:
            dev = env.sb.loop()
            body = layout(dev, 1).replace('"/srv/p0"', f'"{base}/srv"')
            plan = plan_apply(body, runner=RUNNER, config=env.config)
            assert not plan.ok and plan.code is RefusalCode.MOUNTPOINT_OVER_LIVE_MOUNT, plan.message
            assert str(inner) in plan.message
        finally:
            RUNNER.run(["umount", "--", str(inner)], timeout=30)
    finally:
        for d in (inner, inner.parent, base):
            d.rmdir()
