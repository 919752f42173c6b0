"""The agent's Kubernetes adapter: the shared :class:`disklet.kube.client.KubeClient`, logged in
with the agent's own credentials, plus the two calls only the agent makes (its node's objects,
its Lease).

Kopf watches and posts Events with its own session; everything else the agent writes — LVG
status, BlockDevices, its Lease — goes through this client. It logs in by itself (Kopf's public
login functions, :func:`disklet.kube.login.pod_or_kubeconfig`) because the startup re-attach
must list this node's LVMVolumeGroups before Kopf has credentials. Why not kubernetes-asyncio:
docs/architecture.md ("The Kubernetes client").
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

from disklet.api.resources import NODE_LABEL, Resource
from disklet.kube.client import (
    ANY_VERSION,
    CONSISTENT,
    LEASES,
    ApiError,
    Endpoint,
    KubeClient,
    ListRead,
    is_conflict,
    is_not_found,
    is_resource_version_too_large,
    not_older_than,
    resource_version_of,
)
from disklet.kube.login import endpoint_from, in_cluster_server
from disklet.kube.login import pod_or_kubeconfig as login
from disklet.labels import node_label_value

__all__ = ["ANY_VERSION", "CONSISTENT", "AgentKube", "ApiError", "ClientClosed", "Endpoint", "ListRead", "NodeObjects", "endpoint_from", "in_cluster_server",
           "is_conflict", "is_not_found", "login"]


class ClientClosed(RuntimeError):
    """A request after :meth:`AgentKube.close` (shutdown)."""


class AgentKube(KubeClient):
    """Lazily connected; one per agent (``close()`` at cleanup). ``endpoint``: fixed (tests)."""

    def __init__(self, endpoint: Endpoint | None = None, **kwargs: Any) -> None:
        super().__init__(endpoint, login=None if endpoint is not None else login, field_manager="disklet-agent",
                         **kwargs)
        self._closed = False

    async def session(self) -> Any:
        """As the shared client's, but never after :meth:`close`: a background task still running at
        shutdown must not open a session nobody closes (aiohttp's "Unclosed connector" at exit)."""
        if self._closed:
            raise ClientClosed("the agent's API client is closed (shutting down)")
        got = await super().session()
        if self._closed:  # closed while this call waited for the lock
            await super().close()
            raise ClientClosed("the agent's API client is closed (shutting down)")
        return got

    async def close(self) -> None:
        self._closed = True
        await super().close()

    async def get_lease(self, namespace: str, name: str) -> dict[str, Any] | None:
        """The Lease, or None when it does not exist."""
        return await self.get(LEASES, name, namespace)

    async def list_node_objects(self, res: Resource, node: str) -> list[dict[str, Any]]:
        """This node's objects of ``res`` (server-side label selector ``disklet.io/node=<node>``)."""
        return await self.list(res, label_selector=f"{NODE_LABEL}={node_label_value(node)}")

    async def patch_lease(self, namespace: str, name: str, body: dict[str, Any]) -> dict[str, Any]:
        return await self.patch(LEASES, name, body, namespace)

    async def create_lease(self, namespace: str, body: dict[str, Any]) -> dict[str, Any]:
        return await self.create(LEASES, body, namespace)


class NodeObjects:
    """This node's objects of one resource, as the (node-filtered) watch last showed them.

    ``index`` is a Kopf index of ``name → object`` fed by the agent's watch stream (Kopf hands it
    to the startup handler, empty, and fills it as events arrive). :meth:`items` answers from it
    and LISTs only to resync, each LIST asking for no fresher a state than it needs
    (:class:`disklet.kube.client.ListRead`; docs/agent.md, "API requests at idle"):

    - the first time: ``first_read`` (the caller's choice: the LVG re-attach acts on the host from
      this list and reads consistently; the BlockDevice scan reads ``resourceVersion=0``);
    - after :meth:`wrote` (a write of ours succeeded): not older than that write's
      ``resourceVersion`` (``resourceVersionMatch=NotOlderThan``), so the view holds the write;
    - after :meth:`write_failed` (a write the cached view made fail: conflict, not found): not older
      than our last write, when there was one; a consistent read when none is known, or when our
      previous write failed too (no write succeeded in between: the cache may not yet hold what
      made them fail, and a refusal's answer carries no ``resourceVersion`` to ask for);
    - a not-older-than read the API server cannot serve in time ("Too large resource version", HTTP
      504: its watch cache lags behind etcd) is made again as a consistent read;
    - once every ``resync_seconds``: ``resourceVersion=0``, from the API server's watch cache. It
      is a safety net for a watch that missed something; nothing on the host is done from it
      alone (reconcile and delete GET their object fresh). ``0``: never.

    An idle agent therefore makes no request per cycle.
    """

    def __init__(self, kube: KubeClient, res: Resource, node: str, *, resync_seconds: float = 600.0,
                 first_read: ListRead = ANY_VERSION, clock: Any = None) -> None:
        self.kube = kube
        self.res = res
        self.node = node
        self.resync_seconds = resync_seconds
        self.clock = clock or time.monotonic
        self.index: Any = None
        self.lists = 0
        """LIST requests made (tests and benchmarks read it)."""
        self._listed_at: float | None = None
        self._pending: ListRead | None = first_read
        """The read the next :meth:`items` must make (None: the index will do, until the period ends)."""
        self._last_write_rv = ""
        self._failures_in_row = 0

    def wrote(self, answer: Mapping[str, Any] | None) -> None:
        """A write of ours succeeded (``answer``: the server's reply): the next call relists, from
        a state not older than it. A pending consistent read stays (it is fresher still)."""
        rv = resource_version_of(answer)
        self._failures_in_row = 0
        if rv:
            self._last_write_rv = rv
        if self._pending != CONSISTENT:
            self._pending = not_older_than(rv) if rv else CONSISTENT

    def write_failed(self) -> None:
        """A write failed, perhaps because the watched view is behind: the next call relists."""
        self._failures_in_row += 1
        if self._last_write_rv and self._failures_in_row == 1 and self._pending != CONSISTENT:
            self._pending = not_older_than(self._last_write_rv)
        else:
            self._pending = CONSISTENT

    async def items(self) -> list[dict[str, Any]]:
        now = self.clock()
        read = self._pending
        if read is None and (self.index is None or self._listed_at is None
                             or 0 < self.resync_seconds <= now - self._listed_at):
            read = ANY_VERSION
        if read is not None:
            selector = f"{NODE_LABEL}={node_label_value(self.node)}"
            try:
                items = await self.kube.list(self.res, label_selector=selector, read=read)
            except ApiError as exc:
                if read == CONSISTENT or not is_resource_version_too_large(exc):
                    raise
                # the watch cache has not reached our write in time (it lags, or etcd cannot tell it
                # it is current): read from etcd instead, as client-go's reflector does
                self.lists += 1
                items = await self.kube.list(self.res, label_selector=selector, read=CONSISTENT)
            self.lists += 1
            self._listed_at = now
            self._pending = None
            return items
        return [dict(obj) for name in list(self.index) for obj in self.index.get(name, ())]
