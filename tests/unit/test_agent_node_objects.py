"""NodeObjects (agent/disklet_agent/kube.py): answers from the watch-fed index, LISTs only to resync."""

from __future__ import annotations

from typing import Any

from disklet_agent.kube import NodeObjects

from disklet.api.resources import BLOCK_DEVICE


class FakeKube:
    def __init__(self) -> None:
        self.lists: list[str | None] = []

    async def list(self, res: Any, *, label_selector: str | None = None) -> list[dict[str, Any]]:
        self.lists.append(label_selector)
        return [{"metadata": {"name": "listed"}}]


async def test_list_once_then_index_then_resync_on_invalidate_and_period() -> None:
    now = [0.0]
    kube = FakeKube()
    objects = NodeObjects(kube, BLOCK_DEVICE, "n1", resync_seconds=600, clock=lambda: now[0])  # type: ignore[arg-type]
    assert await objects.items() == [{"metadata": {"name": "listed"}}]  # no index yet: LIST
    objects.index = {"a": [{"metadata": {"name": "a"}}], "b": [{"metadata": {"name": "b"}}]}
    assert [o["metadata"]["name"] for o in await objects.items()] == ["a", "b"]  # from the index
    now[0] = 599
    assert len(await objects.items()) == 2 and len(kube.lists) == 1
    objects.invalidate()  # a write failed: the next call relists
    await objects.items()
    assert len(kube.lists) == 2
    assert len(await objects.items()) == 2 and len(kube.lists) == 2
    now[0] = 599 + 600  # the long period
    await objects.items()
    assert len(kube.lists) == 3 and objects.lists == 3
    assert set(kube.lists) == {"disklet.io/node=n1"}
