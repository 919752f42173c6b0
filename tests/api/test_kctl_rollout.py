"""kctl rollout on the real API server with the real LVMVolumeGroupSet controller running (no agent:
the test writes the children's status the way the agent and the operator's readiness rule would)."""

from __future__ import annotations

import asyncio

import pytest
from kctl_fixtures import kctl
from lvgset_fixtures import (
    LVG,
    LVG_URL,
    LVGSET,
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


async def _report(s, kube, name: str, failed: str | None = None) -> None:
    """The agent's report for the child's current generation (+ the operator's Ready)."""
    gen = kube.read(LVG, name)["metadata"]["generation"]
    applied = ("False", failed) if failed else ("True", "Applied")
    conds = [{"type": "VGConfigurationApplied", "status": applied[0], "reason": applied[1], "message": "the directory "
              "is outside the agent's base directory" if failed else "", "lastTransitionTime": "2026-11-25T00:00:00Z"},
             {"type": "Ready", "status": "True", "reason": "Degraded" if failed else "Ready", "message": "",
              "lastTransitionTime": "2026-11-25T00:00:00Z"}]
    await patch(s, f"{LVG_URL}/{name}/status", {"status": {"observedGeneration": gen, "conditions": conds}})


def _at_revision(kube, set_name: str) -> list[str]:
    rev = ((kube.read(LVGSET, set_name) or {}).get("status") or {}).get("currentRevision")
    return sorted(k for k, v in children_of(kube, set_name).items()
                  if v["metadata"]["labels"].get("disklet.io/lvgset-revision") == rev)


async def test_rollout_status_follows_batches_and_halts_on_a_poisoned_template(kube):
    for n in ("k1", "k2"):
        kube.seed(NODES, node(n))
    async with lvgset_operator(kube), kube.session() as s:
        await post(s, SET_URL, lvgset("fleet", file_devices=[file_device("a")], rollout={"maxUnavailable": 1}))
        status = asyncio.create_task(kctl(kube, "rollout", "status", "lvgset", "fleet", "--interval", "0.05",
                                          "--timeout", "60"))
        for n in ("k1", "k2"):
            await wait_for(lambda n=n: f"fleet-{n}" in children_of(kube, "fleet"), message=f"fleet-{n}")
            await _report(s, kube, f"fleet-{n}")
        done = await asyncio.wait_for(status, 60)
        assert done.code == 0, done.err
        lines = done.out.splitlines()
        assert lines[-1] == "lvmvolumegroupset/fleet: rollout complete"
        assert any("2 of 2 updated and Ready" in line for line in lines), done.out

        # a poisoned template: the first child fails to apply it, the second is never written
        await patch(s, f"{SET_URL}/fleet", {"spec": {"lvmVolumeGroupTemplate": {
            "fileDevices": [file_device("a"), file_device("b", directory="/srv/elsewhere")]}}})
        await wait_for(lambda: _at_revision(kube, "fleet") == ["fleet-k1"], message="first child updated")
        await _report(s, kube, "fleet-k1", failed="FileDeviceNotApplied")
        halted = await kctl(kube, "rollout", "status", "lvgset", "fleet", "--interval", "0.05", "--timeout", "60")
        assert halted.code == 1
        assert "halted: LVMVolumeGroup fleet-k1 on node k1 failed: FileDeviceNotApplied" in halted.err
        assert _at_revision(kube, "fleet") == ["fleet-k1"]
        assert [f["name"] for f in children_of(kube, "fleet")["fleet-k2"]["spec"]["fileDevices"]] == ["a"]

        # undo cannot remove the added file device; --keep-file-devices restores the rest (here: nothing)
        refused = await kctl(kube, "rollout", "undo", "lvgset", "fleet")
        assert refused.code == 1 and "file device 'b' would be removed: file devices cannot be removed" in refused.err
        version = kube.read(LVGSET, "fleet")["metadata"]["resourceVersion"]
        kept = await kctl(kube, "rollout", "undo", "lvgset/fleet", "--keep-file-devices")
        assert kept.code == 0, kept.err
        assert "rolled back" not in kept.out, "nothing but file devices differ: nothing was rolled back"
        assert "skipped rollback: revision" in kept.out and "nothing was written" in kept.out
        assert kube.read(LVGSET, "fleet")["metadata"]["resourceVersion"] == version

        paused = await kctl(kube, "rollout", "pause", "lvgset", "fleet")
        assert paused.code == 0 and kube.read(LVGSET, "fleet")["spec"]["rollout"]["paused"] is True
        resumed = await kctl(kube, "rollout", "resume", "lvgset", "fleet")
        assert resumed.code == 0 and kube.read(LVGSET, "fleet")["spec"]["rollout"]["paused"] is False


async def test_rollout_undo_restores_the_previous_thin_pools(kube):
    kube.seed(NODES, node("u1"))
    async with lvgset_operator(kube), kube.session() as s:
        await post(s, SET_URL, lvgset("undo", file_devices=[file_device("a")], thin_pools=[{"name": "tp", "size": "50%"}]))
        await wait_for(lambda: (kube.read(LVGSET, "undo").get("status") or {}).get("observedGeneration") == 1,
                       message="generation 1")
        await patch(s, f"{SET_URL}/undo", {"spec": {"lvmVolumeGroupTemplate": {"thinPools": [{"name": "tp", "size": "90%"}]}}})
        await wait_for(lambda: len((kube.read(LVGSET, "undo").get("status") or {}).get("revisions") or ()) == 2,
                       message="two revisions recorded")
        r = await kctl(kube, "rollout", "undo", "lvgset", "undo")
        assert r.code == 0, r.err
        assert kube.read(LVGSET, "undo")["spec"]["lvmVolumeGroupTemplate"]["thinPools"][0]["size"] == "50%"


async def _ready(s, kube, name: str, reason: str = "Ready", message: str = "") -> None:
    """The child's status as the agent and the operator's readiness rule write it (Ready False: e.g. a dead agent)."""
    gen = kube.read(LVG, name)["metadata"]["generation"]
    ok = reason == "Ready"
    conds = [{"type": "VGConfigurationApplied", "status": "True", "reason": "Applied", "message": "",
              "lastTransitionTime": "2026-11-25T00:00:00Z"},
             {"type": "Ready", "status": "True" if ok else "False", "reason": reason, "message": message,
              "lastTransitionTime": "2026-11-25T00:00:00Z"}]
    await patch(s, f"{LVG_URL}/{name}/status", {"status": {"observedGeneration": gen, "conditions": conds}})


async def test_a_dead_agent_is_named_in_rollout_status_with_the_unit_it_holds(kube):
    for n in ("k1", "k2"):
        kube.seed(NODES, node(n))
    async with lvgset_operator(kube), kube.session() as s:
        await post(s, SET_URL, lvgset("dead", file_devices=[file_device("a")], rollout={"maxUnavailable": 1}))
        for n in ("k1", "k2"):
            await wait_for(lambda n=n: f"dead-{n}" in children_of(kube, "dead"), message=f"dead-{n}")
            await _ready(s, kube, f"dead-{n}")
        done = await kctl(kube, "rollout", "status", "lvgset/dead", "--interval", "0.05", "--timeout", "1m")
        assert done.code == 0, done.err

        # k1's agent dies: the operator's readiness rule says so on the child
        await _ready(s, kube, "dead-k1", "AgentNotReporting", "agent Lease disklet-agent-k1 expired 95s ago")
        await patch(s, f"{SET_URL}/dead", {"spec": {"lvmVolumeGroupTemplate": {
            "thinPools": [{"name": "tp", "size": "50%"}]}}})
        await wait_for(lambda: (kube.read(LVGSET, "dead").get("status") or {}).get("observedGeneration") == 2,
                       message="generation 2 observed")
        r = await kctl(kube, "rollout", "status", "lvgset", "dead", "--no-wait")
        assert r.code == 0, r.err
        first = r.out.splitlines()[0]  # one poll
        assert "waiting for dead-k1 on k1 (AgentNotReporting: agent Lease disklet-agent-k1 expired 95s ago)" in first
        assert "dead-k1 on k1 holds 1 of maxUnavailable 1: no other node is updated until it is Ready" in first
        assert "thinPools" not in children_of(kube, "dead")["dead-k2"]["spec"], "held: k2 is not updated"

        timed = await kctl(kube, "rollout", "status", "lvgset", "dead", "--interval", "0.05", "--timeout", "1s")
        assert timed.code == 1 and "not complete after 1s" in timed.err and "AgentNotReporting" in timed.err


async def test_a_set_that_matches_no_node_fails_rollout_status(kube):
    kube.seed(NODES, node("k1"))
    async with lvgset_operator(kube), kube.session() as s:
        await post(s, SET_URL, lvgset("typo", selector={"matchLabels": {"disk": "fsat"}},
                                      file_devices=[file_device("a")]))
        await wait_for(lambda: (kube.read(LVGSET, "typo").get("status") or {}).get("observedGeneration") == 1,
                       message="observed")
        r = await kctl(kube, "rollout", "status", "lvgset", "typo", "--interval", "0.05", "--timeout", "30s")
        assert r.code == 1, r.out
        assert "no node matches spec.nodeSelector disk=fsat" in r.err
        assert "rollout complete" not in r.out


async def test_rollout_status_without_an_operator_fails_within_seconds(kube):
    kube.seed(NODES, node("k1"))
    async with kube.session() as s:  # no operator runs
        await post(s, SET_URL, lvgset("orphan", file_devices=[file_device("a")]))
    started = asyncio.get_running_loop().time()
    r = await kctl(kube, "rollout", "status", "lvgset", "orphan", "--interval", "0.2", "--timeout", "10m")
    elapsed = asyncio.get_running_loop().time() - started
    assert r.code == 1, r.out
    assert "nobody is rolling it out: no disklet operator pod (app.kubernetes.io/component=operator)" in r.err
    assert elapsed < 60, f"took {elapsed:.0f}s"
