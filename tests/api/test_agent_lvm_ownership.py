"""Ownership of an LVMVolumeGroup is spec.local.nodeName, never the disklet.io/node label; refused
objects are reconciled once per retry period (fake engine: wiring only; on the real API server)."""

from __future__ import annotations

import time

import pytest
from agent_fixtures import LVG, LVG_URL, FakeEngine, agent_running, lvg
from disklet_agent.handlers import lvg as lvg_handlers
from disklet_agent.lvm.outcomes import LvgOutcome

from devkit.kopfrun import wait_for
from disklet.api.common import set_condition
from disklet.api.lvm import ConditionType, LVGPhase, LVMVolumeGroupStatus, Reason

MERGE = {"Content-Type": "application/merge-patch+json"}


@pytest.fixture()
def kube(real_kube):
    return real_kube


def _mislabelled(name: str) -> dict:
    """Owned by n1 (and already finalized by n1's agent) but labelled for n2."""
    obj = lvg(name, "n1")
    obj["metadata"]["labels"]["disklet.io/node"] = "n2"
    obj["metadata"]["finalizers"] = ["disklet.io/agent"]
    return obj


def _condition(kube, name: str, type_: str = "VGConfigurationApplied") -> dict | None:
    conds = ((kube.read(LVG, name) or {}).get("status") or {}).get("conditions") or []
    return next((c for c in conds if c["type"] == type_), None)


async def test_wrong_label_never_strips_the_finalizer(kube, monkeypatch):
    """n2's agent sees an object of n1 (relabelled by hand, a tool or a restore): it reports it and
    never releases it, also when the object is deleted."""
    seen: list[str] = []
    original = lvg_handlers.LvgWiring.mislabelled

    async def counting(self, name, body):
        seen.append(name)
        await original(self, name, body)

    monkeypatch.setattr(lvg_handlers.LvgWiring, "mislabelled", counting)
    engine = FakeEngine("n2", delete_done=True)
    kube.seed(LVG, _mislabelled("moved"))
    async with agent_running(kube, monkeypatch, "n2", engine=engine, scan_interval=0.2):
        await wait_for(lambda: (_condition(kube, "moved") or {}).get("reason") == "NodeLabelMismatch",
                       message="mismatch reported")
        cond = _condition(kube, "moved")
        assert "spec.local.nodeName is n1" in cond["message"] and cond["status"] == "False"
        async with kube.session() as s:
            await s.delete(f"{LVG_URL}/moved")
        # Sentinel: the delete handler ran (and retried) on n2 several times.
        await wait_for(lambda: len(seen) >= 4, message="delete handler retried", timeout=20)
        obj = kube.read(LVG, "moved")
        assert obj is not None and obj["metadata"].get("deletionTimestamp")
        assert obj["metadata"]["finalizers"] == ["disklet.io/agent"]
    assert not [c for c in engine.calls if c[0] in ("reconcile", "delete")]
    obj = kube.read(LVG, "moved")
    assert obj is not None and obj["metadata"]["finalizers"] == ["disklet.io/agent"]
    # The agent of n1 would now see it (label fixed): it is not gone meanwhile.


async def test_relabel_after_ready_keeps_the_finalizer(kube, monkeypatch):
    """The issue's flow: n1's object (finalized by n1's agent) is relabelled to n2 while n2's agent
    runs; n2's agent reports it and never releases it, also once it is deleted."""
    engine = FakeEngine("n2", delete_done=True)
    obj = lvg("moved2", "n1")
    obj["metadata"]["finalizers"] = ["disklet.io/agent"]
    kube.seed(LVG, obj)
    async with agent_running(kube, monkeypatch, "n2", engine=engine, scan_interval=0.2):
        async with kube.session() as s:
            r = await s.patch(f"{LVG_URL}/moved2", headers=MERGE,
                              json={"metadata": {"labels": {"disklet.io/node": "n2"}}})
            assert r.status == 200, await r.text()
            await wait_for(lambda: (_condition(kube, "moved2") or {}).get("reason") == "NodeLabelMismatch",
                           message="mismatch reported")
            await s.delete(f"{LVG_URL}/moved2")
            await wait_for(lambda: (kube.read(LVG, "moved2") or {}).get("metadata", {}).get("deletionTimestamp"),
                           message="deletion requested")
            # Sentinel: a later object of n2 is fully handled after the delete was seen.
            await s.post(LVG_URL, json=lvg("sentinel", "n2"))
            await wait_for(lambda: ((kube.read(LVG, "sentinel") or {}).get("status") or {}).get("phase") == "Ready",
                           message="sentinel handled")
        assert kube.read(LVG, "moved2")["metadata"]["finalizers"] == ["disklet.io/agent"]
    assert ("delete", "moved2") not in engine.calls and ("reconcile", "moved2") not in engine.calls


class RefusingEngine(FakeEngine):
    """Refuses every reconcile with the same status (a ValidationFailed object) and records when."""

    def __init__(self, node: str, retry: float):
        super().__init__(node)
        self.retry = retry
        self.times: list[float] = []

    def reconcile(self, name, spec, status, block_devices, generation) -> LvgOutcome:
        self.times.append(time.monotonic())
        self.calls.append(("reconcile", name))
        old = status or LVMVolumeGroupStatus()
        new = old.model_copy(deep=True)
        new.conditions = set_condition(list(old.conditions or []), ConditionType.VG_CONFIGURATION_APPLIED, "False",
                                       Reason.VALIDATION_FAILED, "refused", generation)
        new.phase = LVGPhase.NOT_READY
        new.observed_generation = generation
        changed = new.to_wire() != old.to_wire()
        return LvgOutcome(status=new, changed=changed, events=[("Warning", "ValidationFailed", "refused")] if changed
                          else [], requeue_after=self.retry)


async def test_refused_object_is_reconciled_once_per_retry_period(kube, monkeypatch):
    retry = 0.4
    engine = RefusingEngine("n1", retry)
    from disklet_agent.config import AgentConfig
    config = AgentConfig(node_name="n1", scan_interval_seconds=retry, refused_retry_seconds=retry)
    async with agent_running(kube, monkeypatch, "n1", engine=engine, config=config):
        async with kube.session() as s:
            await s.post(LVG_URL, json=lvg("refused", "n1"))
        await wait_for(lambda: len(engine.times) >= 6, message="several retries", timeout=30)
    gaps = [b - a for a, b in zip(engine.times, engine.times[1:], strict=False)]
    # The handler's retry and the timer used to fire together (two reconciles per cycle).
    assert min(gaps) >= retry * 0.5, gaps
