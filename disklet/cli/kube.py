"""kctl's view of the cluster: the shared :class:`disklet.kube.client.KubeClient`, logged in from a
kubeconfig (``--kubeconfig``/``--context``, exec credential plugins included), with every error
turned into a :class:`KubeError` that says what to do next."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Sequence
from typing import Any

import aiohttp

from disklet.kube import login
from disklet.kube.client import (
    CLOSE,
    EVENTS,
    NODES,
    PODS,
    STDIN_CHUNK,
    ApiError,
    KindLike,
    KubeClient,
    NotFound,
    exit_code_of,
    kind_of,
    stdin_frames,
)
from disklet.kube.client import Kind as Kind

FIELD_MANAGER = "kctl"
KubeError = ApiError
"""kctl's name for a failed call (the shared :class:`~disklet.kube.client.ApiError`)."""

__all__ = ["CLOSE", "EVENTS", "FIELD_MANAGER", "NODES", "PODS", "STDIN_CHUNK", "Kind", "Kube", "KubeError",
           "NotFound", "exit_code_of", "stdin_frames"]

HINTS = {
    0: "check the cluster is up and --context/--kubeconfig point at it",
    401: "your credentials were rejected: refresh them or pick another --context",
    403: "your user lacks RBAC permission for this (ask for the disklet editor/viewer role)",
    404: "check the name with `kctl get`",
    409: "another field manager owns these fields: reconcile with its owner, or re-run with "
         "--force-conflicts to take ownership",
    422: "the API server rejected the object: fix the manifest and re-run",
}


def with_hint(exc: ApiError, hint: str | None = None) -> ApiError:
    """The same error (same class, status, reason) with a ``hint:`` line for the user."""
    hint = hint if hint is not None else HINTS.get(exc.status, "")
    if not hint or "\n  hint:" in str(exc):
        return exc
    return type(exc)(f"{exc}\n  hint: {hint}", exc.status, exc.reason, exc.body, exc.message)


class Kube(KubeClient):
    """An open connection to one cluster (``async with await Kube.connect(...) as kube``)."""

    @classmethod
    async def connect(cls, kubeconfig: str | None = None, context: str | None = None) -> Kube:
        def load() -> login.Endpoint:
            return login.kubeconfig(kubeconfig, context)

        try:
            endpoint = await asyncio.to_thread(load)
        except ApiError as exc:
            raise with_hint(exc, "pass --kubeconfig FILE and/or --context NAME, or set KUBECONFIG") from None
        return cls(endpoint, login=load, field_manager=FIELD_MANAGER)

    async def request(self, method: str, path: str, **kwargs: Any) -> Any:
        try:
            return await super().request(method, path, **kwargs)
        except ApiError as exc:
            raise with_hint(exc) from None

    async def list_objects(self, kind: KindLike, *, namespace: str | None = None, label_selector: str | None = None,
                           field_selector: str | None = None) -> list[dict[str, Any]]:
        return await self.list(kind, namespace=namespace, label_selector=label_selector,
                               field_selector=field_selector)

    async def exec(self, *args: Any, **kwargs: Any) -> int:
        try:
            return await super().exec(*args, **kwargs)
        except ApiError as exc:
            hint = "you need RBAC create on pods/exec in that namespace" if exc.status in (401, 403) else ""
            raise with_hint(exc, hint) from None

    async def text(self, path: str, *, query: Sequence[tuple[str, str]] = (), what: str = "") -> str:
        """A plain-text GET (pod logs): the body as text."""
        what = what or f"GET {path}"
        session, ep = await self.session()
        try:
            async with session.get(ep.server + path, params=list(query), headers={"Accept": "*/*"},
                                   proxy=ep.proxy) as resp:
                body = await resp.text()
                if resp.status >= 400:
                    raise with_hint(ApiError.from_response(what, resp.status, resp.reason or "", body))
                return body
        except (aiohttp.ClientError, OSError) as exc:
            raise with_hint(ApiError(f"{what}: cannot reach the API server at {ep.server}: {exc}")) from None

    async def watch(self, kind: KindLike, *, label_selector: str | None = None, timeout_seconds: int | None = None,
                    resource_version: str | None = None) -> AsyncIterator[dict[str, Any]]:
        """Watch events (``{"type", "object"}``) of ``kind`` after ``resource_version`` (a list's)."""
        kind = kind_of(kind)
        query = [("watch", "true")]
        if resource_version:
            query.append(("resourceVersion", resource_version))
        if label_selector:
            query.append(("labelSelector", label_selector))
        if timeout_seconds:
            query.append(("timeoutSeconds", str(timeout_seconds)))
        session, ep = await self.session()
        try:
            async with session.get(ep.server + kind.path(), params=query, headers={"Accept": "application/json"},
                                   proxy=ep.proxy, timeout=aiohttp.ClientTimeout(total=None, sock_connect=30)) as resp:
                if resp.status >= 400:
                    raise with_hint(ApiError.from_response(f"watch {kind.plural}", resp.status, resp.reason or "",
                                                           await resp.text()))
                async for line in resp.content:
                    if line.strip():
                        yield json.loads(line)
        except (aiohttp.ClientError, OSError) as exc:
            raise with_hint(ApiError(f"watch {kind.plural}: cannot reach the API server at {ep.server}: {exc}")) from None
