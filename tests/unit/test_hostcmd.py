"""The host command runner's two bounds: time (the deadline holds even when a descendant keeps the
output pipe) and memory (captured output is capped, head and tail kept, the cut marked).

Outcomes are proved by processes and bytes, not by clocks: a detached descendant that is still
alive when ``run`` returns proves that ``run`` did not wait for it.
"""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

import pytest

from disklet.hostcmd import (
    DEFAULT_MAX_OUTPUT,
    NSENTER_PREFIX,
    CommandError,
    HostRunner,
    NsenterTargetError,
    resolve_nsenter_target,
)
from disklet.nsenter_target import check_nsenter_target


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state != "Z"


@pytest.fixture
def pidfiles():
    """Files the test's commands write their PIDs to; those processes are killed whatever the outcome."""
    files: list[Path] = []
    yield files
    for f in files:
        try:
            os.kill(_read_pid(f), signal.SIGKILL)
        except (FileNotFoundError, ValueError, ProcessLookupError):
            pass


def _read_pid(path: Path) -> int:
    return int(path.read_text().strip())


@pytest.mark.timeout(40)
def test_deadline_holds_when_a_detached_descendant_keeps_the_pipe(tmp_path: Path, pidfiles: list[Path]) -> None:
    detached, member = tmp_path / "detached.pid", tmp_path / "member.pid"
    pidfiles.extend([detached, member])
    script = (
        f"setsid sh -c 'echo $$ > {detached}; exec sleep 60' & "
        f"while [ ! -s {detached} ]; do sleep 0.01; done; "
        f"sleep 60 & echo $! > {member}; wait"
    )
    result = HostRunner().run(["sh", "-c", script], timeout=1)
    assert result.timed_out and not result.ok
    # run() returned while the detached sleeper (outside the process group) still held stdout...
    assert _alive(_read_pid(detached))
    # ...and the command's own process group was killed.
    assert not _alive(_read_pid(member))
    assert "timed out" in result.describe()


@pytest.mark.timeout(40)
def test_exit_is_not_held_up_by_a_descendant_keeping_the_pipe(tmp_path: Path, pidfiles: list[Path]) -> None:
    detached = tmp_path / "detached.pid"
    pidfiles.append(detached)
    script = (f"setsid sh -c 'echo $$ > {detached}; exec sleep 60' & "
              f"while [ ! -s {detached} ]; do sleep 0.01; done; echo done")
    result = HostRunner().run(["sh", "-c", script], timeout=30)
    assert result.ok and result.stdout == "done\n"
    assert _alive(_read_pid(detached))


@pytest.mark.timeout(40)
def test_command_that_closes_its_pipes_but_keeps_running_is_killed_at_the_deadline(
        tmp_path: Path, pidfiles: list[Path]) -> None:
    marker = tmp_path / "pid"
    pidfiles.append(marker)
    result = HostRunner().run(["sh", "-c", f"echo $$ > {marker}; exec >&- 2>&-; exec sleep 60"], timeout=1)
    assert result.timed_out
    assert not _alive(_read_pid(marker))


def _writer(n_bytes: int, stream: str = "stdout") -> list[str]:
    code = (
        "import sys\n"
        f"out = sys.{stream}.buffer\n"
        "out.write(b'HEAD')\n"
        f"left = {n_bytes} - 8\n"
        "block = b'x' * 65536\n"
        "while left > 0:\n"
        "    out.write(block[:left]); left -= 65536\n"
        "out.write(b'TAIL'); out.flush()\n"
    )
    return [sys.executable, "-c", code]


@pytest.mark.timeout(60)
def test_output_is_capped_keeping_head_and_tail_with_a_note() -> None:
    cap = 1024 * 1024
    total = 20 * 1024 * 1024
    result = HostRunner().run(_writer(total), max_output_bytes=cap, timeout=50)
    assert result.ok and result.truncated
    assert result.stdout.startswith("HEAD") and result.stdout.endswith("TAIL")
    assert f"[... {total - cap} bytes of output cut by disklet (kept first and last) ...]" in result.stdout
    assert len(result.stdout) < cap + 200
    err = HostRunner(max_output_bytes=cap).run(_writer(total, "stderr"), timeout=50)
    assert err.truncated and err.raw_stderr.startswith("HEAD") and err.raw_stderr.endswith("TAIL")
    assert len(err.raw_stderr) < cap + 200


@pytest.mark.timeout(60)
def test_default_cap_bounds_a_flood_of_output() -> None:
    total = 4 * DEFAULT_MAX_OUTPUT
    result = HostRunner().run(_writer(total), timeout=50)
    assert result.truncated
    assert len(result.stdout) < DEFAULT_MAX_OUTPUT + 200


def test_short_output_is_kept_whole_and_input_larger_than_a_pipe_flows() -> None:
    data = "".join(f"{i}\n" for i in range(200_000))  # ~1.3 MB, far beyond a pipe buffer
    result = HostRunner().run(["cat"], input=data, timeout=30)
    assert result.ok and not result.truncated and result.stdout == data


def test_argv_strings_and_missing_commands() -> None:
    with pytest.raises(TypeError):
        HostRunner().run("echo hi")  # type: ignore[arg-type]
    missing = HostRunner().run(["/nonexistent/disklet-no-such-command"])
    assert missing.returncode == 127 and not missing.ok


def test_nsenter_target_defaults_to_pid_1_and_takes_a_pid_or_a_process_name(tmp_path: Path) -> None:
    assert HostRunner(use_nsenter=True).full_argv(["lsblk"]) == [*NSENTER_PREFIX, "lsblk"]
    assert HostRunner(use_nsenter=True, nsenter_target="4242").full_argv(["lsblk"])[:3] == ["nsenter", "-t", "4242"]
    # name:<comm>: the oldest process of that name, read from a /proc tree
    for pid, comm, start in ((10, "kubelet", 500), (11, "kubelet", 300), (12, "bash", 100)):
        (tmp_path / str(pid)).mkdir()
        (tmp_path / str(pid) / "comm").write_text(comm + "\n")
        (tmp_path / str(pid) / "stat").write_text(f"{pid} ({comm}) S" + " 0" * 18 + f" {start} 0 0\n")
    assert resolve_nsenter_target("name:kubelet", proc=tmp_path) == 11
    assert resolve_nsenter_target("name:kubelet", proc=tmp_path, cached=10) == 10  # kept while it has the name
    (tmp_path / "10" / "comm").write_text("other\n")
    assert resolve_nsenter_target("name:kubelet", proc=tmp_path, cached=10) == 11  # re-resolved
    with pytest.raises(NsenterTargetError, match="no process named 'containerd'"):
        resolve_nsenter_target("name:containerd", proc=tmp_path)
    for bad in ("0", "-1", "name:", "name:a/b", "kubelet", "name:" + "x" * 16):
        with pytest.raises(ValueError):
            check_nsenter_target(bad)


def test_an_nsenter_target_without_a_process_fails_every_command_closed() -> None:
    runner = HostRunner(use_nsenter=True, nsenter_target="name:no-such-proc")
    res = runner.run(["true"])
    assert res.returncode == 127 and not res.ok and "no process named 'no-such-proc'" in res.stderr
    with pytest.raises(CommandError):
        runner.run(["true"], check=True)
