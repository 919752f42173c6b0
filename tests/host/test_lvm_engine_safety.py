"""Issue 8 items 9-13: foreign loop VGs, symlinked base, validation, free-space reserve, double-attached files."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from disklet_agent.host.lvm import TAG_ENABLED, owner_tag

from disklet.api.common import get_condition
from disklet.api.lvm import FileDevice, LocalSpec, LVGPhase, LVMVolumeGroupSpec
from tests.host.lvm_fixtures import LvmEnv, lvm, lvm_env_fixture  # noqa: F401 - fixture

GI = 1024**3


def _applied(status):
    return get_condition(status.conditions, "VGConfigurationApplied")


def _attach(path: Path, *, overlap_ok: bool = False) -> str:
    argv = ["losetup", "--find", "--show", str(path)] if overlap_ok else \
        ["losetup", "--find", "--nooverlap", "--show", str(path)]
    return subprocess.run(argv, capture_output=True, text=True, check=True).stdout.strip()


def test_foreign_loop_vg_with_our_tag_is_invisible(lvm_env: LvmEnv) -> None:
    env = lvm_env
    guest = env.root / "guest-disk.img"  # a VM image holding LVM: not our name, not in the base dir
    subprocess.run(["fallocate", "-l", str(GI), str(guest)], check=True)
    gloop = _attach(guest)
    lvm("pvcreate", [gloop], gloop, check=True)
    # It carries our owner tag (an image of an old disk): never adopted, never touched. (A guest VG
    # with the same NAME is refused instead: see test_lvm_engine_hostile.py.)
    lvm("vgcreate", [gloop], "--addtag", TAG_ENABLED, "--addtag", owner_tag(env.lvg), env.vg + "g", gloop,
        check=True)
    out = env.engine.reconcile(env.lvg, env.spec([("a", "1Gi")]), None, generation=1)
    assert _applied(out.status).status == "True", _applied(out.status).message
    assert out.status.phase == LVGPhase.READY
    (node,) = out.status.nodes
    assert [fd.name for fd in node.file_devices] == ["a"] and node.devices is None
    ours = [v for v in env.vgs() if v["vg_uuid"] == out.status.vg_uuid]
    assert len(ours) == 1 and ours[0]["pv_count"] == "1"
    foreign = lvm("vgs", [gloop], "--noheadings", "-o", "vg_uuid", check=True).stdout.strip()
    assert foreign and foreign != out.status.vg_uuid
    again = env.engine.reconcile(env.lvg, env.spec([("a", "1Gi")]), out.status, generation=1)
    assert not again.changed
    assert env.engine.discover([(env.lvg, env.spec([("a", "1Gi")]))])[env.lvg].vg_uuid == out.status.vg_uuid


def test_symlinked_base_directory_is_not_double_counted(lvm_env: LvmEnv) -> None:
    real = lvm_env.root / "real-base"
    real.mkdir()
    link = lvm_env.root / "link-base"
    link.symlink_to(real)
    env = lvm_env.rebase(link)
    spec = env.spec([("a", "1Gi")])
    first = env.engine.reconcile(env.lvg, spec, None, generation=1)
    assert _applied(first.status).status == "True", _applied(first.status).message
    fd = first.status.nodes[0].file_devices[0]
    assert fd.file_path == str(real / f"disklet-{env.lvg}.a.img")  # losetup resolves the symlink
    again = env.engine.reconcile(env.lvg, spec, first.status, generation=1)
    assert not again.changed
    assert env.runner.calls["pvcreate"] == 1 and env.runner.calls["vgextend"] == 0
    assert len(env.loops_of(env.file("a"))) == 1
    assert env.vgs()[0]["pv_count"] == "1"
    assert again.status.vg_size == "1020Mi"
    assert env.engine.delete(env.lvg, spec, again.status).done
    assert not (real / f"disklet-{env.lvg}.a.img").exists() and env.our_loops() == []


def _raw_spec(env: LvmEnv, name: str, directory: str, size: str) -> LVMVolumeGroupSpec:
    """A spec as a buggy or older API server could hand it over (the model's own checks bypassed)."""
    fd = FileDevice.model_construct(name=name, directory=directory, size=size)
    return LVMVolumeGroupSpec.model_construct(type="Local", local=LocalSpec(node_name="node-a"),
                                              actual_vg_name_on_the_node=env.vg, block_device_selector=None,
                                              file_devices=[fd], thin_pools=None)


@pytest.mark.parametrize(("case", "expect"), [
    ("outside", "outside the file devices base directory"),
    ("relative", "must be an absolute path"),
    ("dotdot", "'..' segments"),
    ("small", "below the 1Gi minimum"),
    ("decimal", "did you mean 1Gi"),
    ("name_max", "NAME_MAX"),
])
def test_validation_failures_provision_nothing(lvm_env: LvmEnv, case: str, expect: str) -> None:
    env = lvm_env
    base = str(env.base)
    name, directory, size = {
        "outside": ("a", str(env.root / "elsewhere"), "1Gi"),
        "relative": ("a", "var/lib/disklet/file-devices", "1Gi"),
        "dotdot": ("a", f"{base}/../escape", "1Gi"),
        "small": ("a", base, "1000Mi"),
        "decimal": ("a", base, "1G"),
        "name_max": ("x" * 63, base + "/sub", "1Gi"),
    }[case]
    lvg = env.lvg if case != "name_max" else "l" * 200
    out = env.engine.reconcile(lvg, _raw_spec(env, name, directory, size), None, generation=1)
    cond = _applied(out.status)
    assert cond.status == "False" and cond.reason == "ValidationFailed"
    assert expect in cond.message, cond.message
    assert out.status.phase == LVGPhase.NOT_READY
    for cmd in ("fallocate", "mkdir", "pvcreate", "vgcreate"):
        assert env.runner.calls[cmd] == 0, cmd
    assert env.our_loops() == [] and not env.base.exists() and not (env.root / "elsewhere").exists()


def test_not_enough_free_space_after_reserve(lvm_env: LvmEnv) -> None:
    env = lvm_env
    env.base.mkdir(parents=True)
    res = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1100m", "tmpfs", str(env.base)], capture_output=True)
    if res.returncode != 0:
        pytest.skip(f"cannot mount tmpfs here: {res.stderr.decode()}")
    out = env.engine.reconcile(env.lvg, env.spec([("a", "1Gi")]), None, generation=1)
    cond = _applied(out.status)
    assert cond.status == "False" and cond.reason == "FileDeviceNotApplied"
    assert "not enough free space" in cond.message and "reserve" in cond.message
    assert env.runner.calls["fallocate"] == 0
    assert not env.file("a").exists() and env.our_loops() == []


def test_file_attached_to_two_loops_is_refused(lvm_env: LvmEnv) -> None:
    env = lvm_env
    env.base.mkdir(parents=True)
    f = env.file("a")
    subprocess.run(["fallocate", "-l", str(GI), str(f)], check=True)
    loops = sorted([_attach(f, overlap_ok=True), _attach(f, overlap_ok=True)])
    out = env.engine.reconcile(env.lvg, env.spec([("a", "1Gi")]), None, generation=1)
    cond = _applied(out.status)
    assert cond.status == "False" and cond.reason == "FileDeviceNotApplied"
    assert all(lp in cond.message for lp in loops)
    assert env.runner.calls["pvcreate"] == 0 and env.runner.calls["vgcreate"] == 0
    assert sorted(env.loops_of(f)) == loops and f.stat().st_size == GI
    assert env.pvs() == []


def test_deleted_backing_file_is_refused_with_guidance(lvm_env: LvmEnv) -> None:
    env = lvm_env
    env.base.mkdir(parents=True)
    f = env.file("a")
    subprocess.run(["fallocate", "-l", str(GI), str(f)], check=True)
    loop = _attach(f)
    f.unlink()
    out = env.engine.reconcile(env.lvg, env.spec([("a", "1Gi")]), None, generation=1)
    cond = _applied(out.status)
    assert cond.status == "False" and "deleted" in cond.message and f"losetup -d {loop}" in cond.message
    assert not f.exists() and env.runner.calls["fallocate"] == 0
