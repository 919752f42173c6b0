"""The staged rollout on a real kube-apiserver (devkit/envtest.py): the whole operator runs
in-process, no agent. The test writes what an agent would (its Lease, the child's
VGConfigurationApplied/VGReady and observedGeneration); the operator's own readiness rule turns
that into Ready. "Nothing else happened" is shown by a later event the operator demonstrably
processed (a sentinel), never by sleeping."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import kopf
import pytest

pytest.importorskip("devkit.envtest", reason="needs devkit/envtest.py")

from disklet_operator.main import build_registry, configure_settings  # noqa: E402

from devkit.kopfrun import kopf_running  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
NS = "disklet-system"
REV = "disklet.io/lvgset-revision"
NODES = ("ro-n1", "ro-n2", "ro-n3")
BASE = "/var/lib/disklet/file-devices"


@pytest.fixture(autouse=True)
def _leave_the_server_as_found(real_kube):
    """The API tier shares one server: what these tests create (sets, children, Nodes, Leases) is
    deleted afterwards by ``real_kube`` (tests/api/conftest.py), so no later test's operator sees it."""
    yield


def _now(micro: bool = False) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S.000000Z" if micro else "%Y-%m-%dT%H:%M:%SZ", time.gmtime())


async def _kubectl(cluster: Any, *args: str, input: str | None = None) -> str:
    return (await asyncio.to_thread(cluster.kubectl, *args, input=input)).stdout


async def _get(cluster: Any, *args: str) -> Any:
    return await asyncio.to_thread(cluster.get, *args)


async def _until(check: Any, what: str, timeout: float = 90.0) -> Any:
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = await check()
        if last:
            return last
        await asyncio.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}; last: {last!r}")


async def _children(cluster: Any, name: str) -> dict[str, dict]:
    items = (await _get(cluster, "lvg", "-l", f"disklet.io/lvmvolumegroupset={name}")) or {"items": []}
    return {o["metadata"]["name"]: o for o in items["items"]}


async def _status(cluster: Any, name: str) -> dict:
    return ((await _get(cluster, "lvgset", name)) or {}).get("status") or {}


async def _agent_report(cluster: Any, child: str, applied: tuple[str, str] = ("True", "Applied")) -> None:
    """What the agent on the child's node writes: its Lease is fresh, the spec's generation applied."""
    obj = await _get(cluster, "lvg", child)
    gen = obj["metadata"]["generation"]
    now = _now()
    conds = [{"type": "VGConfigurationApplied", "status": applied[0], "reason": applied[1], "message": "test agent",
              "lastTransitionTime": now, "observedGeneration": gen},
             {"type": "VGReady", "status": "True", "reason": "Applied", "message": "test agent",
              "lastTransitionTime": now, "observedGeneration": gen}]
    # keep the operator's conditions (NodeReady/AgentReady/Ready): the agent merges, it does not replace them
    theirs = [c for c in (obj.get("status") or {}).get("conditions") or ()
              if c["type"] not in ("VGConfigurationApplied", "VGReady")]
    patch = {"status": {"observedGeneration": gen, "phase": "Ready", "conditions": theirs + conds}}
    await _kubectl(cluster, "patch", "lvg", child, "--subresource=status", "--type=merge", "-p", json.dumps(patch))


def _set(rollout: dict) -> dict:
    return {"apiVersion": "disklet.io/v1alpha1", "kind": "LVMVolumeGroupSet", "metadata": {"name": "roll"},
            "spec": {"nodeSelector": {"matchLabels": {"disklet.io/rollout-test": "yes"}}, "rollout": rollout,
                     "lvmVolumeGroupTemplate": {"actualVGNameOnTheNode": "vg-roll",
                                                "fileDevices": [{"name": "a", "directory": BASE, "size": "1Gi"}]}}}


@pytest.mark.timeout(300)
async def test_max_unavailable_one_updates_one_child_until_it_is_ready_and_paused_none(envtest, monkeypatch):
    cluster = envtest
    await _kubectl(cluster, "apply", "--server-side", "--force-conflicts", "-f", str(REPO / "crds"))
    for crd in ("lvmvolumegroups", "lvmvolumegroupsets", "blockdevices", "disklayouts"):
        await _kubectl(cluster, "wait", "--for", "condition=Established", "--timeout", "60s", f"crd/{crd}.disklet.io")
    await asyncio.to_thread(cluster.namespace, NS)
    for n in NODES:
        await asyncio.to_thread(cluster.create_node, n, {"disklet.io/rollout-test": "yes"})
        lease = {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                 "metadata": {"name": f"disklet-agent-{n}", "namespace": NS},
                 "spec": {"holderIdentity": n, "renewTime": _now(micro=True), "leaseDurationSeconds": 3600}}
        await asyncio.to_thread(cluster.apply, lease)
    monkeypatch.setenv("KUBECONFIG", cluster.kubeconfig)
    monkeypatch.setenv("DISKLET_NAMESPACE", NS)
    registry = build_registry()

    @kopf.on.login(registry=registry)
    def _login(**kwargs: Any) -> kopf.ConnectionInfo | None:  # the envtest admin kubeconfig (token, CA)
        return kopf.login_with_kubeconfig(**kwargs)

    async with kopf_running(registry, configure=configure_settings, ready_timeout=60):
        # 1. fan out with no limit, every child made Ready the way an agent would
        await asyncio.to_thread(cluster.apply, _set({"maxUnavailable": "100%"}))
        kids = await _until(lambda: _at_least(cluster, 3), "three children")
        for name in kids:
            await _agent_report(cluster, name)
        await _until(lambda: _updated_ready(cluster, 3), "all three updated and Ready")

        # 2. a template change with maxUnavailable 1: exactly one child is written
        await _kubectl(cluster, "patch", "lvgset", "roll", "--type=merge", "-p", json.dumps({"spec": {
            "rollout": {"maxUnavailable": 1},
            "lvmVolumeGroupTemplate": {"fileDevices": [{"name": "a", "directory": BASE, "size": "2Gi"}]}}}))
        rev = (await _until(lambda: _rev_for_generation(cluster, 2), "generation 2 observed"))
        first = await _until(lambda: _at_revision(cluster, rev, 1), "the first child updated")
        assert first == ["roll-ro-n1"], "exactly one child, the first in rollout order (node name)"
        # sentinel: the agent reports it is still working on n1; once the set's status shows that
        # report, the operator has run a pass after it, and that pass must not have touched n2 or n3
        await _agent_report(cluster, "roll-ro-n1", applied=("False", "Updating"))
        await _until(lambda: _attention_reason(cluster, "roll-ro-n1", "NotReady"), "the sentinel processed")
        assert await _at_revision_now(cluster, rev) == ["roll-ro-n1"]
        kids = await _children(cluster, "roll")
        assert kids["roll-ro-n2"]["spec"]["fileDevices"][0]["size"] == "1Gi"
        # the first child becomes Ready → the second, and only the second, follows
        await _agent_report(cluster, "roll-ro-n1")
        assert await _until(lambda: _at_revision(cluster, rev, 2), "the second child") == ["roll-ro-n1", "roll-ro-n2"]

        # 3. paused: a new template reaches no child
        await _kubectl(cluster, "patch", "lvgset", "roll", "--type=merge", "-p", json.dumps({"spec": {
            "rollout": {"paused": True},
            "lvmVolumeGroupTemplate": {"fileDevices": [{"name": "a", "directory": BASE, "size": "3Gi"}]}}}))
        rev3 = await _until(lambda: _rev_for_generation(cluster, 3), "generation 3 observed")
        progressing = next(c for c in (await _status(cluster, "roll"))["conditions"] if c["type"] == "Progressing")
        assert progressing["reason"] == "Paused"
        # sentinel: n2 becomes Ready (a pass runs, its status counts it) and still nothing is written
        await _agent_report(cluster, "roll-ro-n2")
        await _until(lambda: _ready_count(cluster, 3), "n2 Ready seen by the set")
        assert await _at_revision_now(cluster, rev3) == []
        assert all(k["spec"]["fileDevices"][0]["size"] != "3Gi" for k in (await _children(cluster, "roll")).values())


async def _at_least(cluster: Any, n: int) -> list[str] | None:
    kids = await _children(cluster, "roll")
    return sorted(kids) if len(kids) >= n else None


async def _updated_ready(cluster: Any, n: int) -> bool:
    return (await _status(cluster, "roll")).get("updatedReadyCount") == n


async def _ready_count(cluster: Any, n: int) -> bool:
    return (await _status(cluster, "roll")).get("readyCount") == n


async def _rev_for_generation(cluster: Any, gen: int) -> str | None:
    st = await _status(cluster, "roll")
    return st.get("currentRevision") if st.get("observedGeneration") == gen else None


async def _at_revision_now(cluster: Any, rev: str) -> list[str]:
    return sorted(k for k, v in (await _children(cluster, "roll")).items() if v["metadata"]["labels"].get(REV) == rev)


async def _at_revision(cluster: Any, rev: str, n: int) -> list[str] | None:
    now = await _at_revision_now(cluster, rev)
    return now if len(now) >= n else None


async def _attention_reason(cluster: Any, child: str, reason: str) -> bool:
    return any(a["name"] == child and a["reason"] == reason for a in (await _status(cluster, "roll")).get("attention") or ())


@pytest.mark.timeout(180)
async def test_kctl_diff_dry_run_server_runs_the_servers_cel_rules(envtest, tmp_path):
    """`kctl diff --dry-run=server`: the API server judges the object (here: a file device that
    would shrink, refused by the CRD's CEL rule) and nothing is stored."""
    import io

    import yaml

    from disklet.cli.main import run

    cluster = envtest
    await _kubectl(cluster, "apply", "--server-side", "--force-conflicts", "-f", str(REPO / "crds"))
    await _kubectl(cluster, "wait", "--for", "condition=Established", "--timeout", "60s",
                   "crd/lvmvolumegroupsets.disklet.io")
    body = _set({"maxUnavailable": 1})
    body["metadata"]["name"] = "dry"
    body["spec"]["lvmVolumeGroupTemplate"]["fileDevices"][0]["size"] = "4Gi"
    await asyncio.to_thread(cluster.apply, body)
    before = (await _get(cluster, "lvgset", "dry"))["metadata"]["resourceVersion"]

    async def kctl_diff(size: str) -> tuple[int, str]:
        obj = dict(body, spec=dict(body["spec"], lvmVolumeGroupTemplate=dict(
            body["spec"]["lvmVolumeGroupTemplate"], fileDevices=[{"name": "a", "directory": BASE, "size": size}])))
        f = tmp_path / f"dry-{size}.yaml"
        f.write_text(yaml.safe_dump(obj))
        out, err = io.StringIO(), io.StringIO()
        code = await run(["diff", "--dry-run=server", "-f", str(f), "--kubeconfig", cluster.kubeconfig], out, err)
        return code, out.getvalue() + err.getvalue()

    code, text = await kctl_diff("2Gi")
    assert code == 2 and "server dry run: REFUSED" in text and "may only grow" in text, text
    code, text = await kctl_diff("8Gi")
    assert code == 1 and "server dry run: accepted" in text, text
    after = await _get(cluster, "lvgset", "dry")
    assert after["metadata"]["resourceVersion"] == before, "a dry run stores nothing"
    assert after["spec"]["lvmVolumeGroupTemplate"]["fileDevices"][0]["size"] == "4Gi"
    await _kubectl(cluster, "delete", "lvgset", "dry", "--wait=false")
