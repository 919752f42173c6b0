"""Issue 14 reproductions on real loop devices: a VG name taken by a loop VG outside our filter, a
directory that leaves the base through a symlink, a symlinked backing file, control characters, and
refused objects that must delete at once without touching anything that is not ours."""

from __future__ import annotations

import subprocess
from pathlib import Path

from disklet.api.common import get_condition
from disklet.api.lvm import FileDevice, LocalSpec, LVGPhase, LVMVolumeGroupSpec, NodeFileDevice, NodeStatus
from disklet.api.lvm import LVMVolumeGroupStatus as Status
from tests.host.lvm_fixtures import LvmEnv, lvm, lvm_env_fixture  # noqa: F401 - fixture

GI = 1024**3
WRITES = ("mkdir", "fallocate", "pvcreate", "vgcreate", "rm")


def _applied(status):
    return get_condition(status.conditions, "VGConfigurationApplied")


def _no_writes(env: LvmEnv) -> None:
    for cmd in WRITES:
        assert env.runner.calls[cmd] == 0, (cmd, env.runner.calls)
    assert not [a for a in env.runner.calls if a == "losetup"] or env.our_loops() == []


def _raw_spec(env: LvmEnv, name: str, directory: str, size: str = "1Gi") -> LVMVolumeGroupSpec:
    fd = FileDevice.model_construct(name=name, directory=directory, size=size)
    return LVMVolumeGroupSpec.model_construct(type="Local", local=LocalSpec(node_name="node-a"),
                                              actual_vg_name_on_the_node=env.vg, block_device_selector=None,
                                              file_devices=[fd], thin_pools=None)


def test_vg_name_used_by_a_loop_vg_outside_the_filter_is_refused(lvm_env: LvmEnv) -> None:
    env = lvm_env
    other = env.root / "someone-elses.img"  # outside the base dir: our per-command filter hides this loop
    subprocess.run(["fallocate", "-l", str(GI), str(other)], check=True)
    oloop = subprocess.run(["losetup", "--find", "--show", "--", str(other)], capture_output=True, text=True,
                           check=True).stdout.strip()
    lvm("pvcreate", [oloop], oloop, check=True)
    lvm("vgcreate", [oloop], env.vg, oloop, check=True)
    other_uuid = lvm("vgs", [oloop], "--noheadings", "-o", "vg_uuid", env.vg, check=True).stdout.strip()
    spec = env.spec([("a", "1Gi")])
    out = env.engine.reconcile(env.lvg, spec, None, generation=1)
    cond = _applied(out.status)
    assert cond.status == "False" and cond.reason == "VGNameConflict", cond.message
    assert other_uuid in cond.message and oloop in cond.message
    assert out.status.phase == LVGPhase.NOT_READY
    assert env.runner.calls["vgcreate"] == 0 and env.runner.calls["fallocate"] == 0
    assert env.loops_of(env.file("a")) == [] and not env.file("a").exists()
    # Still exactly one VG of that name, the other owner's, addressable by name.
    assert lvm("vgs", [oloop], "--noheadings", "-o", "vg_uuid", env.vg, check=True).stdout.strip() == other_uuid
    # The refused object deletes at once and leaves the other VG alone.
    done = env.engine.delete(env.lvg, spec, out.status)
    assert done.done, _applied(done.status).message
    assert lvm("vgs", [oloop], "--noheadings", "-o", "vg_uuid", env.vg, check=True).stdout.strip() == other_uuid


def test_vg_name_taken_while_the_loops_are_attached_creates_no_pv_and_rolls_back(lvm_env: LvmEnv) -> None:
    """The name was free at the start; another VG takes it after our loop is attached. The node-wide
    check made right before pvcreate (next to the live read) refuses: no PV, no VG, loop and file gone."""
    env = lvm_env
    other = env.root / "late-owner.img"
    subprocess.run(["fallocate", "-l", str(GI), str(other)], check=True)
    taken: dict[str, str] = {}

    def take_the_name(res):  # after our attach: someone else creates a VG of our name on a foreign loop
        if res.argv[:2] == ("losetup", "--find") and not taken:
            loop = subprocess.run(["losetup", "--find", "--show", "--", str(other)], capture_output=True,
                                  text=True, check=True).stdout.strip()
            taken["loop"] = loop
            lvm("pvcreate", [loop], loop, check=True)
            lvm("vgcreate", [loop], env.vg, loop, check=True)

    env.runner.observers.append(take_the_name)
    out = env.engine.reconcile(env.lvg, env.spec([("a", "1Gi")]), None, generation=1)
    cond = _applied(out.status)
    assert cond.status == "False" and cond.reason == "VGNameConflict", cond.message
    assert taken["loop"] in cond.message
    assert env.runner.calls["pvcreate"] == 0 and env.runner.calls["vgcreate"] == 0
    assert env.loops_of(env.file("a")) == [] and not env.file("a").exists()  # this call's work rolled back
    assert env.our_loops() == [taken["loop"]]  # only the other owner's loop is left, and its VG is theirs
    assert [r["pv_name"] for r in env.pvs()] == [taken["loop"]]


def test_directory_escaping_through_a_symlink_writes_nothing_and_deletes_at_once(lvm_env: LvmEnv) -> None:
    env = lvm_env
    env.base.mkdir(parents=True)
    outside = env.root / "outside"
    outside.mkdir()
    (env.base / "sub").symlink_to(outside)
    spec = env.spec([("a", "1Gi")], directory=str(env.base / "sub" / "deeper"))
    out = env.engine.reconcile(env.lvg, spec, None, generation=1)
    cond = _applied(out.status)
    assert cond.status == "False" and cond.reason == "ValidationFailed"
    assert "resolves outside the base directory" in cond.message
    assert f"through a symlink at {env.base / 'sub'}" in cond.message, cond.message
    _no_writes(env)
    assert list(outside.iterdir()) == [] and env.our_loops() == []
    again = env.engine.reconcile(env.lvg, spec, out.status, generation=1)
    assert not again.changed and list(outside.iterdir()) == []  # refused again: no host change
    assert again.events == [] and not again.host_changed  # one Event per transition, not one per retry
    done = env.engine.delete(env.lvg, spec, again.status)
    assert done.done, _applied(done.status).message
    assert env.runner.calls["rm"] == 0 and list(outside.iterdir()) == []


def test_symlink_swapped_in_after_admission_is_caught_right_before_the_write(lvm_env: LvmEnv) -> None:
    """The directory is fine when the reconcile starts and becomes a symlink to the outside before
    the first host write: the check right before mkdir/fallocate/losetup refuses."""
    env = lvm_env
    outside = env.root / "outside"
    outside.mkdir()
    sub = env.base / "sub"
    sub.mkdir(parents=True)
    realpaths = {"n": 0}

    def swap(res):  # after the reconcile's first realpath (the start check), make sub a symlink
        if res.argv[0] == "realpath" and realpaths["n"] == 0:
            realpaths["n"] += 1
            sub.rmdir()
            sub.symlink_to(outside)

    env.runner.observers.append(swap)
    out = env.engine.reconcile(env.lvg, env.spec([("a", "1Gi")], directory=str(sub)), None, generation=1)
    cond = _applied(out.status)
    assert cond.status == "False" and "through a symlink at" in cond.message, cond.message
    assert env.runner.calls["fallocate"] == 0 and env.runner.calls["mkdir"] == 0
    assert list(outside.iterdir()) == [] and env.our_loops() == []


def test_backing_file_that_is_a_symlink_is_refused(lvm_env: LvmEnv) -> None:
    env = lvm_env
    env.base.mkdir(parents=True)
    target = env.root / "elsewhere.img"
    subprocess.run(["fallocate", "-l", str(GI), str(target)], check=True)
    env.file("a").symlink_to(target)
    spec = env.spec([("a", "1Gi")])
    out = env.engine.reconcile(env.lvg, spec, None, generation=1)
    cond = _applied(out.status)
    assert cond.status == "False" and "symbolic link" in cond.message, cond.message
    assert env.our_loops() == [] and env.runner.calls["pvcreate"] == 0
    done = env.engine.delete(env.lvg, spec, out.status)
    assert done.done and env.file("a").is_symlink() and target.exists()  # not ours: left alone


def test_control_characters_in_the_directory_are_refused(lvm_env: LvmEnv) -> None:
    env = lvm_env
    spec = _raw_spec(env, "a", f"{env.base}/x\ny")
    out = env.engine.reconcile(env.lvg, spec, None, generation=1)
    cond = _applied(out.status)
    assert cond.reason == "ValidationFailed" and "control characters" in cond.message
    _no_writes(env)
    assert env.engine.delete(env.lvg, spec, out.status).done


def test_refused_objects_delete_at_once(lvm_env: LvmEnv) -> None:
    env = lvm_env
    cases = {
        "outside": _raw_spec(env, "a", str(env.root / "elsewhere")),
        "name_max": _raw_spec(env, "x" * 63, str(env.base)),
    }
    for case, spec in cases.items():
        lvg = env.lvg if case != "name_max" else "l" * 200
        out = env.engine.reconcile(lvg, spec, None, generation=1)
        assert _applied(out.status).reason == "ValidationFailed", case
        done = env.engine.delete(lvg, spec, out.status)
        assert done.done, (case, _applied(done.status).message)
    assert env.runner.calls["rm"] == 0 and not (env.root / "elsewhere").exists()


def test_delete_removes_only_files_that_are_ours(lvm_env: LvmEnv) -> None:
    """A status (anyone allowed to patch it can write it) naming a file outside the base directory,
    with our name pattern: never removed; the real backing file is."""
    env = lvm_env
    spec = env.spec([("a", "1Gi")])
    out = env.engine.reconcile(env.lvg, spec, None, generation=1)
    assert out.status.phase == LVGPhase.READY
    decoy_dir = env.root / "decoy"
    decoy_dir.mkdir()
    decoy = decoy_dir / env.file("b").name
    decoy.write_text("precious")
    status = out.status.model_copy(deep=True)
    status.nodes = [NodeStatus(name="node-a", file_devices=[
        *(status.nodes[0].file_devices or []),
        NodeFileDevice(name="b", file_path=str(decoy), loop_device="/dev/loop9")])]
    done = env.engine.delete(env.lvg, spec, Status.model_validate(status.to_wire()))
    assert done.done, _applied(done.status).message
    assert decoy.read_text() == "precious"
    assert not env.file("a").exists() and env.our_loops() == [] and env.vgs() == []


def test_nothing_created_means_delete_is_done_without_a_host_write(lvm_env: LvmEnv) -> None:
    env = lvm_env
    spec = env.spec([("a", "1Gi")])
    done = env.engine.delete(env.lvg, spec, None)
    assert done.done
    assert sum(env.runner.calls[c] for c in ("rm", "vgremove", "pvremove", "lvremove")) == 0
    assert not Path(env.file("a")).exists()


def test_delete_after_an_interrupted_create_removes_the_orphan_pv(lvm_env: LvmEnv) -> None:
    """Killed between pvcreate and vgcreate: the loop is an orphan PV on our file; delete removes the
    PV label, detaches and removes the file instead of waiting forever."""
    env = lvm_env
    env.base.mkdir(parents=True)
    f = env.file("a")
    subprocess.run(["fallocate", "-l", str(GI), str(f)], check=True)
    loop = subprocess.run(["losetup", "--find", "--show", "--", str(f)], capture_output=True, text=True,
                          check=True).stdout.strip()
    lvm("pvcreate", [loop], loop, check=True)
    done = env.engine.delete(env.lvg, env.spec([("a", "1Gi")]), None)
    assert done.done, _applied(done.status).message
    assert env.our_loops() == [] and not f.exists()


def test_directory_running_through_a_regular_file_refuses_and_deletes_at_once(lvm_env: LvmEnv) -> None:
    """The directory's path runs through a regular file (…/x/sub with x a file): nothing can exist
    at the backing file's path ("Not a directory" is proof of absence), so the refused object is
    released at the first attempt — and the regular file on the way is left alone."""
    env = lvm_env
    env.base.mkdir(parents=True)
    blocker = env.base / "x"
    blocker.write_text("not a directory")
    spec = env.spec([("a", "1Gi")], directory=str(blocker / "sub"))
    out = env.engine.reconcile(env.lvg, spec, None, generation=1)
    cond = _applied(out.status)
    assert cond.status == "False" and "Not a directory" in cond.message and str(blocker) in cond.message, cond
    assert env.our_loops() == [] and env.runner.calls["pvcreate"] == 0 and env.runner.calls["fallocate"] == 0
    done = env.engine.delete(env.lvg, spec, out.status)
    assert done.done, _applied(done.status).message
    assert env.runner.calls["rm"] == 0
    assert blocker.read_text() == "not a directory" and env.our_loops() == [] and env.vgs() == []

