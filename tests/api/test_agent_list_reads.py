"""Which state the agent's LISTs ask for (``resourceVersion`` / ``resourceVersionMatch``): the
periodic resync reads ``resourceVersion=0`` (the API server's watch cache), a relist after a
write of ours reads "not older than" that write, a relist after a refused write "not older than"
our last write and, when that did not help, consistently (docs/agent.md, "API requests at idle").

The mock shows the query each LIST carried; the real server shows that it accepts them and that a
"not older than" read holds the write it names."""

from __future__ import annotations

from typing import Any

import pytest
from agent_fixtures import BD, LVG, FakeDisks, agent_running, disk, lvg
from disklet_agent.kube import AgentKube, NodeObjects
from disklet_agent.logic.blockdevices import desired_block_devices
from disklet_agent.logic.topology import BlockTopology

from devkit.kopfrun import wait_for
from disklet.api.resources import LVM_VOLUME_GROUP, NODE_LABEL

SELECTOR = f"{NODE_LABEL}=n1"


def _list_queries(kube: Any, plural: str) -> list[dict[str, str]]:
    """The query of every LIST (not WATCH) of ``plural`` the mock served, in order."""
    out = []
    for r in kube.request_log:
        params = dict(r.params or {})
        if ("GET" in str(r.method).upper() and str(r.url).split("?")[0].endswith(f"/{plural}")
                and "watch" not in params):
            out.append(params)
    return out


def _not_older_than(rv: str) -> dict[str, str]:
    return {"labelSelector": SELECTOR, "resourceVersion": rv, "resourceVersionMatch": "NotOlderThan"}


async def _exercise(kube: Any) -> tuple[list[list[str]], str]:
    """Drive one NodeObjects through every kind of relist on fake time; the names each LIST returned
    and the resourceVersion of the write in between."""
    kube.seed(LVG, lvg("a", "n1"))
    kube.seed(LVG, lvg("other", "n2"))
    now = [0.0]
    client = AgentKube(kube.endpoint())
    try:
        objects = NodeObjects(client, LVM_VOLUME_GROUP, "n1", resync_seconds=600, clock=lambda: now[0])
        seen: list[list[str]] = []

        async def listed() -> None:
            before = objects.lists
            seen.append(sorted(o["metadata"]["name"] for o in await objects.items()))
            assert objects.lists == before + 1

        await listed()  # the first read (resourceVersion=0 by default)
        objects.index = {"a": [{"metadata": {"name": "a"}}]}
        now[0] = 599.0
        assert [o["metadata"]["name"] for o in await objects.items()] == ["a"] and objects.lists == 1
        now[0] = 600.0
        await listed()  # the period: resourceVersion=0 again
        answer = await client.patch_status(LVM_VOLUME_GROUP, "a", {"phase": "Pending"})
        objects.wrote(answer)
        await listed()  # not older than the write
        objects.write_failed()
        await listed()  # not older than the last write
        objects.write_failed()
        await listed()  # the second failure in a row: consistent
        return seen, str(answer["metadata"]["resourceVersion"])
    finally:
        await client.close()


@pytest.mark.kmock("reads the query of every LIST (the real server's request metric has no URLs)")
async def test_each_relist_asks_for_no_fresher_state_than_it_needs(kube):
    seen, rv = await _exercise(kube)
    assert seen == [["a"]] * 5  # the label selector stays on every read
    assert _list_queries(kube, "lvmvolumegroups") == [
        {"labelSelector": SELECTOR, "resourceVersion": "0"},
        {"labelSelector": SELECTOR, "resourceVersion": "0"},
        _not_older_than(rv),
        _not_older_than(rv),
        {"labelSelector": SELECTOR},
    ]


async def test_the_real_server_accepts_each_read_and_not_older_than_holds_the_write(real_kube):
    seen, rv = await _exercise(real_kube)
    assert seen == [["a"]] * 5
    # the object as read "not older than" the write is that write (or newer), on the real server too
    client = AgentKube(real_kube.endpoint())
    try:
        from disklet.kube.client import not_older_than

        [obj] = await client.list(LVM_VOLUME_GROUP, label_selector=SELECTOR, read=not_older_than(rv))
        assert obj["status"]["phase"] == "Pending"
    finally:
        await client.close()


@pytest.mark.kmock("reads the query of every LIST (the real server's request metric has no URLs)")
async def test_a_refused_create_relists_not_older_than_the_last_write_then_consistently(kube, monkeypatch):
    """A BlockDevice of the name the agent will create exists but is labelled for another node, so
    the agent's node-filtered view never holds it and its create is refused (409) every cycle."""
    hidden_disk = disk("/dev/vdc", serial="SC")
    [hidden] = desired_block_devices(BlockTopology(roots=[hidden_disk]), {}, "n1", None)
    kube.seed(BD, {"apiVersion": "disklet.io/v1alpha1", "kind": "BlockDevice",
                   "metadata": {"name": hidden.name, "labels": {NODE_LABEL: "n2"}}, "status": {"nodeName": "n2"}})
    disks = FakeDisks([disk("/dev/vdb", serial="SB")])
    async with agent_running(kube, monkeypatch, "n1", disks=disks, scan_interval=0.1):
        def mine() -> list[dict[str, Any]]:
            return [o for o in kube.read_all(BD) if (o["metadata"].get("labels") or {}).get(NODE_LABEL) == "n1"]

        await wait_for(lambda: [o for o in mine() if (o.get("status") or {}).get("path")], message="the BlockDevice")
        base = disks.reads
        await wait_for(lambda: disks.reads >= base + 3, message="three more scan cycles")
        [created] = mine()
        rv = created["metadata"]["resourceVersion"]  # its status patch: the agent's last write
        settled = len(_list_queries(kube, "blockdevices"))
        disks.roots.append(hidden_disk)
        base = disks.reads
        await wait_for(lambda: disks.reads >= base + 5, message="five scan cycles with the refused create")
        queries = _list_queries(kube, "blockdevices")
    # start: Kopf's own initial LIST (consistent, Kopf's business) and the agent's first read (any
    # version), in either order; then one relist after the cycle that created the BlockDevice
    assert sorted(map(sorted, (q.items() for q in queries[:2]))) == sorted(
        [sorted({"labelSelector": SELECTOR}.items()), sorted({"labelSelector": SELECTOR, "resourceVersion": "0"}.items())])
    assert queries[2:settled] == [_not_older_than(rv)]
    after = queries[settled:]
    assert after[0] == _not_older_than(rv)  # the first refusal: not older than the last write
    assert len(after) >= 3 and all(q == {"labelSelector": SELECTOR} for q in after[1:])  # then consistent
    assert kube.read(BD, hidden.name)["metadata"]["labels"] == {NODE_LABEL: "n2"}  # never touched
