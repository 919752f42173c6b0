"""kctl rollout's pure parts: progress line, verdict, what undo restores and what it must refuse."""

from __future__ import annotations

import argparse

import pytest

from disklet.cli.main import parse
from disklet.cli.rollout import (
    child_blocker,
    parse_duration,
    previous_revision,
    progress_line,
    undo_template,
    verdict,
)

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


def child(name, node, ready="True", reason="Ready", message="", gen=1, observed=1, applied="True"):
    return {"metadata": {"name": name, "generation": gen}, "spec": {"local": {"nodeName": node}},
            "status": {"observedGeneration": observed, "conditions": [
                {"type": "Ready", "status": ready, "reason": reason, "message": message},
                {"type": "VGConfigurationApplied", "status": applied, "reason": "Applied", "message": ""}]}}


def test_the_progress_line_gives_the_blocking_childs_own_reason_and_the_unit_it_holds():
    obj = set_obj(attention=[{"name": "s-n1", "nodeName": "n1", "reason": "NotReady"}])
    children = {"s-n1": child("s-n1", "n1", "False", "AgentNotReporting", "agent Lease expired 90s ago"),
                "s-n2": child("s-n2", "n2")}
    line = progress_line(obj, children)
    assert "waiting for s-n1 on n1 (AgentNotReporting: agent Lease expired 90s ago)" in line
    assert "s-n1 on n1 holds 1 of maxUnavailable 1: no other node is updated until it is Ready" in line
    # a larger budget is not held by one dead child
    obj["spec"]["rollout"] = {"maxUnavailable": 2}
    assert "maxUnavailable" not in progress_line(obj, children)
    # the child is found even before the operator lists it under attention
    line = progress_line(set_obj(attention=[]), children)
    assert "waiting for s-n1 on n1 (AgentNotReporting" in line


def test_child_blocker_reads_the_childs_own_conditions():
    assert child_blocker(child("c", "n")) is None
    assert child_blocker(child("c", "n", gen=2)) == ("NotObserved", "the agent has not reported generation 2 yet")
    assert child_blocker(child("c", "n", "False", "NodeNotReady", "node n is NotReady"))[0] == "NodeNotReady"
    assert child_blocker(None) is None


def test_a_set_matching_no_node_is_an_error_not_complete():
    obj = set_obj("Complete", desiredLVMVolumeGroupsCount=0)
    obj["spec"]["nodeSelector"] = {"matchLabels": {"disk": "fsat"}}
    state, message = verdict(obj)
    assert state == "nomatch" and "no node matches spec.nodeSelector disk=fsat" in message


@pytest.mark.parametrize(("text", "seconds"), [
    ("5m", 300), ("1h30s", 3630), ("1h30m", 5400), ("90s", 90), ("1.5h", 5400), ("500ms", 0.5), ("0", 0),
    ("60", 60), ("2.5", 2.5), ("1m0.5s", 60.5)])
def test_timeout_takes_kubectl_durations(text, seconds):
    assert parse_duration(text) == pytest.approx(seconds)
    assert parse(["rollout", "status", "lvgset", "data", "--timeout", text]).timeout == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["5 m", "m5", "1d", "5mm", "", "-1", "1h 30m", "abc"])
def test_a_bad_duration_is_a_usage_error(text):
    with pytest.raises(argparse.ArgumentTypeError):
        parse_duration(text)


def test_get_request_timeout_takes_durations_too():
    assert parse(["get", "dl", "-w", "--request-timeout", "2m"]).request_timeout == 120
    assert parse(["get", "dl", "-w", "--request-timeout", "2"]).request_timeout == 2
    assert parse(["get", "dl", "-w", "--request-timeout", "1.5s"]).request_timeout == 2
