"""A thin extension of kmock's ``KubernetesEmulator`` with what disklet needs from an API server.

kmock stores objects and serves list/watch, but keeps no resourceVersion/generation, ignores
selectors and validates nothing. This adds, and only this:

- ``metadata.uid``, ``creationTimestamp``, a monotonic ``resourceVersion`` and ``generation``
  (bumped only when ``spec`` changes);
- label selectors (``labelSelector``: ``k=v``, ``k==v``, ``k!=v``, ``k in (a,b)``, ``k notin (a,b)``,
  ``k``, ``!k``) and ``metadata.name`` field selectors on list and watch;
- the status subresource: a ``/status`` patch changes only ``status``, a main-resource patch never
  changes ``status``;
- server-side apply of a missing object creates it; ``metadata.generateName`` names new objects;
- owner-reference garbage collection (background propagation) after a delete;
- CRDs created through the API register their resources (so ``kubectl apply -f crds/`` works);
- a request log (``.request_log``) for assertions and benchmarks.

NOT emulated (tests that depend on these belong in ``e2e/`` against a real server): OpenAPI schema
and CEL validation (see ``devkit.admission`` for an opt-in approximation), resourceVersion
conflicts, strategic merge (lists are replaced), PUT, watch bookmarks, admission webhooks,
foreground deletion.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import copy
import datetime
import itertools
import os
import re
import sys
import uuid
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

import aiohttp.web
import attrs
import jsonpatch
import jsonpointer
import kmock
import yaml
from kmock._internal import dicts, enums, rendering

from disklet.api.resources import ALL_RESOURCES, Resource
from disklet.kube.client import Endpoint

Validator = Callable[[str, dict[str, Any], dict[str, Any] | None], list[str]]
"""(plural, new object, old object or None) → error messages; used by the opt-in admission."""


def _now() -> str:
    return datetime.datetime.now(tz=datetime.UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")


_REQ_RE = re.compile(r"^\s*(?P<key>[A-Za-z0-9_./-]+)\s*(?P<op>==|=|!=|\s+in\s+|\s+notin\s+)?\s*(?P<val>\(.*\)|[^,]*)\s*$")


def parse_label_selector(text: str) -> list[tuple[str, str, set[str]]]:
    """Parse a Kubernetes label selector string into (key, op, values) requirements."""
    reqs: list[tuple[str, str, set[str]]] = []
    parts: list[str] = []
    depth = 0
    cur = ""
    for ch in text:
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        if ch == "," and depth == 0:
            parts.append(cur)
            cur = ""
        else:
            cur += ch
    if cur.strip():
        parts.append(cur)
    for part in parts:
        part = part.strip()
        if not part:
            continue
        if part.startswith("!"):
            reqs.append((part[1:].strip(), "!exists", set()))
            continue
        m = _REQ_RE.match(part)
        if not m:
            raise ValueError(f"invalid label selector requirement: {part!r}")
        key, op, val = m.group("key"), (m.group("op") or "").strip(), m.group("val").strip()
        if not op:
            reqs.append((key, "exists", set()))
        elif op in ("=", "=="):
            reqs.append((key, "=", {val}))
        elif op == "!=":
            reqs.append((key, "!=", {val}))
        else:
            vals = {v.strip() for v in val.strip("()").split(",") if v.strip()}
            reqs.append((key, op, vals))
    return reqs


def labels_match(reqs: list[tuple[str, str, set[str]]], labels: Mapping[str, str] | None) -> bool:
    labels = labels or {}
    for key, op, vals in reqs:
        present = key in labels
        if op == "exists" and not present:
            return False
        if op == "!exists" and present:
            return False
        if op in ("=", "in") and not (present and labels[key] in vals):
            return False
        if op in ("!=", "notin") and present and labels[key] in vals:
            return False
    return True


def _field_match(selector: str, obj: Mapping[str, Any]) -> bool:
    for part in filter(None, (p.strip() for p in selector.split(","))):
        neg = "!=" in part
        key, _, val = part.partition("!=" if neg else "=")
        val = val.lstrip("=")
        cur: Any = obj
        for seg in key.strip().split("."):
            cur = cur.get(seg) if isinstance(cur, Mapping) else None
        if (str(cur) == val) == neg:
            return False
    return True


def _matches(request: rendering.Request, obj: Mapping[str, Any]) -> bool:
    params = request.params or {}
    if params.get("labelSelector"):
        if not labels_match(parse_label_selector(params["labelSelector"]), (obj.get("metadata") or {}).get("labels")):
            return False
    if params.get("fieldSelector"):
        if not _field_match(params["fieldSelector"], obj):
            return False
    return True


@attrs.define(kw_only=True)
class KubeAPI(kmock.KubernetesEmulator):
    """kmock's emulator with resource versions, generations, selectors, status subresource, GC."""

    validator: Validator | None = None
    server_url: str = ""
    """Base URL once served (set by whoever starts the server), e.g. ``http://127.0.0.1:PORT``."""
    kubeconfig: Path | None = None
    _counter: itertools.count[int] = attrs.field(factory=lambda: itertools.count(1), init=False)
    _status_resources: set[Any] = attrs.field(factory=set, init=False)
    _watch_holds: dict[str, asyncio.Event] = attrs.field(factory=dict, init=False)

    def __attrs_post_init__(self) -> None:
        super().__attrs_post_init__()
        self.resources.load_bundled()
        for res in ALL_RESOURCES:
            self.register(res)

    # ---------------------------------------------------------------- resources
    def register(self, res: Resource) -> None:
        self.register_plural(res.group, res.version, res.plural, kind=res.kind, singular=res.singular,
                             short_names=res.short_names, categories=("disklet",), namespaced=False)

    def register_plural(self, group: str, version: str, plural: str, *, kind: str, singular: str,
                        short_names: tuple[str, ...] | list[str] = (), categories: tuple[str, ...] | list[str] = (),
                        namespaced: bool = False, status: bool = True) -> None:
        key = f"{group}/{version}/{plural}" if group else f"{version}/{plural}"
        self.resources[key] = kmock.ResourceInfo(
            kind=kind, singular=singular, namespaced=namespaced,
            verbs={"get", "list", "watch", "create", "update", "patch", "delete"},
            shortnames=set(short_names), categories=set(categories), subresources={"status"} if status else set())
        if status:
            self._status_resources.add(kmock.resource(group=group, version=version, plural=plural))

    def _has_status(self, resource: Any) -> bool:
        return any(resource == r for r in self._status_resources) or (
            getattr(resource, "group", None) == "" and getattr(resource, "plural", None) in ("nodes", "pods"))

    # ---------------------------------------------------------------- helpers for tests
    @property
    def request_log(self) -> list[rendering.Request]:
        """Every request served so far (kmock's log), for assertions and request counting."""
        return list(self._requests)

    def read(self, plural_key: str, name: str, namespace: str | None = None) -> dict[str, Any] | None:
        """The live object (raw dict) or None. ``plural_key`` like ``disklet.io/v1alpha1/disklayouts``."""
        key = (kmock.resource(plural_key), namespace, name)
        if key not in self.objects:
            return None
        obj = self.objects[key]
        return None if obj.deleted else copy.deepcopy(obj.raw)

    def read_all(self, plural_key: str) -> list[dict[str, Any]]:
        res = kmock.resource(plural_key)
        out = []
        for (r, _ns, _name), obj in self.objects.items():
            if r == res and not obj.deleted:
                out.append(copy.deepcopy(obj.raw))
        return out

    def connection_info(self) -> Any:
        """Kopf's login for an operator under test (``devkit.kopfrun``); the mock ignores tokens."""
        import kopf

        return kopf.ConnectionInfo(server=self.server_url, insecure=True, token="mock")

    def endpoint(self) -> Endpoint:
        """disklet's own client (:class:`disklet.kube.client.KubeClient`) on the mock."""
        return Endpoint(server=self.server_url)

    def session(self) -> aiohttp.ClientSession:
        """An aiohttp session with the mock's base URL (the tests' own raw requests)."""
        return aiohttp.ClientSession(self.server_url)

    def requests(self, *resources: str, verbs: Iterable[str] = (), subresource: str | None = None) -> int:
        """Requests served for ``resources`` (plurals; default: every disklet kind and Nodes), by
        verb as the API server's metrics name them (GET, LIST, WATCH, POST, PATCH, ...; default
        all), optionally only to ``subresource`` — as ``devkit.realkube.RealKube.requests`` counts."""
        from .realkube import metric_labels

        wanted = set(resources or (*(r.plural for r in ALL_RESOURCES), "nodes"))
        verb_set = set(verbs)
        count = 0
        for r in self._requests:
            method = str(getattr(r.method, "value", r.method)).upper().split(".")[-1]
            query = "&".join(f"{k}={v}" for k, v in (r.params or {}).items())
            labels = metric_labels(method, str(r.url).split("?", 1)[0] + "?" + query)
            if labels is None:
                continue
            verb, res, sub = labels
            if (not verb_set or verb in verb_set) and res in wanted and (subresource is None or sub == subresource):
                count += 1
        return count

    def mutations(self, *resources: str, subresource: str | None = None) -> int:
        """Writes (create, update, patch, delete) counted like :meth:`requests`."""
        return self.requests(*resources, verbs=("POST", "PUT", "PATCH", "DELETE"), subresource=subresource)

    def seed(self, plural_key: str, obj: dict[str, Any]) -> dict[str, Any]:
        """Put an object in directly (no request), with server-set metadata; returns what is stored."""
        obj = copy.deepcopy(obj)
        self._stamp_new(obj)
        meta = obj["metadata"]
        self.objects[kmock.resource(plural_key), meta.get("namespace"), meta["name"]] = obj
        return copy.deepcopy(obj)

    # ---------------------------------------------------------------- request handling
    def _next_rv(self) -> str:
        return str(next(self._counter))

    def _stamp_new(self, obj: dict[str, Any]) -> None:
        meta = obj.setdefault("metadata", {})
        if not meta.get("name") and meta.get("generateName"):
            meta["name"] = meta["generateName"] + uuid.uuid4().hex[:5]
        meta.setdefault("uid", str(uuid.uuid4()))
        meta.setdefault("creationTimestamp", _now())
        meta["resourceVersion"] = self._next_rv()
        meta["generation"] = 1

    def _live(self, resource: Any, namespace: str | None, name: str | None) -> dict[str, Any] | None:
        if name is None:
            return None
        key = (resource, namespace, name)
        if key not in self.objects or self.objects[key].deleted:
            return None
        return self.objects[key].raw

    async def _handle(self, request: rendering.Request) -> aiohttp.web.StreamResponse:
        if request.resource is not None and request.action in (enums.action.CREATE, enums.action.UPDATE):
            try:
                request = self._prepare(request)
            except kmock.KubernetesError as exc:
                return await self._render_error(exc)
        if request.subresource == "status":  # data already narrowed to status; serve as the object
            _mutate(request, subresource=None)
        response = await super()._handle(request)
        if request.resource is not None and request.action == enums.action.DELETE:
            await self._collect_garbage()
        if request.resource is not None and request.action == enums.action.CREATE:
            self._maybe_register_crd(request)
        return response

    def _prepare(self, request: rendering.Request) -> rendering.Request:
        data = request.data
        if request.action == enums.action.UPDATE:
            old = self._live(request.resource, request.namespace, request.name)
            ctype = (request.headers or {}).get("Content-Type", "")
            if old is None and "apply-patch" in ctype and isinstance(data, dict):
                data.setdefault("metadata", {}).setdefault("name", request.name)
                _mutate(request, action=enums.action.CREATE)
                return self._prepare(request)
            if old is None:
                return request
            if isinstance(data, list):  # RFC 6902 JSON patch (Kopf guards finalizer edits with `test`)
                data = _json_patch_as_merge(old, data)
            if not isinstance(data, dict):
                return request
            if request.subresource == "status":
                data = {"status": data.get("status")} if "status" in data else {}
            elif self._has_status(request.resource):
                data = {k: v for k, v in data.items() if k != "status"}
            meta = data.setdefault("metadata", {})
            for k in ("uid", "creationTimestamp", "generation"):
                meta.pop(k, None)
            meta["resourceVersion"] = self._next_rv()
            if "spec" in data:
                new_spec = dicts.patch_dict(old.get("spec") or {}, data["spec"] or {})
                if dict(new_spec) != dict(old.get("spec") or {}):
                    meta["generation"] = int((old.get("metadata") or {}).get("generation") or 1) + 1
            if self.validator is not None:
                candidate = dict(dicts.patch_dict(copy.deepcopy(old), data))
                errors = self.validator(str(getattr(request.resource, "plural", "")), candidate, old)
                if errors:
                    raise kmock.KubernetesError(status=422, reason="Invalid", message="; ".join(errors))
            _mutate(request, data=data)
            return request
        # CREATE
        if isinstance(data, dict):
            if self._has_status(request.resource):
                data.pop("status", None)
            self._stamp_new(data)
            if self.validator is not None:
                errors = self.validator(str(getattr(request.resource, "plural", "")), data, None)
                if errors:
                    raise kmock.KubernetesError(status=422, reason="Invalid", message="; ".join(errors))
        return request

    def _maybe_register_crd(self, request: rendering.Request) -> None:
        if getattr(request.resource, "plural", None) != "customresourcedefinitions" or not isinstance(request.data, dict):
            return
        spec = request.data.get("spec") or {}
        names = spec.get("names") or {}
        for ver in spec.get("versions") or []:
            self.register_plural(spec.get("group", ""), ver.get("name", "v1"), names.get("plural", ""),
                                 kind=names.get("kind", ""), singular=names.get("singular", ""),
                                 short_names=names.get("shortNames") or [], categories=names.get("categories") or [],
                                 namespaced=spec.get("scope") == "Namespaced",
                                 status="status" in (ver.get("subresources") or {}))

    async def _collect_garbage(self) -> None:
        """Background propagation: delete objects whose every owner is gone (repeat to a fixpoint)."""
        while True:
            async with self._lock:
                live_uids = {(obj.raw.get("metadata") or {}).get("uid")
                             for obj in self.objects.values() if not obj.deleted}
                orphans = []
                for key, obj in self.objects.items():
                    if obj.deleted:
                        continue
                    refs = (obj.raw.get("metadata") or {}).get("ownerReferences") or []
                    if refs and all(r.get("uid") not in live_uids for r in refs):
                        orphans.append(key)
                for key in orphans:
                    obj = self.objects[key]
                    meta = obj.raw.get("metadata") or {}
                    if meta.get("deletionTimestamp"):
                        continue
                    if meta.get("finalizers"):
                        obj.patch({"metadata": {"deletionTimestamp": _now(), "resourceVersion": self._next_rv()}})
                        await self._buses[key[0]].put({"type": "MODIFIED", "object": obj.raw})
                    else:
                        raw = obj.raw
                        obj.delete()
                        await self._buses[key[0]].put({"type": "DELETED", "object": raw})
            if not orphans or all((self.objects[k].raw.get("metadata") or {}).get("deletionTimestamp")
                                  for k in orphans if not self.objects[k].deleted):
                return

    async def _serve_list(self, request: rendering.Request) -> rendering.Payload:
        result = await super()._serve_list(request)
        if isinstance(result, dict):
            result["items"] = [o for o in result["items"] if _matches(request, o)]
            result["metadata"] = {"resourceVersion": str(next(self._counter))}
        return result

    async def _serve_watch(self, request: rendering.Request) -> AsyncIterator[rendering.Payload]:
        plural = str(getattr(request.resource, "plural", ""))
        async for event in super()._serve_watch(request):
            if isinstance(event, dict) and isinstance(event.get("object"), Mapping):
                if not _matches(request, event["object"]):
                    continue
            hold = self._watch_holds.get(plural)
            if hold is not None and not (isinstance(event, dict) and event.get("type") == "ADDED"):
                await hold.wait()
            yield event

    @contextlib.contextmanager
    def watch_held(self, plural: str) -> Iterator[None]:
        """Fault: watch events of ``plural`` after an object's ADDED are held back (in order) until
        the block exits, as a lagging watch under load would; clients keep acting on what they saw
        last (enter the block before creating the object: its ADDED still goes through)."""
        gate = asyncio.Event()
        self._watch_holds[plural] = gate
        try:
            yield
        finally:
            del self._watch_holds[plural]
            gate.set()


def _merge_diff(old: Any, new: Any) -> Any:
    """The JSON merge patch (RFC 7386) that turns ``old`` into ``new``."""
    if not isinstance(old, dict) or not isinstance(new, dict):
        return new
    out: dict[str, Any] = {}
    for k in old:
        if k not in new:
            out[k] = None
    for k, v in new.items():
        if k not in old:
            out[k] = v
        elif old[k] != v:
            out[k] = _merge_diff(old[k], v)
    return out


def _json_patch_as_merge(old: dict[str, Any], ops: list[Any]) -> dict[str, Any]:
    """Apply a JSON patch like the API server (a failed ``test`` is 422) and express it as a merge patch."""
    try:
        new = jsonpatch.apply_patch(copy.deepcopy(old), ops, in_place=False)
    except jsonpatch.JsonPatchTestFailed as exc:
        raise kmock.KubernetesError(status=422, reason="Invalid", message=f"the JSON patch test failed: {exc}") from exc
    except (jsonpatch.JsonPatchException, jsonpointer.JsonPointerException) as exc:
        raise kmock.KubernetesError(status=422, reason="Invalid", message=f"invalid JSON patch: {exc}") from exc
    return _merge_diff(old, new)


def _mutate(request: rendering.Request, **changes: Any) -> None:
    """kmock's Request is frozen, and its views track requests by identity: change it in place."""
    for k, v in changes.items():
        object.__setattr__(request, k, v)


def write_kubeconfig(path: Path, server: str, context: str = "disklet-mock") -> Path:
    cfg = {
        "apiVersion": "v1", "kind": "Config", "current-context": context,
        "clusters": [{"name": context, "cluster": {"server": server}}],
        "users": [{"name": context, "user": {"token": "mock"}}],
        "contexts": [{"name": context, "context": {"cluster": context, "user": context}}],
    }
    path.write_text(yaml.safe_dump(cfg))
    return path


@contextlib.asynccontextmanager
async def served(workdir: Path | None = None, *, api: KubeAPI | None = None, port: int | None = None,
                 export_kubeconfig: bool = False) -> AsyncIterator[KubeAPI]:
    """Serve ``api`` (default: a new :class:`KubeAPI`) on 127.0.0.1; ``.server_url`` is set and, with
    ``workdir``, a kubeconfig is written there (``.kubeconfig``). ``export_kubeconfig`` also points
    ``KUBECONFIG`` at it for clients that read one (the agent's own client, kctl), for the duration."""
    api = api if api is not None else KubeAPI()
    saved = os.environ.get("KUBECONFIG")
    async with api, kmock.Server(api, port=port) as server:
        api.server_url = str(server.url).rstrip("/")
        if workdir is not None:
            api.kubeconfig = write_kubeconfig(workdir / "kubeconfig", api.server_url)
            if export_kubeconfig:
                os.environ["KUBECONFIG"] = str(api.kubeconfig)
        try:
            yield api
        finally:
            if export_kubeconfig:
                if saved is None:
                    os.environ.pop("KUBECONFIG", None)
                else:
                    os.environ["KUBECONFIG"] = saved


async def serve(port: int, kubeconfig: Path | None, ready: asyncio.Event | None = None,
                validate: bool = False) -> None:
    """Serve the emulator on 127.0.0.1:port until cancelled (``validate``: the offline admission)."""
    validator: Validator | None = None
    if validate:
        from .admission import Admission

        validator = Admission()
    async with served(api=KubeAPI(validator=validator), port=port or None) as api:
        url = api.server_url
        if kubeconfig:
            write_kubeconfig(kubeconfig, url)
        print(f"disklet mock Kubernetes API serving on {url}" + (f" (kubeconfig: {kubeconfig})" if kubeconfig else ""),
              flush=True)
        if ready:
            ready.set()
        await asyncio.Event().wait()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m devkit.kubeapi",
                                 description="Serve disklet's in-memory Kubernetes API mock over HTTP on 127.0.0.1 "
                                             "(for the e2e-mock run and the local demo). Not a real API server: no "
                                             "schema/CEL validation, no conflicts.")
    ap.add_argument("--port", type=int, default=0, help="TCP port (default: a free one)")
    ap.add_argument("--kubeconfig", type=Path, help="write a kubeconfig pointing at the mock here")
    ap.add_argument("--validate", action="store_true",
                    help="reject custom objects that fail the CRDs' schema or CEL rules (offline approximation "
                         "of the API server, devkit.admission)")
    args = ap.parse_args(argv)
    try:
        asyncio.run(serve(args.port, args.kubeconfig, validate=args.validate))
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
