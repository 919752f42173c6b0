"""The persistent lvm shell on the real host (root, loop devices): a hung command times out, the
shell is killed and restarted, nothing leaks, and the retried reconcile ends with the real VG.

The hang is honest: the test holds LVM's own file lock of the VG name (``V_<vg>`` in LVM's
locking directory) with ``flock``, so ``vgcreate`` waits for it exactly as it would behind another
LVM command holding the VG."""

from __future__ import annotations

import fcntl
import gc
import os
import subprocess
from pathlib import Path

from disklet_agent.lvm.engine import HostLvgEngine

from disklet.api.common import get_condition
from disklet.api.lvm import LVGPhase
from disklet.hostcmd import CommandResult
from tests.host.lvm_fixtures import cleanup_tree, make_env


def _locking_dir() -> Path:
    out = subprocess.run(["lvmconfig", "--type", "full", "global/locking_dir"], capture_output=True, text=True,
                         check=True, timeout=60, env={**os.environ, "LVM_SUPPRESS_FD_WARNINGS": "1"}).stdout
    return Path(out.strip().split("=", 1)[1].strip('"'))


def _lvm_children() -> list[int]:
    me = str(os.getpid())
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            comm = stat[stat.index("(") + 1:stat.rindex(")")]
            if stat.rsplit(")", 1)[1].split()[1] == me and comm == "lvm":
                out.append(int(entry))
    return out


def test_hung_command_times_out_restarts_the_shell_and_the_retry_creates_the_vg(tmp_path: Path) -> None:
    env = make_env(tmp_path)
    env.config = env.config.model_copy(update={"command_timeout_seconds": 5.0})
    lock_path = _locking_dir() / f"V_{env.vg}"
    lock = open(lock_path, "a")  # noqa: SIM115 - held across the first reconcile, closed in finally
    gc.collect()  # engines of earlier tests in this process stop their shells now, not mid-test
    others = set(_lvm_children())
    fds_before = sorted(os.listdir("/proc/self/fd"))
    engine = HostLvgEngine(env.runner, env.config)
    assert engine.shell is not None
    seen: list[tuple[str, bool, bool, int | None]] = []

    def observe(res: CommandResult) -> None:
        seen.append((res.argv[0], res.via_shell, res.timed_out, engine.shell.pid if engine.shell else None))

    env.runner.observers.append(observe)
    try:
        fcntl.flock(lock, fcntl.LOCK_EX)
        spec = env.spec([("a", "1Gi"), ("b", "1Gi")])
        out = engine.reconcile(env.lvg, spec, None, [], 1)
        applied = get_condition(out.status.conditions, "VGConfigurationApplied")
        assert applied.status == "False" and "vgcreate" in applied.message and "timed out" in applied.message, \
            applied.message
        assert out.status.phase == LVGPhase.NOT_READY and out.requeue_after
        hung = [i for i, s in enumerate(seen) if s[0] == "vgcreate"]
        assert len(hung) == 1 and seen[hung[0]][1:3] == (True, True), seen
        old_pid = seen[hung[0] - 1][3]  # the shell that ran the command before vgcreate ran vgcreate
        assert old_pid is not None and not Path(f"/proc/{old_pid}").exists()  # killed and reaped
        assert engine.shell.kills == 1 and engine.shell.starts == 2  # the rollback's reads: a fresh shell
        assert all(s[1] for s in seen if s[0] in ("pvcreate", "pvremove"))
        # Reads run in the shell, except one of each pair of reads made side by side (the start read and
        # the node-wide name check; the live read before pvcreate and the name check): that one is a process.
        assert len([s for s in seen if s[0] == "pvs" and not s[1]]) <= 2, seen
        assert env.vgs() == [] and env.pvs() == []  # real LVM: no VG, the call's PVs rolled back
        assert set(_lvm_children()) - others == {engine.shell.pid}  # the new shell only: nothing leaked

        fcntl.flock(lock, fcntl.LOCK_UN)
        again = engine.reconcile(env.lvg, spec, out.status, [], 1)
        applied = get_condition(again.status.conditions, "VGConfigurationApplied")
        assert applied.status == "True", applied.message
        assert again.status.phase == LVGPhase.READY
        (vg,) = env.vgs()
        assert vg["vg_name"] == env.vg and vg["pv_count"] == "2" and vg["vg_uuid"] == again.status.vg_uuid
        assert sorted(p["pv_name"] for p in env.pvs()) == sorted(env.our_loops())
        assert engine.shell.kills == 1 and engine.shell.starts == 2
        engine.close()
        assert set(_lvm_children()) - others == set()
        assert sorted(os.listdir("/proc/self/fd")) == fds_before  # no pipe left open
    finally:
        lock.close()
        engine.close()
        lock_path.unlink(missing_ok=True)
        problems = cleanup_tree(env.root)
        assert not problems, problems
