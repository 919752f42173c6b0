"""The agent Lease body (pure): the operator derives ``AgentReady`` from ``renewTime``."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from disklet.labels import node_label_value

LEASE_DURATION_SECONDS = 60
RENEW_INTERVAL_SECONDS = 10.0
DEFAULT_NAMESPACE = "disklet-system"


def lease_name(node: str) -> str:
    return f"disklet-agent-{node}"


def micro_time(now: datetime | None = None) -> str:
    """A metav1.MicroTime: RFC 3339 in UTC with exactly six fractional digits."""
    now = (now or datetime.now(UTC)).astimezone(UTC)
    return now.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def lease_spec(node: str, now: datetime | None = None) -> dict[str, Any]:
    return {"holderIdentity": node, "leaseDurationSeconds": LEASE_DURATION_SECONDS, "renewTime": micro_time(now)}


def lease_object(node: str, namespace: str, now: datetime | None = None) -> dict[str, Any]:
    spec = lease_spec(node, now)
    spec["acquireTime"] = spec["renewTime"]
    return {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
            "metadata": {"name": lease_name(node), "namespace": namespace,
                         "labels": {"app.kubernetes.io/name": "disklet", "app.kubernetes.io/component": "agent",
                                    "disklet.io/node": node_label_value(node)}},
            "spec": spec}
