"""LVMVolumeGroup on file-backed loop devices and LVMVolumeGroupSet fan-out, end to end on this host."""

from __future__ import annotations

import re
import socket
from pathlib import Path
from typing import Any

import pytest

from disklet.units import parse_quantity
from e2e import harness as h

WAIT = 90
LOOP_RE = re.compile(r"^/dev/loop[0-9]+$")


def _lvg(e2e: Any, name: str, vg: str, entries: list[str], size: str = "1Gi") -> dict[str, Any]:
    return {"apiVersion": "disklet.io/v1alpha1", "kind": "LVMVolumeGroup", "metadata": {"name": name},
            "spec": {"type": "Local", "local": {"nodeName": e2e.node}, "actualVGNameOnTheNode": vg,
                     "fileDevices": [{"name": n, "directory": str(e2e.file_devices), "size": size} for n in entries]}}


def _file_devices(obj: dict[str, Any] | None, node: str) -> list[dict[str, Any]]:
    for n in ((obj or {}).get("status") or {}).get("nodes") or []:
        if n.get("name") == node:
            return list(n.get("fileDevices") or [])
    return []


def _ready(e2e: Any, name: str, entries: int, timeout: float = WAIT) -> dict[str, Any]:
    """Wait for phase Ready at the current generation with ``entries`` file devices in status."""

    def ok() -> dict[str, Any] | None:
        obj = e2e.kube.get(h.LVG, name)
        st = (obj or {}).get("status") or {}
        gen = ((obj or {}).get("metadata") or {}).get("generation")
        if st.get("phase") == "Ready" and st.get("observedGeneration") == gen \
                and len(_file_devices(obj, e2e.node)) == entries:
            return obj
        return None

    return h.wait_until(ok, timeout=timeout, what=f"LVMVolumeGroup {name} Ready with {entries} file device(s)",
                        describe=e2e.describe(h.LVG, name))  # type: ignore[no-any-return]


def _backing(dev: str) -> str:
    return h.sh(["losetup", "-n", "-O", "BACK-FILE", dev], check=False).stdout.strip()


def _pvs_of(vg: str) -> list[str]:
    res = h.sh(["pvs", "--noheadings", "-o", "pv_name,vg_name", "--config", 'devices{filter=["a|^/dev/loop|","r|.*|"]}'],
               check=False)
    return sorted(p for p, g in (line.split() for line in res.stdout.splitlines() if len(line.split()) == 2) if g == vg)


def _assert_canonical(e2e: Any, obj: dict[str, Any], lvg: str, vg: str, names: list[str]) -> None:
    fds = {f["name"]: f for f in _file_devices(obj, e2e.node)}
    assert sorted(fds) == sorted(names), h.brief(obj)
    loops = []
    for n in names:
        fd = fds[n]
        want_path = str(e2e.file_devices / f"disklet-{lvg}.{n}.img")
        assert LOOP_RE.match(fd.get("loopDevice") or ""), f"not a canonical /dev/loopN: {fd}"
        assert fd.get("filePath") == want_path, f"{fd} (expected filePath {want_path})"
        assert _backing(fd["loopDevice"]) == want_path, f"{fd['loopDevice']} is not backed by {want_path}"
        assert fd.get("pvUUID") and fd.get("size"), fd
        loops.append(fd["loopDevice"])
    assert _pvs_of(vg) == sorted(loops), f"VG {vg} PVs {_pvs_of(vg)} != status loops {sorted(loops)}"
    assert obj["status"].get("vgUUID"), h.brief(obj)


def test_file_only_lvg_becomes_ready(scenario: Any, local_only: None, root_only: None) -> None:
    name, vg = scenario.name("lvg-ready"), scenario.vg_name("r")
    scenario.create(h.LVG, _lvg(scenario, name, vg, ["a", "b"]))
    obj = _ready(scenario, name, 2)
    _assert_canonical(scenario, obj, name, vg, ["a", "b"])
    assert (obj["metadata"].get("labels") or {}).get("disklet.io/node") == scenario.node, h.brief(obj)


def test_appending_an_entry_grows_the_vg(scenario: Any, local_only: None, root_only: None) -> None:
    name, vg = scenario.name("lvg-grow"), scenario.vg_name("g")
    scenario.create(h.LVG, _lvg(scenario, name, vg, ["a"]))
    before = _ready(scenario, name, 1)
    spec = _lvg(scenario, name, vg, ["a", "b"])["spec"]
    scenario.kube.patch(h.LVG, name, {"spec": {"fileDevices": spec["fileDevices"]}})
    after = _ready(scenario, name, 2)
    _assert_canonical(scenario, after, name, vg, ["a", "b"])
    assert parse_quantity(after["status"]["vgSize"]) > parse_quantity(before["status"]["vgSize"]), \
        (before["status"]["vgSize"], after["status"]["vgSize"])


def test_editing_an_existing_entry_is_rejected(scenario: Any, root_only: None) -> None:
    """Real server: the CRD's transition rules. Mock: the same rules through the offline admission."""
    name, vg = scenario.name("lvg-edit"), scenario.vg_name("e")
    scenario.create(h.LVG, _lvg(scenario, name, vg, ["a"]))
    moved = [{"name": "a", "directory": str(scenario.file_devices / "elsewhere"), "size": "1Gi"}]
    with pytest.raises(h.ApiError) as err:
        scenario.kube.patch(h.LVG, name, {"spec": {"fileDevices": moved}})
    assert err.value.status == 422 and "immutable" in err.value.message, err.value
    shrunk = [{"name": "a", "directory": str(scenario.file_devices), "size": "900Mi"}]
    with pytest.raises(h.ApiError) as err:
        scenario.kube.patch(h.LVG, name, {"spec": {"fileDevices": shrunk}})
    assert err.value.status == 422, err.value
    live = scenario.kube.get(h.LVG, name)
    assert live["spec"]["fileDevices"][0]["directory"] == str(scenario.file_devices), h.brief(live)


def test_agent_restart_reattaches_detached_loops(scenario: Any, local_only: None, root_only: None) -> None:
    name, vg = scenario.name("lvg-reboot"), scenario.vg_name("b")
    scenario.create(h.LVG, _lvg(scenario, name, vg, ["a", "b"]))
    obj = _ready(scenario, name, 2)
    assert scenario.agent is not None
    scenario.agent.stop()
    for fd in _file_devices(obj, scenario.node):  # a reboot: the agent's loops are gone, the files stay
        assert _backing(fd["loopDevice"]).startswith(str(scenario.file_devices) + "/")
        h.sh(["losetup", "-d", fd["loopDevice"]])
    assert h.loops_under(scenario.file_devices) == []
    scenario.start_agent()
    h.wait_until(lambda: len(h.loops_under(scenario.file_devices)) == 2, timeout=WAIT,
                 what="the restarted agent to re-attach both backing files", describe=scenario.logs)
    again = _ready(scenario, name, 2)
    h.wait_until(lambda: _pvs_of(vg) == sorted(f["loopDevice"] for f in _file_devices(
        scenario.kube.get(h.LVG, name), scenario.node)), timeout=WAIT, what="status to name the re-attached loops",
        describe=scenario.describe(h.LVG, name))
    _assert_canonical(scenario, scenario.kube.get(h.LVG, name) or again, name, vg, ["a", "b"])


def test_delete_leaves_nothing(scenario: Any, local_only: None, root_only: None) -> None:
    name, vg = scenario.name("lvg-delete"), scenario.vg_name("d")
    scenario.create(h.LVG, _lvg(scenario, name, vg, ["a", "b"]))
    _ready(scenario, name, 2)
    scenario.kube.delete(h.LVG, name)
    h.wait_until(lambda: scenario.kube.get(h.LVG, name) is None, timeout=WAIT,
                 what=f"LVMVolumeGroup {name} to be deleted (agent finalizer released)",
                 describe=scenario.describe(h.LVG, name))
    assert h.loops_under(scenario.file_devices) == []
    assert list(Path(scenario.file_devices).glob(f"disklet-{name}.*")) == []
    assert h.vgs_named(vg) == []


def _file_set_child(scenario: Any, name: str, vg: str, label: str) -> str:
    """Create a PerNode LVMVolumeGroupSet of one 1Gi file device over the nodes labelled ``label``
    and return the name of the child it makes for this node (registered for clean-up)."""
    scenario.create(h.LVGSET, {
        "apiVersion": "disklet.io/v1alpha1", "kind": "LVMVolumeGroupSet", "metadata": {"name": name},
        "spec": {"nodeSelector": {"matchLabels": {label: "true"}}, "strategy": "PerNode",
                 "lvmVolumeGroupTemplate": {"type": "Local", "actualVGNameOnTheNode": vg, "fileDevices": [
                     {"name": "a", "directory": str(scenario.file_devices), "size": "1Gi"}]}}})
    owner = scenario.kube.get(h.LVGSET, name)["metadata"]["uid"]

    def child() -> str | None:
        for o in scenario.kube.list(h.LVG):
            if any(r.get("uid") == owner for r in o["metadata"].get("ownerReferences") or []) \
                    and (o["spec"].get("local") or {}).get("nodeName") == scenario.node:
                return str(o["metadata"]["name"])
        return None

    child_name: str = h.wait_until(child, timeout=WAIT, what=f"LVMVolumeGroupSet {name} to create a child for "
                                   f"{scenario.node}", describe=scenario.describe(h.LVGSET, name))
    scenario.created.append((h.LVG, child_name))
    return child_name


def test_lvgset_file_template_makes_a_ready_child(scenario: Any, local_only: None, root_only: None) -> None:
    label = f"disklet.io/e2e-{scenario.run}"
    scenario.kube.patch(h.NODE, scenario.node, {"metadata": {"labels": {label: "true"}}})
    try:
        name, vg = scenario.name("set"), scenario.vg_name("s")
        child_name = _file_set_child(scenario, name, vg, label)
        obj = _ready(scenario, child_name, 1)
        _assert_canonical(scenario, obj, child_name, vg, ["a"])
        h.wait_until(lambda: (scenario.kube.get(h.LVGSET, name).get("status") or {}).get(
            "currentLVMVolumeGroupsCount") == 1, timeout=WAIT, what="the set to count its child",
            describe=scenario.describe(h.LVGSET, name))
    finally:
        scenario.kube.patch(h.NODE, scenario.node, {"metadata": {"labels": {label: None}}})


def _kctl(scenario: Any, *argv: str) -> tuple[int, str, str]:
    """kctl in-process against the run's cluster."""
    import asyncio
    import io

    from disklet.cli.main import run

    out, err = io.StringIO(), io.StringIO()
    code = asyncio.run(run([*argv, "--kubeconfig", str(scenario.kube.kubeconfig)], out, err))
    return code, out.getvalue(), err.getvalue()


def test_lvgset_rollout_reaches_ready_and_a_poisoned_template_halts(scenario: Any, local_only: None,
                                                                   root_only: None) -> None:
    """A template change rolls to Ready through the real agent and `kctl rollout status` exits 0; a
    template the agent refuses (a thin pool larger than the VG) halts the rollout at the first child
    with a condition naming it, and `kctl rollout status` exits 1. (One node here: the halt before a
    second node is the planner's and the real-API-server test's business.)"""
    label = f"disklet.io/e2e-{scenario.run}"
    scenario.kube.patch(h.NODE, scenario.node, {"metadata": {"labels": {label: "true"}}})
    try:
        name, vg = scenario.name("roll"), scenario.vg_name("r")
        base = str(scenario.file_devices)
        scenario.create(h.LVGSET, {
            "apiVersion": "disklet.io/v1alpha1", "kind": "LVMVolumeGroupSet", "metadata": {"name": name},
            "spec": {"nodeSelector": {"matchLabels": {label: "true"}}, "rollout": {"maxUnavailable": 1},
                     "lvmVolumeGroupTemplate": {"actualVGNameOnTheNode": vg, "fileDevices": [
                         {"name": "a", "directory": base, "size": "1Gi"}]}}})
        child = h.wait_until(lambda: next((o["metadata"]["name"] for o in scenario.kube.list(h.LVG)
                                           if o["metadata"].get("labels", {}).get("disklet.io/lvmvolumegroupset") == name),
                                          None), timeout=WAIT, what="the child", describe=scenario.describe(h.LVGSET, name))
        scenario.created.append((h.LVG, child))
        _ready(scenario, child, 1)
        code, out, err = _kctl(scenario, "rollout", "status", "lvgset", name, "--timeout", str(WAIT), "--interval", "0.5")
        assert code == 0, out + err

        scenario.kube.patch(h.LVGSET, name, {"spec": {"lvmVolumeGroupTemplate": {"fileDevices": [
            {"name": "a", "directory": base, "size": "1Gi"}, {"name": "b", "directory": base, "size": "1Gi"}]}}})
        code, out, err = _kctl(scenario, "rollout", "status", "lvgset", name, "--timeout", str(WAIT), "--interval", "0.5")
        assert code == 0, out + err
        assert out.splitlines()[-1] == f"lvmvolumegroupset/{name}: rollout complete"
        obj = _ready(scenario, child, 2)
        _assert_canonical(scenario, obj, child, vg, ["a", "b"])

        # poisoned: a thin pool the VG cannot hold (the agent refuses before any lvcreate; unlike a bad
        # file-device directory, this leaves the child deletable)
        scenario.kube.patch(h.LVGSET, name, {"spec": {"lvmVolumeGroupTemplate": {"thinPools": [
            {"name": "tp", "size": "100Ti"}]}}})
        code, out, err = _kctl(scenario, "rollout", "status", "lvgset", name, "--timeout", str(WAIT), "--interval", "0.5")
        assert code == 1, out + err
        assert f"halted: LVMVolumeGroup {child} on node {scenario.node} failed: ThinPoolReconcileFailed" in err, err
        status = scenario.kube.get(h.LVGSET, name)["status"]
        progressing = next(c for c in status["conditions"] if c["type"] == "Progressing")
        assert progressing["reason"] == "ChildFailed" and child in progressing["message"]
        assert status["failedCount"] == 1 and status["attention"][0]["name"] == child
        assert len(_pvs_of(vg)) == 2, "the refusal destroyed nothing: the VG keeps its PVs"
    finally:
        scenario.kube.patch(h.NODE, scenario.node, {"metadata": {"labels": {label: None}}})


@pytest.mark.parametrize("policy", ["Background", "Foreground"])
def test_deleting_a_set_removes_its_children_and_their_vgs(scenario: Any, local_only: None, root_only: None,
                                                           policy: str) -> None:
    """The garbage collector deletes the child through its ownerReference (on a real server:
    kube-controller-manager's; Foreground: the set waits for it); the agent releases its
    finalizer after removing the VG, so nothing is left holding the deletion."""
    if policy == "Foreground" and not scenario.real:
        pytest.skip("foreground deletion needs a real garbage collector (the mock has none)")
    label = f"disklet.io/e2e-{scenario.run}"
    scenario.kube.patch(h.NODE, scenario.node, {"metadata": {"labels": {label: "true"}}})
    try:
        name, vg = scenario.name(f"gc{policy[0].lower()}"), scenario.vg_name(f"g{policy[0].lower()}")
        child_name = _file_set_child(scenario, name, vg, label)
        _ready(scenario, child_name, 1)
        assert h.vgs_named(vg) == [vg]
        scenario.kube.request("DELETE", h.LVGSET.path(name), {"propagationPolicy": policy})
        h.wait_until(lambda: scenario.kube.get(h.LVG, child_name) is None, timeout=WAIT,
                     what=f"the garbage collector and the agent to remove {child_name}",
                     describe=scenario.describe(h.LVG, child_name))
        h.wait_until(lambda: scenario.kube.get(h.LVGSET, name) is None, timeout=WAIT, what=f"{name} gone")
        h.wait_until(lambda: h.vgs_named(vg) == [], timeout=WAIT, what=f"VG {vg} removed")
    finally:
        scenario.kube.patch(h.NODE, scenario.node, {"metadata": {"labels": {label: None}}})


def _condition(obj: dict[str, Any] | None, type_: str = "VGConfigurationApplied") -> dict[str, Any]:
    return next((c for c in ((obj or {}).get("status") or {}).get("conditions") or [] if c.get("type") == type_), {})


def test_relabelled_lvg_keeps_its_finalizer_and_strands_nothing(scenario: Any, local_only: None,
                                                                  root_only: None) -> None:
    """The label is a routing hint: an object of this node relabelled to another node (by hand, a
    tool, a restore) is reported by that node's agent and never released by it; deleted while
    mislabelled, it waits; once the label is right again, this node's agent deletes it and nothing
    (VG, loop, file) is left behind. (Before: the other agent's Kopf stripped the finalizer, the
    delete completed at once and the VG, loop and file stayed on this node, unmanaged.)"""
    name, vg = scenario.name("lvg-relabel"), scenario.vg_name("r")
    scenario.create(h.LVG, _lvg(scenario, name, vg, ["a"]))
    _ready(scenario, name, 1)
    other = f"e2e-{scenario.run}-other"
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = scenario.agent_env() | {"NODE_NAME": other, "DISKLET_METRICS_PORT": str(port),
                                  "FILE_DEVICES_DIRECTORY": str(scenario.sandbox / "other-file-devices")}
    assert scenario.operator is not None
    scenario.operator.stop()  # the operator resets the label from nodeName: hold it back meanwhile
    peer = h.Proc("agent-other", h.agent_argv(), env, scenario.sandbox / "agent-other.log").start()
    try:
        scenario.kube.patch(h.LVG, name, {"metadata": {"labels": {"disklet.io/node": other}}})
        obj = h.wait_until(lambda: (o := scenario.kube.get(h.LVG, name)) and _condition(o).get("reason") ==
                           "NodeLabelMismatch" and o, timeout=WAIT, what="the other agent to report the label",
                           describe=lambda: h.brief(scenario.kube.get(h.LVG, name)) + "\n" + peer.tail())
        assert "disklet.io/agent" in obj["metadata"].get("finalizers", []), h.brief(obj)
        scenario.kube.delete(h.LVG, name)
        # Sentinel: the other agent's delete handler ran and kept the finalizer.
        h.wait_until(lambda: "finalizer kept" in peer.tail(200), timeout=WAIT,
                     what="the other agent to refuse releasing the finalizer", describe=peer.tail)
        obj = scenario.kube.get(h.LVG, name)
        assert obj is not None and "disklet.io/agent" in obj["metadata"].get("finalizers", []), h.brief(obj)
        assert len(h.loops_under(scenario.file_devices)) == 1 and h.vgs_named(vg) == [vg]
        scenario.kube.patch(h.LVG, name, {"metadata": {"labels": {"disklet.io/node": scenario.node}}})
        scenario.start_operator()
        h.wait_until(lambda: scenario.kube.get(h.LVG, name) is None, timeout=WAIT,
                     what=f"{name} deleted by the agent of its node", describe=scenario.describe(h.LVG, name))
    finally:
        peer.stop()
        if not scenario.operator.alive():
            scenario.start_operator()
    assert h.loops_under(scenario.file_devices) == []
    assert list(Path(scenario.file_devices).glob(f"disklet-{name}.*")) == []
    assert h.vgs_named(vg) == []
