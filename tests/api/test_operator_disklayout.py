"""The operator's DiskLayout pre-flight end to end: Kopf + real nix-instantiate on the real API server."""

from __future__ import annotations

import shutil

import pytest
from operator_fixtures import (
    DL,
    DL_URL,
    EXT4_AS_RAW_NIX,
    PROGRESS_PREFIX,
    assert_no_kopf_in_status,
    condition,
    disk_layout,
    node_object,
    operator_running,
    status_of,
    wait_event,
    wait_status,
)

from disklet.layout.samples import EXT4, MIXED

pytestmark = pytest.mark.skipif(shutil.which("nix-instantiate") is None, reason="nix-instantiate is not installed")


@pytest.fixture()
def kube(real_kube):
    return real_kube


def _pending(st: dict) -> bool:
    return st.get("phase") == "pending" and st.get("layoutGeneration") is not None


async def test_structured_layout_is_pending_with_hash_targets_and_validated(kube):
    async with operator_running(kube) as api:
        await api.create(DL_URL, disk_layout("data", "n1"))
        st = await wait_status(kube, DL, "data", _pending, "pending after pre-flight")
        assert st["layoutGeneration"] == 1
        assert len(st["layoutHash"]) == 64
        assert st["targetDevices"] == ["/dev/nvme1n1"]
        assert st["observedGeneration"] == 1
        assert "refusalReason" not in st
        validated = condition(st, "Validated")
        assert validated and validated["status"] == "True" and validated["reason"] == "Valid"
        obj = kube.read(DL, "data")
        assert obj["metadata"]["labels"]["disklet.io/node"] == "n1"
        assert_no_kopf_in_status(obj)
        assert any(k.startswith(PROGRESS_PREFIX + "/") for k in obj["metadata"].get("annotations", {})), \
            "Kopf's diff-base is stored in annotations with the operator's prefix"
        assert not obj["metadata"].get("finalizers"), "no timer runs on a valid layout, so no finalizer"


async def test_malformed_raw_nix_fails_with_the_parser_message(kube):
    async with operator_running(kube) as api:
        await api.create(DL_URL, disk_layout("bad", "n1", nix="{ disko.devices = "))
        st = await wait_status(kube, DL, "bad", lambda s: s.get("phase") == "failed", "failed")
        assert "syntax error" in st["message"] and "unexpected end of file" in st["message"]
        validated = condition(st, "Validated")
        assert validated["status"] == "False" and validated["reason"] == "Malformed"
        assert "layoutGeneration" not in st and "refusalReason" not in st
        await wait_event(kube, "bad", lambda e: e.get("reason") == "Malformed" and e.get("type") == "Warning",
                         "a Malformed Warning Event")


@pytest.mark.kmock("the spec is one the real server's schema refuses: the operator's own check is the defence in depth")
async def test_invalid_spec_fails_clearly_and_does_not_crash(mock_kube):
    kube = mock_kube
    async with operator_running(kube) as api:
        bad = disk_layout("typo", "n1")
        bad["spec"]["diskLayout"]["disks"][0]["gpt"]["partitions"][0]["size"] = "10GB"
        bad["spec"]["rebuilt"] = True
        await api.create(DL_URL, bad)
        st = await wait_status(kube, DL, "typo", lambda s: s.get("phase") == "failed", "failed")
        assert st["message"].startswith("invalid spec:")
        assert "rebuilt" in st["message"] and "size" in st["message"]
        assert condition(st, "Validated")["reason"] == "InvalidSpec"
        # the operator keeps working for the next object
        await api.create(DL_URL, disk_layout("good", "n2"))
        await wait_status(kube, DL, "good", _pending, "next layout pre-flighted")


async def test_no_devices_is_refused_no_target_devices(kube):
    async with operator_running(kube) as api:
        await api.create(DL_URL, disk_layout("empty", "n1", nix="{ disko.devices = { }; }"))
        st = await wait_status(kube, DL, "empty", lambda s: s.get("phase") == "refused", "refused")
        assert st["refusalReason"] == "no_target_devices"
        assert st["targetDevices"] == []
        assert condition(st, "Validated")["reason"] == "NoTargetDevices"


async def test_generation_rule_resubmit_rewrite_and_real_change(kube):
    async with operator_running(kube) as api:
        await api.create(DL_URL, disk_layout("gen", "n1"))
        st1 = await wait_status(kube, DL, "gen", _pending, "pending")
        h1 = st1["layoutHash"]

        # the agent applies it
        await api.patch(f"{DL_URL}/gen/status", {"status": {"phase": "applied", "appliedLayoutGeneration": 1,
                                                            "message": "applied by the agent"}})
        # identical resubmit: touch metadata, re-apply the same spec
        await api.patch(f"{DL_URL}/gen", {"metadata": {"annotations": {"touched": "1"}},
                                          "spec": disk_layout("gen", "n1")["spec"]})

        # the same layout written as raw Nix: spec changes (metadata.generation bumps), layout does not.
        # Its pre-flight is also the sentinel for the resubmit above (events of one object are
        # handled in order): nothing the resubmit did may show after it.
        await api.patch(f"{DL_URL}/gen", {"spec": {"diskLayout": None, "layoutNix": EXT4_AS_RAW_NIX}})
        st = await wait_status(kube, DL, "gen", lambda s: s.get("observedGeneration") == 2, "raw nix pre-flighted")
        assert st["layoutHash"] == h1 and st["layoutGeneration"] == 1
        assert st["phase"] == "applied", "an applied layout whose body did not change stays applied"
        assert "layoutNix" in condition(st, "Validated")["message"]

        # a real change: bump and back to pending
        await api.patch(f"{DL_URL}/gen", {"spec": {"layoutNix": None, "diskLayout": MIXED}})
        st = await wait_status(kube, DL, "gen", lambda s: s.get("layoutGeneration") == 2, "bumped")
        assert st["phase"] == "pending" and st["layoutHash"] != h1
        assert st["targetDevices"] == ["/dev/disk/by-id/nvme-a", "/dev/disk/by-id/nvme-b"]
        assert_no_kopf_in_status(kube.read(DL, "gen"))


async def test_agent_refusal_stays_and_malformed_then_fixed_returns_to_pending(kube):
    async with operator_running(kube) as api:
        await api.create(DL_URL, disk_layout("r", "n1"))
        await wait_status(kube, DL, "r", _pending, "pending")
        refused = await api.patch(f"{DL_URL}/r/status", {"status": {
            "phase": "refused", "refusalReason": "target_device_is_active_lvm_pv", "message": "/dev/nvme1n1 is an LVM PV"}})
        await api.patch(f"{DL_URL}/r", {"metadata": {"labels": {"team": "storage"}}})
        # malformed edit: failed. It is also the sentinel for the label edit: Kopf handles one
        # object's events in order, so once "failed" is written the label event was handled, and
        # no version stored before that one may have lost the agent's refusal.
        await api.patch(f"{DL_URL}/r", {"spec": {"diskLayout": None, "layoutNix": "{ disko.devices = "}})
        versions = await kube.versions(DL, "r", after=refused["metadata"]["resourceVersion"],
                                       until=lambda o: (o.get("status") or {}).get("phase") == "failed")
        before_failed = versions[:-1]
        assert any((v["metadata"].get("labels") or {}).get("team") == "storage" for v in before_failed)
        changed = [v["status"] for v in before_failed if (v["status"].get("phase"), v["status"].get("refusalReason"))
                   != ("refused", "target_device_is_active_lvm_pv")]
        assert not changed, f"an agent-written refusal stays until the spec changes: {changed}"
        # fixing it back to the same layout: pending again, same generation
        await api.patch(f"{DL_URL}/r", {"spec": {"diskLayout": EXT4, "layoutNix": None}})
        st = await wait_status(kube, DL, "r", lambda s: s.get("phase") == "pending", "pending again")
        assert st["layoutGeneration"] == 1 and "refusalReason" not in st


async def test_second_layout_for_a_node_is_refused_until_the_first_is_deleted(kube):
    async with operator_running(kube) as api:
        await api.create(DL_URL, disk_layout("first", "n1"))
        first = await wait_status(kube, DL, "first", lambda s: _pending(s) and condition(s, "NodeReady"),
                                  "first pending, its NodeReady written")
        # "first" is the older either way: created earlier, or in the same second (creationTimestamp
        # has a one-second resolution) and first by name, the rule's tie-break
        await api.create(DL_URL, disk_layout("second", "n1", nix=EXT4_AS_RAW_NIX))
        st = await wait_status(kube, DL, "second", lambda s: s.get("phase") == "refused", "second refused")
        assert st["refusalReason"] == "another_disk_layout_for_node"
        assert "first" in st["message"] and "n1" in st["message"]
        assert condition(st, "Validated")["reason"] == "DuplicateNodeLayout"
        events = await wait_event(kube, "second", lambda e: e.get("reason") == "DuplicateNodeLayout",
                                  "a DuplicateNodeLayout Event")
        dup = next(e for e in events if e.get("reason") == "DuplicateNodeLayout")
        assert dup["message"].startswith("another_disk_layout_for_node: ") and \
            "Next step: One DiskLayout per node: merge the layouts or delete one." in dup["message"], dup
        # a layout for another node is not a duplicate
        await api.create(DL_URL, disk_layout("other", "n2"))
        await wait_status(kube, DL, "other", _pending, "other node pending")
        # the sentinel: "other" was created after "second" was judged and is pre-flighted now;
        # the duplicate rule compared "second" with "first" before that and left "first" alone
        assert status_of(kube, DL, "first") == first, "the older layout is unaffected"

        await api.delete(f"{DL_URL}/first")
        st = await wait_status(kube, DL, "second", _pending, "second pre-flighted after the first is gone")
        assert st["layoutGeneration"] == 1 and "refusalReason" not in st
        assert st["targetDevices"] == ["/dev/nvme1n1"]
        await wait_for_no_finalizer(kube, "second")


async def wait_for_no_finalizer(kube, name: str) -> None:
    from devkit.kopfrun import wait_for
    await wait_for(lambda: not (kube.read(DL, name) or {}).get("metadata", {}).get("finalizers"),
                   message=f"operator finalizer released on {name} once it is no longer a duplicate")


async def test_node_label_is_maintained(kube):
    async with operator_running(kube) as api:
        await api.create(DL_URL, disk_layout("lab", "n7", labels={"disklet.io/node": "wrong", "keep": "me"}))
        await wait_status(kube, DL, "lab", _pending, "pending")
        from devkit.kopfrun import wait_for
        await wait_for(lambda: kube.read(DL, "lab")["metadata"]["labels"] == {"disklet.io/node": "n7", "keep": "me"},
                       message="label corrected")
        # a user removes the label: it comes back
        await api.patch(f"{DL_URL}/lab", {"metadata": {"labels": {"disklet.io/node": None}}})
        await wait_for(lambda: kube.read(DL, "lab")["metadata"]["labels"].get("disklet.io/node") == "n7",
                       message="label restored")


async def test_layout_for_a_node_that_does_not_exist_says_so_until_the_node_appears(kube):
    """A DiskLayout naming a node the cluster does not have stays pending (nothing can apply it) and
    says why: NodeReady=False, reason NodeNotFound, with a Warning Event; the Node appearing later
    (no event of the DiskLayout) turns it True."""
    async with operator_running(kube) as api:
        kube.seed("v1/nodes", node_object("n-present"))
        await api.create(DL_URL, disk_layout("here", "n-present"))
        await api.create(DL_URL, disk_layout("nowhere", "n-typo"))
        st = await wait_status(kube, DL, "nowhere", lambda s: (condition(s, "NodeReady") or {}).get("reason") == "NodeNotFound",
                               "NodeReady=False NodeNotFound on the layout of a missing node")
        cond = condition(st, "NodeReady")
        assert cond["status"] == "False" and "node n-typo does not exist" in cond["message"], cond
        assert st["phase"] == "pending"
        await wait_event(kube, "nowhere", lambda e: e.get("reason") == "NodeNotFound" and e.get("type") == "Warning",
                         "a NodeNotFound Warning Event")
        st = await wait_status(kube, DL, "here", lambda s: (condition(s, "NodeReady") or {}).get("status") == "True",
                               "NodeReady=True on the layout of an existing node")
        kube.seed("v1/nodes", node_object("n-typo"))
        st = await wait_status(kube, DL, "nowhere", lambda s: (condition(s, "NodeReady") or {}).get("status") == "True",
                               "NodeReady=True once the node exists")
        assert condition(st, "NodeReady")["reason"] == "NodeReady"
