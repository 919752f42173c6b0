"""Kubernetes Events about disklet's objects, posted so that plain ``kubectl describe`` shows them.

kubectl finds the Events of an object with one list across all namespaces and the field selector
``involvedObject.name=N,involvedObject.namespace=NS,involvedObject.kind=K,involvedObject.uid=U``,
where NS is the object's own namespace — empty for a cluster-scoped object. kube-apiserver stores
an Event whose involved object is cluster-scoped only in the ``default`` namespace. So an Event of
a disklet object (all four kinds are cluster-scoped) lives in ``default`` and names the object by
kind, name and UID with **no** namespace: that is what kubectl's search matches, and the UID keeps
a re-created object from showing its predecessor's Events.

Repeated Events are aggregated as client-go does: the same object (UID), reporter, type, reason and
message make one Event whose ``count`` grows and whose ``lastTimestamp`` moves (``kubectl describe``
prints "(x3 over 5m)"). The Event's name is derived from exactly those fields, so a restarted
agent or a second operator replica continues the same Event instead of starting a new one.

``source.component`` and ``reportingComponent`` are ``disklet-agent`` or ``disklet-operator``
(kubectl's "From" column); ``source.host`` and ``reportingInstance`` say which node or pod.
Posting never fails a handler: a refused or unreachable post is logged and dropped.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import socket
import weakref
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from .client import EVENTS, ApiError, KubeClient, is_conflict

if TYPE_CHECKING:
    import kopf

__all__ = ["AGENT", "EVENT_NAMESPACE", "MAX_MESSAGE", "OPERATOR", "EventRecorder", "event_body", "event_name",
           "event_selector", "recorder_for"]

log = logging.getLogger("disklet.events")

AGENT = "disklet-agent"
OPERATOR = "disklet-operator"
EVENT_NAMESPACE = "default"
"""Where kube-apiserver accepts an Event about a cluster-scoped object."""
MAX_MESSAGE = 1024
MAX_NAME = 253
MAX_INSTANCE = 128


def _involved(obj: Mapping[str, Any]) -> dict[str, str]:
    meta = obj.get("metadata") or {}
    ref = {"apiVersion": str(obj.get("apiVersion") or ""), "kind": str(obj.get("kind") or ""),
           "name": str(meta.get("name") or ""), "uid": str(meta.get("uid") or "")}
    if meta.get("namespace"):
        ref["namespace"] = str(meta["namespace"])
    return {k: v for k, v in ref.items() if v}


def _message(message: str) -> str:
    return message if len(message) <= MAX_MESSAGE else message[:MAX_MESSAGE - 3] + "..."


def event_name(obj: Mapping[str, Any], component: str, type_: str, reason: str, message: str) -> str:
    """``<object name>.<16 hex>``: the same object, reporter, type, reason and message give the same name."""
    ref = _involved(obj)
    key = "\x00".join((ref.get("uid", ""), ref.get("kind", ""), ref.get("name", ""), component, type_, reason,
                       _message(message)))
    digest = hashlib.sha256(key.encode()).hexdigest()[:16]
    return f"{ref.get('name', 'object')[:MAX_NAME - 17]}.{digest}"


def event_selector(obj: Mapping[str, Any]) -> str:
    """kubectl describe's field selector for ``obj``'s Events (list them across all namespaces)."""
    ref = _involved(obj)
    parts = [f"involvedObject.name={ref.get('name', '')}", f"involvedObject.namespace={ref.get('namespace', '')}",
             f"involvedObject.kind={ref.get('kind', '')}"]
    if ref.get("uid"):
        parts.append(f"involvedObject.uid={ref['uid']}")
    return ",".join(parts)


def event_body(obj: Mapping[str, Any], *, component: str, instance: str, type_: str, reason: str, message: str,
               now: datetime) -> dict[str, Any]:
    """A core/v1 Event about ``obj`` (first occurrence, ``count`` 1)."""
    ref = _involved(obj)
    stamp = now.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    source: dict[str, str] = {"component": component}
    if instance:
        source["host"] = instance[:MAX_INSTANCE]
    return {
        "apiVersion": "v1", "kind": "Event",
        "metadata": {"name": event_name(obj, component, type_, reason, message),
                     "namespace": ref.get("namespace", EVENT_NAMESPACE)},
        "involvedObject": ref,
        "type": type_, "reason": reason, "message": _message(message),
        "source": source,
        "reportingComponent": component, "reportingInstance": instance[:MAX_INSTANCE],
        "firstTimestamp": stamp, "lastTimestamp": stamp, "count": 1,
    }


class EventRecorder:
    """Posts (and aggregates) Events through one :class:`KubeClient`.

    :meth:`record` is synchronous, for handlers' helpers: it schedules the post on the running loop
    (the handler never waits for it); :meth:`post` is the same, awaited; :meth:`flush` waits for
    what was scheduled (shutdown, tests).
    """

    def __init__(self, kube: KubeClient | Callable[[], KubeClient], *, component: str, instance: str,
                 clock: Callable[[], datetime] | None = None) -> None:
        self._kube = kube
        self.component = component
        self.instance = instance
        self._clock = clock or (lambda: datetime.now(UTC))
        self._tasks: set[asyncio.Task[None]] = set()
        self._locks: dict[str, asyncio.Lock] = {}
        self.posted = 0

    def client(self) -> KubeClient:
        return self._kube if isinstance(self._kube, KubeClient) else self._kube()

    def record(self, obj: Mapping[str, Any], type_: str, reason: str, message: str) -> None:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            log.warning("event not posted (no running loop): %s %s %s", type_, reason, message[:200])
            return
        task = loop.create_task(self.post(dict(obj), type_, reason, message))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def flush(self) -> None:
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    async def post(self, obj: Mapping[str, Any], type_: str, reason: str, message: str) -> None:
        body = event_body(obj, component=self.component, instance=self.instance, type_=type_, reason=reason,
                          message=message, now=self._clock())
        name, ns = body["metadata"]["name"], body["metadata"]["namespace"]
        lock = self._locks.setdefault(name, asyncio.Lock())
        try:
            async with lock:
                await self._create_or_count(body, name, ns)
                self.posted += 1
        except Exception as exc:  # noqa: BLE001 - an Event is auxiliary: never fail the handler over it
            log.warning("cannot post Event %s %s about %s: %s", type_, reason, body["involvedObject"].get("name"), exc)
        finally:
            if not lock.locked():
                self._locks.pop(name, None)

    async def _create_or_count(self, body: dict[str, Any], name: str, ns: str) -> None:
        kube = self.client()
        if await _created(kube, body, ns):
            return
        # The same Event exists (this process or an earlier one posted it): count it once more.
        for _ in range(3):
            current = await kube.get(EVENTS, name, ns)
            if current is None:
                if await _created(kube, body, ns):
                    return
                continue
            count = int(current.get("count") or 1) + 1
            rv = (current.get("metadata") or {}).get("resourceVersion")
            patch: dict[str, Any] = {"count": count, "lastTimestamp": body["lastTimestamp"]}
            if rv:
                patch["metadata"] = {"resourceVersion": rv}  # a concurrent increment retries instead of being lost
            try:
                await kube.patch(EVENTS, name, patch, namespace=ns)
                return
            except ApiError as exc:
                if not is_conflict(exc):
                    raise
        raise ApiError(f"Event {ns}/{name}: gave up counting after three conflicting updates")


async def _created(kube: KubeClient, body: dict[str, Any], ns: str) -> bool:
    """Create the Event; False when one of that name exists already (any other failure raises)."""
    try:
        await kube.create(EVENTS, body, namespace=ns)
    except ApiError as exc:
        if not is_conflict(exc):
            raise
        return False
    return True


def operator_instance() -> str:
    """The operator's ``reportingInstance``: its pod's name (the host name in a pod)."""
    return os.environ.get("POD_NAME") or socket.gethostname()


_RECORDERS: weakref.WeakKeyDictionary[Any, EventRecorder] = weakref.WeakKeyDictionary()


def recorder_for(registry: kopf.OperatorRegistry, *, component: str, instance: str,
                 kube: KubeClient | None = None) -> EventRecorder:
    """The one recorder of a Kopf registry (made on first call). ``kube``: the client to post with
    (the agent's shared one); else its own client with the registry's login (the identity of the
    watches), opened on first post and closed at the registry's cleanup."""
    found = _RECORDERS.get(registry)
    if found is not None:
        return found
    import kopf

    from .login import registry_login

    holder: dict[str, KubeClient] = {}

    def client() -> KubeClient:
        if kube is not None:
            return kube
        if "kube" not in holder:
            holder["kube"] = KubeClient(login=registry_login(registry), field_manager=component, max_connections=1)
        return holder["kube"]

    recorder = EventRecorder(client, component=component, instance=instance)
    _RECORDERS[registry] = recorder

    @kopf.on.cleanup(registry=registry, id="disklet_events_cleanup")
    async def disklet_events_cleanup(**_: Any) -> None:
        await recorder.flush()
        if "kube" in holder:
            await holder.pop("kube").close()

    return recorder
