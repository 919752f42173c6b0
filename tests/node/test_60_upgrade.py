"""Day 2 of the installation itself: helm upgrade with a changed agent setting rolls the DaemonSet
and re-creates nothing on the host; an agent killed in the middle of provisioning converges."""

from __future__ import annotations

import os
import signal
import time
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
    agent_pid = release.container_pid("agent")  # looked up before: the kill must follow the file at once
    release.apply(obj)
    # The moment the first backing file exists, the agent is in the middle of provisioning: kill it.
    # Polled tightly: from the first file to the VG the agent still runs several host commands
    # (losetup, the second file and loop, pvs, pvcreate, vgcreate), each a process of its own.
    prefix = f"disklet-{name}."
    deadline = time.monotonic() + 120
    while not any(p.name.startswith(prefix) for p in host.file_devices.iterdir()):
        assert time.monotonic() < deadline, "the agent did not start provisioning (no backing file) in 120 s"
        time.sleep(0.005)
    os.kill(agent_pid, signal.SIGKILL)
    # The dead agent makes nothing more, and its successor is not running yet: the VG not existing
    # now proves the kill came in the middle of provisioning, not after it.
    assert host.vg("kill") not in host.vgs(), "the agent had already made the VG: not killed mid-provisioning"
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
