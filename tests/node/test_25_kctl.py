"""kubectl disklet against the node: `node disks` and `node apply-disk` through a real exec into the
agent pod, `support-bundle` with the pods' real logs."""

from __future__ import annotations

import json
import tarfile
from pathlib import Path

from devkit.envtest import run
from tests.node.release import Host, Release


def test_node_disks_live_execs_into_the_agent_pod(release: Release) -> None:
    res = release.kctl("node", "-n", release.namespace, "disks", "localhost", "--live", "-o", "json")
    assert res.returncode == 0, res.stderr
    disks = json.loads(res.stdout)
    paths = json.dumps(disks)
    # The agent pod's own view of the host (lsblk through nsenter): the host's disks are in it.
    host_disks = run(["lsblk", "-n", "-d", "-p", "-o", "NAME", "-e", "7"], timeout=30).stdout.split()
    assert host_disks and all(d in paths for d in host_disks), (host_disks, paths[:2000])


def test_node_apply_disk_validates_through_exec(release: Release, host: Host) -> None:
    dev = host.loop("kctl")
    nix = host.sandbox / "kctl.nix"
    nix.write_text(f'{{ disko.devices.disk.k = {{ device = "{dev}"; type = "disk"; content = {{ type = "gpt"; '
                   'partitions.p = { size = "100%"; content = { type = "filesystem"; format = "ext4"; '
                   f'mountpoint = "/var/lib/kcore/kctl-{host.run_id}"; }}; }}; }}; }}; }}\n')
    res = release.kctl("node", "-n", release.namespace, "apply-disk", "localhost", "-f", str(nix))
    assert res.returncode == 0, res.stdout + res.stderr
    assert dev in res.stdout, res.stdout
    # validation only: nothing was written to the device
    assert run(["blkid", "-p", "--", dev], timeout=30, check=False).stdout.strip() == ""


def test_support_bundle_holds_the_pods_real_logs(release: Release, host: Host, tmp_path: Path) -> None:
    out = tmp_path / "bundle.tar.gz"
    res = release.kctl("support-bundle", "-n", release.namespace, "--tarball", str(out), "--tail", "200",
                       timeout=240)
    assert res.returncode == 0, res.stderr
    with tarfile.open(out) as tar:
        names = tar.getnames()
        logs = {n: tar.extractfile(n).read().decode(errors="replace")  # type: ignore[union-attr]
                for n in names if n.endswith(".log") and tar.getmember(n).isfile()}
    agent_logs = [t for n, t in logs.items() if "agent" in n]
    operator_logs = [t for n, t in logs.items() if "operator" in n]
    assert agent_logs and operator_logs, names
    # real lines the running pods wrote, not placeholders: the bundle's lines are in the pods' logs
    for component, texts in (("agent", agent_logs), ("operator", operator_logs)):
        lines = [line for t in texts for line in t.splitlines() if line.strip()]
        assert len(lines) > 3, (component, texts)
        full = release.logs(component, tail=100000)
        assert all(line in full for line in lines[:5]), (component, lines[:5])
