"""Issue 8 items 1-5: create, idempotence, extend, orphan-PV retry, benign pvcreate noise, scoped rollback."""

from __future__ import annotations

import dataclasses
import subprocess
from collections.abc import Sequence

from disklet_agent.host.lvm import device_filter_config

from disklet.api.common import get_condition
from disklet.api.lvm import LVGPhase
from disklet.hostcmd import CommandResult, HostRunner
from tests.host.lvm_fixtures import LvmEnv, lvm_env_fixture  # noqa: F401 - fixture

GI = 1024**3


def _applied(status):
    return get_condition(status.conditions, "VGConfigurationApplied")


def test_file_only_vg_from_two_entries(lvm_env: LvmEnv) -> None:
    env = lvm_env
    out = env.engine.reconcile(env.lvg, env.spec([("a", "1Gi"), ("b", "1Gi")]), None, generation=1)
    assert _applied(out.status).status == "True", _applied(out.status).message
    assert out.status.phase == LVGPhase.READY and out.changed
    for entry in ("a", "b"):
        f = env.file(entry)
        assert f.exists() and f.stat().st_size == GI and f.stat().st_blocks * 512 >= GI
        assert len(env.loops_of(f)) == 1
    pvs = env.pvs()
    assert sorted(p["pv_name"] for p in pvs) == sorted(env.our_loops())
    assert {p["vg_name"] for p in pvs} == {env.vg}
    (vg,) = env.vgs()
    assert set(vg["vg_tags"].split(",")) == {"disklet.io/enabled=true", f"disklet.io/lvmVolumeGroupName={env.lvg}"}
    assert out.status.vg_uuid == vg["vg_uuid"]
    (node,) = out.status.nodes
    assert node.name == "node-a"
    fds = {fd.name: fd for fd in node.file_devices}
    assert sorted(fds) == ["a", "b"]
    for entry, fd in fds.items():
        assert fd.loop_device == env.loops_of(env.file(entry))[0]
        assert fd.file_path == str(env.file(entry))
        assert fd.pv_uuid in {p["pv_uuid"] for p in pvs}


def test_reconcile_again_changes_nothing(lvm_env: LvmEnv) -> None:
    env = lvm_env
    spec = env.spec([("a", "1Gi"), ("b", "1Gi")])
    first = env.engine.reconcile(env.lvg, spec, None, generation=1)
    before = dict(env.runner.calls)
    again = env.engine.reconcile(env.lvg, spec, first.status, generation=1)
    assert not again.changed
    assert again.status.to_wire() == first.status.to_wire()
    for cmd in ("pvcreate", "vgcreate", "vgextend", "fallocate", "pvresize"):
        assert env.runner.calls[cmd] == before.get(cmd, 0), cmd
    assert len(env.our_loops()) == 2


def test_extend_by_appending_an_entry(lvm_env: LvmEnv) -> None:
    env = lvm_env
    first = env.engine.reconcile(env.lvg, env.spec([("a", "1Gi")]), None, generation=1)
    size1 = int(env.vgs()[0]["vg_size"])
    out = env.engine.reconcile(env.lvg, env.spec([("a", "1Gi"), ("b", "1Gi")]), first.status, generation=2)
    assert _applied(out.status).status == "True", _applied(out.status).message
    (vg,) = env.vgs()
    assert vg["pv_count"] == "2" and int(vg["vg_size"]) > size1 + GI // 2
    assert vg["vg_uuid"] == first.status.vg_uuid
    assert sorted(fd.name for fd in out.status.nodes[0].file_devices) == ["a", "b"]


def test_retry_after_partial_create_joins_orphan_pv_without_pvcreate(lvm_env: LvmEnv) -> None:
    env = lvm_env
    # An interrupted create: file + loop + PV label exist, the VG does not.
    env.base.mkdir(parents=True)
    f = env.file("a")
    subprocess.run(["fallocate", "-l", str(GI), str(f)], check=True)
    loop = subprocess.run(["losetup", "--find", "--nooverlap", "--show", str(f)], capture_output=True, text=True,
                          check=True).stdout.strip()
    subprocess.run(["pvcreate", "--config", device_filter_config([loop], "global{activation=0}"), loop],
                   capture_output=True, check=True)
    out = env.engine.reconcile(env.lvg, env.spec([("a", "1Gi")]), None, generation=1)
    assert _applied(out.status).status == "True", _applied(out.status).message
    assert env.runner.calls["pvcreate"] == 0
    assert env.loops_of(f) == [loop]
    assert [p["vg_name"] for p in env.pvs()] == [env.vg]


class _FdLeakPvcreate(HostRunner):
    """pvcreate really runs, then "fails" with exit 5 and only the benign descriptor-leak line."""

    def run(self, argv: Sequence[str], **kw) -> CommandResult:  # type: ignore[override]
        res = super().run(argv, **kw)
        if argv[0] == "pvcreate" and res.ok:
            line = "File descriptor 7 (/dev/null) leaked on pvcreate invocation. Parent PID 1: disklet-agent\n"
            return dataclasses.replace(res, returncode=5, raw_stderr=res.raw_stderr + line,
                                       stderr=res.stderr)
        return res


def test_benign_fd_leak_on_pvcreate_is_success(lvm_env: LvmEnv) -> None:
    env = lvm_env.with_runner(_FdLeakPvcreate(default_timeout=120))
    out = env.engine.reconcile(env.lvg, env.spec([("a", "1Gi")]), None, generation=1)
    assert _applied(out.status).status == "True", _applied(out.status).message
    assert env.file("a").exists()
    assert len(env.loops_of(env.file("a"))) == 1
    assert env.runner.calls["losetup"] and env.runner.calls["rm"] == 0
    again = env.engine.reconcile(env.lvg, env.spec([("a", "1Gi")]), out.status, generation=1)
    assert not again.changed
    assert len(env.loops_of(env.file("a"))) == 1 and len(env.pvs()) == 1


class _BrokenVgcreate(HostRunner):
    """vgcreate fails for real (LVM rejects the extent size)."""

    def run(self, argv: Sequence[str], **kw) -> CommandResult:  # type: ignore[override]
        if argv[0] == "vgcreate":
            argv = [*argv[:-1], "--physicalextentsize", "3k", argv[-1]]
        return super().run(argv, **kw)


def test_vgcreate_failure_rolls_back_only_this_calls_devices(lvm_env: LvmEnv) -> None:
    env = lvm_env
    # Entry "a" was provisioned by an earlier call and is already a PV: it must survive the rollback.
    env.base.mkdir(parents=True)
    fa = env.file("a")
    subprocess.run(["fallocate", "-l", str(GI), str(fa)], check=True)
    loop_a = subprocess.run(["losetup", "--find", "--nooverlap", "--show", str(fa)], capture_output=True, text=True,
                            check=True).stdout.strip()
    subprocess.run(["pvcreate", "--config", device_filter_config([loop_a], "global{activation=0}"), loop_a],
                   capture_output=True, check=True)
    env.with_runner(_BrokenVgcreate(default_timeout=120))
    out = env.engine.reconcile(env.lvg, env.spec([("a", "1Gi"), ("b", "1Gi")]), None, generation=1)
    cond = _applied(out.status)
    assert cond.status == "False" and "vgcreate" in cond.message
    assert out.status.phase == LVGPhase.NOT_READY and out.requeue_after
    assert not env.file("b").exists() and not env.loops_of(env.file("b"))
    assert fa.exists() and env.loops_of(fa) == [loop_a]
    assert [p["pv_name"] for p in env.pvs()] == [loop_a]
    assert env.vgs() == []
