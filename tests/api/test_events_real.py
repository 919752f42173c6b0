"""Events on the object, on the real kube-apiserver: plain ``kubectl describe`` of a cluster-scoped
disklet object shows disklet's Events (as kubectl searches them: all namespaces, involvedObject
name + empty namespace + kind + UID), reported by disklet-agent/disklet-operator, a repeated one
aggregated into one Event with a count, and a re-created object does not show its predecessor's."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from devkit.realkube import RealKube
from disklet.kube.client import EVENTS, KubeClient
from disklet.kube.events import AGENT, EVENT_NAMESPACE, OPERATOR, EventRecorder
from tests.api.kctl_fixtures import LVG, kctl

pytestmark = pytest.mark.api

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture()
def kube(real_kube: RealKube) -> RealKube:
    return real_kube


def lvg(name: str) -> dict:
    return {"apiVersion": "disklet.io/v1alpha1", "kind": "LVMVolumeGroup", "metadata": {"name": name},
            "spec": {"type": "Local", "local": {"nodeName": "node-ev"}, "actualVGNameOnTheNode": "vgev",
                     "fileDevices": [{"name": "a", "directory": "/var/lib/disklet/file-devices", "size": "1Gi"}]}}


def kubectl(kube: RealKube, *args: str) -> str:
    tool = REPO / ".tools" / "bin" / "kubectl"
    res = subprocess.run([str(tool) if tool.exists() else "kubectl", "--kubeconfig", str(kube.kubeconfig), *args],
                         capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    return res.stdout


def events_section(describe: str) -> str:
    return describe[describe.index("\nEvents:"):]


async def test_kubectl_describe_shows_disklet_events_aggregated_and_by_uid(kube: RealKube) -> None:
    name = "ev-describe"
    first = kube.seed(LVG, lvg(name))
    client = KubeClient(kube.endpoint())
    agent = EventRecorder(client, component=AGENT, instance="node-ev")
    operator = EventRecorder(client, component=OPERATOR, instance="disklet-operator-0")
    try:
        for _ in range(3):
            await agent.post(first, "Warning", "FileDeviceNotApplied", "cannot create /x: No space left on device")
        await operator.post(first, "Normal", "Ready", "node-ev: VG vgev ready")

        stored = [e for e in kube.read_all("v1/events")
                  if (e.get("involvedObject") or {}).get("uid") == first["metadata"]["uid"]]
        assert len(stored) == 2, stored  # the repeated Warning is one Event
        warning = next(e for e in stored if e["reason"] == "FileDeviceNotApplied")
        assert warning["count"] == 3 and warning["metadata"]["namespace"] == EVENT_NAMESPACE
        assert "namespace" not in warning["involvedObject"]
        assert warning["source"] == {"component": "disklet-agent", "host": "node-ev"}
        assert warning["reportingComponent"] == "disklet-agent" and warning["reportingInstance"] == "node-ev"

        section = events_section(kubectl(kube, "describe", "lvmvolumegroup", name))
        assert "FileDeviceNotApplied" in section and "(x3 over" in section, section
        assert "disklet-agent" in section and "cannot create /x: No space left on device" in section
        assert "Ready" in section and "disklet-operator" in section, section

        # Re-created under the same name: neither kubectl nor kctl shows the predecessor's Events.
        kube.delete(LVG, name)
        second = kube.seed(LVG, lvg(name))
        assert second["metadata"]["uid"] != first["metadata"]["uid"]
        await agent.post(second, "Normal", "VGCreated", "created volume group vgev")
        section = events_section(kubectl(kube, "describe", "lvmvolumegroup", name))
        assert "VGCreated" in section and "FileDeviceNotApplied" not in section, section
        r = await kctl(kube, "describe", "lvg", name)
        assert r.code == 0, r.err
        assert "VGCreated" in r.out and "FileDeviceNotApplied" not in r.out, r.out
    finally:
        await client.close()
        for e in kube.read_all("v1/events"):
            if (e.get("involvedObject") or {}).get("name") == name:
                kube.delete("v1/events", e["metadata"]["name"], e["metadata"]["namespace"])


async def test_a_restarted_reporter_continues_the_same_event(kube: RealKube) -> None:
    obj = kube.seed(LVG, lvg("ev-restart"))
    client = KubeClient(kube.endpoint())
    try:
        await EventRecorder(client, component=AGENT, instance="n").post(obj, "Warning", "Terminating", "LVs left")
        await EventRecorder(client, component=AGENT, instance="n").post(obj, "Warning", "Terminating", "LVs left")
        found = await client.list(EVENTS, field_selector=f"involvedObject.uid={obj['metadata']['uid']}")
        assert [e["count"] for e in found] == [2], found
    finally:
        await client.close()
        for e in kube.read_all("v1/events"):
            if (e.get("involvedObject") or {}).get("name") == "ev-restart":
                kube.delete("v1/events", e["metadata"]["name"], e["metadata"]["namespace"])
