"""The agent Lease: ``coordination.k8s.io/v1`` ``disklet-agent-<node>`` renewed every 10 s.

The operator computes each LVMVolumeGroup's ``AgentReady`` from it (renewTime younger than
leaseDurationSeconds). Renewal is a merge patch of ``spec``; a missing Lease is created. A failed
renewal is logged and retried on the next tick — the Lease simply ages, which is the signal.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import kopf

from disklet.kube.lease import (
    RENEW_INTERVAL_SECONDS,
    agent_facts,
    lease_name,
    lease_namespace,
    lease_object,
    lease_spec,
)

from ..deps import AgentDeps
from ..kube import AgentKube, is_conflict, is_not_found
from ..tasks import BackgroundTasks

log = logging.getLogger("disklet.agent.lease")


async def renew_lease(kube: AgentKube, node: str, namespace: str,
                      facts: dict[str, str] | None = None) -> dict[str, Any]:
    """Renew (or create) the node's Lease once; returns the Lease as the server has it. ``facts``:
    annotations the agent publishes about itself (its file-devices base directory and mount roots,
    :func:`disklet.kube.lease.agent_facts`), sent with every renewal (a no-op when unchanged)."""
    patch: dict[str, Any] = {"spec": lease_spec(node)}
    if facts:
        patch["metadata"] = {"annotations": dict(facts)}
    try:
        return await kube.patch_lease(namespace, lease_name(node), patch)
    except Exception as exc:
        if not is_not_found(exc):
            raise
    try:
        return await kube.create_lease(namespace, lease_object(node, namespace, facts=facts))
    except Exception as exc:
        if not is_conflict(exc):  # created meanwhile: renew it
            raise
        return await kube.patch_lease(namespace, lease_name(node), patch)


async def lease_loop(kube: AgentKube, node: str, namespace: str, interval: float = RENEW_INTERVAL_SECONDS,
                     facts: dict[str, str] | None = None) -> None:
    while True:
        try:
            await renew_lease(kube, node, namespace, facts)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # keep renewing: a transient API error must not stop the heartbeat
            log.warning("lease renewal failed", extra={"node": node, "error": str(exc)})
        await asyncio.sleep(interval)


def register(registry: kopf.OperatorRegistry, deps: AgentDeps, *, kube: AgentKube | None = None,
             tasks: BackgroundTasks | None = None, interval: float = RENEW_INTERVAL_SECONDS) -> None:
    node = deps.config.node_name
    kube = kube or AgentKube()
    tasks = tasks or BackgroundTasks.attach(registry)

    @kopf.on.startup(registry=registry)
    async def disklet_agent_lease(**_: Any) -> None:
        facts = agent_facts(deps.config.file_devices_dir, deps.config.mount_roots)
        tasks.start(f"lease {node}", lease_loop(kube, node, lease_namespace(), interval, facts))
