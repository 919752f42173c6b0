"""DiskLayouts applied for real: the agent's apply pipeline with the test disko (disko's own
scripts, evaluated from the pinned disko library) on loop devices.

The pipeline is the handler's: spec → ``resolve_body`` → ``plan_apply`` (gate: evaluate, snapshot,
classify, append-only) → ``apply_layout`` (stage, disko, verify, promote ``current.nix``,
rebuild). ``nixos-rebuild`` and ``systemd-run`` stay the recording fakes (there is no NixOS here);
everything up to and including ``current.nix`` is real. Results are read back from the kernel and
the disk: ``lsblk``, ``blkid -p``, ``findmnt``, ``pvs``. Mounts land under the sandbox's root, and
the sandbox unmounts, removes links/VGs and detaches everything afterwards, also on failure.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from disklet_agent.config import AgentConfig

from devkit import disko
from devkit.disko import udev
from devkit.disko.sandbox import DiskoSandbox, disko_sandbox
from devkit.disko.udev import NO_ACTIVATION as ACTIVATION_OFF
from disklet.api.disklayout import DiskLayoutSpec, RefusalCode
from disklet.hostcmd import HostRunner
from tests.fake_commands import FAKE_NIXOS_REBUILD, FAKE_SYSTEMD_RUN
from tests.layout_pipeline import Disk, Result, assert_applied, fs, run_pipeline, structured

RUNNER = HostRunner()
pytestmark = pytest.mark.timeout(300)


def sh(*argv: str, check: bool = True) -> str:
    res = subprocess.run(list(argv), capture_output=True, text=True, timeout=60, check=False)  # noqa: S603
    if check and res.returncode != 0:
        raise AssertionError(f"{' '.join(argv)} exited {res.returncode}: {res.stderr.strip()}")
    return res.stdout


@dataclass
class Env:
    sb: DiskoSandbox
    config: AgentConfig
    log: Path
    bin: Path

    @property
    def current(self) -> Path:
        return self.config.etc_dir / "disk" / "current.nix"

    def disko_runs(self) -> list[dict[str, Any]]:
        """What the test disko ran: argv and the bytes of the file it was given, per run."""
        f = self.log.parent / "disko-runs.jsonl"
        return [json.loads(line) for line in f.read_text().splitlines()] if f.exists() else []

    def calls(self, cmd: str) -> list[list[str]]:
        if not self.log.exists():
            return []
        return [r["argv"] for r in map(json.loads, self.log.read_text().splitlines()) if r["cmd"] == cmd]


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Env]:
    reason = disko.missing_tools()
    if reason:
        disko.skip_or_fail(reason)
    with disko_sandbox(tmp_path / "sb") as sb:
        for k, v in sb.env().items():
            monkeypatch.setenv(k, v)
        bin_ = tmp_path / "bin"
        bin_.mkdir()
        for name, text in (("systemd-run", FAKE_SYSTEMD_RUN), ("nixos-rebuild", FAKE_NIXOS_REBUILD)):
            (bin_ / name).write_text(text)
            (bin_ / name).chmod(0o755)
        log = tmp_path / "calls.jsonl"
        monkeypatch.setenv("FAKE_LOG", str(log))
        monkeypatch.setenv(disko.ENV_RECORD, str(tmp_path / "disko-runs.jsonl"))
        config = AgentConfig(host_root=tmp_path / "host", system_mounts=["/"], volume_mounts=[],
                             disko_command=[disko.DISKO_COMMAND],
                             systemd_run_command=[str(bin_ / "systemd-run")],
                             nixos_rebuild_command=[str(bin_ / "nixos-rebuild")],
                             lvm_extra_config=ACTIVATION_OFF if udev.needs_no_activation() else "",
                             allow_loop_targets=True)  # the documented test switch (ignored where absent)
        (config.etc_dir / "disk").mkdir(parents=True)
        (config.etc_dir / "disk-management-mode").write_text("controller-managed\n")
        yield Env(sb, config, log, bin_)


def spec(*disks: Disk, vgs: tuple[str, ...] = ()) -> DiskLayoutSpec:
    return structured(disks, vgs, node="node-a")


def pipeline(env: Env, s: DiskLayoutSpec) -> Result:
    """What the agent's DiskLayout handler does once the node is controller-managed."""
    return run_pipeline(s, runner=RUNNER, config=env.config)


def applied(env: Env, s: DiskLayoutSpec) -> Result:
    return assert_applied(pipeline(env, s))


def probe(dev: str) -> dict[str, str]:
    out = sh("blkid", "-p", "-o", "export", "--", dev, check=False)
    return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)


def parts_of(dev: str) -> list[dict[str, Any]]:
    tree = json.loads(sh("lsblk", "--json", "--bytes", "--output", "NAME,PATH,TYPE,SIZE,MOUNTPOINTS", "--", dev))
    return [c for c in tree["blockdevices"][0].get("children", []) if c["type"] == "part"]


def disk_state(dev: str) -> dict[str, Any]:
    """Partition table and filesystem identities: what "nothing changed on disk" compares.

    Not the partition GUIDs (PARTUUID): disko (at the pinned commit) gives every existing
    partition a fresh random GUID on each format run unless the layout sets ``uuid`` (its
    ``sgdisk --partition-guid=N:R`` fallback), and disklet renders none; see docs/testing.md.
    Offsets, sizes, names, types, the disk GUID, filesystem UUIDs and the data stay.
    """
    keys = ("PART_ENTRY_NAME", "PART_ENTRY_OFFSET", "PART_ENTRY_SIZE", "PART_ENTRY_TYPE",
            "UUID", "TYPE")
    table = {k: v for k, v in probe(dev).items() if k in ("PTUUID", "PTTYPE")}
    return {"table": table, "parts": [{k: probe(p["path"]).get(k) for k in keys} for p in parts_of(dev)],
            "gpt": sh("sgdisk", "--print", "--", dev)}


def mount_source(where: Path) -> dict[str, str] | None:
    res = subprocess.run(["findmnt", "--json", "--mountpoint", str(where), "--output", "SOURCE,FSTYPE"],  # noqa: S607
                         capture_output=True, text=True, timeout=30, check=False)
    if res.returncode != 0:
        return None
    [fsys] = json.loads(res.stdout)["filesystems"]
    return {"source": fsys["source"], "fstype": fsys["fstype"]}


def test_structured_layout_becomes_applied(env: Env) -> None:
    dev, tag = env.sb.loop(64), env.sb.tag
    s = spec((tag, dev, [("a", "16M", fs("ext4", f"/srv/{tag}/a")), ("b", "100%", fs("ext3", f"/srv/{tag}/b"))]))
    r = applied(env, s)
    assert r.outcome is not None and r.outcome.phase == "done" and r.outcome.promoted
    assert [st.name for st in r.outcome.steps] == ["disko", "rebuild-test", "rebuild-switch"]

    parts = parts_of(dev)
    assert [p["path"] for p in parts] == [f"{dev}p1", f"{dev}p2"]
    assert parts[0]["size"] == 16 << 20
    assert probe(dev)["PTTYPE"] == "gpt"
    p1, p2 = probe(f"{dev}p1"), probe(f"{dev}p2")
    assert (p1["TYPE"], p1["PART_ENTRY_NAME"]) == ("ext4", f"disk-{tag}-a")
    assert (p2["TYPE"], p2["PART_ENTRY_NAME"]) == ("ext3", f"disk-{tag}-b")
    assert mount_source(env.sb.mounted(f"/srv/{tag}/a")) == {"source": f"{dev}p1", "fstype": "ext4"}
    assert mount_source(env.sb.mounted(f"/srv/{tag}/b")) == {"source": f"{dev}p2", "fstype": "ext3"}
    assert parts[0]["mountpoints"] == [str(env.sb.mounted(f"/srv/{tag}/a"))]
    # The artifact disko ran is byte for byte what was promoted.
    [run] = env.disko_runs()
    assert run["argv"][:4] == ["--mode", "format,mount", "--root-mountpoint", "/"]
    assert env.current.read_text() == run["file"]
    assert not list((env.config.etc_dir / "disk").glob("staged-*"))
    assert env.calls("nixos-rebuild") == [["test"], ["switch"]]


def test_identical_reapply_changes_nothing_on_disk(env: Env) -> None:
    dev, tag = env.sb.loop(64), env.sb.tag
    s = spec((tag, dev, [("a", "16M", fs("ext4", f"/srv/{tag}/a")), ("b", "16M", fs("ext4", f"/srv/{tag}/b"))]))
    applied(env, s)
    (env.sb.mounted(f"/srv/{tag}/a") / "keep").write_text("payload-1")
    before = disk_state(dev)
    # Mounted filesystems are live state: the gate refuses while they are in use, whoever made them.
    busy = pipeline(env, s)
    assert not busy.plan.ok and busy.plan.code == RefusalCode.ACTIVE_MOUNT, busy.plan.message
    env.sb.unmount_all()
    r = applied(env, s)  # disko runs again for real: its scripts skip what exists
    assert r.outcome is not None and r.outcome.steps[0].name == "disko" and r.outcome.steps[0].ok
    assert disk_state(dev) == before
    assert (env.sb.mounted(f"/srv/{tag}/a") / "keep").read_text() == "payload-1"
    assert mount_source(env.sb.mounted(f"/srv/{tag}/b")) == {"source": f"{dev}p2", "fstype": "ext4"}


def test_appended_partition_is_the_only_change(env: Env) -> None:
    dev, tag = env.sb.loop(64), env.sb.tag
    first = [("a", "16M", fs("ext4", f"/srv/{tag}/a"))]
    applied(env, spec((tag, dev, first)))
    (env.sb.mounted(f"/srv/{tag}/a") / "keep").write_text("payload-2")
    before = disk_state(dev)
    env.sb.unmount_all()
    r = applied(env, spec((tag, dev, [*first, ("b", "16M", fs("ext4", f"/srv/{tag}/b"))])))
    after = disk_state(dev)
    assert after["table"] == before["table"]
    assert after["parts"][0] == before["parts"][0]  # same GPT entry, same filesystem UUID
    assert len(after["parts"]) == 2
    assert (after["parts"][1]["PART_ENTRY_NAME"], after["parts"][1]["TYPE"]) == (f"disk-{tag}-b", "ext4")
    assert (env.sb.mounted(f"/srv/{tag}/a") / "keep").read_text() == "payload-2"
    assert mount_source(env.sb.mounted(f"/srv/{tag}/b")) == {"source": f"{dev}p2", "fstype": "ext4"}
    assert env.current.read_text() == env.disko_runs()[-1]["file"] and r.outcome is not None and r.outcome.promoted


def test_changing_an_applied_partitions_format_is_refused(env: Env) -> None:
    dev, tag = env.sb.loop(64), env.sb.tag
    applied(env, spec((tag, dev, [("a", "16M", fs("ext4", f"/srv/{tag}/a"))])))
    env.sb.unmount_all()
    before, promoted = disk_state(dev), env.current.read_text()
    r = pipeline(env, spec((tag, dev, [("a", "16M", fs("ext3", f"/srv/{tag}/a"))])))
    assert not r.plan.ok and r.plan.code == RefusalCode.PARTITIONS_NOT_APPEND_ONLY, r.plan.message
    assert "format" in r.plan.message
    assert disk_state(dev) == before and env.current.read_text() == promoted


def test_second_layout_aimed_at_the_mounted_disk_is_refused(env: Env) -> None:
    dev, tag = env.sb.loop(64), env.sb.tag
    applied(env, spec((tag, dev, [("a", "16M", fs("ext4", f"/srv/{tag}/a"))])))
    before, promoted = disk_state(dev), env.current.read_text()
    other = spec((tag + "x", dev, [("z", "100%", fs("ext4", f"/srv/{tag}/z"))]))
    r = pipeline(env, other)
    assert not r.plan.ok and r.plan.code == RefusalCode.ACTIVE_MOUNT, r.plan.message
    assert f"{dev}p1 is mounted at {env.sb.mounted(f'/srv/{tag}/a')}" in r.plan.message
    assert disk_state(dev) == before and env.current.read_text() == promoted


def test_lvm_pv_partitions_are_made_as_disko_makes_them(env: Env) -> None:
    d1, d2, tag = env.sb.loop(64), env.sb.loop(64), env.sb.tag
    vg = f"vg{tag}"
    r = applied(env, spec((tag, d1, [("a", "16M", fs("ext4", f"/srv/{tag}/a")),
                                     ("pv", "100%", {"type": "lvm_pv", "vg": vg})]),
                          (tag + "b", d2, [("pv", "100%", {"type": "lvm_pv", "vg": vg})]), vgs=(vg,)))
    assert r.outcome is not None and r.outcome.phase == "done"
    assert probe(f"{d1}p2")["TYPE"] == "LVM2_member" and probe(f"{d2}p1")["TYPE"] == "LVM2_member"
    out = sh("pvs", "--config", ACTIVATION_OFF, "--noheadings", "--separator", "|", "-o", "pv_name,vg_name")
    members = sorted(os.path.realpath(pv.strip()) for pv, g in (ln.split("|") for ln in out.splitlines() if "|" in ln)
                     if g.strip() == vg)
    assert members == sorted([f"{d1}p2", f"{d2}p1"])
    assert mount_source(env.sb.mounted(f"/srv/{tag}/a")) == {"source": f"{d1}p1", "fstype": "ext4"}
    # What disko made is live state: a layout aimed at a PV disk is refused by the classifier.
    again = pipeline(env, spec((tag + "c", d2, [("z", "100%", fs("ext4", f"/srv/{tag}/z"))])))
    assert not again.plan.ok and again.plan.code == RefusalCode.ACTIVE_LVM_PV, again.plan.message


def test_zfs_partitions_are_made_as_disko_makes_them(env: Env) -> None:
    if shutil.which("zpool") is None or shutil.which("zfs") is None:
        pytest.skip("no ZFS tools (zpool, zfs) on this machine: zfs contents are only evaluated, not run")
    dev, tag = env.sb.loop(128), env.sb.tag
    pool = f"p{tag}"
    layout = {"zfsPools": [{"name": pool}], "disks": [{"name": tag, "device": dev, "gpt": {"partitions": [
        {"name": "z", "size": "100%", "content": {"type": "zfs", "pool": pool}}]}}]}
    s = DiskLayoutSpec.model_validate({"nodeName": "node-a", "diskLayout": layout})
    try:
        applied(env, s)
        assert probe(f"{dev}p1")["TYPE"] == "zfs_member"
        assert pool in sh("zpool", "list", "-H", "-o", "name").split()
    finally:
        subprocess.run(["zpool", "destroy", "-f", pool], capture_output=True, timeout=60, check=False)  # noqa: S607


def test_test_disko_refuses_a_device_outside_its_sandbox(env: Env, tmp_path: Path) -> None:
    """The safety of the test tool itself: a loop it did not make is never touched (exit 3)."""
    with disko_sandbox(tmp_path / "elsewhere") as other:
        foreign = other.loop(16)
        f = env.sb.base / "foreign.nix"
        f.write_text('{ disko.devices.disk.x = { type = "disk"; device = "' + foreign + '"; content = { type = "gpt"; '
                     'partitions.a = { size = "100%"; content = { type = "filesystem"; format = "ext4"; '
                     'mountpoint = "/x"; }; }; }; }; }\n')
        res = subprocess.run([disko.DISKO_COMMAND, "--mode", "format,mount", "--root-mountpoint", "/", str(f)],
                             capture_output=True, text=True, timeout=120, check=False)
        assert res.returncode == 3, res.stdout + res.stderr
        assert f"{foreign} is not a loop device of the sandbox" in res.stderr
        assert probe(foreign) == {}  # still blank: no table, no filesystem


def test_node_cli_applies_a_raw_nix_file_for_real(env: Env, monkeypatch: pytest.MonkeyPatch) -> None:
    """``disklet-agent apply-disk -f FILE --apply`` (the node-local entry point) with disko's own scripts."""
    import io

    from disklet_agent.cli import main as cli_main

    dev, tag = env.sb.loop(64), env.sb.tag
    for k, v in (("DISKLET_DISKO_COMMAND", disko.DISKO_COMMAND), ("DISKLET_SYSTEM_MOUNTS", "/"),
                 ("DISKLET_NSENTER", "false"), ("DISKLET_LVM_EXTRA_CONFIG", env.config.lvm_extra_config),
                 ("DISKLET_ALLOW_LOOP_TARGETS", "1"),
                 ("DISKLET_SYSTEMD_RUN_COMMAND", str(env.bin / "systemd-run")),
                 ("DISKLET_NIXOS_REBUILD_COMMAND", str(env.bin / "nixos-rebuild"))):
        monkeypatch.setenv(k, v)
    f = env.sb.base / "day2.nix"
    f.write_text('{ disko.devices.disk.' + tag + ' = { type = "disk"; device = "' + dev + '"; content = {\n'
                 '  type = "gpt"; partitions.data = { priority = 100; size = "100%"; content = {\n'
                 '    type = "filesystem"; format = "ext4"; mountpoint = "/srv/' + tag + '"; }; }; }; }; }\n')
    out, err = io.StringIO(), io.StringIO()
    rc = cli_main(["--host-root", str(env.config.host_root), "apply-disk", "-f", str(f), "--apply", "--no-rebuild",
                   "--timeout-seconds", "300"], out=out, err=err)
    assert rc == 0, out.getvalue() + err.getvalue()
    assert probe(f"{dev}p1")["TYPE"] == "ext4" and probe(f"{dev}p1")["PART_ENTRY_NAME"] == f"disk-{tag}-data"
    assert mount_source(env.sb.mounted(f"/srv/{tag}")) == {"source": f"{dev}p1", "fstype": "ext4"}
    assert env.current.read_text() == env.disko_runs()[-1]["file"] and env.calls("nixos-rebuild") == []


def test_udevadm_stand_in_links_only_the_sandboxs_partitions(env: Env) -> None:
    """The test udevadm: links our loops' partitions, never replaces a label owned by another device,
    refuses without a sandbox, and the sandbox's clean-up removes exactly its links."""
    udevadm = str(disko.BIN / "udevadm")
    dev, tag = env.sb.loop(16), env.sb.tag
    ours, theirs = f"disk-{tag}-ours", f"disk-{tag}-taken"
    sh("sgdisk", "--clear", "--new=1:0:+4M", f"--change-name=1:{ours}", "--new=2:0:+4M", f"--change-name=2:{theirs}",
       "--", dev)
    sh("partprobe", "--", dev)
    squatter = udev.BY_PARTLABEL / theirs
    udev.BY_PARTLABEL.mkdir(parents=True, exist_ok=True)
    os.symlink("/dev/null", squatter)  # a label some other device already holds
    try:
        no_sandbox = {k: v for k, v in os.environ.items() if k != disko.ENV_SANDBOX}
        res = subprocess.run([udevadm, "settle"], capture_output=True, text=True, timeout=60, env=no_sandbox,
                             check=False)
        assert res.returncode == 3 and not os.path.lexists(udev.BY_PARTLABEL / ours), res.stderr
        res = subprocess.run([udevadm, "settle", "--timeout", "120"], capture_output=True, text=True, timeout=60,
                             check=False)
        assert res.returncode == 4 and "label collision" in res.stderr, res.stderr
        assert os.readlink(squatter) == "/dev/null"  # left alone
        assert os.path.realpath(udev.BY_PARTLABEL / ours) == f"{dev}p1"
        res = subprocess.run([udevadm, "info", "--query=all"], capture_output=True, text=True, timeout=60, check=False)
        assert res.returncode == 2
        assert udev.remove_links(env.sb.base) == []
        assert not os.path.lexists(udev.BY_PARTLABEL / ours) and os.readlink(squatter) == "/dev/null"
    finally:
        squatter.unlink(missing_ok=True)


def test_removing_an_applied_disk_is_refused(env: Env) -> None:
    d1, d2, tag = env.sb.loop(64), env.sb.loop(64), env.sb.tag
    first = (tag, d1, [("a", "16M", fs("ext4", f"/srv/{tag}/a"))])
    applied(env, spec(first, (tag + "b", d2, [("a", "16M", fs("ext4", f"/srv/{tag}/b"))])))
    env.sb.unmount_all()
    before, promoted = (disk_state(d1), disk_state(d2)), env.current.read_text()
    r = pipeline(env, spec(first))
    assert not r.plan.ok and r.plan.code == RefusalCode.APPLIED_DISK_REMOVED, r.plan.message
    assert (disk_state(d1), disk_state(d2)) == before and env.current.read_text() == promoted
