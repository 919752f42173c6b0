"""The one Kubernetes client of kctl: kubeconfig loading, REST calls, server-side apply, exec.

Built on kubernetes-asyncio's ``ApiClient`` (auth, TLS, exec plugins from the kubeconfig) with
plain paths, so the four disklet resources and the few core ones kctl reads (nodes, pods,
events) share one code path. Every error becomes a :class:`KubeError` carrying what to do next.
"""

from __future__ import annotations

import json
import os
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any
from urllib.parse import quote

import aiohttp
from kubernetes_asyncio import client, config
from kubernetes_asyncio.config.config_exception import ConfigException
from kubernetes_asyncio.stream import WsApiClient

from disklet.api.resources import Resource

FIELD_MANAGER = "kctl"
APPLY_CONTENT_TYPE = "application/apply-patch+yaml"
AUTH = ["BearerToken"]
EXEC_PROTOCOLS = ("v5.channel.k8s.io", "v4.channel.k8s.io")
"""v5 lets the client close stdin (the remote ``-f -`` reader needs EOF); v4 cannot."""
STDIN, STDOUT, STDERR, ERROR, CLOSE = 0, 1, 2, 3, 255
STDIN_CHUNK = 32 * 1024


class KubeError(Exception):
    """A failed API call or an unusable kubeconfig; ``str()`` says what happened and what to do."""

    def __init__(self, message: str, status: int = 0, reason: str = ""):
        super().__init__(message)
        self.status = status
        self.reason = reason


class NotFound(KubeError):
    pass


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

    def path(self, name: str | None = None, namespace: str | None = None) -> str:
        base = f"/apis/{self.group}/{self.version}" if self.group else f"/api/{self.version}"
        if self.namespaced and namespace:
            base += f"/namespaces/{quote(namespace, safe='')}"
        base += f"/{self.plural}"
        return base + (f"/{quote(name, safe='')}" if name else "")


NODES = Kind("", "v1", "nodes", "Node")
PODS = Kind("", "v1", "pods", "Pod", namespaced=True)
EVENTS = Kind("", "v1", "events", "Event", namespaced=True)


def default_kubeconfig() -> str:
    """``$KUBECONFIG`` (a ``:``-separated list is merged) or ``~/.kube/config``, read at call time."""
    return os.environ.get("KUBECONFIG") or str(Path.home() / ".kube" / "config")


def error_from_api(exc: client.ApiException, what: str) -> KubeError:
    """An ApiException as a KubeError with the server's message and a next step."""
    message = exc.reason or ""
    reason = ""
    body = exc.body.decode() if isinstance(exc.body, bytes) else exc.body
    try:
        status = json.loads(body or "")
        message = status.get("message") or message
        reason = status.get("reason") or ""
    except (ValueError, AttributeError):
        if body:
            message = str(body)[:500]
    code = int(exc.status or 0)
    hint = {
        401: "your credentials were rejected: refresh them or pick another --context",
        403: "your user lacks RBAC permission for this (ask for the disklet editor/viewer role)",
        404: "check the name with `kctl get`",
        409: "another field manager owns these fields: reconcile with its owner, or re-run with "
             "--force-conflicts to take ownership",
        422: "the API server rejected the object: fix the manifest and re-run",
    }.get(code, "")
    text = f"{what}: {message} (HTTP {code}{' ' + reason if reason else ''})"
    if hint:
        text += f"\n  hint: {hint}"
    cls = NotFound if code == 404 else KubeError
    return cls(text, code, reason)


ExecSink = Callable[[bytes], Awaitable[None] | None]


class _ExecWsClient(WsApiClient):
    """WsApiClient that negotiates the exec sub-protocol itself (so v5's stdin close can be used)."""

    async def request(self, method: str, url: str, query_params: Any = None, headers: Any = None,
                      post_params: Any = None, body: Any = None, _preload_content: bool = True,
                      _request_timeout: Any = None) -> Any:
        from urllib.parse import urlencode

        from kubernetes_asyncio.stream.ws_client import get_websocket_url

        params: list[tuple[str, Any]] = []
        for key, value in query_params or []:
            if key == "command" and isinstance(value, list):
                params.extend((key, v) for v in value)
            else:
                params.append((key, value))
        headers = {k: v for k, v in (headers or {}).items() if k.lower() != "sec-websocket-protocol"}
        if params:
            url += "?" + urlencode(params)
        return self.rest_client.pool_manager.ws_connect(get_websocket_url(url), headers=headers,
                                                        protocols=EXEC_PROTOCOLS, heartbeat=self.heartbeat)


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


class Kube:
    """An open connection to one cluster (``async with await Kube.connect(...) as kube``)."""

    def __init__(self, configuration: client.Configuration, field_manager: str = FIELD_MANAGER):
        self.configuration = configuration
        self.api = client.ApiClient(configuration)
        self.field_manager = field_manager

    @classmethod
    async def connect(cls, kubeconfig: str | None = None, context: str | None = None) -> Kube:
        cfg = client.Configuration()
        path = kubeconfig or default_kubeconfig()
        try:
            await config.load_kube_config(config_file=path, context=context, client_configuration=cfg,
                                          persist_config=False)
        except (ConfigException, OSError, TypeError, ValueError) as exc:
            raise KubeError(f"cannot load kubeconfig {path}{' context ' + context if context else ''}: {exc}\n"
                            "  hint: pass --kubeconfig FILE and/or --context NAME, or set KUBECONFIG") from None
        return cls(cfg)

    @property
    def server(self) -> str:
        return str(self.configuration.host)

    async def __aenter__(self) -> Kube:
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.close()

    async def close(self) -> None:
        await self.api.close()

    async def request(self, method: str, path: str, *, query: Sequence[tuple[str, Any]] = (),
                      body: Any = None, content_type: str | None = None, what: str = "") -> Any:
        headers = {"Accept": "application/json"}
        if content_type:
            headers["Content-Type"] = content_type
        try:
            return await self.api.call_api(
                path, method, query_params=list(query), header_params=headers, body=body,
                response_types_map={200: "object", 201: "object", 202: "object"}, auth_settings=AUTH,
                _return_http_data_only=True)
        except client.ApiException as exc:
            raise error_from_api(exc, what or f"{method} {path}") from None
        except (aiohttp.ClientError, OSError) as exc:
            raise KubeError(f"cannot reach the API server at {self.server}: {exc}\n"
                            "  hint: check the cluster is up and --context/--kubeconfig point at it") from None

    async def text(self, path: str, *, query: Sequence[tuple[str, Any]] = (), what: str = "") -> str:
        """A plain-text GET (pod logs)."""
        try:
            result = await self.api.call_api(path, "GET", query_params=list(query), header_params={"Accept": "*/*"},
                                              response_types_map={200: "str"}, auth_settings=AUTH,
                                              _return_http_data_only=True)
        except client.ApiException as exc:
            raise error_from_api(exc, what or f"GET {path}") from None
        except (aiohttp.ClientError, OSError) as exc:
            raise KubeError(f"cannot reach the API server at {self.server}: {exc}") from None
        return str(result or "")

    # ------------------------------------------------------------------ objects
    async def get(self, kind: Kind, name: str, namespace: str | None = None) -> dict[str, Any] | None:
        try:
            return await self.request("GET", kind.path(name, namespace), what=f"get {kind.kind}/{name}")  # type: ignore[no-any-return]
        except NotFound:
            return None

    async def list_objects(self, kind: Kind, *, namespace: str | None = None, label_selector: str | None = None,
                   field_selector: str | None = None) -> list[dict[str, Any]]:
        query = []
        if label_selector:
            query.append(("labelSelector", label_selector))
        if field_selector:
            query.append(("fieldSelector", field_selector))
        result = await self.request("GET", kind.path(None, namespace), query=query, what=f"list {kind.plural}")
        items = (result or {}).get("items") or []
        for item in items:  # lists omit kind/apiVersion per item
            item.setdefault("apiVersion", f"{kind.group}/{kind.version}" if kind.group else kind.version)
            item.setdefault("kind", kind.kind)
        return [dict(i) for i in items]

    async def apply(self, kind: Kind, obj: dict[str, Any], *, force: bool = False,
                    dry_run: bool = False) -> dict[str, Any]:
        """Server-side apply (``application/apply-patch+yaml``; JSON is YAML) as field manager kctl."""
        name = obj["metadata"]["name"]
        query: list[tuple[str, Any]] = [("fieldManager", self.field_manager)]
        if force:
            query.append(("force", "true"))
        if dry_run:
            query.append(("dryRun", "All"))
        return await self.request("PATCH", kind.path(name), query=query, body=obj,  # type: ignore[no-any-return]
                                  content_type=APPLY_CONTENT_TYPE, what=f"apply {kind.kind}/{name}")

    async def watch(self, kind: Kind, *, label_selector: str | None = None, timeout_seconds: int | None = None,
                    resource_version: str | None = None) -> AsyncIterator[dict[str, Any]]:
        """Watch events (``{"type", "object"}``) of ``kind`` after ``resource_version`` (a list's)."""
        query: list[tuple[str, Any]] = [("watch", "true")]
        if resource_version:
            query.append(("resourceVersion", resource_version))
        if label_selector:
            query.append(("labelSelector", label_selector))
        if timeout_seconds:
            query.append(("timeoutSeconds", str(timeout_seconds)))
        try:
            resp = await self.api.call_api(kind.path(), "GET", query_params=query,
                                           header_params={"Accept": "application/json"}, auth_settings=AUTH,
                                           _preload_content=False, _return_http_data_only=True)
        except client.ApiException as exc:
            raise error_from_api(exc, f"watch {kind.plural}") from None
        except (aiohttp.ClientError, OSError) as exc:
            raise KubeError(f"cannot reach the API server at {self.server}: {exc}") from None
        try:
            async for line in resp.content:
                if line.strip():
                    yield json.loads(line)
        finally:
            resp.release()

    async def delete(self, kind: Kind, name: str) -> dict[str, Any]:
        return await self.request("DELETE", kind.path(name), what=f"delete {kind.kind}/{name}")  # type: ignore[no-any-return]

    # ------------------------------------------------------------------ exec
    async def exec(self, namespace: str, pod: str, container: str | None, command: list[str], stdin: bytes | None,
                   on_stdout: ExecSink, on_stderr: ExecSink) -> int:
        """Run ``command`` in the pod (Kubernetes exec API), streaming output; the remote exit code."""
        ws_api = _ExecWsClient(configuration=self.configuration)
        try:
            core = client.CoreV1Api(api_client=ws_api)
            kwargs: dict[str, Any] = {"command": command, "stdin": stdin is not None, "stdout": True,
                                      "stderr": True, "tty": False, "_preload_content": False}
            if container:
                kwargs["container"] = container
            try:
                connect: Any = await core.connect_get_namespaced_pod_exec(pod, namespace, **kwargs)
            except client.ApiException as exc:
                raise error_from_api(exc, f"exec in pod {namespace}/{pod}") from None
            try:
                async with connect as ws:
                    return await _exec_session(ws, stdin, on_stdout, on_stderr, f"{namespace}/{pod}")
            except aiohttp.WSServerHandshakeError as exc:
                raise KubeError(f"exec in pod {namespace}/{pod} refused: HTTP {exc.status} {exc.message}\n"
                                "  hint: you need RBAC create on pods/exec in that namespace") from None
            except (aiohttp.ClientError, OSError) as exc:
                raise KubeError(f"exec in pod {namespace}/{pod} failed: {exc}") from None
        finally:
            await ws_api.close()


async def _emit(sink: ExecSink, data: bytes) -> None:
    result = sink(data)
    if result is not None:
        await result


async def _exec_session(ws: aiohttp.ClientWebSocketResponse, stdin: bytes | None, on_stdout: ExecSink,
                        on_stderr: ExecSink, where: str) -> int:
    if stdin is not None:
        if ws.protocol != "v5.channel.k8s.io":
            raise KubeError(f"exec in pod {where}: the API server speaks {ws.protocol or 'an old exec protocol'}, "
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
        raise KubeError(f"exec in pod {where}: the connection closed without an exit status")
    return code
