"""The operator's LVMVolumeGroup bookkeeping end to end on the real API server: label, NodeReady,
AgentReady, Ready (the lagging-watch regression runs on the mock: it holds watch events back)."""

from __future__ import annotations

import pytest
from disklet_operator.handlers.lvg import LVGS_INDEX
from operator_fixtures import (
    AGENT_NS,
    LEASES,
    LVG,
    LVG_URL,
    NODES,
    CountingClock,
    FakeClock,
    agent_lease,
    assert_no_kopf_in_status,
    condition,
    micro_time,
    node_object,
    operator_running,
    posted_events,
    status_of,
    volume_group,
    wait_status,
)

from devkit.kopfrun import wait_for


@pytest.fixture()
def kube(real_kube):
    return real_kube


def _cond(type_: str, status: str, reason: str | None = None):
    def check(st: dict) -> bool:
        c = condition(st, type_)
        return bool(c) and c["status"] == status and (reason is None or c["reason"] == reason)
    return check


def _agent_conditions(vg_ready: str = "True", applied: str = "True", applied_reason: str = "Applied") -> dict:
    t = "2025-01-01T00:00:00Z"
    return {"status": {"phase": "Ready" if vg_ready == "True" else "NotReady", "conditions": [
        {"type": "VGConfigurationApplied", "status": applied, "reason": applied_reason,
         "message": "the spec is applied on the node" if applied == "True" else "fallocate: no space left",
         "lastTransitionTime": t, "observedGeneration": 1},
        {"type": "VGReady", "status": vg_ready, "reason": "Applied" if vg_ready == "True" else "Creating",
         "message": "volume group vg0 is present", "lastTransitionTime": t, "observedGeneration": 1},
    ]}}


async def test_readiness_from_node_lease_and_agent_conditions(kube):
    kube.seed(NODES, node_object("n1"))
    kube.seed(LEASES, agent_lease("n1"))
    async with operator_running(kube) as api:
        await api.create(LVG_URL, volume_group("vg-a", "n1"))
        st = await wait_status(kube, LVG, "vg-a", _cond("AgentReady", "True", "AgentReporting"), "AgentReady")
        assert condition(st, "NodeReady")["status"] == "True"
        ready = condition(st, "Ready")
        assert (ready["status"], ready["reason"]) == ("False", "VGNotReported"), "no agent verdict yet"
        assert kube.read(LVG, "vg-a")["metadata"]["labels"]["disklet.io/node"] == "n1"

        # the agent reports the VG: Ready
        await api.patch(f"{LVG_URL}/vg-a/status", _agent_conditions())
        st = await wait_status(kube, LVG, "vg-a", _cond("Ready", "True", "Ready"), "Ready")
        agent_written = {c["type"]: c for c in _agent_conditions()["status"]["conditions"]}
        for type_, cond in agent_written.items():
            assert condition(st, type_) == cond, "the agent's conditions are never rewritten"
        assert st["phase"] == "Ready", "the agent's phase is untouched"

        # degraded but serving: a file device could not grow → still Ready, reason Degraded
        await api.patch(f"{LVG_URL}/vg-a/status", _agent_conditions(applied="False", applied_reason="FileDeviceGrowFailed"))
        st = await wait_status(kube, LVG, "vg-a", _cond("Ready", "True", "Degraded"), "Degraded")
        assert "FileDeviceGrowFailed" in condition(st, "Ready")["message"]

        # terminating takes it out of service
        await api.patch(f"{LVG_URL}/vg-a/status", _agent_conditions(applied="False", applied_reason="Terminating"))
        await wait_status(kube, LVG, "vg-a", _cond("Ready", "False", "Terminating"), "Terminating")
        assert_no_kopf_in_status(kube.read(LVG, "vg-a"))


async def test_missing_node_and_stale_or_missing_lease(kube):
    kube.seed(NODES, node_object("n2", ready="False"))
    kube.seed(LEASES, agent_lease("n2", age_seconds=300))
    kube.seed(LEASES, agent_lease("n3", namespace="some-other-namespace"))  # not the agents' namespace
    async with operator_running(kube) as api:
        await api.create(LVG_URL, volume_group("vg-ghost", "nowhere"))
        await api.create(LVG_URL, volume_group("vg-stale", "n2"))
        await api.create(LVG_URL, volume_group("vg-other-ns", "n3"))
        st = await wait_status(kube, LVG, "vg-ghost", _cond("NodeReady", "False", "NodeNotFound"), "NodeNotFound")
        assert condition(st, "AgentReady")["reason"] == "AgentNotReporting"
        assert condition(st, "Ready")["status"] == "False"

        st = await wait_status(kube, LVG, "vg-stale", _cond("AgentReady", "False", "AgentNotReporting"), "stale lease")
        assert "more than 60s ago" in condition(st, "AgentReady")["message"]
        node = condition(st, "NodeReady")
        assert (node["status"], node["reason"]) == ("False", "NodeNotReady") and "PLEG" in node["message"]
        assert (condition(st, "Ready")["status"], condition(st, "Ready")["reason"]) == ("False", "NodeNotReady")

        st = await wait_status(kube, LVG, "vg-other-ns", _cond("AgentReady", "False"), "lease elsewhere ignored")
        assert AGENT_NS in condition(st, "AgentReady")["message"]

        # the agent comes back and the node recovers: the readiness loop picks it up without any LVG event
        await api.patch(f"/apis/coordination.k8s.io/v1/namespaces/{AGENT_NS}/leases/disklet-agent-n2",
                        {"spec": agent_lease("n2")["spec"]})
        await api.patch("/api/v1/nodes/n2/status", {"status": node_object("n2")["status"]})
        await wait_status(kube, LVG, "vg-stale", _cond("AgentReady", "True"), "agent back")
        await wait_status(kube, LVG, "vg-stale", _cond("NodeReady", "True"), "node back")


async def test_conditions_written_only_on_change(kube):
    """Once written, idle readiness passes (counted: the sentinel) send no request at all."""
    kube.seed(NODES, node_object("n1"))
    kube.seed(LEASES, agent_lease("n1"))
    clock = CountingClock()
    async with operator_running(kube, interval=0.2, clock=clock) as api:
        await api.create(LVG_URL, volume_group("vg-q", "n1", labels={"disklet.io/node": "wrong"}))
        await wait_status(kube, LVG, "vg-q", _cond("AgentReady", "True"), "AgentReady")
        await wait_for(lambda: kube.read(LVG, "vg-q")["metadata"]["labels"]["disklet.io/node"] == "n1",
                       message="label corrected")
        loop = api.readiness
        assert loop is not None
        seen = loop.passes  # sentinels, not sleeps: readiness passes counted
        await wait_for(lambda: loop.passes >= seen + 2, message="two passes after the writes")
        before = status_of(kube, LVG, "vg-q")
        rv = kube.read(LVG, "vg-q")["metadata"]["resourceVersion"]
        seen, requests, writes = loop.passes, loop.requests, kube.mutations("lvmvolumegroups")
        await wait_for(lambda: loop.passes >= seen + 7, message="seven more readiness passes", timeout=30)
        assert loop.requests == requests, "an idle pass sends no request"
        assert kube.mutations("lvmvolumegroups") == writes
        assert status_of(kube, LVG, "vg-q") == before
        assert kube.read(LVG, "vg-q")["metadata"]["resourceVersion"] == rv, "no-op passes write nothing"
        assert not kube.read(LVG, "vg-q")["metadata"].get("finalizers"), \
            "no per-object timer, so Kopf puts no finalizer on LVMVolumeGroups"


async def test_an_upgrade_releases_the_old_timer_finalizer(kube):
    """LVMVolumeGroups from a version with a per-object timer carry the operator's finalizer; the
    loop needs none, so Kopf removes it on first sight and deleting the object no longer waits."""
    kube.seed(NODES, node_object("n1"))
    kube.seed(LEASES, agent_lease("n1"))
    old = volume_group("vg-old", "n1")
    old["metadata"]["finalizers"] = ["operator.disklet.io/finalizer"]
    kube.seed(LVG, old)
    async with operator_running(kube):
        await wait_for(lambda: not kube.read(LVG, "vg-old")["metadata"].get("finalizers"),
                       message="the operator's old finalizer released")
        await wait_status(kube, LVG, "vg-old", _cond("AgentReady", "True"), "conditions still written")


async def test_the_loop_marks_an_lvg_not_ready_when_its_agent_lease_expires(kube):
    """No event on the LVMVolumeGroup, its Lease or its Node: only time passes (an advancing clock)
    and the operator-wide loop turns AgentReady and Ready False, after checking the API server's
    Leases (no indexed Lease looks fresh any more)."""
    kube.seed(NODES, node_object("n1"))
    kube.seed(LEASES, agent_lease("n1"))
    clock = FakeClock()
    async with operator_running(kube, interval=0.1, clock=clock) as api:
        await api.create(LVG_URL, volume_group("vg-exp", "n1"))
        await wait_status(kube, LVG, "vg-exp", _cond("AgentReady", "True", "AgentReporting"), "AgentReady")
        await api.patch(f"{LVG_URL}/vg-exp/status", _agent_conditions())
        await wait_status(kube, LVG, "vg-exp", _cond("Ready", "True", "Ready"), "Ready")
        loop = api.readiness
        assert loop is not None
        await wait_for(lambda: _indexed_agent_ready(loop, "vg-exp") == "True",
                       message="Kopf processed the object with our conditions (no event left in flight)")
        seen = loop.passes
        await wait_for(lambda: loop.passes >= seen + 2, message="passes while the Lease is fresh")
        # (the agent's patch replaced the whole list: the event handler or the loop wrote ours back)
        assert loop.lease_checks == 0, "a fresh Lease in the index: no check against the API server"
        assert condition(status_of(kube, LVG, "vg-exp"), "Ready")["status"] == "True"
        writes = loop.writes

        clock.advance(seconds=61)  # the agent stops renewing: its Lease is now older than the grace period
        st = await wait_status(kube, LVG, "vg-exp", _cond("AgentReady", "False", "AgentNotReporting"), "expired")
        assert "more than 60s ago" in condition(st, "AgentReady")["message"]
        ready = condition(st, "Ready")
        assert (ready["status"], ready["reason"]) == ("False", "AgentNotReporting")
        assert condition(st, "VGReady")["status"] == "True", "the agent's conditions are kept"
        # the server shows the write before the pass that made it has counted it: wait for the count
        await wait_for(lambda: loop.writes > writes, message="the loop counted its write")
        assert loop.writes == writes + 1
        assert loop.lease_checks >= 1, "no Lease looked fresh: the loop checked the API server before writing"
        await wait_for(lambda: any(e.get("reason") == "NotReady" for e in posted_events(kube, "vg-exp")),
                       message="NotReady Event")


@pytest.mark.kmock("needs a lagging watch on demand (watch_held)")
async def test_a_pass_writes_nothing_when_the_lease_index_is_behind_the_api_server(mock_kube):
    """A replica that peering pauses keeps its indexes frozen: every Lease looks stale to it. The
    API server shows a later renewal, so the pass writes nothing. Mock only: the frozen index is a
    held watch."""
    kube = mock_kube
    kube.seed(NODES, node_object("n1"))
    kube.seed(LEASES, agent_lease("n1"))
    clock = FakeClock()
    async with operator_running(kube, interval=0.1, clock=clock) as api:
        await api.create(LVG_URL, volume_group("vg-frozen", "n1"))
        await wait_status(kube, LVG, "vg-frozen", _cond("AgentReady", "True"), "AgentReady")
        loop = api.readiness
        assert loop is not None
        await wait_for(lambda: _indexed_agent_ready(loop, "vg-frozen") == "True",
                       message="Kopf processed the object with our conditions (no event left in flight)")
        with kube.watch_held("leases"):  # the renewal below never reaches the operator's index
            clock.advance(seconds=61)
            await api.patch(f"/apis/coordination.k8s.io/v1/namespaces/{AGENT_NS}/leases/disklet-agent-n1",
                            {"spec": {"renewTime": micro_time(clock())}})
            seen = loop.skipped
            await wait_for(lambda: loop.skipped >= seen + 2, message="passes skipped: index behind")
            assert condition(status_of(kube, LVG, "vg-frozen"), "AgentReady")["status"] == "True"
            assert loop.writes == 0


@pytest.mark.kmock("needs a lagging watch on demand (watch_held)")
async def test_a_lagging_watch_does_not_make_the_operator_rewrite_conditions(mock_kube):
    """Regression for the duplicate status write under CPU load. Mock only: it needs a lagging
    watch on demand (``watch_held``).

    While the watch lags, every evaluation sees Kopf's stale body of the LVG (no conditions yet)
    and recomputes the same conditions; the stepping clock puts each evaluation one second later,
    so each recomputation carries a new lastTransitionTime. A guard that compares the written
    values with their timestamps sends the write again on the first stale evaluation; the in-flight
    guard (timestamps left out, held until a body shows the write) sends it once. Sentinels only:
    evaluations are counted by the clock, nothing waits for wall-clock time. Since readiness is one
    loop (no per-object timer re-evaluating Kopf's body), the stale evaluations are the loop's: its
    index entry still lacks the write, so it GETs the object, sees the write and sends nothing. The
    test fails if the loop wrote from its stale index (checked by mutation); the event handler's
    in-flight guard is held by test_conditions_removed_by_another_writer_are_restored_at_once,
    which fails without it."""
    kube = mock_kube
    kube.seed(NODES, node_object("n1"))
    kube.seed(LEASES, agent_lease("n1", namespace=AGENT_NS))
    clock = CountingClock(step_seconds=1.0)
    async with operator_running(kube, interval=0.2, clock=clock, lease_grace=24 * 3600) as api:
        with kube.watch_held("lvmvolumegroups"):  # Kopf sees the ADDED object, nothing after it
            await api.create(LVG_URL, volume_group("lag", "n1"))
            await wait_status(kube, LVG, "lag", lambda st: condition(st, "Ready"), "conditions written")
            seen = clock.calls
            await wait_for(lambda: clock.calls >= seen + 3, message="three evaluations on the stale body", timeout=30)
            assert len(_status_writes(kube, "lag")) == 1, "a stale body made the operator write again"
        seen = clock.calls
        # Sentinel: evaluations after the held events were delivered (Kopf now sees the written body).
        await wait_for(lambda: clock.calls >= seen + 3, message="passes on the delivered bodies", timeout=30)
    writes = _status_writes(kube, "lag")
    assert len(writes) == 1, f"{len(writes)} status writes: {writes}"


async def test_conditions_removed_by_another_writer_are_restored_at_once(kube):
    """The in-flight guard is released when a body shows the write: conditions that another writer
    removes later are written again on the next evaluation, not after the guard's window (60 s)."""
    kube.seed(NODES, node_object("n1"))
    kube.seed(LEASES, agent_lease("n1", namespace=AGENT_NS))
    async with operator_running(kube, interval=0.2) as api:
        writes = kube.mutations("lvmvolumegroups", subresource="status")
        await api.create(LVG_URL, volume_group("gone", "n1"))
        await wait_status(kube, LVG, "gone", lambda st: condition(st, "Ready"), "conditions written")
        # Sentinel that Kopf processed a body showing the write: the operator corrects a label the
        # test breaks after the write (that body comes later in the watch than the written one).
        await api.patch(f"{LVG_URL}/gone", {"metadata": {"labels": {"disklet.io/node": "wrong"}}})
        await wait_for(lambda: kube.read(LVG, "gone")["metadata"]["labels"]["disklet.io/node"] == "n1",
                       message="label corrected (a body after the status write was evaluated)")
        await api.patch(f"{LVG_URL}/gone/status", {"status": {"conditions": []}})
        await wait_status(kube, LVG, "gone", lambda st: condition(st, "Ready"), "conditions written again")
    # the operator's, the test's removal, the operator's again
    assert kube.mutations("lvmvolumegroups", subresource="status") - writes == 3


def _indexed_agent_ready(loop, name: str) -> str | None:
    """AgentReady as the loop's index holds it: it shows our write once Kopf processed its event (a
    later event of the object would run the event handler with the advanced clock)."""
    carried = next(iter((loop.indexes.get(LVGS_INDEX) or {}).get(name, ())), None)
    return carried.agent_ready.status if carried is not None and carried.agent_ready is not None else None


def _status_writes(kube, name: str) -> list:
    return [r.data for r in kube.request_log if str(getattr(r, "method", "")).upper().endswith("PATCH")
            and str(r.url).endswith(f"/lvmvolumegroups/{name}/status")]


async def test_an_lvg_deleted_while_its_agent_is_down_says_so(kube):
    """Only the node's agent may remove the VG and release its finalizer. Deleted while that agent is
    down, the object used to show the agent's last phase (Ready) indefinitely; now the phase is
    Terminating and AgentReady/Ready say what it waits for — and the readiness loop keeps it so."""
    kube.seed(NODES, node_object("n7"))  # a node, but no agent Lease: the agent is down
    async with operator_running(kube) as api:
        body = volume_group("vg-del", "n7")
        body["metadata"]["finalizers"] = ["disklet.io/agent"]
        await api.create(LVG_URL, body)
        await api.patch(f"{LVG_URL}/vg-del/status", _agent_conditions())  # the agent's last word: Ready
        await wait_status(kube, LVG, "vg-del", _cond("AgentReady", "False", "AgentNotReporting"), "agent down")
        assert status_of(kube, LVG, "vg-del")["phase"] == "Ready"
        try:
            await api.delete(f"{LVG_URL}/vg-del")
            st = await wait_status(kube, LVG, "vg-del", lambda s: s.get("phase") == "Terminating", "Terminating")
            for type_ in ("AgentReady", "Ready"):
                c = condition(st, type_)
                assert c["status"] == "False" and "deletion requested; waiting for the agent of node n7" in c["message"]
            # the loop's passes agree with the event's write: nothing flips back and forth
            loop = api.readiness
            assert loop is not None
            before = kube.read(LVG, "vg-del")["metadata"]["resourceVersion"]
            seen = loop.passes  # sentinels, not sleeps
            await wait_for(lambda: loop.passes >= seen + 2, message="two readiness passes")
            after = kube.read(LVG, "vg-del")
            assert after["status"]["phase"] == "Terminating" and after["metadata"]["resourceVersion"] == before
        finally:
            await api.patch(f"{LVG_URL}/vg-del", {"metadata": {"finalizers": None}})
