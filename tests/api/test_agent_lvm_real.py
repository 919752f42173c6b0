"""The agent with the REAL LVM engine on real loop devices, driven through the real API server.

A file-only LVMVolumeGroup created on the server becomes Ready on real LVM (activation off, as on
every host test here), then deleting it removes the VG, detaches the loop and removes the file.
Needs root + lvm2/util-linux: skipped with the reason otherwise, FAILS when CI=true.
"""

from __future__ import annotations

import os
import shutil
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
from lvm_fixtures import ACTIVATION_OFF, cleanup_tree, loops_under, report  # noqa: E402


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


async def test_file_only_lvg_ready_on_real_lvm_then_deleted(real_kube, monkeypatch, sandbox: Path):
    kube = real_kube
    suffix = uuid.uuid4().hex[:8]
    base = sandbox / "file-devices"
    name, vg = f"agent-real-{suffix}", f"disklet-test-{suffix}"
    config = AgentConfig(node_name="real-node", file_devices_dir=str(base), lvm_extra_config=ACTIVATION_OFF,
                         scan_interval_seconds=1.0, refused_retry_seconds=1.0, command_timeout_seconds=120)
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
    config = AgentConfig(node_name="real-node", file_devices_dir=str(base), lvm_extra_config=ACTIVATION_OFF,
                         scan_interval_seconds=retry, refused_retry_seconds=retry, command_timeout_seconds=120)
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
