"""The local demo: disklet's real job end to end, without a cluster (``make demo``).

An in-memory Kubernetes API (``devkit.kubeapi``, with the CRDs' schema and CEL rules
applied by ``devkit.admission``); the operator and one agent per demo node run in this
process; host commands run directly on this machine, in a sandbox directory. (Against a real
cluster, the same flows run as the e2e suite: docs/e2e.md.) Four things happen, on real devices:

1. a DiskLayout aimed at the disk holding ``/`` is refused with
   ``target_device_has_active_system_mount`` (the node is in controller-managed mode);
2. a DiskLayout on a node in installer-only mode stays ``pending``;
3. the example structured DiskLayout (its device replaced by a loop device) goes ``pending`` →
   ``applied`` on a third, controller-managed node: disko's own scripts, evaluated from disko's
   Nix library by the test disko (``devkit/disko``), partition, format and mount the loop device
   (under the demo's sandbox); ``lsblk`` and the mount are shown. There is no NixOS here, so the
   layout sets ``rebuild: false`` (nixos-rebuild is not run);
4. an LVMVolumeGroup on two file-backed loop devices becomes Ready (real losetup, real LVM).

Then everything is deleted through the API and the demo proves that no loop device, backing
file, mount, partition-label link or VG was left behind. Without root, the LVM and real-apply
parts are skipped and said so (also the real apply when disko's sources are not found).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from devkit.disko.sandbox import DiskoSandbox
from disklet import API_VERSION
from disklet.cli.output import age, table
from disklet.hostcmd import HostRunner
from disklet.kube.client import MERGE_PATCH, ApiError, Endpoint, KubeClient, NotFound

DL = "disklet.io/v1alpha1/disklayouts"
LVG = "disklet.io/v1alpha1/lvmvolumegroups"
API = "/apis/disklet.io/v1alpha1"


def say(msg: str) -> None:
    print(msg, flush=True)


def root_disk(runner: HostRunner) -> str | None:
    """The whole disk (lsblk TYPE=disk) under the filesystem mounted at ``/``."""
    res = runner.run(["lsblk", "-J", "-p", "-o", "NAME,TYPE,MOUNTPOINTS,PKNAME"], timeout=20)
    if not res.ok:
        return None

    def walk(node: dict[str, Any], disk: str | None) -> str | None:
        disk = node["name"] if node.get("type") == "disk" else disk
        if "/" in (node.get("mountpoints") or []):
            return disk
        for child in node.get("children") or []:
            found = walk(child, disk)
            if found:
                return found
        return None

    for dev in json.loads(res.stdout).get("blockdevices", []):
        found = walk(dev, None)
        if found:
            return found
    return None


def prerequisites() -> list[str]:
    missing = []
    if os.geteuid() != 0:
        missing.append("not running as root (loop devices and LVM need root)")
    for tool in ("losetup", "lvm", "fallocate", "nix-instantiate"):
        if shutil.which(tool) is None:
            missing.append(f"{tool} is not installed (apt-get install lvm2 util-linux nix-bin)")
    return missing


class Demo:
    def __init__(self, sandbox: Path, suffix: str, api_url: str):
        self.sandbox = sandbox
        self.suffix = suffix
        self.api_url = api_url
        self.node_a = f"demo-node-a-{suffix}"
        self.node_b = f"demo-node-b-{suffix}"
        self.node_c = f"demo-node-c-{suffix}"
        self.lvg = f"demo-files-{suffix}"
        self.vg = f"demo_vg_{suffix}"
        self.files_dir = sandbox / "file-devices"
        self.runner = HostRunner()
        self.disks: DiskoSandbox | None = None
        """The real-apply scene's loop devices (None when it is skipped)."""

    # ------------------------------------------------------------------ API helpers
    async def request(self, method: str, path: str, body: Any = None) -> Any:
        """One call through disklet's client (PATCH is a merge patch); :class:`ApiError` on failure."""
        async with KubeClient(Endpoint(self.api_url, {"Authorization": "Bearer demo"})) as kube:
            return await kube.request(method, path, body=body,
                                      content_type=MERGE_PATCH if method == "PATCH" else "application/json")

    async def get(self, plural: str, name: str) -> dict[str, Any] | None:
        try:
            return await self.request("GET", f"{API}/{plural}/{name}")
        except NotFound:
            return None

    async def wait(self, what: str, check: Callable[[], Any], timeout: float) -> bool:
        start = time.monotonic()
        last = ""
        while time.monotonic() - start < timeout:
            state = await check()
            if state is True:
                say(f"  ✓ {what} ({time.monotonic() - start:.1f}s)")
                return True
            if state and state != last:
                say(f"  … {what}: {state}")
                last = state
            await asyncio.sleep(0.3)
        say(f"  ✗ {what}: timed out after {timeout:.0f}s (last: {last})")
        return False

    # ------------------------------------------------------------------ tables
    async def print_tables(self) -> None:
        dls = (await self.request("GET", f"{API}/disklayouts"))["items"]
        rows = [[d["metadata"]["name"], d["spec"]["nodeName"], (d.get("status") or {}).get("phase", ""),
                 (d.get("status") or {}).get("refusalReason", ""),
                 ",".join((d.get("status") or {}).get("targetDevices") or []),
                 (d.get("status") or {}).get("nodeMode", ""), age(d["metadata"].get("creationTimestamp"))]
                for d in dls if d["metadata"]["name"].endswith(self.suffix)]
        say("\n$ kubectl get disklayouts")
        say(table(["NAME", "NODE", "PHASE", "REASON", "DEVICES", "MODE", "AGE"], rows))
        lvgs = (await self.request("GET", f"{API}/lvmvolumegroups"))["items"]
        rows = []
        for g in lvgs:
            if not g["metadata"]["name"].endswith(self.suffix):
                continue
            st = g.get("status") or {}
            ready = next((c["status"] for c in st.get("conditions") or [] if c["type"] == "Ready"), "")
            rows.append([g["metadata"]["name"], st.get("phase", ""), ready, g["spec"]["local"]["nodeName"],
                         st.get("vgSize", ""), st.get("allocatedSize", ""), g["spec"]["actualVGNameOnTheNode"],
                         age(g["metadata"].get("creationTimestamp"))])
        if rows:
            say("\n$ kubectl get lvmvolumegroups")
            say(table(["NAME", "PHASE", "READY", "NODE", "SIZE", "ALLOCATED", "VG", "AGE"], rows))
            for g in lvgs:
                for node in (g.get("status") or {}).get("nodes") or []:
                    for f in node.get("fileDevices") or []:
                        say(f"    {node['name']}: {f['name']} {f['filePath']} → {f['loopDevice']} (PV {f.get('size', '?')})")
        say("")

    # ------------------------------------------------------------------ leftovers
    def leftovers(self) -> list[str]:
        found = []
        res = self.runner.run(["losetup", "--list", "--noheadings", "--output", "NAME,BACK-FILE"], timeout=20)
        for line in res.stdout.splitlines():
            if str(self.sandbox) in line:
                found.append(f"loop device still attached: {line.strip()}")
        res = self.runner.run(["findmnt", "--noheadings", "--raw", "--output", "TARGET"], timeout=20)
        found += [f"still mounted: {t}" for t in res.stdout.splitlines() if t.startswith(str(self.sandbox))]
        if self.files_dir.exists():
            found += [f"backing file left: {p}" for p in self.files_dir.iterdir()]
        res = self.runner.run(["vgs", "--noheadings", "-o", "vg_name"], timeout=30)
        if self.vg in res.stdout.split():
            found.append(f"volume group left: {self.vg}")
        return found


    def teardown_leftovers(self) -> list[str]:
        """Last resort when the API-driven clean-up did not finish: remove exactly what this demo made
        (its VG, the loops backed by files in its sandbox, those files) and say so."""
        done = []
        cfg = ["--config", "global{activation=0}"] if not os.path.exists("/dev/mapper/control") else []
        res = self.runner.run(["losetup", "--list", "--noheadings", "--output", "NAME,BACK-FILE"], timeout=20)
        loops = [line.split()[0] for line in res.stdout.splitlines() if str(self.sandbox) in line]
        vgs = self.runner.run(["vgs", "--noheadings", "-o", "vg_name"], timeout=30)
        if self.vg in vgs.stdout.split():
            self.runner.run(["vgremove", "-f", *cfg, self.vg], timeout=60)
            done.append(f"removed VG {self.vg}")
        for loop in loops:
            self.runner.run(["pvremove", "-y", *cfg, loop], timeout=60)
            self.runner.run(["losetup", "-d", loop], timeout=20)
            done.append(f"detached {loop}")
        return done


def _node(name: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Node", "metadata": {"name": name, "labels": {"kubernetes.io/hostname": name}},
            "status": {"conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady",
                                       "lastTransitionTime": "2026-01-01T00:00:00Z"}]}}


def agent_configs(demo: Demo, real_apply: bool) -> list[Any]:
    """Demo nodes on this machine: A in controller-managed mode, B with no mode file (installer-only),
    C (with ``real_apply``) controller-managed with the test disko, which only ever touches the demo's
    own loop devices. A's and B's disko/systemd-run are a script that refuses."""
    from disklet_agent.config import AgentConfig

    from devkit import disko

    dm = os.path.exists("/dev/mapper/control")
    if not dm:
        say("device-mapper is not available here: LVM runs with activation disabled (metadata only)")
    fake = demo.sandbox / "fake-disko"
    fake.write_text("#!/bin/sh\necho 'demo: disko is never run by the demo' >&2\nexit 1\n")
    fake.chmod(0o755)
    configs = []
    nodes = [(demo.node_a, "controller-managed", fake), (demo.node_b, None, fake)]
    if real_apply:
        nodes.append((demo.node_c, "controller-managed", Path(disko.DISKO_COMMAND)))
    for node, mode, disko_command in nodes:
        root = demo.sandbox / node
        (root / "etc" / "disklet").mkdir(parents=True)
        if mode:
            (root / "etc" / "disklet" / "disk-management-mode").write_text(mode + "\n")
        configs.append(AgentConfig(
            node_name=node, host_root=root, file_devices_dir=str(demo.files_dir),
            lvm_extra_config="" if dm else "global{activation=0}", refused_retry_seconds=3,
            scan_interval_seconds=3, disko_command=[str(disko_command)], systemd_run_command=[str(fake)],
            nixos_rebuild_command=[str(fake)], allow_loop_targets=True))
    return configs


async def run_demo(args: argparse.Namespace) -> int:
    import logging

    import kopf  # noqa: F401  (fail early with a clear message if the package is incomplete)
    from disklet_agent.daemon import build_registry as agent_registry
    from disklet_agent.daemon import configure_settings as agent_settings
    from disklet_agent.deps import AgentDeps
    from disklet_operator.main import build_registry as operator_registry
    from disklet_operator.main import configure_settings as operator_settings

    from devkit.kopfrun import kopf_running

    missing = prerequisites()
    lvm_ok = not missing
    if missing:
        say("Skipping the LVM part of the demo:")
        for m in missing:
            say(f"  - {m}")
    from devkit import disko

    disko_missing = disko.missing_tools()
    real_apply = not disko_missing
    if not real_apply:
        say(f"Skipping the real DiskLayout apply: {disko_missing}")
    runner = HostRunner()
    disk = root_disk(runner)
    say(f"disk holding / on this machine: {disk or 'not found'}")

    suffix = uuid.uuid4().hex[:6]
    sandbox = Path(tempfile.mkdtemp(prefix="disklet-demo-"))
    os.environ.setdefault("DISKLET_NAMESPACE", "disklet-system")
    demo: Demo | None = None
    disks: DiskoSandbox | None = None
    try:
        from devkit.admission import Admission
        from devkit.kubeapi import KubeAPI, served

        if real_apply:
            disks = DiskoSandbox(sandbox / "disko")
            os.environ.update(disks.env())  # the test disko the agent runs reads them
        # the agent's own API client (leases, BlockDevices) reads a kubeconfig like any client would
        async with served(sandbox, api=KubeAPI(validator=Admission()), export_kubeconfig=True) as api:
            api_url = api.server_url
            say(f"in-memory Kubernetes API (schema + CEL rules enforced offline) on {api_url}")
            demo = Demo(sandbox, suffix, api_url)
            demo.disks = disks
            for node in (demo.node_a, demo.node_b, *((demo.node_c,) if real_apply else ())):
                api.seed("v1/nodes", _node(node))
            configs = agent_configs(demo, real_apply)
            logging.getLogger("kopf").setLevel(logging.ERROR)
            op_reg = operator_registry()
            agents = [agent_registry(AgentDeps.from_config(c)) for c in configs]
            async with kopf_running(op_reg, server=api_url, configure=operator_settings):
                async with kopf_running(agents[0], server=api_url, configure=lambda s: agent_settings(s, configs[0])):
                    async with kopf_running(agents[1], server=api_url,
                                            configure=lambda s: agent_settings(s, configs[1])):
                        if not real_apply:
                            return await scenario(demo, disk, lvm_ok)
                        async with kopf_running(agents[2], server=api_url,
                                                configure=lambda s: agent_settings(s, configs[2])):
                            return await scenario(demo, disk, lvm_ok)
    finally:
        if disks is not None:
            for problem in disks.close():
                say(f"  ✗ clean-up of the real apply: {problem}")
        if demo is not None and lvm_ok and demo.leftovers():
            for line in demo.teardown_leftovers():
                say(f"  cleaned up directly: {line}")
        shutil.rmtree(sandbox, ignore_errors=True)


async def real_apply_scene(demo: Demo) -> bool:
    """The example structured layout applied for real on a loop device of node C."""
    import yaml

    from devkit.disko.udev import partitions_of

    assert demo.disks is not None
    example = Path(__file__).resolve().parents[1] / "examples" / "disklayout-structured-ext4.yaml"
    manifest = yaml.safe_load(example.read_text())
    loop = demo.disks.loop(64)
    layout = manifest["spec"]["diskLayout"]
    disk = layout["disks"][0]
    original = disk["device"]
    disk["device"] = loop
    disk["name"] = f"{disk['name']}_{demo.suffix}"  # partition labels are global: one per demo run
    mountpoint = disk["gpt"]["partitions"][0]["content"]["mountpoint"]
    name = f"applied-{demo.suffix}"
    say(f"\n== 2. The example DiskLayout ({example.name}) applied for real on {demo.node_c}")
    say(f"  device {loop} (a 64 MiB loop device; {original} in the example), disk name {disk['name']}, rebuild: false (no NixOS here)")
    await demo.request("POST", f"{API}/disklayouts", {
        "apiVersion": API_VERSION, "kind": "DiskLayout", "metadata": {"name": name},
        "spec": {"nodeName": demo.node_c, "diskLayout": layout, "rebuild": False, "timeoutSeconds": 300}})
    phases: list[str] = []

    async def applied() -> Any:
        st = ((await demo.get("disklayouts", name)) or {}).get("status") or {}
        phase = st.get("phase") or "<none>"
        if not phases or phases[-1] != phase:
            phases.append(phase)
        if phase == "applied":
            return True
        if phase in ("failed", "refused"):
            return f"phase={phase} reason={st.get('refusalReason')} message={(st.get('message') or '')[-600:]}"
        return f"phase={phase}"

    ok = await demo.wait(f"DiskLayout {name} applied by disko's own scripts", applied, 180)
    say(f"  phases seen: {' → '.join(phases)}")
    res = demo.runner.run(["lsblk", "-o", "NAME,SIZE,TYPE,MOUNTPOINTS", "--", loop], timeout=20)
    say(f"\n$ lsblk {loop}\n{res.stdout.rstrip()}")
    where = demo.disks.mounted(mountpoint)
    res = demo.runner.run(["findmnt", "--mountpoint", str(where), "-o", "TARGET,SOURCE,FSTYPE,OPTIONS"], timeout=20)
    say(f"\n$ findmnt {where}   (the layout's {mountpoint}, under the demo's root)\n{res.stdout.rstrip()}")
    parts = partitions_of(loop)
    probe = demo.runner.run(["blkid", "-p", "-o", "export", "--", *parts], timeout=20) if parts else None
    fs_ok = probe is not None and "TYPE=ext4" in probe.stdout and f"PART_ENTRY_NAME=disk-{disk['name']}-" in probe.stdout
    mounted_ok = res.ok and parts and parts[0] in res.stdout
    if ok and fs_ok and mounted_ok:
        say(f"  ✓ {loop}: GPT, partition {parts[0]} ext4, mounted at {where}")
    else:
        ok = False
        say(f"  ✗ the disk does not look applied (partitions {parts}, ext4 {fs_ok}, mounted {bool(mounted_ok)})")
    return ok


async def scenario(demo: Demo, disk: str | None, lvm_ok: bool) -> int:
    ok = True
    say("\n== 1. DiskLayouts")
    target = disk or "/dev/vda"
    await demo.request("POST", f"{API}/disklayouts", {
        "apiVersion": API_VERSION, "kind": "DiskLayout", "metadata": {"name": f"root-disk-{demo.suffix}"},
        "spec": {"nodeName": demo.node_a, "diskLayout": {"disks": [{"name": "os", "device": target, "gpt": {
            "partitions": [{"name": "data", "size": "100%", "content": {
                "type": "filesystem", "format": "ext4", "mountpoint": "/var/lib/kcore/demo"}}]}}]}}})
    say(f"  created DiskLayout root-disk-{demo.suffix} on {demo.node_a} (controller-managed) aimed at {target}")
    await demo.request("POST", f"{API}/disklayouts", {
        "apiVersion": API_VERSION, "kind": "DiskLayout", "metadata": {"name": f"installer-only-{demo.suffix}"},
        "spec": {"nodeName": demo.node_b, "diskLayout": {"disks": [{"name": "data1", "device": "/dev/disk/by-id/demo-disk",
                 "gpt": {"partitions": [{"name": "p0", "size": "100%", "content": {
                     "type": "filesystem", "format": "ext4", "mountpoint": "/var/lib/kcore/data1"}}]}}]}}})
    say(f"  created DiskLayout installer-only-{demo.suffix} on {demo.node_b} (no mode file: installer-only)")

    async def refused() -> Any:
        st = ((await demo.get("disklayouts", f"root-disk-{demo.suffix}")) or {}).get("status") or {}
        if st.get("phase") == "refused" and st.get("refusalReason") == "target_device_has_active_system_mount":
            return True
        return f"phase={st.get('phase')} reason={st.get('refusalReason')}"

    async def pending() -> Any:
        st = ((await demo.get("disklayouts", f"installer-only-{demo.suffix}")) or {}).get("status") or {}
        if st.get("phase") == "pending" and st.get("nodeMode") == "installer-only":
            return True
        return f"phase={st.get('phase')} mode={st.get('nodeMode')}"

    ok &= await demo.wait("root-disk layout refused with target_device_has_active_system_mount", refused, 60)
    ok &= await demo.wait("installer-only layout left pending", pending, 60)

    if demo.disks is not None:
        ok &= await real_apply_scene(demo)

    if lvm_ok:
        say("\n== 3. LVMVolumeGroup on two file-backed loop devices (real losetup, real LVM)")
        await demo.request("POST", f"{API}/lvmvolumegroups", {
            "apiVersion": API_VERSION, "kind": "LVMVolumeGroup", "metadata": {"name": demo.lvg},
            "spec": {"type": "Local", "local": {"nodeName": demo.node_a}, "actualVGNameOnTheNode": demo.vg,
                     "fileDevices": [{"name": "a", "directory": str(demo.files_dir), "size": "1Gi"},
                                     {"name": "b", "directory": str(demo.files_dir), "size": "1Gi"}]}})
        say(f"  created LVMVolumeGroup {demo.lvg}: VG {demo.vg} from 2 × 1Gi files under {demo.files_dir}")

        async def ready() -> Any:
            st = ((await demo.get("lvmvolumegroups", demo.lvg)) or {}).get("status") or {}
            files = [f for n in st.get("nodes") or [] for f in n.get("fileDevices") or []]
            ready = next((c["status"] for c in st.get("conditions") or [] if c["type"] == "Ready"), None)
            if st.get("phase") == "Ready" and ready == "True" and len(files) == 2:
                return True
            conds = ", ".join(f"{c['type']}={c['status']}/{c['reason']}" for c in st.get("conditions") or [])
            return f"phase={st.get('phase')} fileDevices={len(files)} {conds}"

        ok &= await demo.wait(f"LVMVolumeGroup {demo.lvg} Ready with 2 loop PVs", ready, 120)
        # the same invalid edit a user might try: rejected by the CRD rules before it reaches the node
        try:
            await demo.request("PATCH", f"{API}/lvmvolumegroups/{demo.lvg}", {"spec": {"fileDevices": [
                {"name": "a", "directory": str(demo.files_dir), "size": "512Mi"},
                {"name": "b", "directory": str(demo.files_dir), "size": "1Gi"}]}})
            say("  ✗ shrinking a file device was accepted")
            ok = False
        except ApiError as exc:
            say(f"  ✓ shrinking a file device is rejected by the API: {exc.message[:160]}")

    await demo.print_tables()

    say("== 4. Clean-up through the API")
    for plural, name in (("disklayouts", f"root-disk-{demo.suffix}"), ("disklayouts", f"installer-only-{demo.suffix}"),
                         ("disklayouts", f"applied-{demo.suffix}"), ("lvmvolumegroups", demo.lvg)):
        if await demo.get(plural, name) is not None:
            await demo.request("DELETE", f"{API}/{plural}/{name}")

    async def gone() -> Any:
        obj = await demo.get("lvmvolumegroups", demo.lvg)
        if obj is None:
            return True
        st = obj.get("status") or {}
        return f"phase={st.get('phase')} finalizers={obj['metadata'].get('finalizers')}"

    if demo.disks is not None:
        problems = demo.disks.close()  # deleting a DiskLayout never touches the node: the demo undoes its disk
        for problem in problems:
            say(f"  ✗ {problem}")
        if not problems:
            say("  ✓ the applied loop device is unmounted, its partition-label links removed and it is detached")
        ok &= not problems
    if lvm_ok:
        ok &= await demo.wait("LVMVolumeGroup deleted (VG removed, loops detached, files removed)", gone, 60)
        left = demo.leftovers()
        if left:
            ok = False
            say("  ✗ left behind:")
            for item in left:
                say(f"      {item}")
        else:
            say("  ✓ nothing left behind: no loop device, backing file or VG from the demo")
    say("\ndemo " + ("passed" if ok else "FAILED"))
    return 0 if ok else 1


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m devkit.demo", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    args = ap.parse_args(argv)
    try:
        return asyncio.run(run_demo(args))
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
