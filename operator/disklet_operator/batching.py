"""Collect calls that arrive together and answer them with one batch call (docs/operator.md, "Batch pre-flight").

The first item opens a short collection window; everything submitted within it — and
everything submitted while a batch is running — goes into one call of ``fn`` (run in a worker
thread, one batch at a time). At operator start Kopf resumes every DiskLayout at once, so the
whole fleet's layouts are pre-flighted in a handful of evaluator runs instead of one each.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from typing import Generic, TypeVar

T = TypeVar("T")
R = TypeVar("R")


class Batcher(Generic[T, R]):
    def __init__(self, fn: Callable[[list[T]], Sequence[R]], *, window: float = 0.1, max_items: int = 1000) -> None:
        self.fn = fn
        self.window = window
        self.max_items = max_items
        self.batches = 0
        self._pending: list[tuple[T, asyncio.Future[R]]] = []
        self._lock: asyncio.Lock | None = None
        self._flusher: asyncio.Task[None] | None = None
        self._full: asyncio.Event | None = None

    async def submit(self, item: T) -> R:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[R] = loop.create_future()
        self._pending.append((item, future))
        if self._full is None:
            self._full = asyncio.Event()
        if len(self._pending) >= self.max_items:
            self._full.set()
        if self._flusher is None or self._flusher.done():
            self._flusher = loop.create_task(self._flush_soon())
        return await future

    async def _flush_soon(self) -> None:
        if self._lock is None:
            self._lock = asyncio.Lock()
        assert self._full is not None
        try:
            await asyncio.wait_for(self._full.wait(), timeout=self.window)
        except TimeoutError:
            pass
        async with self._lock:
            while self._pending:
                batch, self._pending = self._pending[:self.max_items], self._pending[self.max_items:]
                self._full.clear()
                self.batches += 1
                try:
                    results = await asyncio.to_thread(self.fn, [item for item, _ in batch])
                except Exception as exc:  # every waiter sees the failure, none hangs
                    for _, future in batch:
                        if not future.done():
                            future.set_exception(exc)
                    continue
                for (_, future), result in zip(batch, results, strict=True):
                    if not future.done():
                        future.set_result(result)
