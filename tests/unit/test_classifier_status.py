"""From classifier/apply results to DiskLayout status and back: the handler's pure decisions."""

from __future__ import annotations

from disklet_agent.disklayout.apply import ApplyOutcome
from disklet_agent.disklayout.gate import ApplyPlan
from disklet_agent.logic.disklayout import (
    Desired,
    Memo,
    decide,
    desired_from_outcome,
    desired_from_plan,
    outcome_status,
)

from disklet.api.disklayout import Phase, RefusalCode

MANAGED = "controller-managed"
INSTALLER = "installer-only"


def test_decide() -> None:
    pending = {"phase": "pending", "layoutGeneration": 2, "appliedLayoutGeneration": 1}
    assert decide(pending, "event", None)
    assert decide(pending, "timer", None)
    assert not decide({**pending, "appliedLayoutGeneration": 2}, "event", None)
    assert not decide({"phase": "pending"}, "event", None)  # not pre-flighted yet
    assert not decide(pending, "event", Memo(2, "applied"))  # stale body after our own patch
    assert decide(pending, "event", Memo(1, "applied"))
    refused = {**pending, "phase": "refused", "refusalReason": "target_device_has_active_mount"}
    assert decide(refused, "timer", Memo(2, "refused"))
    assert not decide(refused, "event", Memo(2, "refused"))  # our own status write: wait for the timer
    assert decide(refused, "event", None)  # first sight after a restart
    assert not decide({**refused, "refusalReason": RefusalCode.DUPLICATE_NODE_LAYOUT.value}, "timer", None)
    assert not decide({**pending, "phase": "failed"}, "timer", None)
    assert not decide({**pending, "phase": "applied"}, "timer", None)


def test_refused_status_then_no_churn() -> None:
    plan = ApplyPlan(ok=False, failed=False, code=RefusalCode.ACTIVE_LVM_PV, message="refused 1 of 1 target(s): ...")
    d = desired_from_plan(plan)
    assert d is not None and d.phase is Phase.REFUSED
    cur = {"phase": "pending", "layoutGeneration": 3, "targetDevices": ["/dev/sdb"]}
    ch = outcome_status(cur, d, node_mode=MANAGED, targets=["/dev/sdb"], generation=5, now="2024-01-01T00:00:00Z")
    assert ch["phase"] == "refused" and ch["refusalReason"] == "target_device_is_active_lvm_pv"
    assert ch["nodeMode"] == "controller-managed" and ch["lastAttemptTime"] == "2024-01-01T00:00:00Z"
    assert "targetDevices" not in ch
    [cond, ready] = ch["conditions"]
    assert cond["type"] == "Applied" and cond["status"] == "False" and cond["reason"] == "Refused"
    assert ready["type"] == "Ready" and ready["status"] == "False" and ready["reason"] == "Refused"
    assert ready["observedGeneration"] == cond["observedGeneration"] == 5
    assert ch["targetDevicesText"] == "/dev/sdb"
    after = {**cur, **ch}
    assert outcome_status(after, d, node_mode=MANAGED, targets=["/dev/sdb"], generation=5,
                          now="2024-01-01T00:05:00Z") == {}


def test_installer_only_stays_pending_with_condition() -> None:
    d = Desired(Phase.PENDING, "waiting: disk management mode is installer-only ...", "InstallerOnly", attempted=False)
    ch = outcome_status({"phase": "pending", "layoutGeneration": 1}, d, node_mode=INSTALLER, targets=None, generation=1)
    assert "phase" not in ch and ch["nodeMode"] == "installer-only" and "lastAttemptTime" not in ch
    assert ch["conditions"][0]["reason"] == "InstallerOnly"


def test_applied_clears_refusal_and_records_generation() -> None:
    out = ApplyOutcome(True, "done", "disko applied the layout")
    d = desired_from_outcome(out)
    cur = {"phase": "refused", "refusalReason": "target_device_has_active_mount", "layoutGeneration": 4,
           "appliedLayoutGeneration": 3}
    ch = outcome_status(cur, d, node_mode=MANAGED, targets=["/dev/sdb"], generation=7, now="2024-01-01T00:00:00Z")
    assert ch["phase"] == "applied" and ch["refusalReason"] is None  # merge patch null deletes it
    assert ch["appliedLayoutGeneration"] == 4 and ch["lastAppliedTime"] == "2024-01-01T00:00:00Z"
    assert ch["conditions"][0]["status"] == "True"
    ready = next(c for c in ch["conditions"] if c["type"] == "Ready")
    assert (ready["status"], ready["reason"], ready["observedGeneration"]) == ("True", "Applied", 7)


def test_failed_outcome() -> None:
    d = desired_from_outcome(ApplyOutcome(False, "disko", "disko exited 1; current.nix unchanged"))
    assert d.phase is Phase.FAILED and "at disko" in d.message and not d.applied
    assert desired_from_plan(ApplyPlan(ok=False, failed=True, code=None, message="malformed layout: x")).phase is Phase.FAILED  # type: ignore[union-attr]
    assert desired_from_plan(ApplyPlan(ok=True, failed=False, code=None, message="ok")) is None


