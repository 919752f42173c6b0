"""The pure LVMVolumeGroupSet planner: selection, names, writes, orphans, status."""

from __future__ import annotations

import re

import pytest
from disklet_operator.logic.lvgset_plan import (
    REVISION_LABEL,
    SET_LABEL,
    Child,
    Health,
    Outcome,
    SetRef,
    owner_reference,
    plan,
    template_revision,
)
from disklet_operator.logic.lvgset_status import build_status, new_orphans, reported_orphans, status_patch

from disklet.api.common import LabelSelector
from disklet.api.lvm import LVMVolumeGroupSetSpec
from disklet.kube.patch import merge_patch
from disklet.labels import label_value
from disklet.lvm.names import child_name

REF = SetRef("s", "uid-s", 3)
DIR = "/var/lib/disklet/file-devices"
SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")


def spec(selector=None, files=(("a", "1Gi"),), rollout=None, **tmpl) -> LVMVolumeGroupSetSpec:
    """A set spec; ``rollout`` defaults to no limit (the rollout tests below pass their own)."""
    t = {"actualVGNameOnTheNode": "vg0", **tmpl}
    if files:
        t["fileDevices"] = [{"name": n, "directory": DIR, "size": sz} for n, sz in files]
    return LVMVolumeGroupSetSpec.model_validate({"nodeSelector": selector or {}, "lvmVolumeGroupTemplate": t,
                                                 "rollout": rollout or {"maxUnavailable": "100%"}})


def existing(node: str, sp: LVMVolumeGroupSetSpec, ref: SetRef = REF, *, ready: bool | None = None,
             failed: str | None = None, generation: int = 1, **over) -> Child:
    """A child as written from ``sp``; ``ready``: the agent applied generation ``generation`` and the
    operator says Ready (True) or not (False); ``failed``: the agent's VGConfigurationApplied=False reason."""
    body = {"metadata": {"name": child_name(ref.name, node), "resourceVersion": "7", "generation": generation,
                         "labels": {SET_LABEL: ref.name, "disklet.io/node": node, REVISION_LABEL: template_revision(sp)},
                         "ownerReferences": [owner_reference(ref.name, ref.uid)]},
            "spec": sp.lvm_volume_group_template.child_spec(node).to_wire()}
    if ready is not None or failed:
        applied = {"type": "VGConfigurationApplied", "status": "False" if failed else "True",
                   "reason": failed or "Applied", "message": "m", "lastTransitionTime": "T"}
        body["status"] = {"observedGeneration": generation, "conditions": [applied, {
            "type": "Ready", "status": "True" if ready else "False", "reason": "Ready" if ready else "VGNotReady",
            "message": "", "lastTransitionTime": "T"}]}
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
    assert body["metadata"]["labels"] == {"team": "db", SET_LABEL: "s", "disklet.io/node": "n1",
                                          REVISION_LABEL: template_revision(sp)}
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
        "fileDevices": [{"name": "a", "directory": DIR, "size": "2Gi"}, {"name": "b", "directory": DIR, "size": "1Gi"}]},
        "metadata": {"labels": {REVISION_LABEL: template_revision(grown)}}}
    relabeled = spec(metadata={"labels": {"team": "x"}})
    p = plan(REF, relabeled, [("n1", {})], [existing("n1", sp)])
    assert p.updates[0].body == {"metadata": {"labels": {"team": "x", REVISION_LABEL: template_revision(relabeled)}}}


def test_merge_patch_removes_and_replaces():
    assert merge_patch({"a": 1, "b": {"c": 1, "d": 2}, "l": [1]}, {"b": {"c": 1}, "l": [2]}) == \
        {"a": None, "b": {"d": None}, "l": [2]}
    assert merge_patch({"a": 1}, {"a": 1}) == {}


def test_orphans_are_kept_and_reported_once():
    sp = spec({"matchLabels": {"disk": "yes"}})
    kids = [existing("n1", sp, ready=True), existing("n2", sp, ready=True)]
    p = plan(REF, sp, [("n1", {"disk": "yes"}), ("n2", {})], kids)
    assert p.writes == 0 and [o.lvm_volume_group_name for o in p.orphans] == ["s-n2"]
    st = build_status(p, Outcome(), None, now="T")
    assert st.orphaned_count == 1
    assert [(a.name, a.node_name, a.reason) for a in st.attention] == [("s-n2", "n2", "Orphaned")]
    reported: set[str] = set()
    assert [o.lvm_volume_group_name for o in new_orphans(p, reported)] == ["s-n2"]
    assert new_orphans(p, reported) == []
    assert reported_orphans(st.to_wire()) == {"s-n2"}, "a restarted operator does not repeat the Event"
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
    nodes = [("n1", {}), ("n2", {}), ("n3", {})]
    keep_going = spec(files=(("a", "1Gi"), ("b", "1Gi")), rollout={"maxUnavailable": "100%", "failurePolicy": "Continue"})
    p = plan(REF, keep_going, nodes, [hand_edited, shrunk, ok])
    assert [u.name for u in p.updates] == ["s-n3"], "failurePolicy Continue: the others keep going"
    msgs = {pr.name: pr.message for pr in p.problems}
    assert "'extra' would be removed" in msgs["s-n1"] and "would shrink" in msgs["s-n2"]
    halt = plan(REF, spec(files=(("a", "1Gi"), ("b", "1Gi"))), nodes, [hand_edited, shrunk, ok])
    assert halt.writes == 0 and halt.rollout.halted_by.name == "s-n1", "Halt (default): nothing after a failure"


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
    assert patch["attention"] is None and patch["phase"] == "NotCreated"
    legacy = dict(wire, createdLVMVolumeGroups=[{"lvmVolumeGroupName": "s-n1", "nodeName": "n1"}])
    assert status_patch(legacy, again)["createdLVMVolumeGroups"] is None, "the unbounded list of old versions is cleared"


# ----------------------------------------------------------------------------- rollout

NODES3 = [("n1", {}), ("n2", {}), ("n3", {})]


def _rolled(old_sp, new_sp, ready: dict[str, bool | str], nodes=NODES3):
    """Children of ``old_sp`` except those listed as 'new' (already at ``new_sp``); values: True ready,
    False not ready, 'new' updated+ready, 'new-pending' updated not yet applied, 'new-failed'."""
    kids = []
    for node, _ in nodes:
        state = ready.get(node, True)
        if state == "new":
            kids.append(existing(node, new_sp, ready=True, generation=2))
        elif state == "new-pending":
            kid = existing(node, new_sp, ready=True, generation=2)
            kids.append(Child(kid.name, kid.labels, kid.owner_references, kid.spec,
                              health=Health(observed_current=False, ready=True, applied="True")))
        elif state == "new-failed":
            kids.append(existing(node, new_sp, ready=False, failed="FileDeviceNotApplied", generation=2))
        else:
            kids.append(existing(node, old_sp, ready=bool(state)))
    return kids


def test_max_unavailable_one_updates_one_child_and_waits_for_it():
    old = spec(rollout={"maxUnavailable": 1})
    new = spec(files=(("a", "2Gi"),), rollout={"maxUnavailable": 1})
    p = plan(REF, new, NODES3, _rolled(old, new, {}))
    assert [u.name for u in p.updates] == ["s-n1"] and p.rollout.held == 2
    assert p.updates[0].body["metadata"]["labels"] == {REVISION_LABEL: template_revision(new)}
    waiting = plan(REF, new, NODES3, _rolled(old, new, {"n1": "new-pending"}))
    assert waiting.writes == 0 and waiting.rollout.unavailable == 1, "n1 has not applied the new spec yet"
    nxt = plan(REF, new, NODES3, _rolled(old, new, {"n1": "new"}))
    assert [u.name for u in nxt.updates] == ["s-n2"]
    st = build_status(nxt, Outcome(updated={"s-n2"}), None)
    assert (st.updated_count, st.updated_ready_count, st.desired_lvm_volume_groups_count) == (2, 1, 3)
    assert st.current_revision == template_revision(new) and st.revisions[0].revision == st.current_revision


def test_a_not_ready_old_child_counts_against_the_budget():
    old = spec(rollout={"maxUnavailable": 1})
    new = spec(files=(("a", "2Gi"),), rollout={"maxUnavailable": 1})
    p = plan(REF, new, NODES3, _rolled(old, new, {"n3": False}))
    assert p.writes == 0 and p.rollout.unavailable == 1 and p.rollout.held == 3
    two = spec(files=(("a", "2Gi"),), rollout={"maxUnavailable": 2})
    assert [u.name for u in plan(REF, two, NODES3, _rolled(old, two, {"n3": False})).updates] == ["s-n1"]


def test_percent_rounds_up_and_at_least_one():
    from disklet.api.lvm import RolloutSpec
    assert RolloutSpec(max_unavailable="10%").budget(3) == 1
    assert RolloutSpec(max_unavailable="10%").budget(25) == 3
    assert RolloutSpec(max_unavailable=0).budget(10) == 1
    assert RolloutSpec().budget(1000) == 1, "default: one child at a time"
    with pytest.raises(ValueError):
        RolloutSpec(max_unavailable="101%")


def test_paused_writes_nothing_and_says_so():
    old = spec(rollout={"maxUnavailable": 3})
    new = spec(files=(("a", "2Gi"),), rollout={"maxUnavailable": 3, "paused": True})
    p = plan(REF, new, NODES3 + [("n4", {})], _rolled(old, new, {}))
    assert p.writes == 0 and p.rollout.paused and p.rollout.held == 4, "no update, no create"
    st = build_status(p, Outcome(), None)
    prog = next(c for c in st.conditions if c.type == "Progressing")
    assert (prog.status, prog.reason) == ("False", "Paused")


def test_halt_on_the_first_failed_child_names_it():
    old = spec(rollout={"maxUnavailable": 2})
    new = spec(files=(("a", "2Gi"),), rollout={"maxUnavailable": 2})
    p = plan(REF, new, NODES3, _rolled(old, new, {"n1": "new-failed"}))
    assert p.writes == 0 and p.rollout.halted_by.name == "s-n1"
    st = build_status(p, Outcome(), None)
    prog = next(c for c in st.conditions if c.type == "Progressing")
    assert (prog.status, prog.reason) == ("False", "ChildFailed")
    assert "s-n1" in prog.message and "n1" in prog.message and "FileDeviceNotApplied" in prog.message
    assert st.failed_count == 1 and st.attention[0].name == "s-n1" and st.attention[0].reason == "Failed"
    cont = spec(files=(("a", "2Gi"),), rollout={"maxUnavailable": 2, "failurePolicy": "Continue"})
    assert [u.name for u in plan(REF, cont, NODES3, _rolled(old, cont, {"n1": "new-failed"})).updates] == ["s-n2"]


def test_a_refused_write_counts_as_failed():
    old = spec(rollout={"maxUnavailable": 1})
    new = spec(files=(("a", "2Gi"),), rollout={"maxUnavailable": 1})
    p = plan(REF, new, NODES3, _rolled(old, new, {}), refused={"s-n1": "HTTP 422: no"})
    assert p.writes == 0 and p.rollout.halted_by.name == "s-n1"


def test_canary_goes_first_and_must_be_ready():
    old = spec(rollout={"maxUnavailable": 3})
    new = spec(files=(("a", "2Gi"),), rollout={"maxUnavailable": 3, "canary": 1})
    assert [u.name for u in plan(REF, new, NODES3, _rolled(old, new, {})).updates] == ["s-n1"]
    p = plan(REF, new, NODES3, _rolled(old, new, {"n1": "new-pending"}))
    assert p.writes == 0 and p.rollout.canary_pending
    assert [u.name for u in plan(REF, new, NODES3, _rolled(old, new, {"n1": "new"})).updates] == ["s-n2", "s-n3"]


def test_order_label_then_name_and_creates_use_the_budget():
    sp = spec(rollout={"maxUnavailable": 1, "orderLabel": "wave"})
    nodes = [("a", {"wave": "10"}), ("b", {"wave": "2"}), ("c", {}), ("d", {"wave": "x"})]
    p = plan(REF, sp, nodes, [])
    assert [c.name for c in p.creates] == ["s-b"], "wave 2 < wave 10 (numeric), then strings, then unlabelled"
    assert [s.node for s in p.slots] == ["b", "a", "d", "c"]


def test_existing_children_without_revision_label_get_it_without_budget():
    sp = spec(rollout={"maxUnavailable": 1})
    kids = [existing(n, sp, ready=False) for n in ("n1", "n2", "n3")]
    kids = [Child(k.name, {kk: v for kk, v in k.labels.items() if kk != REVISION_LABEL}, k.owner_references, k.spec,
                  health=k.health) for k in kids]
    p = plan(REF, sp, NODES3, kids)
    assert sorted(u.name for u in p.updates) == ["s-n1", "s-n2", "s-n3"]
    assert all(u.body == {"metadata": {"labels": {REVISION_LABEL: template_revision(sp)}}} for u in p.updates)


def test_bounded_attention_and_size_at_1000_nodes():
    import json

    from disklet.api.lvm import MAX_ATTENTION
    sp = spec()
    nodes = [(f"node-{i:04d}", {}) for i in range(1000)]
    kids = [existing(n, sp, ready=(i % 10 != 0)) for i, (n, _) in enumerate(nodes)]
    st = build_status(plan(REF, sp, nodes, kids), Outcome(), None)
    assert len(st.attention) == MAX_ATTENTION and st.ready_count == 900
    assert len(json.dumps(st.to_wire())) < 8000
