"""Helpers for the operator's API-tier tests: run the operator's registry against ``kube`` (real or mock).

Imported explicitly by tests/api/test_operator_*.py (not a conftest).
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import kopf
from disklet_operator.handlers import disklayout, lvg
from disklet_operator.main import PROGRESS_PREFIX, configure_settings

from devkit.kopfrun import kopf_running, wait_for
from disklet.kube.client import MERGE_PATCH, KubeClient
from disklet.layout.samples import EXT4

DL = "disklet.io/v1alpha1/disklayouts"
DL_URL = "/apis/disklet.io/v1alpha1/disklayouts"
LVG = "disklet.io/v1alpha1/lvmvolumegroups"
LVG_URL = "/apis/disklet.io/v1alpha1/lvmvolumegroups"
NODES = "v1/nodes"
LEASES = "coordination.k8s.io/v1/leases"
AGENT_NS = "disklet-test-system"
MERGE = {"Content-Type": "application/merge-patch+json"}

# The seed's structured layout (EXT4) written by hand as raw disko Nix: same evaluated disko.devices
# (disklet emits priority = 100 for the first partition), different spelling, comments, let-binding.
EXT4_AS_RAW_NIX = """
# hand-written; same meaning as the structured EXT4 sample
let dev = "/dev/nvme1n1"; in
{
  disko.devices.disk.data1 = {
    type = "disk";
    device = dev;
    content = {
      type = "gpt";
      partitions.kcore0 = {
        size = "100%";
        priority = 100;
        content = { type = "filesystem"; format = "ext4"; mountpoint = "/var/lib/kcore/volumes1"; };
      };
    };
  };
}
"""


def disk_layout(name: str, node: str, *, structured: dict[str, Any] | None = None, nix: str | None = None,
                labels: dict[str, str] | None = None) -> dict[str, Any]:
    spec: dict[str, Any] = {"nodeName": node}
    if nix is not None:
        spec["layoutNix"] = nix
    else:
        spec["diskLayout"] = copy.deepcopy(structured if structured is not None else EXT4)
    meta: dict[str, Any] = {"name": name}
    if labels is not None:
        meta["labels"] = labels
    return {"apiVersion": "disklet.io/v1alpha1", "kind": "DiskLayout", "metadata": meta, "spec": spec}


def volume_group(name: str, node: str, labels: dict[str, str] | None = None) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name}
    if labels is not None:
        meta["labels"] = labels
    return {"apiVersion": "disklet.io/v1alpha1", "kind": "LVMVolumeGroup", "metadata": meta,
            "spec": {"type": "Local", "local": {"nodeName": node}, "actualVGNameOnTheNode": "vg0",
                     "fileDevices": [{"name": "a", "directory": "/var/lib/disklet/file-devices", "size": "1Gi"}]}}


def node_object(name: str, ready: str | None = "True") -> dict[str, Any]:
    status: dict[str, Any] = {}
    if ready is not None:
        status["conditions"] = [{"type": "Ready", "status": ready, "reason": "KubeletReady" if ready == "True" else "KubeletNotReady",
                                 "message": "kubelet is posting ready status" if ready == "True" else "PLEG is not healthy"}]
    return {"apiVersion": "v1", "kind": "Node", "metadata": {"name": name}, "status": status}


def micro_time(when: datetime) -> str:
    return when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def agent_lease(node: str, *, age_seconds: float = 0.0, namespace: str = AGENT_NS) -> dict[str, Any]:
    renewed = datetime.now(UTC) - timedelta(seconds=age_seconds)
    return {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
            "metadata": {"name": f"disklet-agent-{node}", "namespace": namespace},
            "spec": {"holderIdentity": f"disklet-agent-{node}", "leaseDurationSeconds": 40,
                     "renewTime": micro_time(renewed)}}


class Api:
    """The tests' writes to the mock (create, merge-patch, delete) through disklet's one client;
    ``readiness``: the operator's LVMVolumeGroup readiness loop (its passes are the tests' sentinels)."""

    def __init__(self, client: KubeClient, readiness: lvg.ReadinessLoop | None = None):
        self.client = client
        self.readiness = readiness

    async def create(self, url: str, obj: dict[str, Any]) -> dict[str, Any]:
        return dict(await self.client.request("POST", url, body=obj))

    async def patch(self, url: str, body: dict[str, Any]) -> dict[str, Any]:
        return dict(await self.client.request("PATCH", url, body=body, content_type=MERGE_PATCH))

    async def delete(self, url: str) -> None:
        await self.client.request("DELETE", url)


@contextlib.asynccontextmanager
async def operator_running(kube: Any, *, recheck_seconds: float = 0.3, interval: float = 0.3,
                           lease_grace: float = 60.0, clock: Any = None) -> AsyncIterator[Api]:
    """The operator's own handler modules and settings, with short timers, against ``kube``.

    ``interval``: seconds between readiness passes; ``clock``: the LVMVolumeGroup handlers' clock
    (called once per evaluation and once per readiness pass; see CountingClock)."""
    registry = kopf.OperatorRegistry()
    disklayout.register(registry, recheck_seconds=recheck_seconds)
    readiness = lvg.register(registry, namespace=AGENT_NS, interval=interval, lease_grace=lease_grace, clock=clock)
    async with kopf_running(registry, kube=kube, configure=lambda s: configure_settings(s, namespace=AGENT_NS)):
        async with KubeClient(kube.endpoint()) as client:
            yield Api(client, readiness)


class CountingClock:
    """The real UTC clock, counting calls: the LVMVolumeGroup handlers read it once per evaluation
    and the readiness loop once per pass, so a test can wait for "N more evaluations happened" (a
    sentinel) instead of sleeping.

    ``step_seconds``: fake time instead — each call returns ``step_seconds`` more than the last
    (starting now), so every evaluation falls in a later second, whatever the machine's load."""

    def __init__(self, step_seconds: float | None = None) -> None:
        self.calls = 0
        self.step_seconds = step_seconds
        self._start = datetime.now(UTC)

    def __call__(self) -> datetime:
        self.calls += 1
        if self.step_seconds is None:
            return datetime.now(UTC)
        return self._start + timedelta(seconds=self.step_seconds * self.calls)


class FakeClock(CountingClock):
    """The real clock moved forward by :meth:`advance` (time passing without sleeping)."""

    def __init__(self) -> None:
        super().__init__()
        self.offset = timedelta()

    def advance(self, *, seconds: float) -> None:
        self.offset += timedelta(seconds=seconds)

    def __call__(self) -> datetime:
        return super().__call__() + self.offset


def posted_events(kube: Any, name: str) -> list[dict[str, Any]]:
    """Events the operator posted about object ``name``: on the real server, the Events stored about
    the live object (its uid: an earlier test's object of the same name is another object); on the
    mock, from the request log (the mock keeps only the first of Kopf's events per object name)."""
    if not hasattr(kube, "request_log"):
        live = next((o for key in (DL, LVG) if (o := kube.read(key, name))), None)
        uid = (live or {}).get("metadata", {}).get("uid")
        return [e for e in kube.read_all("v1/events") if (e.get("involvedObject") or {}).get("uid") == uid]
    out = []
    for r in kube.request_log:
        if str(getattr(r, "method", "")).upper().endswith("POST") and "/events" in str(r.url):
            data = r.data if isinstance(r.data, dict) else {}
            if (data.get("involvedObject") or {}).get("name") == name:
                out.append(data)
    return out


def status_of(kube: Any, plural_key: str, name: str) -> dict[str, Any]:
    return ((kube.read(plural_key, name) or {}).get("status")) or {}


def condition(status: dict[str, Any], type_: str) -> dict[str, Any] | None:
    return next((c for c in status.get("conditions") or [] if c.get("type") == type_), None)


async def wait_event(kube: Any, name: str, predicate: Any, message: str,
                     timeout: float = 15.0) -> list[dict[str, Any]]:
    """The Events posted about ``name`` once one satisfies ``predicate`` (an Event is posted after
    the status write that caused it, so a test that has seen the status waits for its Event)."""
    def check() -> list[dict[str, Any]] | None:
        events = posted_events(kube, name)
        return events if any(predicate(e) for e in events) else None
    return await wait_for(check, timeout=timeout, message=message)


async def wait_status(kube: Any, plural_key: str, name: str, predicate: Any, message: str,
                      timeout: float = 15.0) -> dict[str, Any]:
    def check() -> dict[str, Any] | None:
        st = status_of(kube, plural_key, name)
        return st if st and predicate(st) else None
    return await wait_for(check, timeout=timeout, message=message)


def assert_no_kopf_in_status(obj: dict[str, Any]) -> None:
    """Kopf's bookkeeping lives only in annotations with the operator's prefix, never in status."""
    assert "kopf" not in (obj.get("status") or {}), obj.get("status")
    for key in (obj.get("metadata") or {}).get("annotations") or {}:
        assert "kopf" not in key or key.startswith(PROGRESS_PREFIX + "/"), key
        if "last-handled-configuration" in key or "kopf-managed" in key:
            assert key.startswith(PROGRESS_PREFIX + "/"), key
