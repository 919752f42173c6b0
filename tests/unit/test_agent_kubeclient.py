"""The agent's aiohttp Kubernetes client: ConnectionInfo → endpoint (SSL, headers), real HTTP(S)
round trips against a local server (token, CA, client certificate, 404/409/401), kubeconfig login,
and the agent process staying free of kubernetes-asyncio."""

from __future__ import annotations

import base64
import json
import ssl
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import kopf
import pytest
import yaml
from aiohttp import web
from aiohttp.test_utils import TestServer
from disklet_agent.kube import (
    AgentKube,
    ApiError,
    ClientClosed,
    endpoint_from,
    in_cluster_server,
    is_conflict,
    is_not_found,
    login,
)

from disklet.api.resources import LVM_VOLUME_GROUP
from disklet.hostcmd import HostRunner

LVG_PATH = "/apis/disklet.io/v1alpha1/lvmvolumegroups"


# ---------------------------------------------------------------------------------------- certs
def make_cert(tmp: Path, name: str, cn: str) -> tuple[Path, Path]:
    """A self-signed EC certificate for ``cn`` (also as an IP SAN) and its key."""
    cert, key = tmp / f"{name}.crt", tmp / f"{name}.key"
    res = HostRunner().run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                            "-nodes", "-keyout", str(key), "-out", str(cert), "-days", "1", "-subj", f"/CN={cn}",
                            "-addext", f"subjectAltName=IP:{cn}"], timeout=30)
    if not res.ok:
        pytest.skip(f"openssl cannot make a test certificate: {res.tail()}")
    return cert, key


def b64(path: Path) -> str:
    return base64.b64encode(path.read_bytes()).decode()


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    tmp = tmp_path_factory.mktemp("certs")
    server_crt, server_key = make_cert(tmp, "server", "127.0.0.1")
    client_crt, client_key = make_cert(tmp, "client", "127.0.0.2")
    return {"server_crt": server_crt, "server_key": server_key, "client_crt": client_crt, "client_key": client_key}


# ---------------------------------------------------------------------------------------- a tiny API server
class FakeApi:
    """Records every request; answers from ``objects`` (path → object) like a tiny API server."""

    def __init__(self, token: str | None = "t0ken"):
        self.token = token
        self.requests: list[dict[str, Any]] = []
        self.objects: dict[str, dict[str, Any]] = {}

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.text()
        peer = request.transport.get_extra_info("peercert") if request.transport else None
        self.requests.append({"method": request.method, "path": request.path, "query": dict(request.query),
                              "auth": request.headers.get("Authorization"),
                              "content_type": request.headers.get("Content-Type"),
                              "body": json.loads(body) if body else None, "peercert": peer})
        if self.token is not None and request.headers.get("Authorization") != f"Bearer {self.token}":
            return web.json_response({"kind": "Status", "message": "Unauthorized"}, status=401)
        path = request.path
        if request.method == "GET" and path in self.objects:
            return web.json_response(self.objects[path])
        if request.method == "GET" and path == LVG_PATH:
            return web.json_response({"items": [o for p, o in self.objects.items() if p.startswith(LVG_PATH + "/")]})
        if request.method == "POST":
            obj = json.loads(body)
            key = f"{path}/{obj['metadata']['name']}"
            if key in self.objects:
                return web.json_response({"kind": "Status", "message": f"{key} already exists"}, status=409)
            self.objects[key] = obj
            return web.json_response(obj, status=201)
        if request.method == "PATCH":
            key = path.removesuffix("/status")
            if key not in self.objects:
                return web.json_response({"kind": "Status", "message": "not found"}, status=404)
            self.objects[key] = {**self.objects[key], **json.loads(body)}
            return web.json_response(self.objects[key])
        if request.method == "DELETE" and path in self.objects:
            return web.json_response(self.objects.pop(path))
        return web.json_response({"kind": "Status", "message": f"{path} not found"}, status=404)


async def serve(api: FakeApi, ssl_context: ssl.SSLContext | None = None) -> TestServer:
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", api.handle)
    server = TestServer(app, host="127.0.0.1", scheme="https" if ssl_context else "http")
    await server.start_server(ssl=ssl_context)
    return server


@pytest.fixture
async def http_api() -> AsyncIterator[tuple[FakeApi, str]]:
    api = FakeApi()
    server = await serve(api)
    try:
        yield api, f"http://127.0.0.1:{server.port}"
    finally:
        await server.close()


# ---------------------------------------------------------------------------------------- translation
def test_bearer_token_becomes_authorization_header_and_http_has_no_ssl_context() -> None:
    ep = endpoint_from(kopf.ConnectionInfo(server="http://127.0.0.1:1234/", token="abc"))
    assert ep.server == "http://127.0.0.1:1234"
    assert ep.headers == {"Authorization": "Bearer abc"}
    assert ep.ssl_context is None


def test_scheme_and_basic_auth_headers() -> None:
    assert endpoint_from(kopf.ConnectionInfo(server="http://h", scheme="Token", token="x")).headers == {
        "Authorization": "Token x"}
    basic = endpoint_from(kopf.ConnectionInfo(server="http://h", username="u", password="p")).headers
    assert basic == {"Authorization": "Basic " + base64.b64encode(b"u:p").decode()}
    assert endpoint_from(kopf.ConnectionInfo(server="http://h")).headers == {}


def test_insecure_https_disables_verification_secure_default_verifies() -> None:
    insecure = endpoint_from(kopf.ConnectionInfo(server="https://h:6443", insecure=True)).ssl_context
    assert insecure is not None and insecure.verify_mode == ssl.CERT_NONE and not insecure.check_hostname
    secure = endpoint_from(kopf.ConnectionInfo(server="https://h:6443")).ssl_context
    assert secure is not None and secure.verify_mode == ssl.CERT_REQUIRED and secure.check_hostname


def test_ca_data_is_trusted(certs: dict[str, Path]) -> None:
    ctx = endpoint_from(kopf.ConnectionInfo(server="https://127.0.0.1", ca_data=b64(certs["server_crt"]))).ssl_context
    assert ctx is not None
    assert any(c.get("subject") == ((("commonName", "127.0.0.1"),),) for c in ctx.get_ca_certs())


def test_proxy_and_trust_env_carried_over() -> None:
    ep = endpoint_from(kopf.ConnectionInfo(server="http://h", proxy_url="http://proxy:3128", trust_env=True))
    assert (ep.proxy, ep.trust_env) == ("http://proxy:3128", True)


def test_no_server_is_a_login_error() -> None:
    with pytest.raises(kopf.LoginError):
        endpoint_from(kopf.ConnectionInfo(server=""))


def test_in_cluster_server_from_service_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    assert in_cluster_server() is None
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "10.96.0.1")
    monkeypatch.setenv("KUBERNETES_SERVICE_PORT", "443")
    assert in_cluster_server() == "https://10.96.0.1:443"
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "fd00::1")
    assert in_cluster_server() == "https://[fd00::1]:443"


# ---------------------------------------------------------------------------------------- round trips
async def test_methods_paths_bodies_and_errors_over_http(http_api: tuple[FakeApi, str]) -> None:
    api, url = http_api
    kube = AgentKube(endpoint_from(kopf.ConnectionInfo(server=url, token="t0ken")))
    try:
        assert await kube.get(LVM_VOLUME_GROUP, "missing") is None  # 404 → None
        obj = {"apiVersion": "disklet.io/v1alpha1", "kind": "LVMVolumeGroup",
               "metadata": {"name": "vg-a", "labels": {"disklet.io/node": "n1"}}}
        assert (await kube.create(LVM_VOLUME_GROUP, obj))["metadata"]["name"] == "vg-a"
        with pytest.raises(ApiError) as conflict:
            await kube.create(LVM_VOLUME_GROUP, obj)
        assert conflict.value.status == 409 and is_conflict(conflict.value) and "already exists" in str(conflict.value)
        assert [o["metadata"]["name"] for o in await kube.list_node_objects(LVM_VOLUME_GROUP, "n1")] == ["vg-a"]
        assert api.requests[-1]["query"] == {"labelSelector": "disklet.io/node=n1"}
        patched = await kube.patch_status(LVM_VOLUME_GROUP, "vg-a", {"phase": "Ready"})
        assert patched["status"] == {"phase": "Ready"}
        last = api.requests[-1]
        assert (last["method"], last["path"], last["content_type"]) == (
            "PATCH", f"{LVG_PATH}/vg-a/status", "application/merge-patch+json")
        await kube.patch(LVM_VOLUME_GROUP, "vg-a", {"metadata": {"labels": {"x": "1"}}})
        assert api.requests[-1]["path"] == f"{LVG_PATH}/vg-a"
        assert (await kube.get(LVM_VOLUME_GROUP, "vg-a") or {})["metadata"]["labels"] == {"x": "1"}
        await kube.delete(LVM_VOLUME_GROUP, "vg-a")
        with pytest.raises(ApiError) as gone:
            await kube.delete(LVM_VOLUME_GROUP, "vg-a")
        assert is_not_found(gone.value)
        await kube.delete(LVM_VOLUME_GROUP, "vg-a", missing_ok=True)  # already gone: fine when asked
        assert f"{LVG_PATH}/vg-a" not in api.objects
        with pytest.raises(ApiError) as missing:
            await kube.patch_lease("ns1", "disklet-agent-n1", {"spec": {"holderIdentity": "n1"}})
        assert is_not_found(missing.value)
        lease = await kube.create_lease("ns1", {"metadata": {"name": "disklet-agent-n1"}, "spec": {}})
        assert lease["metadata"]["name"] == "disklet-agent-n1"
        assert "/apis/coordination.k8s.io/v1/namespaces/ns1/leases/disklet-agent-n1" in api.objects
        assert all(r["auth"] == "Bearer t0ken" for r in api.requests)
    finally:
        await kube.close()


async def test_wrong_token_is_an_api_error_401(http_api: tuple[FakeApi, str]) -> None:
    _, url = http_api
    kube = AgentKube(endpoint_from(kopf.ConnectionInfo(server=url, token="wrong")))
    try:
        with pytest.raises(ApiError) as err:
            await kube.get(LVM_VOLUME_GROUP, "x")
        assert err.value.status == 401
    finally:
        await kube.close()


async def test_https_with_ca_data_and_client_certificate_data(certs: dict[str, Path]) -> None:
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_ctx.load_cert_chain(certs["server_crt"], certs["server_key"])
    server_ctx.verify_mode = ssl.CERT_REQUIRED  # mutual TLS: the client must show its certificate
    server_ctx.load_verify_locations(cafile=str(certs["client_crt"]))
    api = FakeApi(token=None)
    api.objects[f"{LVG_PATH}/vg-a"] = {"metadata": {"name": "vg-a"}}
    server = await serve(api, server_ctx)
    info = kopf.ConnectionInfo(server=f"https://127.0.0.1:{server.port}", ca_data=b64(certs["server_crt"]),
                               certificate_data=b64(certs["client_crt"]), private_key_data=b64(certs["client_key"]))
    kube = AgentKube(endpoint_from(info))
    untrusting = AgentKube(endpoint_from(kopf.ConnectionInfo(server=f"https://127.0.0.1:{server.port}")))
    try:
        assert (await kube.get(LVM_VOLUME_GROUP, "vg-a") or {})["metadata"]["name"] == "vg-a"
        assert api.requests[-1]["peercert"]["subject"] == ((("commonName", "127.0.0.2"),),)
        with pytest.raises(Exception, match="CERTIFICATE_VERIFY_FAILED|certificate verify failed"):
            await untrusting.get(LVM_VOLUME_GROUP, "vg-a")  # an unknown server CA is refused
    finally:
        await kube.close()
        await untrusting.close()
        await server.close()


def write_kubeconfig(path: Path, server: str, token: str) -> None:
    path.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "c",
        "contexts": [{"name": "c", "context": {"cluster": "k", "user": "u", "namespace": "ns"}}],
        "clusters": [{"name": "k", "cluster": {"server": server}}],
        "users": [{"name": "u", "user": {"token": token}}]}))


async def test_kubeconfig_login_and_relogin_after_401(http_api: tuple[FakeApi, str], tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    api, url = http_api
    api.objects[f"{LVG_PATH}/vg-a"] = {"metadata": {"name": "vg-a"}}
    cfg = tmp_path / "kubeconfig"
    write_kubeconfig(cfg, url, "t0ken")
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    monkeypatch.setenv("KUBECONFIG", str(cfg))
    ep = login()
    assert (ep.server, ep.headers) == (url, {"Authorization": "Bearer t0ken"})
    kube = AgentKube()  # logs in lazily from KUBECONFIG
    try:
        assert await kube.get(LVM_VOLUME_GROUP, "vg-a") is not None
        api.token = "rotated"  # the server now wants the new token...
        write_kubeconfig(cfg, url, "rotated")  # ...which the credentials file has
        assert await kube.get(LVM_VOLUME_GROUP, "vg-a") is not None
        assert [r["auth"] for r in api.requests] == ["Bearer t0ken", "Bearer t0ken", "Bearer rotated"]
    finally:
        await kube.close()


def test_login_without_credentials_is_a_login_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    monkeypatch.delenv("KUBECONFIG", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    with pytest.raises(kopf.LoginError):
        login()


# ---------------------------------------------------------------------------------------- import graph
def test_agent_daemon_import_leaves_kubernetes_asyncio_out() -> None:
    """A fresh interpreter importing the agent daemon (and so Kopf) never loads kubernetes-asyncio,
    and can still import it afterwards (the guard is temporary: tools in the same process work)."""
    code = ("import sys, disklet_agent.daemon\n"
            "assert 'kopf' in sys.modules\n"
            "loaded = sorted(m for m in sys.modules if m.split('.')[0] == 'kubernetes_asyncio')\n"
            "assert not loaded, loaded\n"
            "import kubernetes_asyncio.client\n"
            "print('ok')\n")
    res = HostRunner().run([sys.executable, "-c", code], timeout=120)
    assert res.ok and res.stdout.strip() == "ok", res.describe()


def test_agent_run_entry_imports_kopf_without_kubernetes_asyncio() -> None:
    """``disklet-agent run`` gets Kopf through the daemon's one lean import (disklet/kopf_lean.py):
    kubernetes-asyncio is not loaded (here it stops at the missing NODE_NAME, after importing the
    daemon and Kopf)."""
    code = ("import sys\n"
            "from disklet_agent import cli\n"
            "try:\n"
            "    cli.main(['run'])\n"
            "except SystemExit as exc:\n"
            "    assert exc.code == 2, exc.code\n"
            "assert 'kopf' in sys.modules\n"
            "loaded = sorted(m for m in sys.modules if m.split('.')[0] == 'kubernetes_asyncio')\n"
            "assert not loaded, loaded\n"
            "print('ok')\n")
    res = HostRunner().run([sys.executable, "-c", code], timeout=120, env={"NODE_NAME": ""})
    assert res.ok and res.stdout.strip() == "ok", res.describe()


async def test_no_session_is_opened_after_close(http_api: tuple[FakeApi, str]) -> None:
    """A background loop still running at shutdown must not open a session nobody closes
    ("Unclosed connector" at exit): after close() every request fails fast, before any connection."""
    api, url = http_api
    kube = AgentKube(endpoint_from(kopf.ConnectionInfo(server=url, token="t0ken")))
    await kube.get_lease("ns1", "disklet-agent-n1")
    await kube.close()
    seen = len(api.requests)
    with pytest.raises(ClientClosed):
        await kube.get_lease("ns1", "disklet-agent-n1")
    assert len(api.requests) == seen, "a closed client reached the server"
