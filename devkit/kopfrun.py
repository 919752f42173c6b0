"""Run a Kopf registry in-process against a Kubernetes API URL (the mock or a real one).

``kopf.operator()`` cancels every other task of its event loop when it stops (pytest's own among them), so this uses
``kopf.spawn_tasks`` + ``kopf.run_tasks`` with explicit stop/ready flags.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from typing import Any

import kopf

from disklet.kube.login import add_kopf_login


def add_login(registry: kopf.OperatorRegistry, server: str | None = None, *,
              info: kopf.ConnectionInfo | None = None) -> None:
    """Authenticate the registry's operator — Kopf and disklet's own client — with ``info``, or
    against the mock at ``server`` (token auth is ignored there)."""
    if info is None and server is None:
        raise ValueError("add_login needs a server URL or connection info")
    login = info or kopf.ConnectionInfo(server=str(server), insecure=True, token="mock")

    def _login(**_: Any) -> kopf.ConnectionInfo:
        return login

    add_kopf_login(registry, _login)


@contextlib.asynccontextmanager
async def kopf_running(registry: kopf.OperatorRegistry, *, server: str | None = None, kube: Any = None,
                       settings: kopf.OperatorSettings | None = None,
                       configure: Callable[[kopf.OperatorSettings], object] | None = None,
                       standalone: bool = True, peering_name: str | None = None,
                       ready_timeout: float = 15.0, memo: object | None = None) -> AsyncIterator[kopf.OperatorSettings]:
    if kube is not None:  # devkit.kubeapi.KubeAPI or devkit.realkube.RealKube
        add_login(registry, info=kube.connection_info())
    elif server is not None:
        add_login(registry, server)
    settings = settings or kopf.OperatorSettings()
    settings.posting.enabled = True
    settings.watching.reconnect_backoff = 0.1
    settings.watching.server_timeout = 30
    settings.networking.request_timeout = 30
    if configure is not None:
        configure(settings)
    if logging.getLogger("kopf").level < logging.WARNING:
        logging.getLogger("kopf").setLevel(logging.WARNING)
    stop = asyncio.Event()
    ready = asyncio.Event()
    # Tasks that exist before this operator starts (the caller, pytest, other operators) are not its
    # own: without ``ignored`` run_tasks treats them as "hung" at shutdown and cancels them, which
    # also cancels the cleanup of operators still running (their aiohttp sessions are never closed).
    existing = asyncio.all_tasks()
    tasks = await kopf.spawn_tasks(registry=registry, settings=settings, standalone=standalone,
                                   peering_name=peering_name, clusterwide=True, stop_flag=stop,
                                   ready_flag=ready, memo=memo)
    runner = asyncio.create_task(kopf.run_tasks(tasks, ignored=existing))
    try:
        done, _ = await asyncio.wait({runner, asyncio.create_task(ready.wait())}, timeout=ready_timeout,
                                     return_when=asyncio.FIRST_COMPLETED)
        if runner in done:
            runner.result()  # re-raise the startup failure
        if not ready.is_set():
            raise TimeoutError("the Kopf operator did not become ready")
        yield settings
    finally:
        stop.set()
        try:
            await asyncio.wait_for(runner, timeout=15)
        except (asyncio.CancelledError, TimeoutError):
            runner.cancel()


async def wait_for(predicate: Callable[[], Any], timeout: float = 10.0, interval: float = 0.05,
                   message: str = "condition") -> Any:
    """Poll ``predicate`` until it returns a truthy value; fail with ``message`` after ``timeout``."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    last: Any = None
    while loop.time() < deadline:
        last = predicate()
        if last:
            return last
        await asyncio.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {message}; last value: {last!r}")
