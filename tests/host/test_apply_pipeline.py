"""The apply pipeline with fake disko / systemd-run / nixos-rebuild executables on real loop devices.

The fakes are small scripts written into a temp dir; they record their argv (one JSON line per
call) and fail, hang or partition the loop device as a test asks (environment variables). Where a
test needs disko to succeed, the recording disko hands over to the test disko (disko's own scripts,
devkit/disko) when its assets exist, else it partitions the loop device itself; the fake's own
behaviours remain for fault injection (failure, hang, success without partitions).
"""

from __future__ import annotations

import io
import json
import os
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from disklet_agent.cli import main as cli_main
from disklet_agent.config import AgentConfig
from disklet_agent.disklayout.apply import ApplyBusy, apply_layout, apply_lock, expectation_from
from disklet_agent.disklayout.gate import plan_apply

from devkit import disko as test_disko
from devkit.disko import DISKO_COMMAND
from devkit.disko.udev import cleanup
from disklet.hostcmd import HostRunner
from disklet.layout.checked import check_layout
from tests.fake_commands import FAKE_NIXOS_REBUILD, FAKE_SYSTEMD_RUN
from tests.host.blockdev_helpers import Sandbox, open_sandbox

REPO = Path(__file__).resolve().parents[2]
RUNNER = HostRunner()
DISK = "d" + uuid.uuid4().hex[:8]
"""The layouts' disk name: disko's partition labels (disk-<disk>-<partition>) are global on the host."""

FAKE_DISKO = f"""#!{sys.executable}
import json, os, subprocess, sys, time
sys.path.insert(0, {str(REPO)!r})
with open(os.environ["FAKE_LOG"], "a") as fh:
    fh.write(json.dumps({{"cmd": "disko", "argv": sys.argv[1:]}}) + "\\n")
mode = os.environ.get("FAKE_DISKO", "ok")
if mode == "real":
    os.execv({DISKO_COMMAND!r}, [{DISKO_COMMAND!r}, *sys.argv[1:]])
if mode == "fail":
    for i in range(30):
        print(f"disko line {{i}}")
    print("error: boom " + os.environ.get("FAKE_TAG", ""), file=sys.stderr)
    sys.exit(1)
if mode == "hang":
    child = subprocess.Popen(["sleep", "1000"])
    with open(os.environ["FAKE_PIDS"], "w") as fh:
        fh.write(f"{{os.getpid()}} {{child.pid}}")
    time.sleep(1000)
if mode == "partition":
    from tests.host.blockdev_helpers import write_mbr
    dev, count = os.environ["FAKE_DEVICE"].split(":")
    write_mbr(dev, int(count), 64)
print("disko: done")
"""



class Env:
    def __init__(self, tmp: Path, sb: Sandbox, monkeypatch: pytest.MonkeyPatch):
        self.tmp, self.sb = tmp, sb
        self.bin = tmp / "bin"
        self.bin.mkdir()
        for name, text in (("disko", FAKE_DISKO), ("systemd-run", FAKE_SYSTEMD_RUN),
                           ("nixos-rebuild", FAKE_NIXOS_REBUILD)):
            p = self.bin / name
            p.write_text(text)
            p.chmod(0o755)
        self.log = tmp / "calls.jsonl"
        self.pids = tmp / "pids"
        self.root = tmp / "root"
        self.etc = self.root / "etc" / "disklet"
        (self.etc / "disk").mkdir(parents=True)
        monkeypatch.setenv("FAKE_LOG", str(self.log))
        monkeypatch.setenv("FAKE_PIDS", str(self.pids))
        monkeypatch.setenv("DISKLET_DISKO_COMMAND", str(self.bin / "disko"))
        monkeypatch.setenv("DISKLET_SYSTEMD_RUN_COMMAND", str(self.bin / "systemd-run"))
        monkeypatch.setenv("DISKLET_NIXOS_REBUILD_COMMAND", str(self.bin / "nixos-rebuild"))
        monkeypatch.setenv("DISKLET_SYSTEM_MOUNTS", "/")
        monkeypatch.setenv("DISKLET_NSENTER", "false")
        monkeypatch.setenv("DISKLET_ALLOW_LOOP_TARGETS", "1")
        self.monkeypatch = monkeypatch
        self.config = AgentConfig(host_root=self.root, system_mounts=["/"], volume_mounts=[], allow_loop_targets=True,
                                  disko_command=[str(self.bin / "disko")],
                                  systemd_run_command=[str(self.bin / "systemd-run")],
                                  nixos_rebuild_command=[str(self.bin / "nixos-rebuild")])

    @property
    def current(self) -> Path:
        return self.etc / "disk" / "current.nix"

    def calls(self, cmd: str | None = None) -> list[list[str]]:
        if not self.log.exists():
            return []
        rows = [json.loads(line) for line in self.log.read_text().splitlines()]
        return [r["argv"] for r in rows if cmd is None or r["cmd"] == cmd]

    def mode(self, value: str) -> None:
        (self.etc / "disk-management-mode").write_text(value + "\n")


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Env]:
    monkeypatch.setenv(test_disko.ENV_SANDBOX, str(tmp_path))
    monkeypatch.setenv(test_disko.ENV_ROOT, str(tmp_path / "mnt"))
    with open_sandbox(tmp_path) as sb:
        try:
            yield Env(tmp_path, sb, monkeypatch)
        finally:
            problems = cleanup(tmp_path)  # what the test disko mounted and linked, before the loops go
            assert not problems, problems


def disko_succeeds(env: Env, dev: str, count: int) -> None:
    """disko must succeed: the test disko where it can run, else the fake partitions the device."""
    if not test_disko.missing_tools():
        env.monkeypatch.setenv("FAKE_DISKO", "real")
        (env.tmp / "mnt").mkdir(exist_ok=True)
    else:
        env.monkeypatch.setenv("FAKE_DISKO", "partition")
        env.monkeypatch.setenv("FAKE_DEVICE", f"{dev}:{count}")


def layout(device: str, parts: int = 2) -> str:
    ps = " ".join(f'p{i} = {{ priority = {100 * (i + 1)}; size = "8M"; content = {{ type = "filesystem"; '
                  f'format = "ext4"; mountpoint = "/srv/p{i}"; }}; }};' for i in range(parts))
    return ('{ disko.devices.disk.' + DISK + ' = { type = "disk"; device = "' + device + '"; '
            'content = { type = "gpt"; partitions = { ' + ps + ' }; }; }; }\n')


def old(device: str) -> str:
    """A previously applied current.nix: the same disk with its first partition (the new layout appends)."""
    return layout(device, parts=1)


def plan_and_apply(env: Env, body: str, **kw):  # type: ignore[no-untyped-def]
    plan = plan_apply(body, runner=RUNNER, config=env.config)
    assert plan.ok, plan.message
    return apply_layout(plan.artifact, runner=RUNNER, config=env.config,
                        expect=expectation_from(plan.devices_value, plan.resolved), targets=dict(plan.resolved), **kw)


def artifact_of(body: str) -> str:
    return check_layout(body, RUNNER).artifact


def test_success_promotes_and_runs_exact_commands(env: Env) -> None:
    dev = env.sb.loop(partscan=True)
    disko_succeeds(env, dev, 2)
    env.current.write_text(old(dev))
    body = layout(dev)
    out = plan_and_apply(env, body)
    assert out.ok and out.phase == "done" and out.promoted, out.message
    assert env.current.read_text() == artifact_of(body)
    [disko] = env.calls("disko")
    assert disko == ["--mode", "format,mount", "--root-mountpoint", "/", disko[-1]]
    staged = Path(disko[-1])
    assert staged.parent == env.etc / "disk" and staged.name.startswith("staged-") and not staged.exists()
    assert env.calls("systemd-run") == [
        ["--unit", "disklet-nix-rebuild", "--wait", "--collect", "--quiet", "--pipe", "--",
         str(env.bin / "nixos-rebuild"), action] for action in ("test", "switch")]
    assert env.calls("nixos-rebuild") == [["test"], ["switch"]]
    assert [s.name for s in out.steps] == ["disko", "rebuild-test", "rebuild-switch"]
    assert not list((env.etc / "disk").glob(".current.nix.*"))  # no temp file left behind
    if not test_disko.missing_tools():  # disko's own scripts ran: a GPT with two ext4 partitions
        probe = RUNNER.run(["blkid", "-p", "-o", "export", "--", f"{dev}p2"], timeout=30).stdout
        assert "TYPE=ext4" in probe and f"PART_ENTRY_NAME=disk-{DISK}-p1" in probe, probe


def test_disko_failure_keeps_current_and_reports_tail(env: Env) -> None:
    dev = env.sb.loop()
    env.current.write_text(old(dev))
    env.monkeypatch.setenv("FAKE_DISKO", "fail")
    env.monkeypatch.setenv("FAKE_TAG", "tag-7f3a")
    out = plan_and_apply(env, layout(dev))
    assert not out.ok and out.phase == "disko" and not out.promoted
    assert env.current.read_text() == old(dev)
    assert "error: boom tag-7f3a" in out.message and "disko line 29" in out.message
    assert "disko line 5\n" not in out.message  # only the tail
    assert env.calls("systemd-run") == []


def test_hanging_disko_is_killed_with_its_group(env: Env) -> None:
    dev = env.sb.loop()
    env.current.write_text(old(dev))
    env.monkeypatch.setenv("FAKE_DISKO", "hang")
    start = time.monotonic()
    out = plan_and_apply(env, layout(dev), timeout_seconds=2)
    elapsed = time.monotonic() - start
    assert not out.ok and out.phase == "disko" and out.steps[0].timed_out
    assert "within 2s" in out.message and env.current.read_text() == old(dev)
    assert elapsed < 15
    pids = [int(x) for x in env.pids.read_text().split()]
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and any(_alive(p) for p in pids):
        time.sleep(0.05)
    assert not any(_alive(p) for p in pids), "disko or its child survived the timeout"


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().split(")")[-1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def test_disko_success_without_partitions_fails_verify(env: Env) -> None:
    dev = env.sb.loop()
    env.current.write_text(old(dev))
    env.monkeypatch.setenv("FAKE_DISKO", "ok")
    out = plan_and_apply(env, layout(dev))
    assert not out.ok and out.phase == "verify"
    assert f"{dev} has 0 partition(s) after disko, the layout declares 2" in out.message
    assert env.current.read_text() == old(dev)


def test_switch_exit_4_names_failed_units(env: Env) -> None:
    dev = env.sb.loop(partscan=True)
    disko_succeeds(env, dev, 1)
    env.monkeypatch.setenv("FAKE_REBUILD_FAIL", "switch")
    body = layout(dev, 1)
    out = plan_and_apply(env, body)
    assert not out.ok and out.phase == "rebuild-switch"
    assert out.failed_units == ["disklet-data.mount", "foo.service"]
    assert "disklet-data.mount, foo.service" in out.message
    assert out.promoted and env.current.read_text() == artifact_of(body)  # the disks are formatted: current.nix says so


def test_rebuild_test_failure_skips_switch(env: Env) -> None:
    dev = env.sb.loop(partscan=True)
    disko_succeeds(env, dev, 1)
    env.monkeypatch.setenv("FAKE_REBUILD_FAIL", "test")
    out = plan_and_apply(env, layout(dev, 1))
    assert not out.ok and out.phase == "rebuild-test" and "evaluation aborted" in out.message
    assert env.calls("nixos-rebuild") == [["test"]]


def test_no_rebuild(env: Env) -> None:
    dev = env.sb.loop(partscan=True)
    disko_succeeds(env, dev, 1)
    out = plan_and_apply(env, layout(dev, 1), rebuild=False)
    assert out.ok and "rebuild skipped" in out.message
    assert env.calls("systemd-run") == [] and env.current.exists()


def test_one_apply_at_a_time(env: Env) -> None:
    dev = env.sb.loop()
    with apply_lock(env.etc / "disk"), pytest.raises(ApplyBusy):
        apply_layout(layout(dev), runner=RUNNER, config=env.config)
    assert env.calls("disko") == []


def _cli(env: Env, *args: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    rc = cli_main(["--host-root", str(env.root), *args], out=out, err=err)
    return rc, out.getvalue(), err.getvalue()


def test_cli_installer_only_blocks_apply(env: Env) -> None:
    dev = env.sb.loop()
    f = env.tmp / "day2.nix"
    f.write_text(layout(dev))
    rc, out, err = _cli(env, "apply-disk", "-f", str(f), "--apply")
    assert rc == 1
    assert "installer-only" in err and "echo controller-managed | sudo tee" in err
    assert env.calls() == [] and not env.current.exists()
    env.mode("bogus")
    rc, _, err = _cli(env, "apply-disk", "-f", str(f), "--apply")
    assert rc == 1 and "not a mode" in err and env.calls() == []


def test_cli_validate_then_apply(env: Env) -> None:
    dev = env.sb.loop(partscan=True)
    f = env.tmp / "day2.nix"
    f.write_text(layout(dev, 1))
    rc, out, err = _cli(env, "apply-disk", "-f", str(f))
    assert rc == 0 and dev in out and "safe" in out and "nothing was written" in out
    assert env.calls() == []
    env.mode("controller-managed")
    env.monkeypatch.setenv("FAKE_DISKO", "partition")
    env.monkeypatch.setenv("FAKE_DEVICE", f"{dev}:1")
    rc, out, err = _cli(env, "apply-disk", "-f", str(f), "--apply", "--no-rebuild", "--timeout-seconds", "60")
    assert rc == 0, err
    assert env.current.read_text() == artifact_of(f.read_text()) and env.calls("systemd-run") == []
    # Re-applying now: the disk is ours (in current.nix) and has a partition table: allowed.
    rc, out, err = _cli(env, "apply-disko", "-f", str(f))
    assert rc == 0 and "deprecated" in err


def test_cli_refusal_and_usage_exit_codes(env: Env) -> None:
    dev = env.sb.loop()
    env.sb.mkfs(dev)
    f = env.tmp / "day2.nix"
    f.write_text(layout(dev))
    rc, out, err = _cli(env, "apply-disk", "-f", str(f), "-o", "json")
    assert rc == 1 and "target_device_not_blank" in err
    assert json.loads(out)["plan"]["refusalReason"] == "target_device_not_blank"
    with pytest.raises(SystemExit) as exc:
        _cli(env, "apply-disk", "-f", str(f), "--timeout-seconds", "3601")
    assert exc.value.code == 2
    assert os.environ["FAKE_LOG"] and env.calls() == []
