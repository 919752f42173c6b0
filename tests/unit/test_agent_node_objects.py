"""NodeObjects (agent/disklet_agent/kube.py): answers from the watch-fed index, LISTs only to resync,
each LIST asking for no fresher a state than it needs (docs/agent.md, "API requests at idle")."""

from __future__ import annotations

from typing import Any

import pytest
from disklet_agent.kube import NodeObjects

from disklet.api.resources import BLOCK_DEVICE
from disklet.kube.client import ANY_VERSION, CONSISTENT, ApiError, ListRead, not_older_than


class FakeKube:
    def __init__(self) -> None:
        self.lists: list[tuple[str | None, ListRead]] = []

    async def list(self, res: Any, *, label_selector: str | None = None, read: ListRead = CONSISTENT) -> list[dict[str, Any]]:
        self.lists.append((label_selector, read))
        return [{"metadata": {"name": "listed"}}]


def _objects(kube: FakeKube, now: list[float], **kw: Any) -> NodeObjects:
    return NodeObjects(kube, BLOCK_DEVICE, "n1", resync_seconds=600, clock=lambda: now[0], **kw)  # type: ignore[arg-type]


async def test_list_once_then_index_then_resync_on_writes_and_period() -> None:
    now = [0.0]
    kube = FakeKube()
    objects = _objects(kube, now)
    assert await objects.items() == [{"metadata": {"name": "listed"}}]  # no index yet: LIST
    objects.index = {"a": [{"metadata": {"name": "a"}}], "b": [{"metadata": {"name": "b"}}]}
    assert [o["metadata"]["name"] for o in await objects.items()] == ["a", "b"]  # from the index
    now[0] = 599
    assert len(await objects.items()) == 2 and len(kube.lists) == 1
    objects.wrote({"metadata": {"resourceVersion": "41"}})
    objects.wrote({"metadata": {"resourceVersion": "42"}})  # the last write counts
    await objects.items()
    assert len(await objects.items()) == 2 and len(kube.lists) == 2
    objects.write_failed()
    await objects.items()
    objects.write_failed()
    await objects.items()
    objects.write_failed()
    await objects.items()
    now[0] = 599 + 599  # the period counts from the last LIST
    assert len(await objects.items()) == 2 and len(kube.lists) == 5
    now[0] = 599 + 600  # the long period
    await objects.items()
    assert [read for _, read in kube.lists] == [
        ANY_VERSION,  # first read
        not_older_than("42"),  # after our writes
        not_older_than("42"),  # after a refused write: not older than our last one
        CONSISTENT, CONSISTENT,  # refused again: consistent
        ANY_VERSION,  # the period: any version
    ]
    assert objects.lists == 6 and {sel for sel, _ in kube.lists} == {"disklet.io/node=n1"}


async def test_first_read_and_failures_without_a_known_write() -> None:
    now = [0.0]
    kube = FakeKube()
    objects = _objects(kube, now, first_read=CONSISTENT)
    objects.index = {}
    objects.write_failed()  # before the first read: it stays consistent
    await objects.items()
    objects.write_failed()  # no write of ours known: consistent
    await objects.items()
    objects.wrote({"metadata": {}})  # an answer without a resourceVersion: consistent
    await objects.items()
    objects.write_failed()
    objects.wrote({"metadata": {"resourceVersion": "7"}})  # a pending consistent read stays
    await objects.items()
    objects.wrote({"metadata": {"resourceVersion": "8"}})  # a success resets the failure count
    objects.write_failed()
    await objects.items()
    assert [read for _, read in kube.lists] == [CONSISTENT, CONSISTENT, CONSISTENT, CONSISTENT, not_older_than("8")]


def test_list_read_query_parameters() -> None:
    assert CONSISTENT.query() == []
    assert ANY_VERSION.query() == [("resourceVersion", "0")]
    assert not_older_than("123").query() == [("resourceVersion", "123"), ("resourceVersionMatch", "NotOlderThan")]
    for bad in ("", "0"):
        with pytest.raises(ValueError):
            not_older_than(bad)


TOO_LARGE = ('{"kind":"Status","apiVersion":"v1","status":"Failure","message":"Timeout: Too large resource version: '
             '7394, current: 6126","reason":"Timeout","details":{"causes":[{"reason":"ResourceVersionTooLarge",'
             '"message":"Too large resource version"}],"retryAfterSeconds":1},"code":504}')


class LaggingCacheKube(FakeKube):
    """The API server's answer when its watch cache has not reached the asked resourceVersion in time
    (seen at 1000 agents on an etcd without RequestWatchProgress)."""

    async def list(self, res: Any, *, label_selector: str | None = None, read: ListRead = CONSISTENT) -> list[dict[str, Any]]:
        if read not in (CONSISTENT, ANY_VERSION):
            self.lists.append((label_selector, read))
            raise ApiError.from_response("list blockdevices", 504, "Gateway Timeout", TOO_LARGE)
        return await super().list(res, label_selector=label_selector, read=read)


async def test_a_cache_behind_our_write_falls_back_to_a_consistent_read() -> None:
    now = [0.0]
    kube = LaggingCacheKube()
    objects = _objects(kube, now)
    await objects.items()
    objects.wrote({"metadata": {"resourceVersion": "7394"}})
    assert await objects.items() == [{"metadata": {"name": "listed"}}]
    assert [read for _, read in kube.lists] == [ANY_VERSION, not_older_than("7394"), CONSISTENT]
    assert objects.lists == 3


async def test_other_list_errors_are_not_retried() -> None:
    class Broken(FakeKube):
        async def list(self, res: Any, *, label_selector: str | None = None,
                       read: ListRead = CONSISTENT) -> list[dict[str, Any]]:
            self.lists.append((label_selector, read))
            raise ApiError.from_response("list blockdevices", 503, "Service Unavailable", "")

    kube = Broken()
    objects = _objects(kube, [0.0])
    objects.wrote({"metadata": {"resourceVersion": "5"}})
    with pytest.raises(ApiError):
        await objects.items()
    assert len(kube.lists) == 1


async def test_resync_zero_lists_only_when_a_write_asks() -> None:
    """``DISKLET_RESYNC_INTERVAL_SECONDS=0``: no periodic relist, however long the agent runs; the
    relists after its own writes stay (they are how a cycle sees what it wrote)."""
    now = [0.0]
    kube = FakeKube()
    objects = NodeObjects(kube, BLOCK_DEVICE, "n1", resync_seconds=0, clock=lambda: now[0])  # type: ignore[arg-type]
    await objects.items()
    objects.index = {"a": [{"metadata": {"name": "a"}}]}
    for now[0] in (1.0, 600.0, 86_400.0 * 365):
        assert [o["metadata"]["name"] for o in await objects.items()] == ["a"]
    assert len(kube.lists) == 1
    objects.wrote({"metadata": {"resourceVersion": "7"}})
    await objects.items()
    await objects.items()
    assert [read for _, read in kube.lists] == [ANY_VERSION, not_older_than("7")]


def test_resync_interval_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    from disklet_agent.config import AgentConfig

    assert AgentConfig.from_env().resync_interval_seconds == 600
    monkeypatch.setenv("DISKLET_RESYNC_INTERVAL_SECONDS", "0")
    assert AgentConfig.from_env().resync_interval_seconds == 0
    monkeypatch.setenv("DISKLET_RESYNC_INTERVAL_SECONDS", "-5")
    with pytest.raises(ValueError, match="resync_interval_seconds"):
        AgentConfig.from_env()
