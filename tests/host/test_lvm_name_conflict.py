"""A VG that takes the managed VG's name AFTER the LVMVolumeGroup is Ready, on real loop devices.

LVM then warns "VG name X is used by VGs A and B" on every report and refuses to act on the name.
The engine reports it (``VGNameConflict`` on both agent conditions, phase NotReady, one Warning
naming both UUIDs), changes nothing on either VG while it lasts (not even what the spec asks), never
removes anything under the ambiguous name, and reports Ready again once the name is unique.

Two places the other VG can live: on a device the agent's filter shows (here: a loop whose file
carries disklet's marker name inside the base directory, as a real disk would be seen), or behind
the filter (a foreign loop: only the node-wide read sees it).
"""

from __future__ import annotations

import subprocess
from pathlib import Path

from disklet.api.common import get_condition
from disklet.api.lvm import LVGPhase
from tests.host.lvm_fixtures import LvmEnv, lvm, lvm_env_fixture  # noqa: F401 - fixture

GI = 1024**3
CHANGES = ("fallocate", "pvcreate", "vgcreate", "vgextend", "vgchange", "lvcreate", "lvextend", "lvremove",
           "vgremove", "pvremove", "pvresize", "rm")


def _attach(path: Path) -> str:
    subprocess.run(["fallocate", "-l", str(GI), str(path)], check=True)
    return subprocess.run(["losetup", "--find", "--show", "--", str(path)], capture_output=True, text=True,
                          check=True).stdout.strip()


def _same_name_vg(env: LvmEnv, path: Path) -> tuple[str, str]:
    """A VG named like ours on a new loop over ``path``, made by an LVM that sees only that loop."""
    loop = _attach(path)
    lvm("pvcreate", [loop], loop, check=True)
    lvm("vgcreate", [loop], "--addtag", "someone=else", env.vg, loop, check=True)
    uuid = lvm("vgs", [loop], "--noheadings", "-o", "vg_uuid", env.vg, check=True).stdout.strip()
    return loop, uuid


def _vg_rows(loops: list[str]) -> list[tuple[str, str, str, str]]:
    out = lvm("vgs", loops, "--reportformat", "json", "-o", "vg_name,vg_uuid,vg_tags,lv_count", check=True).stdout
    import json
    return sorted((r["vg_name"], r["vg_uuid"], r["vg_tags"], r["lv_count"])
                  for s in json.loads(out)["report"] for r in s.get("vg", []))


def _ready(env: LvmEnv):
    spec = env.spec([("a", "1Gi")])
    out = env.engine.reconcile(env.lvg, spec, None, generation=1)
    assert out.status.phase == LVGPhase.READY, out.status.conditions
    return spec, out.status


def _assert_conflict(status, ours: str, other: str) -> None:
    assert status.phase == LVGPhase.NOT_READY
    for kind in ("VGConfigurationApplied", "VGReady"):
        cond = get_condition(status.conditions, kind)
        assert cond is not None and cond.status == "False" and cond.reason == "VGNameConflict", (kind, cond)
        assert ours in cond.message and other in cond.message, cond.message
    assert status.vg_uuid == ours  # still the managed VG's facts, by UUID


def test_visible_same_name_vg_is_reported_and_neither_vg_is_changed(lvm_env: LvmEnv) -> None:
    env = lvm_env
    spec, ready = _ready(env)
    ours = ready.vg_uuid
    # A second VG of the same name that the agent's filter shows (the marker name of another object).
    oloop, other = _same_name_vg(env, env.base / "disklet-intruder.x.img")
    (oursloop,) = env.loops_of(env.file("a"))
    both = [oursloop, oloop]
    warn = lvm("vgs", both, "-o", "vg_name").stderr
    assert f"VG name {env.vg} is used by VGs" in warn  # LVM's own warning on every report
    before = _vg_rows(both)
    env.runner.calls.clear()

    # The spec now asks for more (a bigger file, a thin pool): nothing happens while the name is ambiguous.
    grown = env.spec([("a", "2Gi")], pools=[("tp", "50%")])
    out = env.engine.reconcile(env.lvg, grown, ready, generation=2)
    _assert_conflict(out.status, ours, other)
    conflict_events = [e for e in out.events if e[1] == "VGNameConflict"]
    assert len(conflict_events) == 1 and ours in conflict_events[0][2] and other in conflict_events[0][2]
    assert out.changed and not out.host_changed
    for cmd in CHANGES:
        assert env.runner.calls[cmd] == 0, (cmd, env.runner.calls)
    assert _vg_rows(both) == before and env.file("a").stat().st_size == GI

    # The next pass reports the same: no new status, no new Event.
    again = env.engine.reconcile(env.lvg, grown, out.status, generation=2)
    assert not again.changed and again.events == []
    # The discovery cycle sees it too (a Ready object is not reconciled by the timer).
    found = env.engine.discover([(env.lvg, spec)])[env.lvg]
    assert found is not None
    _assert_conflict(found, ours, other)

    # Delete refuses: every removal addresses the VG by name.
    gone = env.engine.delete(env.lvg, grown, out.status)
    assert not gone.done and other in get_condition(gone.status.conditions, "VGConfigurationApplied").message
    for cmd in CHANGES:
        assert env.runner.calls[cmd] == 0, (cmd, env.runner.calls)
    assert _vg_rows(both) == before

    # The other owner renames theirs by UUID: the conflict clears and the spec is applied.
    lvm("vgrename", [oloop], other, f"{env.vg}x", check=True)
    # (no thin pool now: this machine's kernel has no device-mapper, activation is off in host tests)
    done = env.engine.reconcile(env.lvg, env.spec([("a", "2Gi")]), out.status, generation=3)
    assert done.status.phase == LVGPhase.READY, done.status.conditions
    assert get_condition(done.status.conditions, "VGConfigurationApplied").reason == "Applied"
    assert get_condition(done.status.conditions, "VGReady").status == "True"
    assert done.status.vg_uuid == ours and env.file("a").stat().st_size == 2 * GI
    rows = _vg_rows(both)
    assert (f"{env.vg}x", other, "someone=else", "0") in rows  # theirs: renamed by them, untouched by us


def test_same_name_vg_behind_the_filter_is_reported_then_clears(lvm_env: LvmEnv) -> None:
    env = lvm_env
    spec, ready = _ready(env)
    ours = ready.vg_uuid
    # Outside the base directory: the agent's per-command filter hides this loop; only the
    # node-wide read (names only) sees the second VG.
    oloop, other = _same_name_vg(env, env.root / "someone-elses.img")
    env.runner.calls.clear()
    out = env.engine.reconcile(env.lvg, env.spec([("a", "2Gi")]), ready, generation=2)
    _assert_conflict(out.status, ours, other)
    assert oloop in get_condition(out.status.conditions, "VGReady").message  # where the other one lives
    for cmd in CHANGES:
        assert env.runner.calls[cmd] == 0, (cmd, env.runner.calls)
    found = env.engine.discover([(env.lvg, spec)])[env.lvg]
    assert found is not None
    _assert_conflict(found, ours, other)

    lvm("vgremove", [oloop], "-y", "--select", f"vg_uuid={other}", check=True)
    assert env.engine.discover([(env.lvg, spec)])[env.lvg].phase is None  # nothing to report any more
    done = env.engine.reconcile(env.lvg, env.spec([("a", "2Gi")]), out.status, generation=2)
    assert done.status.phase == LVGPhase.READY, done.status.conditions
    assert get_condition(done.status.conditions, "VGReady").status == "True"
    assert env.file("a").stat().st_size == 2 * GI
