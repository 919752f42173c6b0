"""The mock API itself: what disklet relies on beyond plain kmock (so API-tier tests mean something)."""

from __future__ import annotations

import aiohttp
import kopf
import pytest

from devkit.kopfrun import kopf_running, wait_for

pytestmark = pytest.mark.kmock("tests the mock itself (what the fault-injection tests rely on)")

LVG = "disklet.io/v1alpha1/lvmvolumegroups"
LVG_URL = "/apis/disklet.io/v1alpha1/lvmvolumegroups"


def _lvg(name: str, node: str) -> dict:
    return {"apiVersion": "disklet.io/v1alpha1", "kind": "LVMVolumeGroup",
            "metadata": {"name": name, "labels": {"disklet.io/node": node}},
            "spec": {"type": "Local", "local": {"nodeName": node}, "actualVGNameOnTheNode": "vg0",
                     "fileDevices": [{"name": "a", "directory": "/var/lib/disklet/file-devices", "size": "1Gi"}]},
            "status": {"phase": "Ready"}}


async def test_metadata_generation_status_subresource_and_selectors(kube):
    async with aiohttp.ClientSession(kube.server_url) as s:
        r = await s.post(LVG_URL, json=_lvg("a", "n1"))
        assert r.status in (200, 201), await r.text()
        created = await r.json()
        assert created["metadata"]["generation"] == 1 and created["metadata"]["uid"]
        assert "status" not in created, "status is dropped on create (status subresource)"
        await s.post(LVG_URL, json=_lvg("b", "n2"))
        # a status patch changes only status and keeps generation
        r = await s.patch(f"{LVG_URL}/a/status", json={"status": {"phase": "Ready"}, "spec": {"actualVGNameOnTheNode": "x"}},
                          headers={"Content-Type": "application/merge-patch+json"})
        obj = await r.json()
        assert obj["status"] == {"phase": "Ready"}
        assert obj["spec"]["actualVGNameOnTheNode"] == "vg0" and obj["metadata"]["generation"] == 1
        # a spec patch bumps generation and cannot touch status
        r = await s.patch(f"{LVG_URL}/a", json={"spec": {"thinPools": [{"name": "tp", "size": "50%"}]},
                                                "status": {"phase": "NotReady"}},
                          headers={"Content-Type": "application/merge-patch+json"})
        obj = await r.json()
        assert obj["metadata"]["generation"] == 2 and obj["status"] == {"phase": "Ready"}
        rv1 = int(obj["metadata"]["resourceVersion"])
        # a metadata-only patch keeps generation, moves resourceVersion
        r = await s.patch(f"{LVG_URL}/a", json={"metadata": {"annotations": {"x": "y"}}},
                          headers={"Content-Type": "application/merge-patch+json"})
        obj = await r.json()
        assert obj["metadata"]["generation"] == 2 and int(obj["metadata"]["resourceVersion"]) > rv1
        # server-side label selectors
        r = await s.get(LVG_URL, params={"labelSelector": "disklet.io/node=n2"})
        assert [o["metadata"]["name"] for o in (await r.json())["items"]] == ["b"]
        r = await s.get(LVG_URL, params={"labelSelector": "disklet.io/node in (n1,n3)"})
        assert [o["metadata"]["name"] for o in (await r.json())["items"]] == ["a"]
        r = await s.get(LVG_URL, params={"labelSelector": "!disklet.io/node"})
        assert (await r.json())["items"] == []


async def test_server_side_apply_creates_and_owner_gc(kube):
    async with aiohttp.ClientSession(kube.server_url) as s:
        r = await s.patch(f"{LVG_URL}/owner", params={"fieldManager": "kctl"}, json=_lvg("owner", "n1"),
                          headers={"Content-Type": "application/apply-patch+yaml"})
        assert r.status in (200, 201), await r.text()
        owner = await r.json()
        child = _lvg("child", "n1")
        child["metadata"]["ownerReferences"] = [{"apiVersion": "disklet.io/v1alpha1", "kind": "LVMVolumeGroupSet",
                                                 "name": "owner", "uid": owner["metadata"]["uid"]}]
        await s.post(LVG_URL, json=child)
        assert kube.read(LVG, "child") is not None
        await s.delete(f"{LVG_URL}/owner")
        assert kube.read(LVG, "owner") is None
        assert kube.read(LVG, "child") is None, "dependents are garbage-collected with their owner"


async def test_kopf_server_side_label_selector(kube):
    """The mechanism the agent relies on: Kopf's label_selectors reach the server; only matching objects arrive."""
    seen: list[str] = []
    registry = kopf.OperatorRegistry()

    @kopf.on.create("disklet.io", "v1alpha1", "lvmvolumegroups", registry=registry)
    def _created(name, patch, **_):
        seen.append(name)
        patch.status["phase"] = "Pending"

    def configure(settings):
        settings.watching.label_selectors["disklet.io", "lvmvolumegroups"] = "disklet.io/node=n1"
        settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix="disklet.io")
        settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(prefix="disklet.io")

    async with kopf_running(registry, server=kube.server_url, configure=configure):
        async with aiohttp.ClientSession(kube.server_url) as s:
            await s.post(LVG_URL, json=_lvg("mine", "n1"))
            await s.post(LVG_URL, json=_lvg("other", "n2"))
        await wait_for(lambda: (kube.read(LVG, "mine") or {}).get("status", {}).get("phase") == "Pending",
                       message="handler status on mine")
    assert seen == ["mine"]
    assert (kube.read(LVG, "other") or {}).get("status") is None
    watches = [r for r in kube.request_log if "watch" in (r.params or {}) and "lvmvolumegroups" in str(r.url)]
    assert watches and all(r.params.get("labelSelector") == "disklet.io/node=n1" for r in watches)
    assert "kopf" not in (kube.read(LVG, "mine") or {}).get("status", {}), "Kopf bookkeeping stays out of status"


async def test_json_patch_with_failed_test_is_422_and_applies_otherwise(kube):
    async with aiohttp.ClientSession(kube.server_url) as s:
        r = await s.post(LVG_URL, json=_lvg("jp", "n1"))
        rv = (await r.json())["metadata"]["resourceVersion"]
        hdr = {"Content-Type": "application/json-patch+json"}
        r = await s.patch(f"{LVG_URL}/jp", headers=hdr, json=[
            {"op": "test", "path": "/metadata/resourceVersion", "value": rv},
            {"op": "add", "path": "/metadata/finalizers", "value": ["x.io/f"]}])
        assert r.status == 200, await r.text()
        obj = await r.json()
        assert obj["metadata"]["finalizers"] == ["x.io/f"] and obj["metadata"]["resourceVersion"] != rv
        r = await s.patch(f"{LVG_URL}/jp", headers=hdr, json=[
            {"op": "test", "path": "/metadata/resourceVersion", "value": rv},
            {"op": "remove", "path": "/metadata/finalizers/0"}])
        assert r.status == 422, await r.text()
        assert kube.read(LVG, "jp")["metadata"]["finalizers"] == ["x.io/f"]
