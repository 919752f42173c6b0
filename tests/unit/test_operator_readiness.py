"""LVMVolumeGroup readiness as the operator computes it (NodeReady, AgentReady, Ready), without Kopf."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from disklet_operator.logic.conditions import merge_owned_conditions, parse_conditions
from disklet_operator.logic.labels import node_label_patch
from disklet_operator.logic.readiness import (
    DEGRADED_BUT_SERVING,
    ConditionState,
    agent_readiness,
    aggregate_ready,
    carried_state,
    lease_index_behind,
    node_readiness,
    readiness_conditions,
)

from disklet.api.common import Condition
from disklet.api.lvm import Reason

NOW = datetime(2025, 6, 1, 12, 0, 0, tzinfo=UTC)
OK = ConditionState("True", "x", "fine")
T = "2025-01-01T00:00:00Z"


def _c(type_: str, status: str, reason: str, message: str = "m") -> Condition:
    return Condition(type=type_, status=status, reason=reason, message=message, last_transition_time=T)


def test_node_readiness():
    assert node_readiness("n1", False, None) == ConditionState("False", "NodeNotFound", "node n1 does not exist")
    assert node_readiness(None, False, None).reason == "NodeNotFound"
    assert node_readiness("n1", True, {"status": "True"}).status == "True"
    down = node_readiness("n1", True, {"status": "False", "reason": "KubeletNotReady", "message": "PLEG"})
    assert (down.status, down.reason) == ("False", "NodeNotReady") and "PLEG" in down.message
    assert node_readiness("n1", True, {"status": "Unknown"}).status == "Unknown"
    assert node_readiness("n1", True, None).reason == "NodeStatusUnknown"


def _micro(dt: datetime) -> str:
    return dt.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def test_agent_readiness_lease_age():
    fresh = agent_readiness("n1", _micro(NOW - timedelta(seconds=59)), True, NOW)
    assert (fresh.status, fresh.reason) == ("True", "AgentReporting")
    stale = agent_readiness("n1", _micro(NOW - timedelta(seconds=61)), True, NOW)
    assert (stale.status, stale.reason) == ("False", "AgentNotReporting")
    assert agent_readiness("n1", None, False, NOW).reason == "AgentNotReporting"
    assert agent_readiness("n1", None, True, NOW).status == "False"
    assert agent_readiness("n1", "garbage", True, NOW).status == "False"
    assert agent_readiness("n1", _micro(NOW + timedelta(seconds=5)), True, NOW).status == "True", "clock skew"
    # stable messages: re-evaluating later with the same lease writes nothing new
    a = agent_readiness("n1", _micro(NOW - timedelta(seconds=10)), True, NOW)
    b = agent_readiness("n1", _micro(NOW - timedelta(seconds=10)), True, NOW + timedelta(seconds=20))
    assert a == b


def test_aggregate_ready_rules():
    serving = [_c("VGReady", "True", "Applied"), _c("VGConfigurationApplied", "True", "Applied")]
    assert aggregate_ready(OK, OK, serving).status == "True"
    assert aggregate_ready(ConditionState("False", "NodeNotFound", "gone"), OK, serving).reason == "NodeNotReady"
    assert aggregate_ready(OK, ConditionState("False", "AgentNotReporting", "x"), serving).reason == "AgentNotReporting"
    assert aggregate_ready(OK, OK, []).reason == "VGNotReported"
    assert aggregate_ready(OK, OK, [_c("VGReady", "False", "Creating")]).reason == "VGNotReady"
    assert aggregate_ready(OK, OK, [_c("VGReady", "True", "Applied")]).status == "True"


@pytest.mark.parametrize("reason", sorted(DEGRADED_BUT_SERVING))
def test_degraded_but_serving_reasons_stay_ready(reason):
    conds = [_c("VGReady", "True", "Applied"), _c("VGConfigurationApplied", "False", reason, "grow failed")]
    r = aggregate_ready(OK, OK, conds)
    assert (r.status, r.reason) == ("True", "Degraded") and reason in r.message


@pytest.mark.parametrize("reason", [Reason.TERMINATING, Reason.CREATING, "SomethingNew"])
def test_out_of_service_reasons(reason):
    conds = [_c("VGReady", "True", "Applied"), _c("VGConfigurationApplied", "False", reason)]
    assert aggregate_ready(OK, OK, conds).status == "False"


def test_readiness_conditions_keep_transition_time_and_agent_conditions():
    agent = [_c("VGReady", "True", "Applied"), _c("VGConfigurationApplied", "True", "Applied")]
    first = readiness_conditions(agent, OK, OK, 1, now="2025-06-01T00:00:00Z")
    assert [c.type for c in first] == ["NodeReady", "AgentReady", "Ready"]
    raw = merge_owned_conditions([c.to_wire() for c in agent], first)
    assert [c["type"] for c in raw] == ["VGReady", "VGConfigurationApplied", "NodeReady", "AgentReady", "Ready"]
    again = readiness_conditions(parse_conditions(raw), OK, OK, 1, now="2025-06-01T01:00:00Z")
    assert merge_owned_conditions(raw, again) == raw, "nothing changed: nothing to write"
    down = readiness_conditions(parse_conditions(raw), OK, ConditionState("False", "AgentNotReporting", "x"), 1,
                                now="2025-06-01T02:00:00Z")
    ready = next(c for c in down if c.type == "Ready")
    assert (ready.status, ready.last_transition_time) == ("False", "2025-06-01T02:00:00Z")
    node = next(c for c in down if c.type == "NodeReady")
    assert node.last_transition_time == "2025-06-01T00:00:00Z"


def test_merge_keeps_foreign_conditions_verbatim_and_skips_garbage():
    foreign = {"type": "VGReady", "status": "True", "reason": "Applied", "lastTransitionTime": T, "extra": "kept"}
    merged = merge_owned_conditions([foreign, "junk"], [_c("Ready", "True", "Ready")])
    assert merged[0] == foreign and merged[1]["type"] == "Ready"
    assert [c.type for c in parse_conditions([foreign, {"type": "bad"}, 3])] == ["VGReady"]


def test_node_label_patch():
    assert node_label_patch({"disklet.io/node": "n1"}, "n1") is None
    assert node_label_patch({"disklet.io/node": "n2", "x": "y"}, "n1") == {"disklet.io/node": "n1"}
    assert node_label_patch(None, "n1") == {"disklet.io/node": "n1"}
    assert node_label_patch({}, None) is None, "no node: never guess"


def test_carried_state_is_what_the_loop_compares_with_a_fresh_evaluation():
    wire = [c.to_wire() for c in readiness_conditions([], node_readiness("n1", True, {"status": "True"}),
                                                        agent_readiness("n1", T, True, NOW), 1)]
    assert carried_state(wire, "NodeReady") == node_readiness("n1", True, {"status": "True"})
    assert carried_state(wire, "AgentReady") == agent_readiness("n1", T, True, NOW)
    assert carried_state(wire + ["garbage"], "VGReady") is None


def test_lease_index_behind_only_when_the_server_shows_a_later_renewal():
    old, new = "2025-06-01T11:58:00.000000Z", "2025-06-01T11:59:55.000000Z"
    assert lease_index_behind({"a": old, "b": new}, {"a": old, "b": new}) == [], "index current: every agent stale is real"
    assert lease_index_behind({"a": old}, {"a": new}) == ["a"], "a renewal the index has not seen"
    assert lease_index_behind({}, {"b": new}) == ["b"], "a Lease the index lacks"
    assert lease_index_behind({"a": new}, {"a": old}) == [], "the index ahead of a lagging read is not behind"
    assert lease_index_behind({"a": old}, {}) == [], "a deleted Lease does not make the index behind"
    assert lease_index_behind({"a": None}, {"a": new}) == ["a"]
