"""The agent's one Kubernetes client for its own writes (kubernetes-asyncio, plain dict bodies).

Kopf watches and posts Events with its own session; everything else the agent writes — LVG
status, BlockDevices, its Lease — goes through this class. Why not Kopf's client: it is private
API and has no credentials before the startup handlers finish (the startup re-attach must list
this node's LVMVolumeGroups before any handler runs).

Credentials: in a pod the service account (``KUBERNETES_SERVICE_HOST`` set), otherwise the
kubeconfig (``KUBECONFIG`` or ``~/.kube/config``) — the same sources Kopf's login uses.
Patches are JSON merge patches (the mock and the real server agree on them).
"""

from __future__ import annotations

import asyncio
import os
from typing import Any

from kubernetes_asyncio import client, config
from kubernetes_asyncio.client.exceptions import ApiException

from disklet.api.resources import NODE_LABEL, Resource
from disklet.labels import node_label_value

MERGE = "application/merge-patch+json"

__all__ = ["AgentKube", "ApiException", "is_not_found", "is_conflict"]


def is_not_found(exc: BaseException) -> bool:
    return isinstance(exc, ApiException) and exc.status == 404


def is_conflict(exc: BaseException) -> bool:
    return isinstance(exc, ApiException) and exc.status == 409


class AgentKube:
    """Lazily connected; one per agent (``AgentKube.close()`` at cleanup)."""

    def __init__(self, api_client: client.ApiClient | None = None):
        self._api: client.ApiClient | None = api_client
        self._lock = asyncio.Lock()

    async def api(self) -> client.ApiClient:
        async with self._lock:
            if self._api is None:
                cfg = client.Configuration()
                if os.environ.get("KUBERNETES_SERVICE_HOST"):
                    config.load_incluster_config(client_configuration=cfg)
                else:
                    path = (os.environ.get("KUBECONFIG") or "~/.kube/config").split(os.pathsep)[0]
                    await config.load_kube_config(config_file=os.path.expanduser(path), client_configuration=cfg)
                self._api = client.ApiClient(configuration=cfg)
            return self._api

    async def close(self) -> None:
        if self._api is not None:
            await self._api.close()
            self._api = None

    async def _custom(self) -> client.CustomObjectsApi:
        return client.CustomObjectsApi(await self.api())

    # ------------------------------------------------------------- cluster-scoped disklet objects
    async def list_node_objects(self, res: Resource, node: str) -> list[dict[str, Any]]:
        """This node's objects of ``res`` (server-side label selector ``disklet.io/node=<node>``)."""
        api = await self._custom()
        out = await api.list_cluster_custom_object(res.group, res.version, res.plural,
                                                   label_selector=f"{NODE_LABEL}={node_label_value(node)}")
        return list(out.get("items") or [])

    async def get(self, res: Resource, name: str) -> dict[str, Any] | None:
        api = await self._custom()
        try:
            return await api.get_cluster_custom_object(res.group, res.version, res.plural, name)
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise

    async def create(self, res: Resource, body: dict[str, Any]) -> dict[str, Any]:
        api = await self._custom()
        return await api.create_cluster_custom_object(res.group, res.version, res.plural, body)

    async def patch(self, res: Resource, name: str, body: dict[str, Any]) -> dict[str, Any]:
        api = await self._custom()
        return await api.patch_cluster_custom_object(res.group, res.version, res.plural, name, body,
                                                     _content_type=MERGE)

    async def patch_status(self, res: Resource, name: str, status: dict[str, Any]) -> dict[str, Any]:
        api = await self._custom()
        return await api.patch_cluster_custom_object_status(res.group, res.version, res.plural, name,
                                                            {"status": status}, _content_type=MERGE)

    async def delete(self, res: Resource, name: str) -> None:
        api = await self._custom()
        try:
            await api.delete_cluster_custom_object(res.group, res.version, res.plural, name)
        except ApiException as exc:
            if exc.status != 404:
                raise

    # ------------------------------------------------------------- leases
    async def patch_lease(self, namespace: str, name: str, body: dict[str, Any]) -> dict[str, Any]:
        api_client = await self.api()
        lease = await client.CoordinationV1Api(api_client).patch_namespaced_lease(name, namespace, body,
                                                                                   _content_type=MERGE)
        return dict(api_client.sanitize_for_serialization(lease))

    async def create_lease(self, namespace: str, body: dict[str, Any]) -> dict[str, Any]:
        api_client = await self.api()
        lease = await client.CoordinationV1Api(api_client).create_namespaced_lease(namespace, body)
        return dict(api_client.sanitize_for_serialization(lease))
