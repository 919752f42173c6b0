"""The agent's one Kubernetes client for its own writes: a few REST calls on aiohttp, dict bodies.

Kopf watches and posts Events with its own session; everything else the agent writes — LVG
status, BlockDevices, its Lease — goes through this class. Why not Kopf's client: it is private
API and has no credentials before the startup handlers finish (the startup re-attach must list
this node's LVMVolumeGroups before any handler runs). Why not kubernetes-asyncio: importing its
generated models costs ~60 MiB of RSS, most of the agent's memory goal, for six REST calls.

Credentials come from Kopf's public login functions — ``kopf.login_with_service_account()`` in a
pod (``KUBERNETES_SERVICE_HOST`` set), otherwise ``kopf.login_with_kubeconfig()`` (``KUBECONFIG``
or ``~/.kube/config``): the same sources as the agent's Kopf login. A 401 re-reads them once
(service-account tokens are rotated on disk). Patches are JSON merge patches (the mock and the
real server agree on them). Errors are :class:`ApiError` with the HTTP ``status``.
"""

from __future__ import annotations

import asyncio
import json
import os
import ssl
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import aiohttp
import kopf

from disklet.api.resources import NODE_LABEL, Resource
from disklet.labels import node_label_value

MERGE = "application/merge-patch+json"
REQUEST_TIMEOUT_SECONDS = 60.0
"""Upper bound of one request: a hung API server must not stall the Lease loop forever."""

__all__ = ["AgentKube", "ApiError", "ApiException", "Endpoint", "endpoint_from", "login", "is_not_found",
           "is_conflict"]


class ApiError(Exception):
    """A non-2xx answer of the API server: ``status`` (HTTP code), ``reason``, raw ``body``."""

    def __init__(self, status: int, reason: str, body: str = "", method: str = "", url: str = ""):
        self.status = status
        self.reason = reason
        self.body = body
        message = reason
        try:
            message = str(json.loads(body).get("message") or reason)
        except (ValueError, AttributeError):
            pass
        super().__init__(f"{method} {url}: {status} {message}".strip())


ApiException = ApiError
"""The name callers used with kubernetes-asyncio; same ``.status`` contract."""


def is_not_found(exc: BaseException) -> bool:
    return isinstance(exc, ApiError) and exc.status == 404


def is_conflict(exc: BaseException) -> bool:
    return isinstance(exc, ApiError) and exc.status == 409


@dataclass(frozen=True)
class Endpoint:
    """What a session needs from a :class:`kopf.ConnectionInfo`: where, how to trust it, who we are."""

    server: str
    headers: dict[str, str]
    ssl_context: ssl.SSLContext | None
    proxy: str | None = None
    trust_env: bool = False


def in_cluster_server() -> str | None:
    """``https://$KUBERNETES_SERVICE_HOST:$KUBERNETES_SERVICE_PORT`` (what client-go uses in a pod).

    Kopf's service-account login names ``kubernetes.default.svc``, which a hostNetwork pod without
    cluster DNS cannot resolve; the service IP is in the API server certificate as well.
    """
    host = os.environ.get("KUBERNETES_SERVICE_HOST")
    if not host:
        return None
    port = os.environ.get("KUBERNETES_SERVICE_PORT") or "443"
    return f"https://[{host}]:{port}" if ":" in host else f"https://{host}:{port}"


def endpoint_from(info: kopf.ConnectionInfo, server: str | None = None) -> Endpoint:
    """Translate Kopf's connection info: CA / client certificate / insecure into an SSL context
    (only for https), the bearer token or basic auth into an ``Authorization`` header."""
    url = (server or info.server or "").rstrip("/")
    if not url:
        raise kopf.LoginError("the Kubernetes login gave no server address")
    context = info.as_ssl_context() if url.startswith("https:") else None
    return Endpoint(server=url, headers=dict(info.as_http_headers()), ssl_context=context,
                    proxy=info.proxy_url, trust_env=bool(info.trust_env))


def login() -> Endpoint:
    """Service account in a pod, kubeconfig elsewhere (Kopf's public login functions)."""
    settings = kopf.OperatorSettings()
    if os.environ.get("KUBERNETES_SERVICE_HOST"):
        info = kopf.login_with_service_account(settings=settings)
        server = in_cluster_server()
    else:
        info = kopf.login_with_kubeconfig(settings=settings)
        server = None
    if info is None:
        raise kopf.LoginError("no Kubernetes credentials: no service account token and no KUBECONFIG "
                              "or ~/.kube/config")
    return endpoint_from(info, server)


def _q(part: str) -> str:
    return quote(part, safe="")


class AgentKube:
    """Lazily connected; one per agent (``AgentKube.close()`` at cleanup).

    ``endpoint``: a fixed endpoint (tests); default: :func:`login` on first use and after a 401.
    """

    def __init__(self, endpoint: Endpoint | None = None, *, timeout: float = REQUEST_TIMEOUT_SECONDS):
        self._fixed = endpoint
        self._endpoint: Endpoint | None = endpoint
        self._session: aiohttp.ClientSession | None = None
        self._timeout = timeout
        self._lock = asyncio.Lock()

    async def session(self) -> tuple[aiohttp.ClientSession, Endpoint]:
        async with self._lock:
            if self._session is None or self._session.closed or self._endpoint is None:
                if self._endpoint is None:
                    self._endpoint = await asyncio.to_thread(login)  # reads files
                ep = self._endpoint
                connector = aiohttp.TCPConnector(ssl=ep.ssl_context if ep.ssl_context is not None else True, limit=4)
                self._session = aiohttp.ClientSession(
                    connector=connector, headers=ep.headers, trust_env=ep.trust_env,
                    timeout=aiohttp.ClientTimeout(total=self._timeout))
            return self._session, self._endpoint

    async def _relogin(self) -> None:
        """Drop the session and credentials (a rotated token): the next request logs in again."""
        async with self._lock:
            old, self._session = self._session, None
            self._endpoint = self._fixed
        if old is not None:
            await old.close()

    async def close(self) -> None:
        async with self._lock:
            old, self._session = self._session, None
        if old is not None:
            await old.close()

    async def request(self, method: str, path: str, *, body: Any = None, params: dict[str, str] | None = None,
                      content_type: str = "application/json") -> Any:
        """One API call; the decoded JSON answer. Non-2xx → :class:`ApiError` (401: re-login, retry once)."""
        data = None if body is None else json.dumps(body).encode()
        headers = {"Accept": "application/json"}
        if data is not None:
            headers["Content-Type"] = content_type
        for attempt in (1, 2):
            session, ep = await self.session()
            url = ep.server + path
            async with session.request(method, url, data=data, params=params, headers=headers,
                                       proxy=ep.proxy) as resp:
                text = await resp.text()
                if resp.status == 401 and attempt == 1 and self._fixed is None:
                    await self._relogin()
                    continue
                if resp.status >= 400:
                    raise ApiError(resp.status, resp.reason or "", text, method, url)
                return json.loads(text) if text else None
        raise AssertionError("unreachable")  # pragma: no cover

    @staticmethod
    def _cluster_path(res: Resource, name: str | None = None, sub: str | None = None) -> str:
        path = f"/apis/{res.group}/{res.version}/{res.plural}"
        if name is not None:
            path += "/" + _q(name)
        if sub is not None:
            path += "/" + sub
        return path

    # ------------------------------------------------------------- cluster-scoped disklet objects
    async def list_node_objects(self, res: Resource, node: str) -> list[dict[str, Any]]:
        """This node's objects of ``res`` (server-side label selector ``disklet.io/node=<node>``)."""
        out = await self.request("GET", self._cluster_path(res),
                                 params={"labelSelector": f"{NODE_LABEL}={node_label_value(node)}"})
        return list((out or {}).get("items") or [])

    async def get(self, res: Resource, name: str) -> dict[str, Any] | None:
        """The object, or None when it does not exist (404)."""
        try:
            return dict(await self.request("GET", self._cluster_path(res, name)))
        except ApiError as exc:
            if exc.status == 404:
                return None
            raise

    async def create(self, res: Resource, body: dict[str, Any]) -> dict[str, Any]:
        return dict(await self.request("POST", self._cluster_path(res), body=body))

    async def patch(self, res: Resource, name: str, body: dict[str, Any]) -> dict[str, Any]:
        return dict(await self.request("PATCH", self._cluster_path(res, name), body=body, content_type=MERGE))

    async def patch_status(self, res: Resource, name: str, status: dict[str, Any]) -> dict[str, Any]:
        return dict(await self.request("PATCH", self._cluster_path(res, name, "status"), body={"status": status},
                                       content_type=MERGE))

    async def delete(self, res: Resource, name: str) -> None:
        """Delete; an object already gone (404) is fine."""
        try:
            await self.request("DELETE", self._cluster_path(res, name))
        except ApiError as exc:
            if exc.status != 404:
                raise

    # ------------------------------------------------------------- leases
    @staticmethod
    def _lease_path(namespace: str, name: str | None = None) -> str:
        path = f"/apis/coordination.k8s.io/v1/namespaces/{_q(namespace)}/leases"
        return path if name is None else path + "/" + _q(name)

    async def patch_lease(self, namespace: str, name: str, body: dict[str, Any]) -> dict[str, Any]:
        return dict(await self.request("PATCH", self._lease_path(namespace, name), body=body, content_type=MERGE))

    async def create_lease(self, namespace: str, body: dict[str, Any]) -> dict[str, Any]:
        return dict(await self.request("POST", self._lease_path(namespace), body=body))
