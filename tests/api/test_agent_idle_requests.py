"""An idle agent reads its node's LVMVolumeGroups and BlockDevices from its watch (Kopf indexes),
not from the API: once converged, discovery cycles and timer checks make no request at all
(docs/agent.md, "API requests at idle"). Counted on the mock's request log between two cycle
sentinels (the fake engine's discover calls and the fake disks' reads), never by sleeping."""

from __future__ import annotations

import pytest
from agent_fixtures import LVG, LVG_URL, FakeDisks, FakeEngine, agent_running, disk, lvg

from devkit.kopfrun import wait_for


class CountingDisks(FakeDisks):
    reads = 0

    def read(self):  # type: ignore[no-untyped-def]
        self.reads += 1
        return super().read()


def _requests(kube, since: int) -> list[str]:
    """Non-Lease requests after ``since`` (the Lease renewal is counted apart)."""
    out = []
    for r in kube.request_log[since:]:
        url = str(r.url)
        if "/leases" in url or "watch=" in url or "/events" in url:
            continue
        out.append(f"{str(r.method).upper().split('.')[-1]} {url}")
    return out


def _lists(kube, plural: str) -> int:
    return sum(1 for r in kube.request_log if str(r.url).split("?")[0].endswith(f"/{plural}")
               and "GET" in str(r.method).upper() and "watch=" not in str(r.url))


@pytest.mark.kmock("counts one client's LISTs exactly: on the shared real server the controller-manager's "
                  "informers LIST the same resources and the request metric names no client")
async def test_idle_cycles_make_no_api_request(kube, monkeypatch):
    engine = FakeEngine("n1")
    disks = CountingDisks([disk("/dev/vdb", serial="SB")])
    kube.seed(LVG, lvg("a", "n1"))
    kube.seed(LVG, lvg("b", "n1", vg="vg1"))
    async with agent_running(kube, monkeypatch, "n1", engine=engine, disks=disks, scan_interval=0.2):
        def ready() -> bool:
            return all(((kube.read(LVG, n) or {}).get("status") or {}).get("phase") == "Ready" for n in "ab")
        await wait_for(ready, message="both LVGs Ready")
        await wait_for(lambda: kube.read_all("disklet.io/v1alpha1/blockdevices"), message="the BlockDevice")

        def discover_calls() -> int:
            return sum(1 for c in engine.calls if c[0] == "discover")

        # settle: two full discovery and scan cycles after everything converged
        base_d, base_r = discover_calls(), disks.reads
        await wait_for(lambda: discover_calls() >= base_d + 2 and disks.reads >= base_r + 2, message="settle")
        since = len(kube.request_log)
        base_d, base_r = discover_calls(), disks.reads
        await wait_for(lambda: discover_calls() >= base_d + 5 and disks.reads >= base_r + 5, timeout=30,
                       message="five idle cycles")
        assert _requests(kube, since) == []
        # startup: per resource Kopf's own initial LIST (before its watch) and the agent's one resync
        # LIST, plus one after the cycle that created the BlockDevice; not one per cycle
        assert _lists(kube, "lvmvolumegroups") == 2
        assert _lists(kube, "blockdevices") == 3

        # a change still arrives (through the watch): a new LVG is reconciled
        await kube_post(kube, lvg("c", "n1", vg="vg2"))
        await wait_for(lambda: ((kube.read(LVG, "c") or {}).get("status") or {}).get("phase") == "Ready",
                       message="new LVG Ready")


async def kube_post(kube, obj):  # type: ignore[no-untyped-def]
    import aiohttp

    async with aiohttp.ClientSession() as http, http.post(f"{kube.server_url}{LVG_URL}", json=obj) as resp:
        assert resp.status in (200, 201), await resp.text()


@pytest.mark.kmock("reads every request URL the agent sent (the real server's metric has no URLs)")
async def test_watches_carry_the_server_side_timeout_and_there_is_no_crd_watch(kube, monkeypatch):
    """The agent's settings reach the wire: every watch request asks the server to end it after the
    node's ``timeoutSeconds``, and Kopf neither lists nor watches CRDs (scanning is off). Counted on
    the mock's request log once the first cycle has run (a sentinel), not after a sleep."""
    from disklet_agent.daemon import watch_server_timeout

    engine = FakeEngine("n1")
    kube.seed(LVG, lvg("a", "n1"))
    async with agent_running(kube, monkeypatch, "n1", engine=engine, scan_interval=0.2):
        await wait_for(lambda: ((kube.read(LVG, "a") or {}).get("status") or {}).get("phase") == "Ready",
                       message="the LVG Ready")
        await wait_for(lambda: sum(1 for c in engine.calls if c[0] == "discover") >= 1, message="a discovery cycle")
        urls = [str(r.url) for r in kube.request_log]
    watches = [u for u in urls if "watch=true" in u]
    plurals = {u.split("?")[0].rsplit("/", 1)[-1] for u in watches}
    assert {"lvmvolumegroups", "blockdevices", "disklayouts"} <= plurals
    assert all(f"timeoutSeconds={watch_server_timeout('n1')}" in u for u in watches), watches
    assert not [u for u in urls if "customresourcedefinitions" in u]


@pytest.mark.kmock("removes a served resource, which a shared real server cannot do for one test")
async def test_the_start_check_names_the_crds_the_server_does_not_serve(kube):
    """Without CRD scanning Kopf resolves the watched resources once; ``disklet-agent run`` checks
    first that the server serves all three and refuses to start otherwise (docs/agent.md)."""
    from disklet_agent.daemon import unserved_resources
    from disklet_agent.kube import AgentKube

    from disklet.kube.client import Endpoint

    agent_kube = AgentKube(Endpoint(kube.server_url))
    try:
        assert await unserved_resources(agent_kube) == []
        del kube.resources["disklet.io/v1alpha1/blockdevices"]
        assert await unserved_resources(agent_kube) == ["blockdevices.disklet.io"]
    finally:
        await agent_kube.close()
