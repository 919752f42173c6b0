"""The agent with the REAL LVM engine on real loop devices, driven through the real API server.

A file-only LVMVolumeGroup created on the server becomes Ready on real LVM (activation off, as on
every host test here), then deleting it removes the VG, detaches the loop and removes the file.
Needs root + lvm2/util-linux: skipped with the reason otherwise, FAILS when CI=true.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from agent_fixtures import LVG, LVG_URL, agent_running, lvg
from disklet_agent.config import AgentConfig
from disklet_agent.lvm.engine import HostLvgEngine

from devkit.kopfrun import wait_for
from disklet.hostcmd import HostRunner

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "host"))
from lvm_fixtures import ACTIVATION_OFF, cleanup_tree, loops_under, lvm, report  # noqa: E402


def _missing() -> str:
    if os.geteuid() != 0:
        return "needs root (real loop devices and LVM)"
    for tool in ("losetup", "lvm", "fallocate", "blkid"):
        if shutil.which(tool) is None:
            return f"needs {tool} (apt-get install lvm2 util-linux)"
    if not os.path.exists("/dev/loop-control"):
        return "needs /dev/loop-control"
    return ""


@pytest.fixture()
def sandbox(tmp_path: Path):
    reason = _missing()
    if reason:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"real-engine API test prerequisite missing in CI: {reason}")
        pytest.skip(reason)
    root = tmp_path / f"agent-real-{uuid.uuid4().hex[:8]}"
    root.mkdir()
    try:
        yield root
    finally:
        problems = cleanup_tree(root)
        assert not problems, problems


def real_node_config(base: Path, interval: float = 1.0) -> AgentConfig:
    """The agent of node ``real-node`` with its file devices under ``base``, LVM activation off (no
    device-mapper here), scans and retries every ``interval`` seconds."""
    return AgentConfig(node_name="real-node", file_devices_dir=str(base), lvm_extra_config=ACTIVATION_OFF,
                       scan_interval_seconds=interval, refused_retry_seconds=interval, command_timeout_seconds=120)


async def test_file_only_lvg_ready_on_real_lvm_then_deleted(real_kube, monkeypatch, sandbox: Path):
    kube = real_kube
    suffix = uuid.uuid4().hex[:8]
    base = sandbox / "file-devices"
    name, vg = f"agent-real-{suffix}", f"disklet-test-{suffix}"
    config = real_node_config(base)
    engine = HostLvgEngine(HostRunner(default_timeout=120), config)
    async with agent_running(kube, monkeypatch, "real-node", engine=engine, config=config):
        async with kube.session() as s:
            r = await s.post(LVG_URL, json=lvg(name, "real-node", files=1, vg=vg, directory=str(base)))
            assert r.status in (200, 201), await r.text()
            await wait_for(lambda: ((kube.read(LVG, name) or {}).get("status") or {}).get("phase") == "Ready",
                           timeout=90, message="LVMVolumeGroup Ready on real LVM")
            status = kube.read(LVG, name)["status"]
            (fd,) = status["nodes"][0]["fileDevices"]
            backing = base / f"disklet-{name}.f0.img"
            assert fd["name"] == "f0" and fd["loopDevice"].startswith("/dev/loop")
            assert backing.exists() and backing.stat().st_size == 1024 ** 3
            loops = [lp for lp, back in loops_under(sandbox) if back == str(backing)]
            assert loops == [fd["loopDevice"]]
            vgs = report("vgs", loops, "vg_name,vg_uuid,vg_tags")
            assert [v["vg_name"] for v in vgs] == [vg] and status["vgUUID"] == vgs[0]["vg_uuid"]
            assert f"disklet.io/lvmVolumeGroupName={name}" in vgs[0]["vg_tags"]

            await s.delete(f"{LVG_URL}/{name}")
            await wait_for(lambda: kube.read(LVG, name) is None, timeout=90, message="finalizer released")
    assert loops_under(sandbox) == [], "the loop device is detached"
    assert not backing.exists(), "the backing file is removed"


@pytest.mark.parametrize("case", ["outside", "symlink"])
async def test_refused_lvg_is_deleted_within_one_retry_period(real_kube, monkeypatch, sandbox: Path, case: str):
    """Admitted by the API, refused by the agent (a directory outside the base, one that leaves it
    through a symlink): delete completes at the first attempt and nothing was written outside the
    base directory."""
    await _refused_then_deleted(real_kube, monkeypatch, sandbox, case)


@pytest.mark.kmock("the object is one the current CRD refuses (it was admitted by an older one)")
async def test_refused_lvg_over_name_max_is_deleted_within_one_retry_period(mock_kube, monkeypatch, sandbox: Path):
    """As above, for a backing file name over 255 bytes."""
    await _refused_then_deleted(mock_kube, monkeypatch, sandbox, "name_max")


async def _refused_then_deleted(kube, monkeypatch, sandbox: Path, case: str) -> None:
    suffix = uuid.uuid4().hex[:8]
    base = sandbox / "file-devices"
    outside = sandbox / "outside"
    outside.mkdir()
    retry = 5.0
    config = real_node_config(base, interval=retry)
    engine = HostLvgEngine(HostRunner(default_timeout=120), config)
    name = f"refused-{suffix}"
    directory = {"outside": str(outside), "symlink": str(base / "escape"), "name_max": str(base)}[case]
    if case == "symlink":
        base.mkdir()
        (base / "escape").symlink_to(outside)
    obj = lvg(name, "real-node", files=1, vg=f"dkt{suffix}", directory=directory)
    if case == "name_max":  # the model/CRD now refuse it; an object admitted by an older CRD still exists
        obj["metadata"]["name"] = name = f"refused-{suffix}-" + "x" * 200
        obj["metadata"]["labels"]["disklet.io/node"] = "real-node"
        obj["spec"]["fileDevices"][0]["name"] = "e" * 63
        kube.seed(LVG, obj)
    async with agent_running(kube, monkeypatch, "real-node", engine=engine, config=config):
        async with kube.session() as s:
            if case != "name_max":
                r = await s.post(LVG_URL, json=obj)
                assert r.status in (200, 201), await r.text()
            await wait_for(lambda: ((kube.read(LVG, name) or {}).get("status") or {}).get("phase") == "NotReady",
                           timeout=60, message="refused")
            await s.delete(f"{LVG_URL}/{name}")
            loop = __import__("asyncio").get_running_loop()
            started = loop.time()
            await wait_for(lambda: kube.read(LVG, name) is None, timeout=60, message="deleted")
            assert loop.time() - started < retry, "delete completed within one retry period"
    assert list(outside.iterdir()) == [] and loops_under(sandbox) == []


def _vg_ready(kube, name: str) -> dict:
    return next((c for c in ((kube.read(LVG, name) or {}).get("status") or {}).get("conditions") or []
                 if c.get("type") == "VGReady"), {})


async def test_late_vg_name_conflict_is_reported_once_and_clears(real_kube, monkeypatch, sandbox: Path):
    """A Ready LVMVolumeGroup; then a VG with its name appears on the node (here behind the agent's
    device filter, on a foreign loop: LVM warns on every unfiltered report). The agent reports it on
    the object (VGNameConflict, NotReady) with ONE Warning Event naming both UUIDs, however many
    cycles pass, and reports Ready again when the other VG is gone."""
    kube = real_kube
    suffix = uuid.uuid4().hex[:8]
    base = sandbox / "file-devices"
    name, vg = f"agent-conflict-{suffix}", f"disklet-test-{suffix}"
    config = real_node_config(base)
    runner = HostRunner(default_timeout=120)
    engine = HostLvgEngine(runner, config)
    async with agent_running(kube, monkeypatch, "real-node", engine=engine, config=config):
        async with kube.session() as s:
            r = await s.post(LVG_URL, json=lvg(name, "real-node", files=1, vg=vg, directory=str(base)))
            assert r.status in (200, 201), await r.text()
            await wait_for(lambda: ((kube.read(LVG, name) or {}).get("status") or {}).get("phase") == "Ready",
                           timeout=90, message="LVMVolumeGroup Ready on real LVM")
            ours = kube.read(LVG, name)["status"]["vgUUID"]
            other_file = sandbox / "someone-elses.img"
            subprocess.run(["fallocate", "-l", str(1024 ** 3), str(other_file)], check=True)
            oloop = subprocess.run(["losetup", "--find", "--show", "--", str(other_file)], capture_output=True,
                                   text=True, check=True).stdout.strip()
            lvm("pvcreate", [oloop], oloop, check=True)
            lvm("vgcreate", [oloop], vg, oloop, check=True)
            other = lvm("vgs", [oloop], "--noheadings", "-o", "vg_uuid", vg, check=True).stdout.strip()

            await wait_for(lambda: _vg_ready(kube, name).get("reason") == "VGNameConflict", timeout=90,
                           message="VGNameConflict reported on the Ready object")
            status = kube.read(LVG, name)["status"]
            assert status["phase"] == "NotReady" and status["vgUUID"] == ours
            assert ours in _vg_ready(kube, name)["message"] and other in _vg_ready(kube, name)["message"]

            def conflict_events() -> list[dict]:
                return [e for e in kube.read_all("v1/events") if e.get("reason") == "VGNameConflict"
                        and (e.get("involvedObject") or {}).get("name") == name]

            await wait_for(lambda: conflict_events() != [], timeout=60, message="VGNameConflict Event")
            # Several more passes while the conflict lasts (each discovery cycle reads pvs twice, each
            # timer reconcile of the NotReady object too): counted on the agent's runner, not slept.
            seen = runner.calls["pvs"]
            await wait_for(lambda: runner.calls["pvs"] >= seen + 8, timeout=90, message="more LVM passes")
            lvm("vgremove", [oloop], "-y", "--select", f"vg_uuid={other}", check=True)
            await wait_for(lambda: ((kube.read(LVG, name) or {}).get("status") or {}).get("phase") == "Ready"
                           and _vg_ready(kube, name).get("status") == "True", timeout=90,
                           message="Ready again once the name is unique")
            (event,) = conflict_events()
            assert event["type"] == "Warning" and int(event.get("count") or 1) == 1, event
            assert ours in event["message"] and other in event["message"]

            await s.delete(f"{LVG_URL}/{name}")
            await wait_for(lambda: kube.read(LVG, name) is None, timeout=90, message="finalizer released")
