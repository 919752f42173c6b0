"""The API tier's helper API (the one :class:`devkit.kubeapi.KubeAPI` offers) on a real API server.

API-tier tests read, seed and count objects through ``kube.read()``, ``kube.read_all()``,
``kube.seed()`` and ``kube.mutations()``, run Kopf through ``devkit.kopfrun.kopf_running(kube=...)``
and talk HTTP through ``kube.session()`` / ``kube.endpoint()``. :class:`RealKube` gives the same
calls on a real kube-apiserver reached through an admin kubeconfig (the session's envtest control
plane or ``E2E_KUBECONFIG``), so a test runs on either backend unchanged:

- ``read``/``read_all``/``seed``/``delete`` are blocking HTTP calls (tests call them inside
  ``wait_for`` predicates, as with the in-memory mock); a ``seed`` with a ``status`` writes it
  through the status subresource, as the mock's seed stores it;
- ``requests()``/``mutations()`` count with the server's own ``apiserver_request_total`` metric:
  every client's requests since the helper was made (the test's start), except the helper's own
  reads and seeding — what the mock's request log holds;
- :meth:`RealKube.snapshot` and :meth:`RealKube.clean` remove, after a test, every disklet object,
  Node and Lease it left behind (finalizers stripped first) plus what it seeded, and wait until they
  are gone, so the next test starts from the same cluster.

What it cannot do is what only the mock can: hold back watch events, fail requests on demand.
Credentials: a bearer token or client certificate and a CA from the kubeconfig's current context
(exec plugins are not supported here).
"""

from __future__ import annotations

import base64
import contextlib
import json
import ssl
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import aiohttp
import kopf
import yaml

from disklet.api.resources import ALL_RESOURCES
from disklet.kube.client import Endpoint

DISKLET_PLURALS = tuple(f"{r.group}/{r.version}/{r.plural}" for r in ALL_RESOURCES)
CLEANED = (*DISKLET_PLURALS, "v1/nodes", "coordination.k8s.io/v1/leases")
"""Kinds whose objects a test leaves behind are removed after it (besides what it seeded); the
control plane's own namespaces (``kube-*``, e.g. the apiserver's identity Leases) are left alone."""
STATUS_SUBRESOURCE = {*(r.plural for r in ALL_RESOURCES), "nodes", "pods"}
WRITE_VERBS = ("POST", "CREATE", "PUT", "UPDATE", "PATCH", "APPLY", "DELETE", "DELETECOLLECTION")


class RealKubeError(RuntimeError):
    """The server refused a helper's request."""


def _url_of(plural_key: str, namespace: str | None = None, name: str | None = None, sub: str | None = None) -> str:
    parts = plural_key.split("/")
    if len(parts) == 2:
        base, plural = f"/api/{parts[0]}", parts[1]
    else:
        base, plural = f"/apis/{parts[0]}/{parts[1]}", parts[2]
    url = base + (f"/namespaces/{namespace}" if namespace else "") + f"/{plural}"
    if name:
        url += f"/{urllib.parse.quote(name)}"
    if sub:
        url += f"/{sub}"
    return url


class RealKube:
    """The mock's helper API on a real API server (see the module docstring)."""

    def __init__(self, kubeconfig: str | Path):
        self.kubeconfig = Path(kubeconfig)
        cfg = yaml.safe_load(self.kubeconfig.read_text())
        ctx = next(c for c in cfg["contexts"] if c["name"] == cfg["current-context"])["context"]
        cluster = next(c for c in cfg["clusters"] if c["name"] == ctx["cluster"])["cluster"]
        user = next(u for u in cfg["users"] if u["name"] == ctx["user"])["user"]
        self.server_url: str = cluster["server"].rstrip("/")
        self._files = tempfile.TemporaryDirectory(prefix="disklet-realkube-")
        self._ca = self._file(cluster, "certificate-authority")
        self._insecure = bool(cluster.get("insecure-skip-tls-verify"))
        self._cert = self._file(user, "client-certificate")
        self._key = self._file(user, "client-key")
        self.token: str | None = user.get("token")
        self._ssl = ssl.create_default_context(cafile=self._ca)
        if self._insecure:
            self._ssl.check_hostname = False
            self._ssl.verify_mode = ssl.CERT_NONE
        if self._cert and self._key:
            self._ssl.load_cert_chain(self._cert, self._key)
        self._headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        self._seeded: list[tuple[str, str | None, str]] = []
        self._baseline: dict[tuple[str, str, str], int] = {}
        self._baseline = self.request_totals()
        """Requests served before this helper existed, plus its own (reads, seeding, metrics):
        ``requests``/``mutations`` count everyone else's, as the mock's log holds no test-side read."""

    def _file(self, section: dict[str, Any], key: str) -> str | None:
        """A kubeconfig file reference, or its ``-data`` variant written to a private file."""
        if section.get(key):
            return str(section[key])
        data = section.get(f"{key}-data")
        if not data:
            return None
        path = Path(self._files.name) / key
        path.write_bytes(base64.b64decode(data))
        path.chmod(0o600)
        return str(path)

    # ------------------------------------------------------------------ clients for the code under test
    def connection_info(self) -> kopf.ConnectionInfo:
        """Kopf's login for an operator under test (devkit.kopfrun)."""
        return kopf.ConnectionInfo(server=self.server_url, ca_path=self._ca, insecure=self._insecure,
                                   token=self.token, certificate_path=self._cert, private_key_path=self._key)

    def endpoint(self) -> Endpoint:
        """disklet's own client (:class:`disklet.kube.client.KubeClient`) on this server."""
        return Endpoint(server=self.server_url, headers=dict(self._headers), ssl_context=self._ssl)

    def session(self) -> aiohttp.ClientSession:
        """An aiohttp session with the base URL and credentials (the tests' own raw requests)."""
        return aiohttp.ClientSession(self.server_url, headers=self._headers,
                                     connector=aiohttp.TCPConnector(ssl=self._ssl))

    # ------------------------------------------------------------------ blocking HTTP (test helpers)
    def _request(self, method: str, path: str, body: Any = None,
                 content_type: str = "application/json") -> tuple[int, Any]:
        data = json.dumps(body).encode() if body is not None else None
        headers = {**self._headers, "Accept": "application/json"}
        if data is not None:
            headers["Content-Type"] = content_type
        self._own(method, path)
        req = urllib.request.Request(self.server_url + path, data=data, method=method, headers=headers)
        try:
            with urllib.request.urlopen(req, context=self._ssl, timeout=30) as resp:  # noqa: S310 - the test cluster
                raw = resp.read()
                status = int(resp.status)
        except urllib.error.HTTPError as exc:
            raw, status = exc.read(), int(exc.code)
        text = raw.decode(errors="replace")
        try:
            return status, json.loads(text) if text else None
        except ValueError:
            return status, text

    def _ok(self, method: str, path: str, body: Any = None, content_type: str = "application/json",
            allow: Iterable[int] = ()) -> Any:
        status, payload = self._request(method, path, body, content_type)
        if status >= 300 and status not in allow:
            message = payload.get("message") if isinstance(payload, dict) else payload
            raise RealKubeError(f"{method} {path}: {status} {message}")
        return payload if status < 300 else None

    def read(self, plural_key: str, name: str, namespace: str | None = None) -> dict[str, Any] | None:
        """The live object, or None when it does not exist."""
        return self._ok("GET", _url_of(plural_key, namespace, name), allow=(404,))  # type: ignore[no-any-return]

    def read_all(self, plural_key: str) -> list[dict[str, Any]]:
        """Every object of the kind (all namespaces), by name."""
        items = (self._ok("GET", _url_of(plural_key)) or {}).get("items") or []
        return sorted(items, key=lambda o: (o["metadata"].get("namespace") or "", o["metadata"]["name"]))

    def seed(self, plural_key: str, obj: dict[str, Any]) -> dict[str, Any]:
        """Create ``obj``; its ``status`` (if any) is then written through the status subresource."""
        meta = obj.get("metadata") or {}
        ns = meta.get("namespace")
        body = {k: v for k, v in obj.items() if k != "status"}
        body.setdefault("apiVersion", plural_key.rsplit("/", 1)[0])
        if ns:
            self.ensure_namespace(ns)  # the mock has no namespaces: seeding into one just works there
        created = self._ok("POST", _url_of(plural_key, ns), body)
        self._seeded.append((plural_key, ns, created["metadata"]["name"]))
        plural = plural_key.rsplit("/", 1)[1]
        if obj.get("status") and plural in STATUS_SUBRESOURCE:
            created = self._ok("PATCH", _url_of(plural_key, ns, created["metadata"]["name"], "status"),
                               {"status": obj["status"]}, "application/merge-patch+json")
        return created  # type: ignore[no-any-return]

    def _own(self, method: str, path: str) -> None:
        """Count one of this helper's own requests under the metric's labels (left out of ``requests``)."""
        key = metric_labels(method, path)
        if key is not None:
            self._baseline[key] = self._baseline.get(key, 0) + 1

    def try_patch(self, plural_key: str, name: str, body: dict[str, Any], namespace: str | None = None, *,
                  dry_run: bool = False) -> int:
        """A merge patch whose refusal is the point (admission probes): the HTTP status, never raises."""
        url = _url_of(plural_key, namespace, name) + ("?dryRun=All" if dry_run else "")
        return self._request("PATCH", url, body, "application/merge-patch+json")[0]

    def delete(self, plural_key: str, name: str, namespace: str | None = None) -> None:
        """Delete the object; one that is already gone is fine (test cleanup)."""
        self._ok("DELETE", _url_of(plural_key, namespace, name), allow=(404,))

    async def versions(self, plural_key: str, name: str, after: str, until: Callable[[dict[str, Any]], bool],
                       timeout: float = 60) -> list[dict[str, Any]]:
        """Every version of object ``name`` the server stored after resourceVersion ``after``, in
        order (a watch from there), up to and including the first for which ``until`` holds."""
        query = urllib.parse.urlencode({"watch": "true", "fieldSelector": f"metadata.name={name}",
                                        "resourceVersion": after, "timeoutSeconds": str(int(timeout))})
        out: list[dict[str, Any]] = []
        async with self.session() as http, http.get(f"{_url_of(plural_key)}?{query}",
                                                    timeout=aiohttp.ClientTimeout(total=timeout + 5)) as resp:
            resp.raise_for_status()
            async for line in resp.content:
                event = json.loads(line)
                if event.get("type") not in ("ADDED", "MODIFIED", "DELETED"):
                    raise RealKubeError(f"watch of {plural_key}/{name}: {event}")
                out.append(event["object"])
                if until(event["object"]):
                    return out
        raise AssertionError(f"no version of {plural_key}/{name} matched within {timeout:.0f}s; saw {len(out)}")

    # ------------------------------------------------------------------ counting
    def request_totals(self) -> dict[tuple[str, str, str], int]:
        """``apiserver_request_total`` summed by (verb, resource, subresource), from ``/metrics``."""
        text = self._ok("GET", "/metrics")
        out: dict[tuple[str, str, str], int] = {}
        for line in str(text).splitlines():
            if not line.startswith("apiserver_request_total{"):
                continue
            labels_text, _, value = line[len("apiserver_request_total{"):].rpartition("} ")
            labels = dict(part.split("=", 1) for part in split_labels(labels_text))
            key = (labels.get("verb", ""), labels.get("resource", ""), labels.get("subresource", ""))
            out[key] = out.get(key, 0) + int(float(value))
        return out

    def requests(self, *resources: str, verbs: Iterable[str] = (), subresource: str | None = None) -> int:
        """Requests the server has served for ``resources`` (plurals; default: every disklet kind
        and Nodes) since this helper was made (the test's start), by any client but this helper
        (its reads and seeding are no requests on the mock either); ``verbs``: the metric's verbs
        (GET, LIST, WATCH, POST, PATCH, APPLY, PUT, DELETE, ...), default all;
        ``subresource``: only those to it ("" for the object itself)."""
        wanted = set(resources or (*(r.plural for r in ALL_RESOURCES), "nodes"))
        verb_set = set(verbs)
        return sum(n - self._baseline.get((verb, res, sub), 0) for (verb, res, sub), n in self.request_totals().items()
                   if (not verb_set or verb in verb_set) and res in wanted and (subresource is None or sub == subresource))

    def mutations(self, *resources: str, subresource: str | None = None) -> int:
        """Writes (create, update, patch, apply, delete) counted like :meth:`requests`."""
        return self.requests(*resources, verbs=WRITE_VERBS, subresource=subresource)

    # ------------------------------------------------------------------ isolation between tests
    def ensure_namespace(self, name: str) -> None:
        self._ok("POST", "/api/v1/namespaces", {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}},
                 allow=(409,))

    def snapshot(self) -> set[tuple[str, str | None, str]]:
        """Which objects of the cleaned kinds exist now (``clean`` keeps these)."""
        found = set()
        for key in CLEANED:
            for obj in self.read_all(key):
                ns = obj["metadata"].get("namespace")
                if not (ns or "").startswith("kube-"):
                    found.add((key, ns, obj["metadata"]["name"]))
        return found

    def clean(self, keep: set[tuple[str, str | None, str]], timeout: float = 60) -> None:
        """Delete what was seeded and every object of the cleaned kinds not in ``keep``: finalizers
        stripped, then deleted; returns when all are gone."""
        doomed = (self.snapshot() - keep) | set(self._seeded)
        for key, ns, name in doomed:
            self._ok("PATCH", _url_of(key, ns, name), {"metadata": {"finalizers": None}},
                     "application/merge-patch+json", allow=(404, 409, 422))
            # grace period 0: a Pod bound to a node would otherwise wait for a kubelet that never comes
            self._ok("DELETE", _url_of(key, ns, name), {"gracePeriodSeconds": 0}, allow=(404, 409))
        deadline = time.monotonic() + timeout
        left = doomed
        while left and time.monotonic() < deadline:
            left = {d for d in left if self.read(d[0], d[2], d[1]) is not None}
            if left:
                time.sleep(0.1)
        self._seeded.clear()
        if left:
            raise RealKubeError(f"objects still present after cleaning: {sorted(left, key=str)}")

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self._files.cleanup()


def metric_labels(method: str, url: str) -> tuple[str, str, str] | None:
    """(verb, resource, subresource) of a request as ``apiserver_request_total`` labels it
    (a GET of a collection is LIST, ``watch=true`` is WATCH); None for non-resource paths."""
    path, _, query = url.partition("?")
    parts = [p for p in path.split("/") if p]
    if not parts or parts[0] not in ("api", "apis"):
        return None
    rest = parts[2:] if parts[0] == "api" else parts[3:]
    if len(rest) >= 3 and rest[0] == "namespaces":
        rest = rest[2:]
    if not rest:
        return None
    verb = method.upper()
    if verb == "GET" and ("watch=true" in query or "watch=1" in query):
        verb = "WATCH"
    elif verb == "GET" and len(rest) == 1:
        verb = "LIST"
    return verb, rest[0], rest[2] if len(rest) > 2 else ""


def split_labels(text: str) -> list[str]:
    """``a="x",b="y,z"`` → ``['a=x', 'b=y,z']`` (Prometheus label values are quoted)."""
    out, cur, quoted = [], "", False
    for ch in text:
        if ch == '"':
            quoted = not quoted
            continue
        if ch == "," and not quoted:
            out.append(cur)
            cur = ""
        else:
            cur += ch
    if cur:
        out.append(cur)
    return [p for p in out if "=" in p]
