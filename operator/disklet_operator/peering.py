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
CRDS = Kind("apiextensions.k8s.io", "v1", "customresourcedefinitions", "CustomResourceDefinition")


def replica_priority(environ: dict[str, str] | None = None) -> int:
    """``DISKLET_PEERING_PRIORITY`` if set, else a stable number from the pod name (POD_ID or
    HOSTNAME): distinct per replica with overwhelming likelihood (1 .. 2^31-1)."""
    env = os.environ if environ is None else environ
    if env.get(PRIORITY_ENV):
        return int(env[PRIORITY_ENV])
    ident = env.get("POD_ID") or env.get("HOSTNAME") or os.uname().nodename
    return int.from_bytes(hashlib.sha256(ident.encode()).digest()[:4], "big") % (2**31 - 1) + 1


async def peering_problem(name: str, namespace: str | None) -> str | None:
    """None when the peering object exists; else what is missing and how to fix it."""
    plural = "kopfpeerings" if namespace else "clusterkopfpeerings"
    where = f"KopfPeering {namespace}/{name}" if namespace else f"ClusterKopfPeering {name}"
    fix = ("run with --standalone (one replica), or install the chart with operator.peering.enabled=true "
           "(it creates the peering CRDs and object)")
    peering = Kind(KOPF_GROUP, KOPF_VERSION, plural, "KopfPeering" if namespace else "ClusterKopfPeering",
                   namespaced=bool(namespace))
    async with KubeClient(login=pod_or_kubeconfig, max_connections=1) as kube:
        try:
            if await kube.get(peering, name, namespace) is not None:
                return None
        except ApiError as exc:
            if exc.status == 403:
                return None  # cannot read it: let Kopf try (its RBAC may differ); not a reason to refuse
            raise
        crd = f"{plural}.{KOPF_GROUP}"
        missing = f"the {where}" if await _crd_exists(kube, crd) else f"the peering CRD {crd}"
        return f"peering is on (--peering {name}) but {missing} does not exist: Kopf would pause every watch; {fix}"


async def _crd_exists(kube: KubeClient, name: str) -> bool:
    try:
        return await kube.get(CRDS, name) is not None
    except ApiError:
        return False
