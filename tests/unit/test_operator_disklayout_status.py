"""The operator's DiskLayout status rules, without Kopf: generation, phase ownership, duplicates."""

from __future__ import annotations

from types import SimpleNamespace

from disklet_operator.logic.disklayout_status import (
    VALIDATED,
    VerdictKind,
    desired_status,
    duplicate_verdict,
    invalid_spec_verdict,
    parse_status,
    verdict_from_preflight,
)
from disklet_operator.logic.duplicates import LayoutRef, older_layout, owner_of
from disklet_operator.logic.generation import next_layout_generation
from pydantic import ValidationError

from disklet.api.common import get_condition
from disklet.api.disklayout import DiskLayoutSpec, DiskLayoutStatus, Phase, RefusalCode
from disklet.kube.patch import owned_keys_patch

H1, H2 = "a" * 64, "b" * 64


def _pre(phase: str, h: str | None = H1, targets=("/dev/sda",), code=None, message="ok"):
    return verdict_from_preflight(SimpleNamespace(phase=phase, refusal_reason=code, message=message, body="{}",
                                                  layout_hash=h, target_devices=list(targets)))


def test_generation_bumps_only_when_the_hash_changes():
    first = next_layout_generation(None, None, H1)
    assert (first.layout_hash, first.layout_generation, first.bumped) == (H1, 1, True)
    same = next_layout_generation(H1, 1, H1)
    assert (same.layout_generation, same.bumped) == (1, False)
    changed = next_layout_generation(H1, 1, H2)
    assert (changed.layout_hash, changed.layout_generation, changed.bumped) == (H2, 2, True)
    unresolved = next_layout_generation(H2, 2, None)
    assert (unresolved.layout_hash, unresolved.layout_generation, unresolved.bumped) == (H2, 2, False)
    back = next_layout_generation(H2, 2, H1)
    assert back.layout_generation == 3, "going back to an older body is a change too (no rollback magic)"


def test_first_valid_verdict_is_pending_with_hash_targets_and_validated():
    st = desired_status(DiskLayoutStatus(), _pre("pending"), generation=1, now="2025-01-01T00:00:00Z")
    assert (st.phase, st.layout_hash, st.layout_generation, st.target_devices, st.observed_generation) == \
        (Phase.PENDING, H1, 1, ["/dev/sda"], 1)
    cond = get_condition(st.conditions, VALIDATED)
    assert (cond.status, cond.reason, cond.observed_generation) == ("True", "Valid", 1)


def test_agent_phases_survive_an_unchanged_body_and_reset_on_a_bump():
    base = desired_status(DiskLayoutStatus(), _pre("pending"), 1)
    for phase, code in ((Phase.APPLIED, None), (Phase.REFUSED, RefusalCode.ACTIVE_LVM_PV), (Phase.FAILED, None)):
        agent = base.model_copy(update={"phase": phase, "refusal_reason": code, "message": "agent says"})
        same = desired_status(agent, _pre("pending", message="resolved from layoutNix"), 2)
        assert (same.phase, same.refusal_reason, same.message, same.layout_generation) == (phase, code, "agent says", 1)
        assert same.observed_generation == 2
        bumped = desired_status(agent, _pre("pending", h=H2), 3)
        assert (bumped.phase, bumped.refusal_reason, bumped.layout_generation) == (Phase.PENDING, None, 2)


def test_operator_verdicts_always_win_and_a_fix_returns_to_pending():
    base = desired_status(DiskLayoutStatus(), _pre("pending"), 1)
    applied = base.model_copy(update={"phase": Phase.APPLIED})
    bad = desired_status(applied, _pre("failed", h=None, targets=(), message="invalid layout: syntax error"), 2)
    assert (bad.phase, bad.message, bad.layout_hash, bad.layout_generation) == (Phase.FAILED, "invalid layout: syntax error", H1, 1)
    assert get_condition(bad.conditions, VALIDATED).reason == "Malformed"
    fixed = desired_status(bad, _pre("pending"), 3)
    assert (fixed.phase, fixed.layout_generation) == (Phase.PENDING, 1), "operator's own failed is not sticky"
    empty = desired_status(DiskLayoutStatus(), _pre("refused", targets=(), code="no_target_devices"), 1)
    assert (empty.phase, empty.refusal_reason, empty.target_devices) == (Phase.REFUSED, "no_target_devices", [])
    assert get_condition(empty.conditions, VALIDATED).reason == "NoTargetDevices"


def test_duplicate_verdict_names_the_owner_and_keeps_the_generation():
    v = duplicate_verdict("n1", "first")
    assert v.kind is VerdictKind.DUPLICATE and v.refusal_reason is RefusalCode.DUPLICATE_NODE_LAYOUT
    st = desired_status(DiskLayoutStatus(), v, 1)
    assert (st.phase, st.refusal_reason) == (Phase.REFUSED, "another_disk_layout_for_node")
    assert "first" in st.message and "n1" in st.message
    assert st.layout_generation is None and st.layout_hash is None


def test_invalid_spec_verdict_lists_each_field():
    try:
        DiskLayoutSpec.model_validate({"nodeName": "n1", "layoutNix": "{}", "rebuilt": True, "timeoutSeconds": 0})
    except ValidationError as exc:
        v = invalid_spec_verdict(exc)
    assert v.phase is Phase.FAILED
    assert "spec.rebuilt" in v.message and "spec.timeoutSeconds" in v.message


def test_duplicate_resolution_oldest_then_name():
    refs = [LayoutRef("b", "2025-01-01T00:00:01Z"), LayoutRef("a", "2025-01-01T00:00:01Z"), LayoutRef("c", "2025-01-01T00:00:02Z")]
    assert owner_of(refs).name == "a"
    assert older_layout("a", refs) is None
    assert older_layout("c", refs) == "a"
    assert older_layout("x", [LayoutRef("x", None), LayoutRef("y", "2025-01-01T00:00:00Z")]) == "y", \
        "no timestamp never steals the node"
    assert older_layout("solo", [LayoutRef("solo", "2025-01-01T00:00:00Z")]) is None
    assert owner_of([]) is None


def test_status_patch_only_changed_owned_keys_and_tolerant_parse():
    old = {"phase": "applied", "nodeMode": "controller-managed", "layoutGeneration": 1, "message": "m"}
    new = {"phase": "applied", "layoutGeneration": 2}
    assert owned_keys_patch(old, new, {"phase", "layoutGeneration", "message"}) == {"layoutGeneration": 2, "message": None}
    assert owned_keys_patch(old, dict(old)) == {}
    st = parse_status({"phase": "applied", "layoutGeneration": "nope", "conditions": [{"type": "X"}, {
        "type": "Applied", "status": "True", "reason": "Done", "lastTransitionTime": "2025-01-01T00:00:00Z"}]})
    assert st.phase is Phase.APPLIED and st.layout_generation is None
    assert [c.type for c in st.conditions] == ["Applied"]


# ---------------------------------------------------------------------------- Ready (kubectl wait --for=condition=Ready)
def test_ready_follows_the_phase_and_the_applied_generation():
    from disklet.api.disklayout_ready import ready_state
    assert ready_state("applied", 3, 3) == ("True", "Applied", "layout generation 3 is applied on the node")
    assert ready_state("applied", 4, 3)[:2] == ("False", "Outdated")
    assert ready_state("pending", 4, 3, "waiting")[:2] == ("False", "Pending")
    assert ready_state("refused", 1, None, "in use", "target_device_has_active_mount") == (
        "False", "Refused", "target_device_has_active_mount: in use")
    assert ready_state("failed", 1, None, "disko exited 1")[:2] == ("False", "Failed")
    assert ready_state(None, None, None)[:2] == ("False", "NotValidated")


def test_operator_writes_ready_with_observed_generation_on_every_condition():
    from disklet_operator.logic.disklayout_status import PreflightVerdict as Verdict
    from disklet_operator.logic.disklayout_status import VerdictKind, desired_status

    from disklet.api.common import get_condition

    old = DiskLayoutStatus.model_validate({"phase": "applied", "layoutHash": "h1", "layoutGeneration": 2,
                                           "appliedLayoutGeneration": 2, "conditions": [
                                               {"type": "Validated", "status": "True", "reason": "Valid",
                                                "message": "", "lastTransitionTime": "2024-05-01T09:00:00Z"}]})
    same = desired_status(old, Verdict(VerdictKind.VALID, "ok", "h1", ("/dev/sdb", "/dev/sdc")), 9, now="2024-05-01T10:00:00Z")
    ready = get_condition(same.conditions, "Ready")
    assert ready is not None and (ready.status, ready.reason) == ("True", "Applied")
    assert all(c.observed_generation == 9 for c in same.conditions or [])
    assert same.target_devices_text == "/dev/sdb,/dev/sdc"
    changed = desired_status(same, Verdict(VerdictKind.VALID, "ok", "h2", ("/dev/sdb",)), 10, now="2024-05-01T10:00:00Z")
    ready = get_condition(changed.conditions, "Ready")
    assert changed.phase == "pending" and ready is not None and (ready.status, ready.reason) == ("False", "Pending")
    assert ready.observed_generation == 10
