"""LVMVolumeGroupSet controller end to end: Kopf with the real handlers on the real API server
(garbage collection by the real controller-manager, an admission refusal by a ValidatingAdmissionPolicy
of the test's own); a template the server's schema refuses is tested on the mock (marked kmock)."""

from __future__ import annotations

import contextlib
import time

import pytest
from lvgset_fixtures import (
    LVG,
    LVG_URL,
    LVGSET,
    NODE_URL,
    NODES,
    SET_URL,
    children_of,
    file_device,
    lvgset,
    lvgset_operator,
    node,
    patch,
    post,
)

from devkit.kopfrun import wait_for


@pytest.fixture()
def kube(real_kube):
    return real_kube


def _pass_after(ctl, name: str, t0: float):
    """The first pass of ``name`` that started after ``t0`` (time.monotonic()), or None."""
    return next((p for p in ctl.sets[name].passes if p.started > t0), None)


def _status(kube, name: str) -> dict:
    return (kube.read(LVGSET, name) or {}).get("status") or {}


def _phase_is(kube, name: str, phase: str, generation: int = 1, desired: int | None = None):
    def check():
        st = _status(kube, name)
        return (st.get("phase") == phase and st.get("observedGeneration") == generation
                and (desired is None or st.get("desiredLVMVolumeGroupsCount") == desired))
    return check


async def test_file_only_template_creates_children_with_file_devices_and_owner_refs(kube):
    for n in ("n1", "n2", "n3"):
        kube.seed(NODES, node(n))
    async with lvgset_operator(kube), kube.session() as s:
        created = await post(s, SET_URL, lvgset("files", file_devices=[file_device("a", "2Gi")]))
        await wait_for(_phase_is(kube, "files", "Created"), message="set Created")
    kids = children_of(kube, "files")
    assert sorted(kids) == ["files-n1", "files-n2", "files-n3"]
    for n in ("n1", "n2", "n3"):
        kid = kids[f"files-{n}"]
        assert kid["spec"] == {"type": "Local", "local": {"nodeName": n}, "actualVGNameOnTheNode": "vg-data",
                               "fileDevices": [file_device("a", "2Gi")]}
        assert kid["metadata"]["labels"] == {"disklet.io/node": n, "disklet.io/lvmvolumegroupset": "files",
                                             "disklet.io/lvgset-revision": _status(kube, "files")["currentRevision"]}
        assert kid["metadata"]["ownerReferences"] == [{
            "apiVersion": "disklet.io/v1alpha1", "kind": "LVMVolumeGroupSet", "name": "files",
            "uid": created["metadata"]["uid"], "controller": True, "blockOwnerDeletion": True}]
    st = _status(kube, "files")
    assert (st["currentLVMVolumeGroupsCount"], st["desiredLVMVolumeGroupsCount"], st["updatedCount"]) == (3, 3, 3)
    assert [a["name"] for a in st["attention"]] == ["files-n1", "files-n2", "files-n3"], "no agent: none is Ready"
    assert st["revisions"] == [{"revision": st["currentRevision"],
                                "template": created["spec"]["lvmVolumeGroupTemplate"]}]
    ready = [c for c in st["conditions"] if c["type"] == "Ready"]
    assert ready and ready[0]["status"] == "True" and ready[0]["reason"] == "AllCreated"
    meta = kube.read(LVGSET, "files")["metadata"]
    assert not meta.get("finalizers") and not meta.get("annotations"), "nothing Kopf-internal is stored on the set"


async def test_mixed_template_only_matching_nodes_get_every_field(kube):
    kube.seed(NODES, node("w1", role="storage", zone="a"))
    kube.seed(NODES, node("w2", role="storage", zone="b"))
    kube.seed(NODES, node("w3", role="compute", zone="a"))
    kube.seed(NODES, node("w4", role="storage", zone="a", **{"disklet.io/no-lvm": "true"}))
    body = lvgset("mixed", vg="vg-mixed",
                  selector={"matchLabels": {"role": "storage"},
                            "matchExpressions": [{"key": "zone", "operator": "In", "values": ["a", "b"]},
                                                 {"key": "disklet.io/no-lvm", "operator": "DoesNotExist"}]},
                  block_selector={"matchLabels": {"disklet.io/consumable": "true"}},
                  file_devices=[file_device("f1", "5Gi"), file_device("f2", "1Gi", BASE := "/var/lib/disklet/file-devices/x")],
                  thin_pools=[{"name": "tp", "size": "50%", "allocationLimit": "200%"}],
                  labels={"team": "db"})
    async with lvgset_operator(kube), kube.session() as s:
        await post(s, SET_URL, body)
        await wait_for(_phase_is(kube, "mixed", "Created"), message="set Created")
    kids = children_of(kube, "mixed")
    assert sorted(kids) == ["mixed-w1", "mixed-w2"]
    spec = kids["mixed-w2"]["spec"]
    assert spec == {"type": "Local", "local": {"nodeName": "w2"}, "actualVGNameOnTheNode": "vg-mixed",
                    "blockDeviceSelector": {"matchLabels": {"disklet.io/consumable": "true"}},
                    "fileDevices": [file_device("f1", "5Gi"), file_device("f2", "1Gi", BASE)],
                    "thinPools": [{"name": "tp", "size": "50%", "allocationLimit": "200%"}]}
    assert kids["mixed-w1"]["metadata"]["labels"]["team"] == "db"


async def test_template_append_updates_every_child_and_idle_pass_writes_nothing(kube):
    for n in ("a1", "a2", "a3", "a4"):
        kube.seed(NODES, node(n))
    async with lvgset_operator(kube) as ctl, kube.session() as s:
        await post(s, SET_URL, lvgset("grow", file_devices=[file_device("one")]))
        await wait_for(_phase_is(kube, "grow", "Created"), message="set Created")
        gens = {k: v["metadata"]["generation"] for k, v in children_of(kube, "grow").items()}
        await patch(s, f"{SET_URL}/grow", {"spec": {"lvmVolumeGroupTemplate": {
            "fileDevices": [file_device("one", "3Gi"), file_device("two", "2Gi")]}}})
        await wait_for(_phase_is(kube, "grow", "Created", generation=2), message="generation 2 observed")
        kids = children_of(kube, "grow")
        assert len(kids) == 4
        for name, kid in kids.items():
            assert kid["spec"]["fileDevices"] == [file_device("one", "3Gi"), file_device("two", "2Gi")], name
            assert kid["metadata"]["generation"] == gens[name] + 1

        # idle: a resync, and a node event that cannot change membership → passes with no write.
        # The pass to judge is one that STARTED after the wake: the status above is written before
        # the generation-2 pass is recorded, so "the next recorded pass" could be that busy pass
        # (how this test failed under CPU load; the controller was right).
        # Counted by the server: no write to a set or a child between the wake and the idle pass.
        before = kube.mutations("lvmvolumegroups", "lvmvolumegroupsets")
        t0 = time.monotonic()
        await patch(s, f"{NODE_URL}/a1", {"metadata": {"labels": {"unrelated": "x"}}})
        ctl.wake("grow")
        await wait_for(lambda: _pass_after(ctl, "grow", t0), message="an idle pass")
        assert kube.mutations("lvmvolumegroups", "lvmvolumegroupsets") == before, "the idle pass wrote"
        assert _pass_after(ctl, "grow", t0).requests == 0


async def test_node_label_change_new_child_and_orphan_kept_with_event(kube):
    kube.seed(NODES, node("m1", disk="yes"))
    kube.seed(NODES, node("m2", disk="yes"))
    kube.seed(NODES, node("m3"))
    sel = {"matchExpressions": [{"key": "disk", "operator": "In", "values": ["yes"]}]}
    async with lvgset_operator(kube) as ctl, kube.session() as s:
        await post(s, SET_URL, lvgset("lab", selector=sel, file_devices=[file_device("a")]))
        await wait_for(_phase_is(kube, "lab", "Created", desired=2), message="2 children")
        await patch(s, f"{NODE_URL}/m3", {"metadata": {"labels": {"disk": "yes"}}})
        await wait_for(_phase_is(kube, "lab", "Created", desired=3), message="new node matched")
        assert sorted(children_of(kube, "lab")) == ["lab-m1", "lab-m2", "lab-m3"]
        await patch(s, f"{NODE_URL}/m1", {"metadata": {"labels": {"disk": None}}})
        await wait_for(lambda: _status(kube, "lab").get("orphanedCount") == 1, message="orphan reported")
        await wait_for(lambda: any(e.get("reason") == "NodeNoLongerMatches" for e in kube.read_all("v1/events")),
                       message="orphan Event")
        # the orphan is no longer updated: a template change reaches only managed children
        await patch(s, f"{SET_URL}/lab", {"spec": {"lvmVolumeGroupTemplate": {
            "fileDevices": [file_device("a"), file_device("b")]}}})
        await wait_for(_phase_is(kube, "lab", "Created", generation=2, desired=2), message="generation 2")
        assert ctl.sets["lab"].members == {"m2", "m3"}
    st = _status(kube, "lab")
    assert [(a["name"], a["nodeName"]) for a in st["attention"] if a["reason"] == "Orphaned"] == [("lab-m1", "m1")]
    assert (st["currentLVMVolumeGroupsCount"], st["orphanedCount"]) == (2, 1)
    kids = children_of(kube, "lab")
    assert sorted(kids) == ["lab-m1", "lab-m2", "lab-m3"], "the orphan is kept (its VG may hold data)"
    assert [f["name"] for f in kids["lab-m1"]["spec"]["fileDevices"]] == ["a"]
    assert [f["name"] for f in kids["lab-m2"]["spec"]["fileDevices"]] == ["a", "b"]
    event = next(e for e in kube.read_all("v1/events") if e.get("reason") == "NodeNoLongerMatches")
    assert "lab-m1" in event["message"] and event["involvedObject"]["name"] == "lab"


@pytest.mark.timeout(150)
async def test_deleting_the_set_garbage_collects_children(kube):
    """The real garbage collector deletes the children through their ownerReferences (it notices a
    CRD installed moments ago only at its next discovery sync, up to about 30 s later)."""
    for n in ("d1", "d2"):
        kube.seed(NODES, node(n))
    async with lvgset_operator(kube), kube.session() as s:
        await post(s, SET_URL, lvgset("gone", file_devices=[file_device("a")]))
        await wait_for(_phase_is(kube, "gone", "Created"), message="set Created")
        assert len(children_of(kube, "gone")) == 2
        r = await s.delete(f"{SET_URL}/gone")
        assert r.status == 200, await r.text()
        await wait_for(lambda: not children_of(kube, "gone"), message="children collected", timeout=90, interval=0.2)
    assert kube.read(LVGSET, "gone") is None


VAP = "admissionregistration.k8s.io/v1/validatingadmissionpolicies"
VAP_BINDING = "admissionregistration.k8s.io/v1/validatingadmissionpolicybindings"


@contextlib.contextmanager
def refusing_updates_of(kube, name: str, message: str):
    """The real server refuses every update of LVMVolumeGroup ``name`` (a ValidatingAdmissionPolicy
    of the test's own, removed afterwards): an admission refusal on demand."""
    policy = f"disklet-test-refuse-{name}"
    kube.seed(VAP, {"apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingAdmissionPolicy",
                    "metadata": {"name": policy},
                    "spec": {"failurePolicy": "Fail", "matchConstraints": {"resourceRules": [{
                        "apiGroups": ["disklet.io"], "apiVersions": ["*"], "operations": ["UPDATE"],
                        "resources": ["lvmvolumegroups"]}]},
                             "validations": [{"expression": f"object.metadata.name != '{name}'",
                                              "message": message}]}})
    kube.seed(VAP_BINDING, {"apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingAdmissionPolicyBinding",
                            "metadata": {"name": policy},
                            "spec": {"policyName": policy, "validationActions": ["Deny"]}})
    try:
        yield
    finally:
        kube.delete(VAP_BINDING, policy)
        kube.delete(VAP, policy)


def _refused_by_the_server(kube, name: str) -> bool:
    """A server-side dry run of a label change on ``name``: refused once the policy is in force."""
    return kube.try_patch(LVG, name, {"metadata": {"labels": {"probe": "1"}}}, dry_run=True) == 422


async def test_rejected_child_update_is_reported_and_others_still_updated(kube):
    for n in ("r1", "r2", "r3"):
        kube.seed(NODES, node(n))

    async with lvgset_operator(kube) as ctl, kube.session() as s:
        await post(s, SET_URL, lvgset("rej", file_devices=[file_device("a")]))
        await wait_for(_phase_is(kube, "rej", "Created"), message="set Created")
        with refusing_updates_of(kube, "rej-r2", "spec.fileDevices: simulated admission refusal"):
            await wait_for(lambda: _refused_by_the_server(kube, "rej-r2"), message="the policy in force", timeout=30)
            await patch(s, f"{SET_URL}/rej", {"spec": {"lvmVolumeGroupTemplate": {
                "fileDevices": [file_device("a"), file_device("b")]}}})
            await wait_for(lambda: _status(kube, "rej").get("observedGeneration") == 2, message="generation 2")
            # the refused write is not re-sent on idle passes (counted by the server)
            before = kube.mutations("lvmvolumegroups", "lvmvolumegroupsets")
            t0 = time.monotonic()
            ctl.wake("rej")
            await wait_for(lambda: _pass_after(ctl, "rej", t0), message="an idle pass")
            assert kube.mutations("lvmvolumegroups", "lvmvolumegroupsets") == before
    kids = children_of(kube, "rej")
    assert [f["name"] for f in kids["rej-r1"]["spec"]["fileDevices"]] == ["a", "b"]
    assert [f["name"] for f in kids["rej-r3"]["spec"]["fileDevices"]] == ["a", "b"]
    assert [f["name"] for f in kids["rej-r2"]["spec"]["fileDevices"]] == ["a"]
    st = _status(kube, "rej")
    ready = next(c for c in st["conditions"] if c["type"] == "Ready")
    assert st["reason"] == "UpdateFailed" and ready["status"] == "False"
    assert "rej-r2" in ready["message"] and "simulated admission refusal" in ready["message"]
    progressing = next(c for c in st["conditions"] if c["type"] == "Progressing")
    assert progressing["reason"] == "ChildFailed" and "rej-r2" in progressing["message"], "Halt names the child"


@pytest.mark.kmock("the template is one the real server's schema refuses: the controller's own check is the defence in depth")
async def test_invalid_template_writes_no_child(mock_kube):
    """A template the model refuses (the mock runs no CEL) never reaches any child."""
    kube = mock_kube
    kube.seed(NODES, node("v1"))
    kube.seed(NODES, node("v2"))
    async with lvgset_operator(kube), kube.session() as s:
        await post(s, SET_URL, lvgset("bad", file_devices=[file_device("a")]))
        await wait_for(_phase_is(kube, "bad", "Created"), message="set Created")
        await patch(s, f"{SET_URL}/bad", {"spec": {"lvmVolumeGroupTemplate": {
            "fileDevices": [file_device("a"), file_device("b", "1G")]}}})
        await wait_for(lambda: _status(kube, "bad").get("reason") == "ValidationFailed", message="ValidationFailed")
    for kid in children_of(kube, "bad").values():
        assert [f["name"] for f in kid["spec"]["fileDevices"]] == ["a"]
    assert all(o["metadata"]["name"].startswith("bad-") for o in kube.read_all(LVG))



async def _make_ready(s, kube, name: str) -> None:
    """What the agent (VGConfigurationApplied, observedGeneration) and the operator (Ready) would write."""
    kid = kube.read(LVG, name)
    gen = kid["metadata"]["generation"]
    conds = [{"type": t, "status": "True", "reason": r, "message": "", "lastTransitionTime": "2026-11-25T00:00:00Z",
              "observedGeneration": gen} for t, r in (("VGConfigurationApplied", "Applied"), ("VGReady", "Applied"),
                                                     ("Ready", "Ready"))]
    await patch(s, f"{LVG_URL}/{name}/status", {"status": {"observedGeneration": gen, "conditions": conds}})


async def test_max_unavailable_one_updates_one_child_at_a_time_and_paused_none(kube):
    for n in ("u1", "u2", "u3"):
        kube.seed(NODES, node(n))
    async with lvgset_operator(kube) as ctl, kube.session() as s:
        await post(s, SET_URL, lvgset("roll", file_devices=[file_device("a")], rollout={"maxUnavailable": 1}))
        for n in ("u1", "u2", "u3"):  # one child at a time, each created after the previous is Ready
            await wait_for(lambda n=n: f"roll-{n}" in children_of(kube, "roll"), message=f"roll-{n} created")
            assert len(children_of(kube, "roll")) == ("u1", "u2", "u3").index(n) + 1
            await _make_ready(s, kube, f"roll-{n}")
        await wait_for(lambda: _status(kube, "roll").get("updatedReadyCount") == 3, message="all Ready")

        await patch(s, f"{SET_URL}/roll", {"spec": {"lvmVolumeGroupTemplate": {"fileDevices": [file_device("a", "2Gi")]}}})
        rev = lambda: _status(kube, "roll").get("currentRevision")  # noqa: E731
        old_rev = children_of(kube, "roll")["roll-u2"]["metadata"]["labels"]["disklet.io/lvgset-revision"]
        await wait_for(lambda: rev() != old_rev and _status(kube, "roll").get("observedGeneration") == 2,
                       message="generation 2 observed")

        def at_new():
            return sorted(k for k, v in children_of(kube, "roll").items()
                          if v["metadata"]["labels"].get("disklet.io/lvgset-revision") == rev())
        await wait_for(lambda: at_new() == ["roll-u1"], message="first child updated")
        t0 = time.monotonic()
        ctl.wake("roll")  # sentinel: a pass that starts after the update, and must not touch u2
        await wait_for(lambda: _pass_after(ctl, "roll", t0), message="a later pass")
        assert at_new() == ["roll-u1"]
        assert children_of(kube, "roll")["roll-u2"]["spec"]["fileDevices"] == [file_device("a")]
        await _make_ready(s, kube, "roll-u1")
        await wait_for(lambda: at_new() == ["roll-u1", "roll-u2"], message="second child after the first is Ready")

        # paused: nothing moves, even when the updated child becomes Ready
        await patch(s, f"{SET_URL}/roll", {"spec": {"rollout": {"paused": True}}})
        await wait_for(lambda: _status(kube, "roll").get("observedGeneration") == 3, message="pause observed")
        await _make_ready(s, kube, "roll-u2")
        await wait_for(lambda: _status(kube, "roll").get("updatedReadyCount") == 2, message="u2 Ready seen")
        assert at_new() == ["roll-u1", "roll-u2"]
        progressing = next(c for c in _status(kube, "roll")["conditions"] if c["type"] == "Progressing")
        assert progressing["reason"] == "Paused"
        await patch(s, f"{SET_URL}/roll", {"spec": {"rollout": {"paused": False}}})
        await wait_for(lambda: len(at_new()) == 3, message="resumed")


async def test_rollout_survives_an_operator_restart_mid_way(kube):
    """State lives in the API: a new operator process continues the rollout where the old one stopped."""
    for n in ("s1", "s2", "s3"):
        kube.seed(NODES, node(n))
    async with kube.session() as s:
        async with lvgset_operator(kube):
            await post(s, SET_URL, lvgset("restart", file_devices=[file_device("a")]))
            await wait_for(lambda: len(children_of(kube, "restart")) == 3, message="three children")
            for n in ("s1", "s2", "s3"):
                await _make_ready(s, kube, f"restart-{n}")
            await wait_for(lambda: _status(kube, "restart").get("updatedReadyCount") == 3, message="all Ready")
            await patch(s, f"{SET_URL}/restart", {"spec": {"rollout": {"maxUnavailable": 1}, "lvmVolumeGroupTemplate": {
                "fileDevices": [file_device("a", "2Gi")]}}})
            await wait_for(lambda: _status(kube, "restart").get("updatedCount") == 1, message="one updated")
        rev = _status(kube, "restart")["currentRevision"]

        def at_new():
            return sorted(k for k, v in children_of(kube, "restart").items()
                          if v["metadata"]["labels"].get("disklet.io/lvgset-revision") == rev)
        assert at_new() == ["restart-s1"]
    async with lvgset_operator(kube) as ctl, kube.session() as s:
        # a fresh operator (and client): no memory of the first
        await wait_for(lambda: "restart" in ctl.sets and ctl.sets["restart"].passes, message="resume pass")
        t0 = time.monotonic()
        ctl.wake("restart")
        await wait_for(lambda: _pass_after(ctl, "restart", t0), message="a pass after the restart")
        assert at_new() == ["restart-s1"], "the restarted operator does not start over or skip the budget"
        await _make_ready(s, kube, "restart-s1")
        await wait_for(lambda: at_new() == ["restart-s1", "restart-s2"], message="the rollout continues")
