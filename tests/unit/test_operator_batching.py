"""The operator's collection window (operator/disklet_operator/batching.py): what arrives together is one call."""

from __future__ import annotations

import asyncio
import threading

import pytest
from disklet_operator.batching import Batcher


async def test_items_submitted_together_share_one_call() -> None:
    calls: list[list[int]] = []

    def square_all(items: list[int]) -> list[int]:
        calls.append(list(items))
        return [i * i for i in items]

    batcher: Batcher[int, int] = Batcher(square_all, window=3600, max_items=5)  # flushes when full, never by time
    assert await asyncio.gather(*(batcher.submit(i) for i in range(5))) == [0, 1, 4, 9, 16]
    assert calls == [[0, 1, 2, 3, 4]] and batcher.batches == 1


async def test_items_arriving_during_a_run_form_the_next_batch() -> None:
    started, release = threading.Event(), threading.Event()
    calls: list[list[str]] = []

    def slow(items: list[str]) -> list[str]:
        calls.append(list(items))
        started.set()
        release.wait(30)
        return [s.upper() for s in items]

    batcher: Batcher[str, str] = Batcher(slow, window=0, max_items=100)
    first = asyncio.ensure_future(batcher.submit("a"))
    await asyncio.to_thread(started.wait, 30)
    later = [asyncio.ensure_future(batcher.submit(s)) for s in ("b", "c", "d")]
    await asyncio.sleep(0)
    release.set()
    assert await first == "A"
    assert await asyncio.gather(*later) == ["B", "C", "D"]
    assert calls == [["a"], ["b", "c", "d"]]


async def test_a_failing_batch_fails_every_waiter() -> None:
    def boom(items: list[int]) -> list[int]:
        raise RuntimeError("evaluator crashed")

    batcher: Batcher[int, int] = Batcher(boom, window=3600, max_items=2)
    results = await asyncio.gather(batcher.submit(1), batcher.submit(2), return_exceptions=True)
    assert all(isinstance(r, RuntimeError) for r in results)
    with pytest.raises(RuntimeError):
        await Batcher(boom, window=0).submit(3)
