"""The one Kubernetes client of disklet: plain REST calls on aiohttp, dict bodies.

Operator, agent, kctl, the devkit demo and the e2e harness all talk to the API server through
:class:`KubeClient`; Kopf keeps its own session for watches, Events and its annotations. Why this
and not a generated client: see docs/architecture.md ("The Kubernetes client") — in short, the
agent's memory budget cannot carry kubernetes-asyncio's generated models, and disklet needs a
dozen verbs on dict bodies, not typed models.

Where credentials come from is :mod:`disklet.kube.login` (Kopf's public login functions in pods,
a full kubeconfig loader for kctl); this module only needs an :class:`Endpoint`. A 401 logs in
again once (rotated service-account tokens, expired exec-plugin tokens). Every failed call is an
:class:`ApiError` carrying the HTTP ``status`` (0: the server could not be reached).
"""

from __future__ import annotations

import asyncio
import json
import ssl
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Literal, Self
from urllib.parse import quote, urlencode

import aiohttp

from disklet.api.resources import Resource

MERGE_PATCH = "application/merge-patch+json"
APPLY_PATCH = "application/apply-patch+yaml"
REQUEST_TIMEOUT_SECONDS = 60.0
"""Upper bound of one request: a hung API server must not stall a loop forever."""
EXEC_PROTOCOLS = ("v5.channel.k8s.io", "v4.channel.k8s.io")
"""v5 lets the client close stdin (a remote ``-f -`` reader needs EOF); v4 cannot."""
STDIN, STDOUT, STDERR, ERROR, CLOSE = 0, 1, 2, 3, 255
STDIN_CHUNK = 32 * 1024

__all__ = ["ANY_VERSION", "APPLY_PATCH", "CONSISTENT", "EVENTS", "LEASES", "MERGE_PATCH", "NODES", "PODS", "ApiError",
           "ClientError", "Conflict", "Endpoint", "Kind", "KindLike", "KubeClient", "ListRead", "NotFound", "kind_of",
           "exit_code_of", "is_conflict", "is_not_found", "not_older_than", "resource_version_of", "stdin_frames"]


class ApiError(Exception):
    """A failed API call: ``status`` (HTTP code, 0 when unreachable), the Status ``reason`` and
    ``message`` (the server's own words), raw ``body``; ``str()`` says what was attempted too."""

    def __init__(self, text: str, status: int = 0, reason: str = "", body: str = "", message: str = ""):
        super().__init__(text)
        self.status = status
        self.reason = reason
        self.body = body
        self.message = message or text

    @classmethod
    def from_response(cls, what: str, status: int, http_reason: str, body: str) -> ApiError:
        """The server's ``metav1.Status`` message and reason when the body is one."""
        message, reason = http_reason, ""
        try:
            decoded = json.loads(body)
            message = str(decoded.get("message") or http_reason)
            reason = str(decoded.get("reason") or "")
        except (ValueError, AttributeError):
            if body:
                message = body[:500]
        text = f"{what}: {message} (HTTP {status}{' ' + reason if reason else ''})"
        kind = {404: NotFound, 409: Conflict}.get(status, ClientError if 400 <= status < 500 else cls)
        return kind(text, status, reason, body, message)


class ClientError(ApiError):
    """HTTP 4xx: the request itself was refused (retrying it unchanged will not help)."""


class NotFound(ClientError):
    """HTTP 404."""


class Conflict(ClientError):
    """HTTP 409: already exists, or a stale resourceVersion / field-manager conflict."""


def is_not_found(exc: BaseException) -> bool:
    return isinstance(exc, ApiError) and exc.status == 404


def is_conflict(exc: BaseException) -> bool:
    return isinstance(exc, ApiError) and exc.status == 409


def is_resource_version_too_large(exc: BaseException) -> bool:
    """A LIST asked for a ``resourceVersion`` the API server's watch cache has not reached in time
    (HTTP 504, cause ``ResourceVersionTooLarge``: "Too large resource version"). It happens when the
    cache lags behind etcd under load, or when etcd cannot report progress (no RequestWatchProgress)
    and the type has no newer event. As client-go's reflector does, read consistently instead."""
    if not isinstance(exc, ApiError) or exc.status != 504:
        return False
    if "Too large resource version" in exc.message:
        return True
    try:
        causes = (json.loads(exc.body).get("details") or {}).get("causes") or []
    except (ValueError, AttributeError):
        return False
    return any(isinstance(c, dict) and c.get("reason") == "ResourceVersionTooLarge" for c in causes)


@dataclass(frozen=True)
class Kind:
    """Where a kind lives in the REST API."""

    group: str
    version: str
    plural: str
    kind: str
    namespaced: bool = False

    @classmethod
    def of(cls, res: Resource) -> Kind:
        return cls(res.group, res.version, res.plural, res.kind)

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    def path(self, name: str | None = None, namespace: str | None = None, subresource: str | None = None) -> str:
        base = f"/apis/{self.group}/{self.version}" if self.group else f"/api/{self.version}"
        if self.namespaced and namespace:
            base += f"/namespaces/{quote(namespace, safe='')}"
        base += f"/{self.plural}"
        if name:
            base += f"/{quote(name, safe='')}"
            if subresource:
                base += f"/{subresource}"
        return base


NODES = Kind("", "v1", "nodes", "Node")
PODS = Kind("", "v1", "pods", "Pod", namespaced=True)
EVENTS = Kind("", "v1", "events", "Event", namespaced=True)
LEASES = Kind("coordination.k8s.io", "v1", "leases", "Lease", namespaced=True)
KindLike = Kind | Resource
"""Client methods take a :class:`Kind` or one of disklet's own resources (cluster-scoped)."""


def kind_of(kind: KindLike) -> Kind:
    return kind if isinstance(kind, Kind) else Kind.of(kind)


@dataclass(frozen=True)
class ListRead:
    """Which state of the cluster a LIST may be answered from: its ``resourceVersion`` and
    ``resourceVersionMatch`` query parameters (Kubernetes API concepts, "Resource versions" and
    "Semantics for get and list"). Use the three values below, not the fields:

    - :data:`CONSISTENT` (no ``resourceVersion``): the most recent state, a quorum read. An API
      server whose etcd cannot answer a progress request (``RequestWatchProgress``) reads it from
      etcd, every object of the type, and filters afterwards: O(objects of the type) per request.
    - :data:`ANY_VERSION` (``resourceVersion=0``): whatever the API server's watch cache holds
      (it may be behind what this client already saw; in HA setups even much behind).
    - :func:`not_older_than` (``resourceVersion=<rv>&resourceVersionMatch=NotOlderThan``): from the
      cache, at least as new as ``rv`` (e.g. the answer of one's own last write).
    """

    resource_version: str = ""
    match: Literal["", "NotOlderThan"] = ""

    def query(self) -> list[tuple[str, str]]:
        out = [("resourceVersion", self.resource_version)] if self.resource_version else []
        if self.match:
            out.append(("resourceVersionMatch", self.match))
        return out


CONSISTENT = ListRead()
ANY_VERSION = ListRead("0")


def not_older_than(resource_version: str) -> ListRead:
    """A LIST at least as new as ``resource_version`` (an RV the server gave; opaque, never compared)."""
    if not resource_version or resource_version == "0":
        raise ValueError(f"not_older_than needs a resourceVersion the server returned, not {resource_version!r}")
    return ListRead(resource_version, "NotOlderThan")


def resource_version_of(obj: Mapping[str, Any] | None) -> str:
    """``metadata.resourceVersion`` of an object (or a list) the server returned; "" when absent."""
    return str(((obj or {}).get("metadata") or {}).get("resourceVersion") or "")


@dataclass(frozen=True)
class Endpoint:
    """Where the API server is, how to trust it, who we are."""

    server: str
    headers: dict[str, str] = field(default_factory=dict)
    ssl_context: ssl.SSLContext | None = None
    proxy: str | None = None
    trust_env: bool = False


Login = Callable[[], Endpoint]
"""A credential source (blocking: it reads files or runs an exec plugin; called in a thread)."""
ExecSink = Callable[[bytes], Awaitable[None] | None]


class KubeClient:
    """Lazily connected to one cluster; ``close()`` (or ``async with``) when done.

    ``endpoint``: fixed credentials (tests); ``login``: called on first use and after a 401.
    ``requests`` counts the calls made (benchmarks and the LVMVolumeGroupSet pass statistics).
    """

    def __init__(self, endpoint: Endpoint | None = None, *, login: Login | None = None,
                 timeout: float = REQUEST_TIMEOUT_SECONDS, field_manager: str = "disklet",
                 max_connections: int = 4) -> None:
        if endpoint is None and login is None:
            raise ValueError("KubeClient needs an endpoint or a login")
        self._login = login
        self._endpoint = endpoint
        self._session: aiohttp.ClientSession | None = None
        self._timeout = timeout
        self._limit = max_connections
        self._lock = asyncio.Lock()
        self.field_manager = field_manager
        self.requests = 0

    @property
    def server(self) -> str:
        return self._endpoint.server if self._endpoint else "(not connected)"

    async def session(self) -> tuple[aiohttp.ClientSession, Endpoint]:
        async with self._lock:
            if self._endpoint is None:
                assert self._login is not None
                self._endpoint = await asyncio.to_thread(self._login)
            if self._session is None or self._session.closed:
                ep = self._endpoint
                connector = aiohttp.TCPConnector(ssl=ep.ssl_context if ep.ssl_context is not None else True,
                                                 limit=self._limit)
                self._session = aiohttp.ClientSession(connector=connector, headers=ep.headers,
                                                      trust_env=ep.trust_env,
                                                      timeout=aiohttp.ClientTimeout(total=self._timeout))
            return self._session, self._endpoint

    async def _relogin(self) -> bool:
        """Drop session and credentials so the next call logs in again; False with fixed credentials."""
        if self._login is None:
            return False
        async with self._lock:
            old, self._session, self._endpoint = self._session, None, None
        if old is not None:
            await old.close()
        return True

    async def close(self) -> None:
        async with self._lock:
            old, self._session = self._session, None
        if old is not None:
            await old.close()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.close()

    async def request(self, method: str, path: str, *, body: Any = None,
                      query: Sequence[tuple[str, str]] | Mapping[str, str] = (),
                      content_type: str = "application/json", what: str = "") -> Any:
        """One API call; the decoded JSON answer (None for an empty body)."""
        data = None if body is None else json.dumps(body).encode()
        headers = {"Accept": "application/json"}
        if data is not None:
            headers["Content-Type"] = content_type
        params = list(query.items()) if isinstance(query, Mapping) else list(query)
        what = what or f"{method} {path}"
        for attempt in (1, 2):
            session, ep = await self.session()
            self.requests += 1
            try:
                async with session.request(method, ep.server + path, data=data, params=params, headers=headers,
                                           proxy=ep.proxy) as resp:
                    text = await resp.text()
                    if resp.status == 401 and attempt == 1 and await self._relogin():
                        continue
                    if resp.status >= 400:
                        raise ApiError.from_response(what, resp.status, resp.reason or "", text)
                    return json.loads(text) if text else None
            except (aiohttp.ClientError, OSError) as exc:
                raise ApiError(f"{what}: cannot reach the API server at {ep.server}: {exc}") from exc
        raise AssertionError("unreachable")  # pragma: no cover

    # ------------------------------------------------------------------ objects
    async def get(self, kind: KindLike, name: str, namespace: str | None = None) -> dict[str, Any] | None:
        """The object, or None when it does not exist."""
        kind = kind_of(kind)
        try:
            return dict(await self.request("GET", kind.path(name, namespace), what=f"get {kind.kind}/{name}"))
        except NotFound:
            return None

    async def list(self, kind: KindLike, *, namespace: str | None = None, label_selector: str | None = None,
                   field_selector: str | None = None, read: ListRead = CONSISTENT) -> list[dict[str, Any]]:
        """Items with ``kind``/``apiVersion`` filled in (lists omit them per item); ``read``: which
        state may answer (:class:`ListRead`; a consistent read unless said otherwise)."""
        kind = kind_of(kind)
        query = [("labelSelector", label_selector)] if label_selector else []
        if field_selector:
            query.append(("fieldSelector", field_selector))
        query.extend(read.query())
        result = await self.request("GET", kind.path(None, namespace), query=query, what=f"list {kind.plural}")
        items = [dict(i) for i in ((result or {}).get("items") or [])]
        for item in items:
            item.setdefault("apiVersion", kind.api_version)
            item.setdefault("kind", kind.kind)
        return items

    async def create(self, kind: KindLike, body: Mapping[str, Any], namespace: str | None = None) -> dict[str, Any]:
        kind, name = kind_of(kind), (body.get("metadata") or {}).get("name", "")
        return dict(await self.request("POST", kind.path(None, namespace), body=body,
                                       what=f"create {kind.kind}/{name}"))

    async def patch(self, kind: KindLike, name: str, patch: Mapping[str, Any], namespace: str | None = None,
                    subresource: str | None = None) -> dict[str, Any]:
        """A JSON merge patch (RFC 7386; see :mod:`disklet.kube.patch` to compute one)."""
        kind = kind_of(kind)
        return dict(await self.request("PATCH", kind.path(name, namespace, subresource), body=patch,
                                       content_type=MERGE_PATCH, what=f"patch {kind.kind}/{name}"))

    async def patch_status(self, kind: KindLike, name: str, status: Mapping[str, Any],
                           namespace: str | None = None) -> dict[str, Any]:
        return await self.patch(kind, name, {"status": status}, namespace, subresource="status")

    async def apply(self, kind: KindLike, obj: Mapping[str, Any], *, force: bool = False, dry_run: bool = False,
                    namespace: str | None = None) -> dict[str, Any]:
        """Server-side apply (JSON is YAML) as ``field_manager``."""
        kind = kind_of(kind)
        name = obj["metadata"]["name"]
        query = [("fieldManager", self.field_manager)]
        if force:
            query.append(("force", "true"))
        if dry_run:
            query.append(("dryRun", "All"))
        return dict(await self.request("PATCH", kind.path(name, namespace), query=query, body=obj,
                                       content_type=APPLY_PATCH, what=f"apply {kind.kind}/{name}"))

    async def delete(self, kind: KindLike, name: str, namespace: str | None = None, *,
                     missing_ok: bool = False) -> dict[str, Any] | None:
        """Delete; the server's answer (the object as deleted or being deleted, or a Status);
        None when it was missing and ``missing_ok`` (else :class:`NotFound`)."""
        kind = kind_of(kind)
        try:
            got = await self.request("DELETE", kind.path(name, namespace), what=f"delete {kind.kind}/{name}")
        except NotFound:
            if not missing_ok:
                raise
            return None
        return dict(got) if isinstance(got, Mapping) else None

    # ------------------------------------------------------------------ exec
    async def exec(self, namespace: str, pod: str, container: str | None, command: Sequence[str],
                   stdin: bytes | None, on_stdout: ExecSink, on_stderr: ExecSink) -> int:
        """Run ``command`` in the pod (exec subresource over a websocket); the remote exit code."""
        session, ep = await self.session()
        query: list[tuple[str, str]] = [("command", c) for c in command]
        query += [("stdout", "true"), ("stderr", "true"), ("stdin", "true" if stdin is not None else "false")]
        if container:
            query.append(("container", container))
        where = f"{namespace}/{pod}"
        url = ep.server + PODS.path(pod, namespace, "exec") + "?" + urlencode(query)
        self.requests += 1
        try:
            async with session.ws_connect(url, protocols=EXEC_PROTOCOLS, proxy=ep.proxy) as ws:
                return await _exec_session(ws, stdin, on_stdout, on_stderr, where)
        except aiohttp.WSServerHandshakeError as exc:
            raise ApiError(f"exec in pod {where} refused: HTTP {exc.status} {exc.message}", exc.status) from None
        except (aiohttp.ClientError, OSError) as exc:
            raise ApiError(f"exec in pod {where} failed: {exc}") from None


def stdin_frames(data: bytes, protocol: str | None) -> list[bytes]:
    """The websocket frames that send ``data`` on stdin and then close it (v5 only)."""
    frames = [bytes([STDIN]) + data[i:i + STDIN_CHUNK] for i in range(0, len(data), STDIN_CHUNK)]
    if protocol == "v5.channel.k8s.io":
        frames.append(bytes([CLOSE, STDIN]))
    return frames


def exit_code_of(status_json: str | bytes) -> tuple[int, str]:
    """(exit code, message) from the exec error channel's metav1.Status."""
    try:
        status = json.loads(status_json)
    except ValueError:
        return 1, f"unreadable exec status: {status_json!r}"
    if status.get("status") == "Success":
        return 0, ""
    for cause in (status.get("details") or {}).get("causes") or []:
        if cause.get("reason") == "ExitCode":
            try:
                return int(cause.get("message")), status.get("message", "")
            except (TypeError, ValueError):
                break
    return 1, status.get("message") or "remote command failed"


async def _emit(sink: ExecSink, data: bytes) -> None:
    result = sink(data)
    if result is not None:
        await result


async def _exec_session(ws: aiohttp.ClientWebSocketResponse, stdin: bytes | None, on_stdout: ExecSink,
                        on_stderr: ExecSink, where: str) -> int:
    if stdin is not None:
        if ws.protocol != "v5.channel.k8s.io":
            raise ApiError(f"exec in pod {where}: the API server speaks {ws.protocol or 'an old exec protocol'}, "
                           "which cannot close stdin, so the remote `-f -` would never see the end of the file\n"
                           "  hint: this needs Kubernetes >= 1.30 (exec protocol v5.channel.k8s.io)")
        for frame in stdin_frames(stdin, ws.protocol):
            await ws.send_bytes(frame)
    code: int | None = None
    async for msg in ws:
        if msg.type not in (aiohttp.WSMsgType.BINARY, aiohttp.WSMsgType.TEXT):
            break
        data = msg.data if isinstance(msg.data, bytes) else msg.data.encode()
        if not data:
            continue
        channel, payload = data[0], data[1:]
        if channel == STDOUT and payload:
            await _emit(on_stdout, payload)
        elif channel == STDERR and payload:
            await _emit(on_stderr, payload)
        elif channel == ERROR and payload:
            code, message = exit_code_of(payload)
            if code and message and "exit code" not in message:
                await _emit(on_stderr, (message + "\n").encode())
    if code is None:
        raise ApiError(f"exec in pod {where}: the connection closed without an exit status")
    return code
