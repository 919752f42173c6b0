"""The pure LVMVolumeGroupSet planner: selection, names, writes, orphans, status."""

from __future__ import annotations

import re

import pytest
from disklet_operator.logic.lvgset_planner import (
    SET_LABEL,
    Child,
    Outcome,
    SetRef,
    build_status,
    child_name,
    label_value,
    merge_patch,
    new_orphans,
    owner_reference,
    plan,
    status_patch,
)

from disklet.api.common import LabelSelector
from disklet.api.lvm import LVMVolumeGroupSetSpec

REF = SetRef("s", "uid-s", 3)
DIR = "/var/lib/disklet/file-devices"
SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")


def spec(selector=None, files=(("a", "1Gi"),), **tmpl) -> LVMVolumeGroupSetSpec:
    t = {"actualVGNameOnTheNode": "vg0", **tmpl}
    if files:
        t["fileDevices"] = [{"name": n, "directory": DIR, "size": sz} for n, sz in files]
    return LVMVolumeGroupSetSpec.model_validate({"nodeSelector": selector or {}, "lvmVolumeGroupTemplate": t})


def existing(node: str, sp: LVMVolumeGroupSetSpec, ref: SetRef = REF, **over) -> Child:
    body = {"metadata": {"name": child_name(ref.name, node), "resourceVersion": "7",
                         "labels": {SET_LABEL: ref.name, "disklet.io/node": node},
                         "ownerReferences": [owner_reference(ref.name, ref.uid)]},
            "spec": sp.lvm_volume_group_template.child_spec(node).to_wire()}
    body["spec"].update(over)
    return Child.from_body(body)


@pytest.mark.parametrize("expr,labels,want", [
    ({"key": "z", "operator": "In", "values": ["a", "b"]}, {"z": "b"}, True),
    ({"key": "z", "operator": "In", "values": ["a"]}, {"z": "b"}, False),
    ({"key": "z", "operator": "In", "values": ["a"]}, {}, False),
    ({"key": "z", "operator": "NotIn", "values": ["a"]}, {"z": "b"}, True),
    ({"key": "z", "operator": "NotIn", "values": ["a"]}, {}, True),
    ({"key": "z", "operator": "NotIn", "values": ["a"]}, {"z": "a"}, False),
    ({"key": "z", "operator": "Exists"}, {"z": ""}, True),
    ({"key": "z", "operator": "Exists"}, {"y": "1"}, False),
    ({"key": "z", "operator": "DoesNotExist"}, {"y": "1"}, True),
    ({"key": "z", "operator": "DoesNotExist"}, {"z": "1"}, False),
])
def test_match_expressions_all_four_operators(expr, labels, want):
    p = plan(REF, spec({"matchExpressions": [expr]}), [("n", labels)], [])
    assert (p.desired == {"n": "s-n"}) is want


def test_match_labels_and_expressions_are_anded_and_empty_selector_matches_all():
    sel = {"matchLabels": {"role": "storage"}, "matchExpressions": [{"key": "gpu", "operator": "DoesNotExist"}]}
    nodes = [("a", {"role": "storage"}), ("b", {"role": "storage", "gpu": "1"}), ("c", {"role": "web"}), ("d", None)]
    assert plan(REF, spec(sel), nodes, []).desired == {"a": "s-a"}
    assert sorted(plan(REF, spec(), nodes, []).desired) == ["a", "b", "c", "d"]
    assert LabelSelector.model_validate(sel).keys() == {"role", "gpu"}


def test_child_name_plain_and_shortened_stably():
    assert child_name("set", "node-1.example") == "set-node-1.example"
    long_node = "n" * 200 + "." + "m" * 52
    name = child_name("s" * 60, long_node)
    assert len(name) <= 253 and SUBDOMAIN.match(name)
    assert name == child_name("s" * 60, long_node), "stable"
    assert name != child_name("s" * 60, long_node[:-1] + "x"), "hash keeps distinct nodes distinct"
    cut = child_name("s" * 60, "a" * 180 + "." + "b" * 30)  # cut lands next to a dot
    assert SUBDOMAIN.match(cut) and len(cut) <= 253
    assert label_value("x" * 63) == "x" * 63 and len(label_value("x" * 80)) == 63


def test_creates_carry_owner_reference_labels_and_full_spec():
    sp = spec(files=(("a", "2Gi"),), blockDeviceSelector={"matchLabels": {"k": "v"}},
              thinPools=[{"name": "tp", "size": "10%"}], metadata={"labels": {"team": "db", SET_LABEL: "spoof"}})
    p = plan(REF, sp, [("n1", {})], [])
    assert [c.name for c in p.creates] == ["s-n1"] and not p.updates
    body = p.creates[0].body
    assert body["metadata"]["ownerReferences"] == [{"apiVersion": "disklet.io/v1alpha1", "kind": "LVMVolumeGroupSet",
                                                    "name": "s", "uid": "uid-s", "controller": True,
                                                    "blockOwnerDeletion": True}]
    assert body["metadata"]["labels"] == {"team": "db", SET_LABEL: "s", "disklet.io/node": "n1"}
    assert body["spec"] == {"type": "Local", "local": {"nodeName": "n1"}, "actualVGNameOnTheNode": "vg0",
                            "blockDeviceSelector": {"matchLabels": {"k": "v"}},
                            "fileDevices": [{"name": "a", "directory": DIR, "size": "2Gi"}],
                            "thinPools": [{"name": "tp", "size": "10%", "allocationLimit": "150%"}]}


def test_no_write_when_equal_and_minimal_patch_when_different():
    sp = spec()
    assert plan(REF, sp, [("n1", {})], [existing("n1", sp)]).writes == 0
    grown = spec(files=(("a", "2Gi"), ("b", "1Gi")), blockDeviceSelector={"matchLabels": {"x": "y"}})
    p = plan(REF, grown, [("n1", {})], [existing("n1", sp, blockDeviceSelector={"matchLabels": {"old": "1"}})])
    assert len(p.updates) == 1 and not p.creates
    assert p.updates[0].body == {"spec": {
        "blockDeviceSelector": {"matchLabels": {"old": None, "x": "y"}},
        "fileDevices": [{"name": "a", "directory": DIR, "size": "2Gi"}, {"name": "b", "directory": DIR, "size": "1Gi"}]}}
    relabeled = spec(metadata={"labels": {"team": "x"}})
    p = plan(REF, relabeled, [("n1", {})], [existing("n1", sp)])
    assert p.updates[0].body == {"metadata": {"labels": {"team": "x"}}}


def test_merge_patch_removes_and_replaces():
    assert merge_patch({"a": 1, "b": {"c": 1, "d": 2}, "l": [1]}, {"b": {"c": 1}, "l": [2]}) == \
        {"a": None, "b": {"d": None}, "l": [2]}
    assert merge_patch({"a": 1}, {"a": 1}) == {}


def test_orphans_are_kept_and_reported_once():
    sp = spec({"matchLabels": {"disk": "yes"}})
    kids = [existing("n1", sp), existing("n2", sp)]
    p = plan(REF, sp, [("n1", {"disk": "yes"}), ("n2", {})], kids)
    assert p.writes == 0 and [o.lvm_volume_group_name for o in p.orphans] == ["s-n2"]
    st = build_status(p, Outcome(), None, now="T")
    assert st.orphaned_lvm_volume_groups[0].node_name == "n2"
    assert [o.lvm_volume_group_name for o in new_orphans(p, None)] == ["s-n2"]
    assert new_orphans(p, st.to_wire()) == []
    # a node that disappears entirely: same treatment
    assert [o.lvm_volume_group_name for o in plan(REF, sp, [("n1", {"disk": "yes"})], kids).orphans] == ["s-n2"]


def test_foreign_object_with_our_name_is_a_conflict_not_adopted():
    sp = spec()
    other = existing("n1", sp, ref=SetRef("s", "other-uid"))
    p = plan(REF, sp, [("n1", {})], [other])
    assert p.writes == 0 and p.problems[0].reason == "NameConflict"
    st = build_status(p, Outcome(), None)
    assert st.phase == "NotCreated" and st.reason == "NameConflict"


def test_transition_the_child_rules_reject_is_not_sent():
    sp = spec(files=(("a", "1Gi"),))
    hand_edited = existing("n1", sp, fileDevices=[{"name": "a", "directory": DIR, "size": "1Gi"},
                                                   {"name": "extra", "directory": DIR, "size": "1Gi"}])
    shrunk = existing("n2", spec(files=(("a", "4Gi"),)))
    ok = existing("n3", sp)
    p = plan(REF, spec(files=(("a", "1Gi"), ("b", "1Gi"))), [("n1", {}), ("n2", {}), ("n3", {})],
             [hand_edited, shrunk, ok])
    assert [u.name for u in p.updates] == ["s-n3"], "the others keep going"
    msgs = {pr.name: pr.message for pr in p.problems}
    assert "'extra' would be removed" in msgs["s-n1"] and "would shrink" in msgs["s-n2"]


def test_invalid_child_spec_blocks_every_write():
    # the backing file name disklet-<child>.<entry>.img would exceed NAME_MAX for the long node only
    sp = spec(files=(("a" * 60, "1Gi"),))
    p = plan(REF, sp, [("short", {}), ("n" * 200, {})], [])
    assert p.validation_failed and p.writes == 0
    assert [pr.reason for pr in p.problems] == ["ValidationFailed"]
    st = build_status(p, Outcome(), None)
    assert st.phase == "NotCreated" and st.reason == "ValidationFailed"


def test_status_phases_counts_and_no_change_detection():
    sp = spec()
    p = plan(REF, sp, [("n1", {}), ("n2", {})], [existing("n1", sp)])
    assert [c.name for c in p.creates] == ["s-n2"]
    done = build_status(p, Outcome(created={"s-n2"}), None, now="T1")
    assert (done.phase, done.current_lvm_volume_groups_count, done.desired_lvm_volume_groups_count) == ("Created", 2, 2)
    assert done.observed_generation == 3 and done.conditions[0].status == "True"
    failed = build_status(p, Outcome(create_errors={"s-n2": "HTTP 403: no"}), None)
    assert (failed.phase, failed.reason, failed.current_lvm_volume_groups_count) == ("Pending", "CreateFailed", 1)
    none = build_status(plan(REF, sp, [("n1", {})], []), Outcome(create_errors={"s-n1": "x"}), None)
    assert none.phase == "NotCreated"
    empty = build_status(plan(REF, sp, [], []), Outcome(), None)
    assert (empty.phase, empty.reason) == ("NotCreated", "NoMatchingNodes")
    # written only on change; lastTransitionTime kept
    wire = done.to_wire()
    again = build_status(plan(REF, sp, [("n1", {}), ("n2", {})], [existing("n1", sp), existing("n2", sp)]),
                         Outcome(), wire, now="T2")
    assert status_patch(wire, again) is None
    assert again.conditions[0].last_transition_time == "T1"
    patch = status_patch(wire, empty)
    assert patch["createdLVMVolumeGroups"] is None and patch["phase"] == "NotCreated"
