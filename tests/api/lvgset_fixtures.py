"""Shared helpers for the LVMVolumeGroupSet API-tier tests (and the fan-out benchmark)."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import kopf
from disklet_operator.handlers.lvgset import LvgsetController, register

from devkit.kopfrun import kopf_running

LVG = "disklet.io/v1alpha1/lvmvolumegroups"
LVGSET = "disklet.io/v1alpha1/lvmvolumegroupsets"
NODES = "v1/nodes"
LVG_URL = "/apis/disklet.io/v1alpha1/lvmvolumegroups"
SET_URL = "/apis/disklet.io/v1alpha1/lvmvolumegroupsets"
NODE_URL = "/api/v1/nodes"
MERGE = {"Content-Type": "application/merge-patch+json"}
BASE_DIR = "/var/lib/disklet/file-devices"


def node(name: str, **labels: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Node",
            "metadata": {"name": name, "labels": {"kubernetes.io/hostname": name, **labels}}}


def file_device(name: str, size: str = "1Gi", directory: str = BASE_DIR) -> dict[str, str]:
    return {"name": name, "directory": directory, "size": size}


def lvgset(name: str, *, selector: dict[str, Any] | None = None, vg: str = "vg-data",
           file_devices: list[dict[str, str]] | None = None, block_selector: dict[str, Any] | None = None,
           labels: dict[str, str] | None = None, thin_pools: list[dict[str, str]] | None = None,
           rollout: dict[str, Any] | None = None) -> dict[str, Any]:
    """A set body; ``rollout`` defaults to no limit (``maxUnavailable: 100%``): no agent makes children Ready here."""
    tmpl: dict[str, Any] = {"type": "Local", "actualVGNameOnTheNode": vg}
    if labels:
        tmpl["metadata"] = {"labels": labels}
    if file_devices is not None:
        tmpl["fileDevices"] = file_devices
    if block_selector is not None:
        tmpl["blockDeviceSelector"] = block_selector
    if thin_pools is not None:
        tmpl["thinPools"] = thin_pools
    return {"apiVersion": "disklet.io/v1alpha1", "kind": "LVMVolumeGroupSet", "metadata": {"name": name},
            "spec": {"nodeSelector": selector or {}, "strategy": "PerNode", "lvmVolumeGroupTemplate": tmpl,
                     "rollout": rollout or {"maxUnavailable": "100%"}}}


def configure(settings: kopf.OperatorSettings) -> None:
    """What the operator's main does: Kopf bookkeeping in annotations, never in status."""
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix="operator.disklet.io")
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(prefix="operator.disklet.io")
    settings.posting.level = 0


@contextlib.asynccontextmanager
async def lvgset_operator(target: Any, **register_kwargs: Any) -> AsyncIterator[LvgsetController]:
    """Only this controller's handlers, in a fresh registry, running against ``target``: the
    ``kube``/``real_kube`` fixture's object, or the mock's URL (benchmarks)."""
    registry = kopf.OperatorRegistry()
    register_kwargs.setdefault("batch_delay", 0.02)
    ctl = register(registry, **register_kwargs)
    where: dict[str, Any] = {"server": target} if isinstance(target, str) else {"kube": target}
    async with kopf_running(registry, configure=configure, **where):
        yield ctl


async def post(session: aiohttp.ClientSession, url: str, body: dict[str, Any]) -> dict[str, Any]:
    r = await session.post(url, json=body)
    assert r.status in (200, 201), await r.text()
    return await r.json()


async def patch(session: aiohttp.ClientSession, url: str, body: dict[str, Any]) -> dict[str, Any]:
    r = await session.patch(url, json=body, headers=MERGE)
    assert r.status == 200, await r.text()
    return await r.json()


def children_of(kube: Any, set_name: str) -> dict[str, dict[str, Any]]:
    out = {}
    for obj in kube.read_all(LVG):
        refs = obj["metadata"].get("ownerReferences") or []
        if any(r.get("kind") == "LVMVolumeGroupSet" and r.get("name") == set_name for r in refs):
            out[obj["metadata"]["name"]] = obj
    return out


def writes_since(kube: Any, start: int) -> list[Any]:
    """Non-read requests (POST/PATCH/PUT/DELETE) served after ``start`` log entries, events excluded."""
    return [r for r in kube.request_log[start:]
            if str(r.method).upper() not in ("GET", "METHOD.GET", "LIST", "WATCH") and "/events" not in str(r.url)
            and str(getattr(r, "method", "")).lower() not in ("get",)]
