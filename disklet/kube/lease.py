"""The agent↔operator Lease contract, spelled once for both sides (pure).

Each agent keeps a ``coordination.k8s.io/v1`` Lease named ``disklet-agent-<node>`` in the
namespace ``DISKLET_NAMESPACE`` (default ``disklet-system``), renewing ``spec.renewTime`` every
10 s; the operator watches Leases in that namespace only and derives each LVMVolumeGroup's
``AgentReady`` condition from how old ``renewTime`` is (docs/design/product.md#the-agentoperator-lease).
"""

from __future__ import annotations

import os
from datetime import UTC, datetime
from typing import Any

from disklet.labels import node_label_value

LEASE_DURATION_SECONDS = 60
RENEW_INTERVAL_SECONDS = 10.0
DEFAULT_NAMESPACE = "disklet-system"
NAMESPACE_ENV = "DISKLET_NAMESPACE"
LEASE_PREFIX = "disklet-agent-"
FILE_DEVICES_ANNOTATION = "disklet.io/file-devices-directory"
"""The agent's base directory of file devices (chart value fileDevicesDirectory), on its Lease."""
MOUNT_ROOTS_ANNOTATION = "disklet.io/mount-roots"
"""The roots the agent allows DiskLayout mountpoints under (DISKLET_MOUNT_ROOTS), comma-separated."""


def lease_namespace() -> str:
    """Where the agents' Leases live: ``$DISKLET_NAMESPACE`` (the chart sets it) or disklet-system."""
    return os.environ.get(NAMESPACE_ENV) or DEFAULT_NAMESPACE


def lease_name(node: str) -> str:
    return LEASE_PREFIX + node


def lease_node(name: str) -> str | None:
    """The node an agent Lease name belongs to, None for any other Lease."""
    return name[len(LEASE_PREFIX):] or None if name.startswith(LEASE_PREFIX) else None


def micro_time(now: datetime | None = None) -> str:
    """A metav1.MicroTime: RFC 3339 in UTC with exactly six fractional digits."""
    now = (now or datetime.now(UTC)).astimezone(UTC)
    return now.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def lease_spec(node: str, now: datetime | None = None) -> dict[str, Any]:
    return {"holderIdentity": node, "leaseDurationSeconds": LEASE_DURATION_SECONDS, "renewTime": micro_time(now)}


def agent_facts(file_devices_dir: str, mount_roots: list[str] | tuple[str, ...]) -> dict[str, str]:
    """What the agent publishes about itself on its Lease (annotations): what ``kctl diff`` would
    otherwise have to assume (docs/kctl.md, "What diff reads from the cluster")."""
    return {FILE_DEVICES_ANNOTATION: file_devices_dir, MOUNT_ROOTS_ANNOTATION: ",".join(mount_roots)}


def published_facts(lease: dict[str, Any] | None) -> tuple[str | None, list[str] | None]:
    """(file-devices base directory, mount roots) an agent published on its Lease; None where absent."""
    notes = ((lease or {}).get("metadata") or {}).get("annotations") or {}
    base = notes.get(FILE_DEVICES_ANNOTATION) or None
    roots = notes.get(MOUNT_ROOTS_ANNOTATION)
    return base, ([r for r in roots.split(",") if r] if roots is not None else None)


def lease_object(node: str, namespace: str, now: datetime | None = None,
                 facts: dict[str, str] | None = None) -> dict[str, Any]:
    spec = lease_spec(node, now)
    spec["acquireTime"] = spec["renewTime"]
    meta: dict[str, Any] = {"name": lease_name(node), "namespace": namespace,
                            "labels": {"app.kubernetes.io/name": "disklet", "app.kubernetes.io/component": "agent",
                                       "disklet.io/node": node_label_value(node)}}
    if facts:
        meta["annotations"] = dict(facts)
    return {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "metadata": meta, "spec": spec}
