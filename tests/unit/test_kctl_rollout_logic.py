"""kctl rollout's pure parts: progress line, verdict, what undo restores and what it must refuse."""

from __future__ import annotations

from disklet.cli.main import parse
from disklet.cli.rollout import previous_revision, progress_line, undo_template, verdict

DIR = "/var/lib/disklet/file-devices"


def fd(name, size="1Gi", directory=DIR):
    return {"name": name, "directory": directory, "size": size}


def set_obj(reason="RollingOut", gen=2, observed=2, revisions=None, **status):
    st = {"observedGeneration": observed, "currentRevision": "r2", "desiredLVMVolumeGroupsCount": 3,
          "updatedCount": 1, "updatedReadyCount": 0, "failedCount": 0,
          "attention": [{"name": "s-n1", "nodeName": "n1", "reason": "Updating"},
                        {"name": "s-old", "nodeName": "gone", "reason": "Orphaned"}],
          "conditions": [{"type": "Progressing", "status": "True", "reason": reason, "message": "m"}],
          "revisions": revisions if revisions is not None else [
              {"revision": "r2", "template": {"actualVGNameOnTheNode": "vg", "fileDevices": [fd("a", "2Gi")]}},
              {"revision": "r1", "template": {"actualVGNameOnTheNode": "vg", "fileDevices": [fd("a")]}}],
          **status}
    return {"metadata": {"name": "s", "generation": gen, "resourceVersion": "9"},
            "spec": {"lvmVolumeGroupTemplate": {"actualVGNameOnTheNode": "vg", "fileDevices": [fd("a", "2Gi")]}},
            "status": st}


def test_progress_line_names_the_child_it_waits_for_not_orphans():
    assert progress_line(set_obj()) == ("revision r2: 0 of 3 updated and Ready (1 updated, 0 failed); "
                                        "waiting for s-n1 on n1 (Updating)")


def test_verdicts():
    assert verdict(set_obj())[0] == "progressing"
    assert verdict(set_obj("Complete"))[0] == "done"
    assert verdict(set_obj("ChildFailed")) == ("failed", "m")
    assert verdict(set_obj("Blocked"))[0] == "failed"
    assert verdict(set_obj("Paused"))[0] == "paused"
    assert verdict(set_obj("Complete", gen=3))[0] == "stale", "a status of an older generation proves nothing"


def test_undo_picks_the_previous_revision_only_from_a_current_status():
    tpl, rev = previous_revision(set_obj())
    assert rev == "r1" and tpl["fileDevices"] == [fd("a")]
    assert previous_revision(set_obj(gen=3))[0] is None
    assert previous_revision(set_obj(revisions=[{"revision": "r2", "template": {}}]))[0] is None


def test_undo_refuses_what_the_grow_only_rules_refuse_unless_keeping_file_devices():
    current = {"actualVGNameOnTheNode": "vg", "fileDevices": [fd("a", "2Gi"), fd("b")],
               "thinPools": [{"name": "tp", "size": "50%"}]}
    previous = {"actualVGNameOnTheNode": "vg", "fileDevices": [fd("a")]}
    restored, notes = undo_template(current, previous, keep_file_devices=False)
    assert restored is None and any("'b' would be removed" in n for n in notes) and any("would shrink" in n for n in notes)
    restored, notes = undo_template(current, previous, keep_file_devices=True)
    assert restored == {"actualVGNameOnTheNode": "vg", "fileDevices": [fd("a", "2Gi"), fd("b")]}, "thin pool undone"
    assert notes and "grow-only" in notes[0]
    renamed = dict(previous, actualVGNameOnTheNode="other")
    assert undo_template(current, renamed, keep_file_devices=True)[0] is None
    same_files = {"actualVGNameOnTheNode": "vg", "fileDevices": [fd("a", "2Gi"), fd("b")]}
    assert undo_template(current, same_files, keep_file_devices=False) == (same_files, [])


def test_parser_registers_rollout():
    args = parse(["rollout", "status", "lvgset", "data", "--timeout", "5"])
    assert (args.command, args.action, args.type, args.name, args.timeout) == ("rollout", "status", "lvgset", "data", 5)
