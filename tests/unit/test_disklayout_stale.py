"""The agent re-reads a DiskLayout right before disko and applies only the live, unchanged object."""

from __future__ import annotations

import copy

from disklet_agent.logic.disklayout import stale_reason

SEEN = {"metadata": {"name": "dl", "uid": "u1"}, "spec": {"nodeName": "n1", "layoutNix": "{ }"},
        "status": {"phase": "pending", "layoutGeneration": 2}}


def test_the_same_live_object_may_be_applied():
    assert stale_reason(copy.deepcopy(SEEN), SEEN) is None


def test_deleted_recreated_deleting_or_changed_objects_are_not_applied():
    assert "no longer exists" in stale_reason(None, SEEN)
    recreated = copy.deepcopy(SEEN)
    recreated["metadata"]["uid"] = "u2"
    assert "recreated" in stale_reason(recreated, SEEN)
    deleting = copy.deepcopy(SEEN)
    deleting["metadata"]["deletionTimestamp"] = "2026-11-23T00:00:00Z"
    assert "being deleted" in stale_reason(deleting, SEEN)
    newer = copy.deepcopy(SEEN)
    newer["status"]["layoutGeneration"] = 3
    assert "generation" in stale_reason(newer, SEEN)
    edited = copy.deepcopy(SEEN)
    edited["spec"]["layoutNix"] = "{ x = 1; }"
    assert "spec changed" in stale_reason(edited, SEEN)
