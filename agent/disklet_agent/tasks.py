"""Node-level background loops (lease, BlockDevice scan, LVM discovery) tied to the operator's life.

Kopf has timers per object but none per node, so the agent starts these from a startup handler
and cancels them in a cleanup handler. One ``BackgroundTasks`` per registry.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import weakref
from collections.abc import Coroutine
from typing import Any

import kopf

log = logging.getLogger("disklet.agent.tasks")

_BY_REGISTRY: weakref.WeakKeyDictionary[kopf.OperatorRegistry, BackgroundTasks] = weakref.WeakKeyDictionary()


class BackgroundTasks:
    def __init__(self) -> None:
        self.tasks: dict[str, asyncio.Task[Any]] = {}

    @classmethod
    def attach(cls, registry: kopf.OperatorRegistry) -> BackgroundTasks:
        """The registry's task set; the first call registers the cleanup handler that stops them."""
        existing = _BY_REGISTRY.get(registry)
        if existing is not None:
            return existing
        tasks = cls()
        _BY_REGISTRY[registry] = tasks

        @kopf.on.cleanup(registry=registry)
        async def disklet_stop_background_tasks(**_: Any) -> None:
            await tasks.stop()

        return tasks

    def start(self, name: str, coro: Coroutine[Any, Any, Any]) -> None:
        old = self.tasks.get(name)
        if old is not None and not old.done():
            coro.close()
            return
        task = asyncio.create_task(coro, name=name)
        task.add_done_callback(self._report)
        self.tasks[name] = task

    @staticmethod
    def _report(task: asyncio.Task[Any]) -> None:
        if not task.cancelled() and task.exception() is not None:
            log.error("background task %s died: %r", task.get_name(), task.exception())

    async def stop(self) -> None:
        tasks = list(self.tasks.values())
        self.tasks.clear()
        for t in tasks:
            t.cancel()
        for t in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t
