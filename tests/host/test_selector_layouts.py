"""DiskLayouts whose disks are chosen by ``match``, through the agent's handler, on real loop devices.

Each loop device gets a size no other device on this shared machine has (so the selectors here only
ever see the test's own disks as matches). The handler's ``judge`` runs the whole node-side path:
live scan → selector resolution (pinned identities first) → gate and classifier → disko (the test
disko) → identities with the disk name pinned in status. The rename test re-attaches the same
backing file under another loop number.
"""

from __future__ import annotations

import asyncio
import logging
import random
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from disklet_agent.deps import AgentDeps
from disklet_agent.disklayout.mode import CONTROLLER_MANAGED, ModeReading
from disklet_agent.handlers.disklayout import DiskLayoutAgent

from disklet.api.disklayout import DiskLayoutSpec, Phase
from disklet.layout.hashing import layout_hash
from disklet.layout.render import devices_value
from tests.host.test_apply_pipeline import Env
from tests.host.test_apply_pipeline import env as pipeline_env  # noqa: F401 - a fixture, used by env below

MIB = 1 << 20
MODE = ModeReading(CONTROLLER_MANAGED, None)
LOG = logging.getLogger("test")


class Loops:
    """Loop devices over the test's own files; cleanup detaches whatever loop holds each file."""

    def __init__(self, base: Path):
        self.base = base
        self.files: list[Path] = []

    def sh(self, *argv: str, check: bool = True) -> str:
        return subprocess.run(list(argv), check=check, capture_output=True, text=True, timeout=60).stdout.strip()  # noqa: S603

    def new_file(self, size: int) -> Path:
        f = self.base / f"sel-{uuid.uuid4().hex[:8]}.img"
        with open(f, "wb") as fh:
            fh.truncate(size)
        self.files.append(f)
        return f

    def attach(self, f: Path) -> str:
        dev = self.sh("losetup", "-f", "--show", "-P", "--", str(f))
        assert dev.startswith("/dev/loop"), dev
        return dev

    def devices_of(self, f: Path) -> list[str]:
        out = self.sh("losetup", "-j", str(f), "-O", "NAME", "-n", check=False)
        return [line.strip() for line in out.splitlines() if line.strip()]

    def detach(self, dev: str, f: Path | None = None) -> None:
        """Detach ``dev``; with ``f``, wait until the kernel let go of it (a busy loop device is only
        marked for auto-clear and goes when its last opener closes it)."""
        self.sh("losetup", "-d", dev, check=False)  # losetup -d takes no "--"
        deadline = time.monotonic() + 30
        while f is not None and dev in self.devices_of(f):
            assert time.monotonic() < deadline, f"{dev} still attached to {f}"
            time.sleep(0.2)

    def close(self) -> None:
        for f in self.files:
            for dev in self.devices_of(f):
                self.sh("wipefs", "-a", "-q", "--", dev, check=False)
                self.detach(dev)
            f.unlink(missing_ok=True)


@pytest.fixture
def env(pipeline_env: Env) -> Env:  # noqa: F811
    """The apply pipeline's sandbox: fake systemd-run/nixos-rebuild, the test disko, loop targets allowed."""
    return pipeline_env


@pytest.fixture
def loops(tmp_path: Path) -> Iterator[Loops]:
    lp = Loops(tmp_path)
    try:
        yield lp
    finally:
        lp.close()


def unique_size() -> int:
    """1 GiB + a random number of MiB: at least the consumable minimum, and unlike anyone else's loop."""
    return (1024 + random.randint(1, 60000)) * MIB


class Reader:
    """The API read right before disko: the object as judged (nothing changed meanwhile)."""

    def __init__(self, body: dict[str, Any]):
        self.body = body

    async def get(self, *_: Any) -> dict[str, Any]:
        return self.body


def body_of(spec: dict[str, Any], status: dict[str, Any] | None = None) -> dict[str, Any]:
    parsed = DiskLayoutSpec.model_validate(spec)
    assert parsed.disk_layout is not None
    st = {"phase": "pending", "layoutGeneration": 1, "layoutHash": layout_hash(dict(devices_value(parsed.disk_layout))),
          **(status or {})}
    return {"metadata": {"name": "sel", "uid": "u-sel", "generation": 1}, "spec": spec, "status": st}


def spec_for(disk: str, match: str, parts: int = 1) -> dict[str, Any]:
    partitions = [{"name": f"p{i}", "size": "8M", "content": {"type": "filesystem", "format": "ext4",
                                                             "mountpoint": f"/srv/{disk}-p{i}"}} for i in range(parts)]
    return {"nodeName": "n1", "diskLayout": {"disks": [{"name": disk, "match": match, "gpt": {"partitions": partitions}}]}}


def judge(env: Env, body: dict[str, Any]):  # type: ignore[no-untyped-def]
    agent = DiskLayoutAgent(AgentDeps(env.config), kube=Reader(body))  # type: ignore[arg-type]
    return asyncio.run(agent.judge(body, dict(body["status"]), MODE, "u-sel", LOG))


def real_disko(env: Env) -> None:
    from devkit import disko as test_disko
    if test_disko.missing_tools():
        pytest.skip(f"the test disko cannot run here: {test_disko.missing_tools()}")
    env.monkeypatch.setenv("FAKE_DISKO", "real")
    (env.tmp / "mnt").mkdir(exist_ok=True)


def test_selector_chooses_the_one_blank_disk_pins_it_and_keeps_it_after_a_rename(env: Env, loops: Loops) -> None:
    real_disko(env)
    disk = "s" + uuid.uuid4().hex[:8]
    size = unique_size()
    f = loops.new_file(size)
    dev = loops.attach(f)
    match = f'disk.transport == "loop" && disk.size == {size}'
    body = body_of(spec_for(disk, match))

    desired, targets = judge(env, body)
    assert desired.phase == Phase.APPLIED, desired.message
    assert targets == [dev]
    assert f"disk {disk}:" in desired.message and f"{dev}" in desired.message
    assert desired.identities is not None
    (entry,) = desired.identities.values()
    assert entry["disk"] == disk and entry["match"] == match and entry["backingFile"] == str(f)
    assert RUNNER_blkid(f"{dev}p1").get("PART_ENTRY_NAME") == f"disk-{disk}-p0"

    # the node reboots and the disk comes back under another name; a blank look-alike appears too
    from devkit.disko.udev import cleanup
    assert not cleanup(env.tmp)  # unmount what the test disko mounted before moving the disk
    second = loops.attach(f)      # same backing file, another loop number ...
    loops.detach(dev, f)          # ... and the old name gone
    assert second != dev
    lookalike = loops.attach(loops.new_file(size))  # matches the selector, blank: must NOT be chosen
    pinned = [{"device": k, **v} for k, v in desired.identities.items()]
    body2 = body_of(spec_for(disk, match), {"targetIdentities": pinned, "appliedLayoutGeneration": 0})

    desired2, targets2 = judge(env, body2)
    assert desired2.phase == Phase.APPLIED, desired2.message
    assert targets2 == [second] and lookalike not in (targets2 or [])
    assert f"pinned to {second}" in desired2.message
    (entry2,) = desired2.identities.values()
    assert entry2["disk"] == disk and entry2["backingFile"] == str(f)
    assert RUNNER_blkid(lookalike) == {}  # the look-alike was never written

    # the pinned disk gone: refused, the look-alike still not taken
    assert not cleanup(env.tmp)
    loops.detach(second, f)
    desired3, _ = judge(env, body_of(spec_for(disk, match), {"targetIdentities": pinned}))
    assert desired3.phase == Phase.REFUSED and desired3.refusal == "selected_disk_missing", desired3.message
    assert RUNNER_blkid(lookalike) == {}


def RUNNER_blkid(dev: str) -> dict[str, str]:  # noqa: N802
    out = subprocess.run(["blkid", "-p", "-o", "export", "--", dev], capture_output=True, text=True, timeout=30)  # noqa: S603
    return dict(line.split("=", 1) for line in out.stdout.splitlines() if "=" in line)


def test_ambiguous_and_empty_matches_are_refused_with_candidates(env: Env, loops: Loops) -> None:
    size = unique_size()
    a, b = loops.attach(loops.new_file(size)), loops.attach(loops.new_file(size))
    disk = "s" + uuid.uuid4().hex[:8]
    desired, _ = judge(env, body_of(spec_for(disk, f"disk.size == {size}")))
    assert desired.phase == Phase.REFUSED and desired.refusal == "selector_ambiguous", desired.message
    assert f"{a} (" in desired.message and f"{b} (" in desired.message
    desired, _ = judge(env, body_of(spec_for(disk, f"disk.size == {size + MIB}")))
    assert desired.phase == Phase.REFUSED and desired.refusal == "selector_matched_nothing", desired.message
    assert f"{a} (" in desired.message and "does not match" in desired.message
    assert RUNNER_blkid(a) == {} and RUNNER_blkid(b) == {}


def test_a_disk_in_use_is_never_selected(env: Env, loops: Loops) -> None:
    size = unique_size()
    used = loops.attach(loops.new_file(size))
    subprocess.run(["mkfs.ext4", "-q", "-F", "--", used], check=True, capture_output=True, timeout=120)  # noqa: S603
    disk = "s" + uuid.uuid4().hex[:8]
    desired, _ = judge(env, body_of(spec_for(disk, f"disk.size == {size}")))
    assert desired.phase == Phase.REFUSED and desired.refusal == "selector_matched_nothing", desired.message
    assert f"{used} (" in desired.message and "HasFilesystem" in desired.message
    assert RUNNER_blkid(used).get("TYPE") == "ext4"  # untouched
