"""Issue 8 items 6-8: growth, simulated reboot + reattach, delete (and a busy VG that keeps the finalizer)."""

from __future__ import annotations

import subprocess

from disklet.api.common import get_condition
from disklet.api.lvm import LVGPhase
from tests.host.lvm_fixtures import LvmEnv, lvm, lvm_env_fixture  # noqa: F401 - fixture

GI = 1024**3


def _applied(status):
    return get_condition(status.conditions, "VGConfigurationApplied")


def test_growth_grows_file_loop_pv_and_vg(lvm_env: LvmEnv) -> None:
    env = lvm_env
    first = env.engine.reconcile(env.lvg, env.spec([("a", "1Gi")]), None, generation=1)
    size1 = int(env.vgs()[0]["vg_size"])
    out = env.engine.reconcile(env.lvg, env.spec([("a", "2Gi")]), first.status, generation=2)
    assert _applied(out.status).status == "True", _applied(out.status).message
    f = env.file("a")
    assert f.stat().st_size == 2 * GI and f.stat().st_blocks * 512 >= 2 * GI
    (pv,) = env.pvs()
    assert int(pv["dev_size"]) == 2 * GI
    size2 = int(env.vgs()[0]["vg_size"])
    assert size2 - size1 == GI
    assert out.status.vg_size == "2044Mi"
    assert env.loops_of(f) == [first.status.nodes[0].file_devices[0].loop_device]
    calls = dict(env.runner.calls)
    again = env.engine.reconcile(env.lvg, env.spec([("a", "2Gi")]), out.status, generation=2)
    assert not again.changed and env.runner.calls["pvresize"] == calls.get("pvresize", 0)


def test_reboot_reattach_restores_the_vg(lvm_env: LvmEnv) -> None:
    env = lvm_env
    spec = env.spec([("a", "1Gi"), ("b", "1Gi")])
    first = env.engine.reconcile(env.lvg, spec, None, generation=1)
    vg_uuid = first.status.vg_uuid
    created = env.runner.calls["pvcreate"]  # one invocation for both devices
    assert created >= 1 and len(env.pvs()) == 2
    for loop in env.our_loops():  # the "reboot": every loop is gone, the files stay
        subprocess.run(["losetup", "-d", loop], check=True)
    assert env.our_loops() == []
    errors = env.engine.reattach([(env.lvg, spec, first.status)])
    assert errors == []
    assert len(env.our_loops()) == 2
    (vg,) = env.vgs()
    assert vg["vg_uuid"] == vg_uuid and vg["pv_count"] == "2"
    out = env.engine.reconcile(env.lvg, spec, first.status, generation=1)
    assert out.status.phase == LVGPhase.READY and out.status.vg_uuid == vg_uuid
    assert env.runner.calls["pvcreate"] == created  # only the first create


def test_reattach_never_creates_files_and_reports_per_file(lvm_env: LvmEnv) -> None:
    env = lvm_env
    spec = env.spec([("a", "1Gi"), ("b", "1Gi")])
    first = env.engine.reconcile(env.lvg, spec, None, generation=1)
    for loop in env.our_loops():
        subprocess.run(["losetup", "-d", loop], check=True)
    env.file("b").unlink()  # lost file: reported, never recreated; "a" still comes back
    errors = env.engine.reattach([(env.lvg, spec, first.status)])
    assert len(errors) == 1 and errors[0].lvg == env.lvg
    assert "missing" in errors[0].message and env.file("b").name in errors[0].message
    assert not env.file("b").exists()
    assert len(env.loops_of(env.file("a"))) == 1


def test_delete_detaches_loops_and_removes_files(lvm_env: LvmEnv) -> None:
    env = lvm_env
    spec = env.spec([("a", "1Gi"), ("b", "1Gi")])
    first = env.engine.reconcile(env.lvg, spec, None, generation=1)
    out = env.engine.delete(env.lvg, spec, first.status)
    assert out.done, get_condition(out.status.conditions, "VGConfigurationApplied").message
    assert out.status.phase == LVGPhase.TERMINATING
    assert env.our_loops() == []
    assert not env.file("a").exists() and not env.file("b").exists()


def test_delete_keeps_a_vg_with_logical_volumes(lvm_env: LvmEnv) -> None:
    env = lvm_env
    spec = env.spec([("a", "1Gi")])
    first = env.engine.reconcile(env.lvg, spec, None, generation=1)
    lvm("lvcreate", env.our_loops(), "-L", "8m", "-n", "data", env.vg, check=True)
    out = env.engine.delete(env.lvg, spec, first.status)
    assert not out.done
    cond = get_condition(out.status.conditions, "VGConfigurationApplied")
    assert cond.reason == "Terminating" and "data" in cond.message
    assert len(env.loops_of(env.file("a"))) == 1 and env.file("a").exists()
    assert len(env.vgs()) == 1


def test_delete_refuses_to_detach_a_loop_that_is_still_a_pv(lvm_env: LvmEnv) -> None:
    env = lvm_env
    spec = env.spec([("a", "1Gi")])
    env.engine.reconcile(env.lvg, spec, None, generation=1)
    # The VG is renamed away (so we do not remove it) but its PV is still our loop: the loop is busy.
    loops = env.our_loops()
    lvm("vgrename", loops, env.vg, env.vg + "x", check=True)
    out = env.engine.delete(env.lvg, spec, None)
    assert not out.done
    assert "still a PV" in get_condition(out.status.conditions, "VGConfigurationApplied").message
    assert env.our_loops() == loops and env.file("a").exists()
