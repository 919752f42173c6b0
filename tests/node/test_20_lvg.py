"""LVM on the node through the agent pod: a file-backed LVMVolumeGroup made through nsenter into the
host, and the BlockDevices the pod reports."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from devkit.envtest import run
from disklet.units import parse_quantity
from tests.node.release import GROUP, Host, Release


def lvg(host: Host, what: str, entries: list[str], size: str = "1Gi") -> dict[str, Any]:
    return {"apiVersion": "disklet.io/v1alpha1", "kind": "LVMVolumeGroup", "metadata": {"name": host.name(what)},
            "spec": {"type": "Local", "local": {"nodeName": "localhost"}, "actualVGNameOnTheNode": host.vg(what),
                     "fileDevices": [{"name": n, "directory": str(host.file_devices), "size": size} for n in entries]}}


def wait_lvg_ready(release: Release, name: str, entries: int, timeout: float = 150) -> dict[str, Any]:
    def ok() -> dict[str, Any] | None:
        obj = release.get(f"lvmvolumegroups.{GROUP}", name)
        st = (obj or {}).get("status") or {}
        fds = [f for n in st.get("nodes") or [] for f in n.get("fileDevices") or []]
        if st.get("phase") == "Ready" and st.get("observedGeneration") == obj["metadata"]["generation"] \
                and len(fds) == entries:
            return obj
        return None

    return release.wait(ok, timeout=timeout, what=f"LVMVolumeGroup {name} Ready with {entries} file device(s)",  # type: ignore[no-any-return]
                        describe=release.describe(f"lvmvolumegroups.{GROUP}", name))


def _ns(pid: int, kind: str = "mnt") -> str:
    return os.readlink(f"/proc/{pid}/ns/{kind}")


def _children(pid: int) -> list[tuple[int, str]]:
    out = []
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            stat = (d / "stat").read_text()
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
            if ppid == pid:
                out.append((int(d.name), (d / "comm").read_text().strip()))
        except (OSError, ValueError, IndexError):
            continue
    return out


def test_file_backed_lvg_is_made_by_the_agent_pod_through_nsenter(release: Release, host: Host) -> None:
    obj = lvg(host, "a", ["f0", "f1"])
    release.apply(obj)
    ready = wait_lvg_ready(release, obj["metadata"]["name"], 2)
    vg = host.vg("a")
    # The host's LVM sees the VG on two loop devices over backing files in the chart's directory.
    pvs = host.vgs().get(vg)
    assert pvs and len(pvs) == 2, host.vgs()
    loops = host.backing_loops()
    assert sorted(pvs) == sorted(d for d, f in loops.items() if f.startswith(str(host.file_devices) + "/")), loops
    for f in loops.values():
        assert Path(f).stat().st_size == parse_quantity("1Gi")
    fds = [f for n in ready["status"]["nodes"] for f in n["fileDevices"]]
    assert sorted(f["loopDevice"] for f in fds) == sorted(pvs), fds
    assert all(loops[f["loopDevice"]] == f["filePath"] for f in fds), (fds, loops)
    # Through nsenter: the agent's LVM commands run in the kubelet's (the host's) mount namespace,
    # the agent process itself in its container's. The persistent lvm shell is such a command.
    agent = release.container_pid("agent")
    kubelet = release.node.pid("kubelet")
    assert _ns(agent) != _ns(kubelet), "the agent container shares the host mount namespace?"
    lvm = [pid for pid, comm in _children(agent) if comm == "lvm"]
    assert lvm, f"no lvm child of the agent (pid {agent}): {_children(agent)}"
    assert all(_ns(pid) == _ns(kubelet) for pid in lvm), [(p, _ns(p)) for p in lvm]


def _root_disk() -> str:
    """The host's disk under / (e.g. /dev/vda), read on the host."""
    src = run(["findmnt", "-n", "-o", "SOURCE", "--target", "/"], timeout=30).stdout.strip()
    pk = run(["lsblk", "-n", "-d", "-p", "-o", "PKNAME", "--", src], timeout=30, check=False).stdout.strip()
    return pk or src


def test_block_devices_are_reported_by_the_agent_pod(release: Release) -> None:
    disk = _root_disk()
    size = int(run(["lsblk", "-n", "-d", "-b", "-o", "SIZE", "--", disk], timeout=30).stdout.strip())

    def found() -> dict[str, Any] | None:
        items = (release.get(f"blockdevices.{GROUP}") or {}).get("items") or []
        return next((b for b in items if (b.get("status") or {}).get("path") == disk
                     and b["status"].get("nodeName") == "localhost"), None)

    bd = release.wait(found, timeout=90, what=f"BlockDevice of {disk} on localhost",
                      describe=lambda: str(release.get(f"blockdevices.{GROUP}")))
    st = bd["status"]
    assert parse_quantity(st["size"]) == size, st
    # The host's root file system lives on it: never consumable.
    assert st.get("consumable") is False and st.get("consumableReason"), st
