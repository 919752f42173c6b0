"""The agent's periodic LVMVolumeGroup check on the real API server: one per object, however often the
object leaves the node's label-filtered watch and comes back, and none once it is deleted.

The agent's real Kopf wiring runs (fake engine, fake disks); every pass of the periodic check is
counted where it enters ``LvgWiring.reconcile`` (``only_if_needed``). Nothing is proven by sleeping:
a second LVMVolumeGroup's passes are the clock (N of its passes = N intervals).
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from agent_fixtures import LVG, LVG_URL, FakeEngine, agent_running, lvg
from disklet_agent.handlers.lvg import LvgWiring

from devkit.kopfrun import wait_for

MERGE = {"Content-Type": "application/merge-patch+json"}


def _phase(kube: Any, name: str) -> str | None:
    return ((kube.read(LVG, name) or {}).get("status") or {}).get("phase")


async def test_one_periodic_check_per_lvg_across_relabels_and_none_after_delete(real_kube, monkeypatch):
    kube = real_kube
    passes: Counter[str] = Counter()
    wirings: list[LvgWiring] = []
    original = LvgWiring.reconcile

    async def counting(self: LvgWiring, name: str, index: Any, *, only_if_needed: bool = False,
                       **kwargs: Any) -> str:
        if self not in wirings:
            wirings.append(self)
        if only_if_needed:
            passes[name] += 1
        return await original(self, name, index, only_if_needed=only_if_needed, **kwargs)

    monkeypatch.setattr(LvgWiring, "reconcile", counting)
    engine = FakeEngine("n1", delete_done=True)
    async with agent_running(kube, monkeypatch, "n1", engine=engine, scan_interval=0.3):
        async with kube.session() as s:
            for name in ("flip", "clock"):
                r = await s.post(LVG_URL, json=lvg(name, "n1", vg=f"vg-{name}"))
                assert r.status in (200, 201), await r.text()
            await wait_for(lambda: _phase(kube, "flip") == "Ready" and _phase(kube, "clock") == "Ready",
                           timeout=60, message="both Ready")
            (wiring,) = wirings
            watched = wiring.objects.index

            async def relabel(value: str) -> None:
                r = await s.patch(f"{LVG_URL}/flip", json={"metadata": {"labels": {"disklet.io/node": value}}},
                                  headers=MERGE)
                assert r.status == 200, await r.text()

            # Out of the node's label-filtered watch and back, three times (the watch shows each step).
            for _ in range(3):
                await relabel("elsewhere")
                await wait_for(lambda: "flip" not in watched, timeout=60, message="flip left the watch")
                await relabel("n1")
                await wait_for(lambda: "flip" in watched, timeout=60, message="flip back in the watch")

            # Over the next 6 intervals (the clock's passes), flip is checked about as often as the clock.
            clock0, flip0 = passes["clock"], passes["flip"]
            await wait_for(lambda: passes["clock"] >= clock0 + 6, timeout=60, message="six clock passes")
            clock1, flip1 = passes["clock"], passes["flip"]
            assert flip1 - flip0 <= (clock1 - clock0) + 1, (flip1 - flip0, clock1 - clock0)
            assert flip1 - flip0 >= 1  # and still checked

            # Deleted (the fake engine cleans up at once): gone from the API and from the watch.
            r = await s.delete(f"{LVG_URL}/flip")
            assert r.status in (200, 202), await r.text()
            await wait_for(lambda: kube.read(LVG, "flip") is None and "flip" not in watched, timeout=60,
                           message="flip deleted")
            flip2, clock2 = passes["flip"], passes["clock"]
            await wait_for(lambda: passes["clock"] >= clock2 + 6, timeout=60, message="six more clock passes")
            assert passes["flip"] == flip2, "a deleted LVMVolumeGroup is still checked"
