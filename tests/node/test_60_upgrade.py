"""Day 2 of the installation itself: helm upgrade with a changed agent setting rolls the DaemonSet
and re-creates nothing on the host; an agent killed in the middle of provisioning converges."""

from __future__ import annotations

import os
import signal
from typing import Any

from devkit.envtest import run
from tests.node.release import GROUP, LVM_CONFIG, Host, Release
from tests.node.test_20_lvg import lvg, wait_lvg_ready


def _pv_uuids(vg: str) -> dict[str, str]:
    res = run(["pvs", "--noheadings", "-o", "pv_name,pv_uuid,vg_name", "--config", LVM_CONFIG], timeout=60)
    return {f[0]: f[1] for f in (line.split() for line in res.stdout.splitlines()) if len(f) == 3 and f[2] == vg}


def _file_devices(obj: dict[str, Any]) -> dict[str, tuple[str, str]]:
    return {f["name"]: (f["filePath"], f["loopDevice"]) for n in obj["status"]["nodes"] for f in n["fileDevices"]}


def test_helm_upgrade_rolls_the_agent_and_recreates_nothing(release: Release, host: Host) -> None:
    obj = lvg(host, "up", ["f0"])
    name = obj["metadata"]["name"]
    release.apply(obj)
    before = wait_lvg_ready(release, name, 1)
    pvs_before = _pv_uuids(host.vg("up"))
    files = {n: os.stat(p).st_ino for n, (p, _) in _file_devices(before).items()}
    old_pod = release.pod("agent")["metadata"]["uid"]
    old_gen = release.get("daemonset", "-n", release.namespace, f"{release.name}-agent")["metadata"]["generation"]
    release.values["agent"]["scanIntervalSeconds"] = 3
    release.upgrade()
    ds = release.get("daemonset", "-n", release.namespace, f"{release.name}-agent")
    assert ds["metadata"]["generation"] > old_gen
    pod = release.pod("agent")
    assert pod["metadata"]["uid"] != old_pod, "the DaemonSet did not roll its pod"
    env = {e["name"]: e.get("value") for e in pod["spec"]["containers"][0]["env"]}
    assert env["DISKLET_SCAN_INTERVAL_SECONDS"] == "3"
    # The new agent adopts the VG as it is: same PVs, same loop devices, same backing files.
    after = wait_lvg_ready(release, name, 1)
    assert _file_devices(after) == _file_devices(before)
    assert {n: os.stat(p).st_ino for n, (p, _) in _file_devices(after).items()} == files
    assert _pv_uuids(host.vg("up")) == pvs_before
    assert after["status"].get("vgUUID") == before["status"].get("vgUUID")


def test_agent_killed_mid_provisioning_converges_without_twins(release: Release, host: Host) -> None:
    obj = lvg(host, "kill", ["f0", "f1"])
    name = obj["metadata"]["name"]
    restarts = release.pod("agent")["status"]["containerStatuses"][0]["restartCount"]
    release.apply(obj)
    # The moment the first backing file exists, the agent is in the middle of provisioning: kill it.
    prefix = f"disklet-{name}."
    release.wait(lambda: any(p.name.startswith(prefix) for p in host.file_devices.iterdir()), timeout=120,
                 what="the agent to start provisioning (a backing file)")
    os.kill(release.container_pid("agent"), signal.SIGKILL)
    release.wait(lambda: release.pod("agent")["status"]["containerStatuses"][0]["restartCount"] > restarts,
                 timeout=120, what="the kubelet to restart the killed agent")
    ready = wait_lvg_ready(release, name, 2, timeout=240)
    fds = _file_devices(ready)
    loops = host.backing_loops()
    for _entry, (path, dev) in fds.items():
        attached = sorted(d for d, f in loops.items() if f == path)
        assert attached == [dev], f"{path}: one loop expected, found {attached}"
    pvs = _pv_uuids(host.vg("kill"))
    assert sorted(pvs) == sorted(dev for _, dev in fds.values()), pvs
    files = sorted(p.name for p in host.file_devices.iterdir() if p.name.startswith(prefix))
    assert len(files) == 2, files
    assert release.get(f"lvmvolumegroups.{GROUP}", name)["status"]["phase"] == "Ready"
