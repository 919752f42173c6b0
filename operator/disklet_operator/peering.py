"""Kopf peering for operator replicas: check the peering object exists, give each replica its own priority.

Kopf with peering and no peering CRD/object pauses every watch and says so only at debug level;
the operator would sit silent forever. :func:`peering_problem` finds that before Kopf starts, so
``main`` can exit with an error that says what to do. Replicas with equal priority all pause
(Kopf's rule), so :func:`replica_priority` derives a distinct one per pod from its name.
"""

from __future__ import annotations

import hashlib
import os

from disklet.kube.client import ApiError, Kind, KubeClient
from disklet.kube.login import pod_or_kubeconfig

KOPF_GROUP, KOPF_VERSION = "kopf.dev", "v1"
PRIORITY_ENV = "DISKLET_PEERING_PRIORITY"


def replica_priority(environ: dict[str, str] | None = None) -> int:
    """``DISKLET_PEERING_PRIORITY`` if set, else a stable number from the pod name (POD_ID or
    HOSTNAME): distinct per replica with overwhelming likelihood (1 .. 2^31-1)."""
    env = os.environ if environ is None else environ
    if env.get(PRIORITY_ENV):
        return int(env[PRIORITY_ENV])
    ident = env.get("POD_ID") or env.get("HOSTNAME") or os.uname().nodename
    return int.from_bytes(hashlib.sha256(ident.encode()).digest()[:4], "big") % (2**31 - 1) + 1


CRDS = Kind("apiextensions.k8s.io", "v1", "customresourcedefinitions", "CustomResourceDefinition")


async def peering_problem(name: str, namespace: str | None) -> str | None:
    """None when the peering object exists; else what is missing and how to fix it.

    Through disklet's own client (the operator's process never loads kubernetes-asyncio: its
    generated models alone are ~60 MiB of RSS, docs/performance.md)."""
    plural = "kopfpeerings" if namespace else "clusterkopfpeerings"
    where = f"KopfPeering {namespace}/{name}" if namespace else f"ClusterKopfPeering {name}"
    fix = ("run with --standalone (one replica), or install the chart with operator.peering.enabled=true "
           "(it creates the peering CRDs and object)")
    kind = Kind(KOPF_GROUP, KOPF_VERSION, plural, "KopfPeering" if namespace else "ClusterKopfPeering",
                namespaced=bool(namespace))
    api = KubeClient(login=pod_or_kubeconfig, field_manager="disklet-operator")
    try:
        try:
            found = await api.get(kind, name, namespace)
        except ApiError as exc:
            if exc.status == 403:
                return None  # cannot read it: let Kopf try (its RBAC may differ); not a reason to refuse
            raise
        if found is not None:
            return None
        crd = f"{plural}.{KOPF_GROUP}"
        exists = await _crd_exists(api, crd)
        missing = f"the {where}" if exists else f"the peering CRD {crd}"
        return f"peering is on (--peering {name}) but {missing} does not exist: Kopf would pause every watch; {fix}"
    finally:
        await api.close()


async def _crd_exists(api: KubeClient, name: str) -> bool:
    try:
        return await api.get(CRDS, name) is not None
    except ApiError:
        return False
