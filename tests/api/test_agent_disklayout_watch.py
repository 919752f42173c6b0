"""The agent's DiskLayout handling on the real API server when a DiskLayout leaves the node's
label-filtered watch and comes back (the API server's watch says DELETED when an object leaves the
selector, ADDED when it returns):

- the agent still judges it afterwards (a changed layout gets a new verdict written by the agent);
- the refused-layout retry runs once per interval for it (however many round trips), and never
  after it is deleted;
- a refusal is counted once per transition (a round trip is none): the agent's bookkeeping of the
  object outlives the round trips and goes with the real delete.

The agent's real Kopf wiring runs; the node is a temporary host root whose layouts name disks that
do not exist, so every judgement ends ``refused`` (``target_device_not_found``) without touching a
disk. Judgements are counted where they enter ``DiskLayoutAgent.judge``. Nothing is proven by
sleeping: a test ``on.event`` handler registered after the agent's (Kopf runs them in order, per
event) shows that the agent has handled each DELETED/ADDED, and a second DiskLayout's retries are
the clock (N of its judgements = N intervals).
"""

from __future__ import annotations

import copy
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import kopf
import pytest
from agent_fixtures import agent_running
from disklet_agent.config import AgentConfig
from disklet_agent.handlers.disklayout import DiskLayoutAgent
from operator_fixtures import disk_layout, posted_events, status_of

from devkit.kopfrun import wait_for
from disklet.layout.samples import EXT4
from disklet.metrics import REGISTRY

pytestmark = pytest.mark.api

DL = "disklet.io/v1alpha1/disklayouts"
DL_URL = "/apis/disklet.io/v1alpha1/disklayouts"
MERGE = {"Content-Type": "application/merge-patch+json"}
CODE = "target_device_not_found"


def missing_disk() -> str:
    return f"/dev/disk/by-id/disklet-watch-missing-{uuid.uuid4().hex[:8]}"


def layout(name: str, node: str, device: str) -> dict[str, Any]:
    structured = copy.deepcopy(EXT4)
    structured["disks"][0]["device"] = device
    return disk_layout(name, node, structured=structured, labels={"disklet.io/node": node})


def refusals() -> float:
    return REGISTRY.get_sample_value("disklet_refusals_total", {"code": CODE}) or 0.0


async def test_disklayout_relabelled_away_and_back_is_judged_again_retried_once_per_interval_and_not_after_delete(
        real_kube: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    kube = real_kube
    node = f"dlw-{uuid.uuid4().hex[:6]}"
    flip, clock = f"flip-{uuid.uuid4().hex[:6]}", f"clock-{uuid.uuid4().hex[:6]}"
    etc = tmp_path / "etc" / "disklet"
    etc.mkdir(parents=True)
    (etc / "disk-management-mode").write_text("controller-managed\n")
    config = AgentConfig(node_name=node, host_root=tmp_path, scan_interval_seconds=0.3, refused_retry_seconds=0.3)

    judged: Counter[str] = Counter()
    agents: set[DiskLayoutAgent] = set()
    original = DiskLayoutAgent.judge

    async def counting(self: DiskLayoutAgent, body: Any, *args: Any, **kwargs: Any) -> Any:
        agents.add(self)
        judged[str(body.get("metadata", {}).get("name"))] += 1
        return await original(self, body, *args, **kwargs)

    monkeypatch.setattr(DiskLayoutAgent, "judge", counting)

    handled: list[tuple[str, str, str | None]] = []
    """(event type, name, node label) of every DiskLayout event, once the agent's handlers are done with it."""

    def sentinel(registry: kopf.OperatorRegistry) -> None:
        @kopf.on.event("disklet.io", "disklayouts", registry=registry, id="test_after_the_agent")
        async def after_the_agent(type: str | None, name: str, body: kopf.Body, **_: Any) -> None:
            handled.append((str(type), name, (body.get("metadata", {}).get("labels") or {}).get("disklet.io/node")))

    refusals0 = refusals()
    async with agent_running(kube, monkeypatch, node, config=config, also=sentinel), kube.session() as s:
        for name in (flip, clock):
            r = await s.post(DL_URL, json=layout(name, node, missing_disk()))
            assert r.status in (200, 201), await r.text()
            # what the operator's pre-flight writes: the agent takes it from here
            r = await s.patch(f"{DL_URL}/{name}/status", headers=MERGE,
                              json={"status": {"phase": "pending", "layoutGeneration": 1, "observedGeneration": 1}})
            assert r.status == 200, await r.text()
        await wait_for(lambda: all(status_of(kube, DL, n).get("phase") == "refused" for n in (flip, clock)),
                       timeout=60, message="both refused by the agent")

        async def relabel(value: str) -> None:
            r = await s.patch(f"{DL_URL}/{flip}", json={"metadata": {"labels": {"disklet.io/node": value}}},
                              headers=MERGE)
            assert r.status == 200, await r.text()

        def handled_since(mark: int, *, deleted: bool) -> bool:
            return any((t == "DELETED") == deleted and n == flip and (deleted or lbl == node)
                       for t, n, lbl in handled[mark:])

        # Out of the node's label-filtered watch and back, three times; the agent handles each step.
        for _ in range(3):
            left = len(handled)
            await relabel("elsewhere")
            await wait_for(lambda m=left: handled_since(m, deleted=True), timeout=60,  # type: ignore[misc]
                           message="the agent handled flip leaving its watch")
            back = len(handled)
            await relabel(node)
            await wait_for(lambda m=back: handled_since(m, deleted=False), timeout=60,  # type: ignore[misc]
                           message="the agent handled flip coming back")

        # The user fixes the layout (here: names another disk); the operator's pre-flight moves it on.
        fixed = missing_disk()
        r = await s.patch(f"{DL_URL}/{flip}", headers=MERGE,
                          json={"spec": {"diskLayout": layout(flip, node, fixed)["spec"]["diskLayout"]}})
        assert r.status == 200, await r.text()
        r = await s.patch(f"{DL_URL}/{flip}/status", headers=MERGE,
                          json={"status": {"phase": "pending", "layoutGeneration": 2, "observedGeneration": 2,
                                           "refusalReason": None, "message": "pre-flight passed"}})
        assert r.status == 200, await r.text()
        st = await wait_for(lambda: (st := status_of(kube, DL, flip)).get("phase") == "refused"
                            and fixed in st.get("message", "") and st, timeout=30,
                            message="the agent judged the changed layout of a DiskLayout that had left its watch")
        assert st["layoutGeneration"] == 2 and st["refusalReason"] == CODE

        # Over the next 6 intervals (the clock's judgements), flip is retried about as often as the clock.
        clock0, flip0 = judged[clock], judged[flip]
        await wait_for(lambda: judged[clock] >= clock0 + 6, timeout=60, message="six clock retries")
        clock1, flip1 = judged[clock], judged[flip]
        assert 1 <= flip1 - flip0 <= (clock1 - clock0) + 1, (flip1 - flip0, clock1 - clock0)

        # The agent's bookkeeping of flip (the generation it judged, the refusal it counted) survived
        # the round trips; a real delete drops it.
        (agent,) = agents
        flip_uid = kube.read(DL, flip)["metadata"]["uid"]
        assert flip_uid in agent.memos and flip_uid in agent.refusals

        # Deleted: gone from the API and handled by the agent; never retried again.
        mark = len(handled)
        r = await s.delete(f"{DL_URL}/{flip}")
        assert r.status in (200, 202), await r.text()
        await wait_for(lambda: kube.read(DL, flip) is None and any(t == "DELETED" and n == flip
                                                                   for t, n, _ in handled[mark:]),
                       timeout=60, message="flip deleted and handled")
        # one clock judgement first: a retry pass that read flip just before the delete has ended then
        # (a pass judges the objects in name order, the clock first)
        clock_deleted = judged[clock]
        await wait_for(lambda: judged[clock] > clock_deleted, timeout=60, message="the next retry pass")
        flip2, clock2 = judged[flip], judged[clock]
        await wait_for(lambda: judged[clock] >= clock2 + 6, timeout=60, message="six more clock retries")
        assert judged[flip] == flip2, "a deleted DiskLayout is still retried"
        assert flip_uid not in agent.memos and flip_uid not in agent.refusals
        clock_events = [e for e in posted_events(kube, clock) if e.get("reason") == "Refused"]

    # One refusal per transition: flip at generations 1 and 2, the clock once; the round trips add none.
    assert refusals() - refusals0 == 3
    assert len(clock_events) == 1 and (clock_events[0].get("count") or 1) == 1, clock_events
