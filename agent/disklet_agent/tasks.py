"""Node-level background loops (lease, BlockDevice scan, LVM discovery, the periodic checks of
watched objects) tied to the operator's life.

Kopf has timers per object but none per node, so the agent starts these from a startup handler
and cancels them in a cleanup handler. One ``BackgroundTasks`` per registry.

Why no Kopf timer per object: the agent's watches are label-filtered, and when an object leaves
the selector the watch says DELETED; Kopf then forgets the object without stopping its timers, so
each time it leaves and comes back one more timer runs, and they all keep running after the
object is deleted. :func:`every` + :func:`walk_watched` check the objects a watch-fed Kopf index
holds instead: one loop per node, and an object the watch no longer shows is not checked.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import weakref
from collections.abc import Awaitable, Callable, Coroutine, Mapping
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


async def walk_watched(index: Any, check: Callable[[str, Mapping[str, Any]], Awaitable[object]], *,
                       what: str, node: str, key: str) -> None:
    """One pass over a watch-fed Kopf index (name → one object as last watched), in name order.

    An object the watch no longer shows — deleted, or relabelled out of the node's selector — is not
    in the index, and one that left during the pass is skipped (each is looked up again right before
    its check), as is one being deleted. ``check(name, seen)`` must re-read what it acts on. A failure
    of one check is logged (``what``; ``key``: the log field naming the object) and does not stop the others.
    """
    if index is None:
        return
    for name in sorted(list(index)):
        seen = next(iter(index.get(name, ())), None)
        if seen is None or (seen.get("metadata") or {}).get("deletionTimestamp"):
            continue
        try:
            await check(name, seen)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.error("%s failed: %r", what, exc, extra={key: name, "node": node})


async def every(interval: float, run: Callable[[], Awaitable[object]]) -> None:
    """``run()`` every ``interval`` seconds (the first ``interval`` after start), one at a time."""
    while True:
        await asyncio.sleep(interval)
        await run()
