"""DiskLayouts on the node: the operator pod pre-flights them with nix (read-only root, uid 10001),
the agent pod applies one on a host loop device through the host's disko (reached through nsenter:
the test disko exists only on the host, not in the image)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from devkit.envtest import run
from tests.node.release import ETC_DISKLET, GROUP, Host, Release

MODE_FILE = ETC_DISKLET / "disk-management-mode"


def layout(host: Host, what: str, device: str) -> dict[str, Any]:
    # The disk name makes disko's GPT labels (disk-<disk>-<partition>), which are global on the host.
    return {"apiVersion": "disklet.io/v1alpha1", "kind": "DiskLayout", "metadata": {"name": host.name(what)},
            "spec": {"nodeName": "localhost", "diskLayout": {"disks": [{"name": f"d{host.run_id}", "device": device,
                     "gpt": {"partitions": [{"name": "p0", "size": "100%", "content": {
                         "type": "filesystem", "format": "ext4",
                         "mountpoint": f"/var/lib/kcore/{host.name(what)}"}}]}}]}}}


def wait_phase(release: Release, name: str, phase: str, timeout: float = 180) -> dict[str, Any]:
    def ok() -> dict[str, Any] | None:
        obj = release.get(f"disklayouts.{GROUP}", name)
        return obj if ((obj or {}).get("status") or {}).get("phase") == phase else None

    return release.wait(ok, timeout=timeout, what=f"DiskLayout {name} phase={phase}",  # type: ignore[no-any-return]
                        describe=release.describe(f"disklayouts.{GROUP}", name))


@pytest.fixture
def controller_managed(host: Host) -> Any:
    """The documented promotion of the node (the Host fixture removes /etc/disklet if it made it)."""
    MODE_FILE.parent.mkdir(parents=True, exist_ok=True)
    before = MODE_FILE.read_text() if MODE_FILE.exists() else None
    MODE_FILE.write_text("controller-managed\n")
    yield
    if before is None:
        MODE_FILE.unlink(missing_ok=True)
    else:
        MODE_FILE.write_text(before)


def test_operator_pod_preflights_with_nix_read_only_as_uid_10001(release: Release, host: Host) -> None:
    op = release.pod("operator")
    sc = op["spec"]["containers"][0]["securityContext"]
    assert sc["readOnlyRootFilesystem"] is True
    pid = release.container_pid("operator")
    uids = Path(f"/proc/{pid}/status").read_text().split("Uid:")[1].split()[:4]
    assert set(uids) == {"10001"}, uids
    root = next(line.split() for line in Path(f"/proc/{pid}/mountinfo").read_text().splitlines()
                if line.split()[4] == "/")
    assert "ro" in root[5].split(","), root
    # A raw Nix body is evaluated by nix-instantiate in the operator pod: nix's own parse error comes back.
    name = host.name("badnix")
    release.apply({"apiVersion": "disklet.io/v1alpha1", "kind": "DiskLayout", "metadata": {"name": name},
                   "spec": {"nodeName": "localhost", "layoutNix": "{ disko.devices = { disk = "}})
    failed = wait_phase(release, name, "failed", timeout=120)
    assert "syntax error" in failed["status"].get("message", ""), failed["status"]
    release.kubectl("delete", f"disklayouts.{GROUP}", name, "--wait=true", timeout=120)


def test_disklayout_is_applied_by_the_agent_pod_through_the_hosts_disko(
        release: Release, host: Host, controller_managed: None) -> None:
    dev = host.loop("dl")
    obj = layout(host, "dl", dev)
    name = obj["metadata"]["name"]
    release.apply(obj)
    applied = wait_phase(release, name, "applied", timeout=240)
    st = applied["status"]
    assert st.get("appliedLayoutGeneration") == st.get("layoutGeneration"), st
    waited = release.kubectl("wait", "--for=condition=Ready", f"disklayouts.{GROUP}/{name}", "--timeout=60s",
                             timeout=90)
    assert "condition met" in waited.stdout
    # disko's own scripts partitioned, formatted and mounted the host's loop device.
    probe = run(["blkid", "-p", "-o", "export", "--", f"{dev}p1"], timeout=30).stdout
    assert "TYPE=ext4" in probe and f"PART_ENTRY_NAME=disk-d{host.run_id}-p0" in probe, probe
    where = host.disko_root / "var" / "lib" / "kcore" / name
    src = run(["findmnt", "-n", "-o", "SOURCE", "--mountpoint", str(where)], timeout=30, check=False).stdout.strip()
    assert src == f"{dev}p1", (src, where)
    # The agent staged and promoted the layout in the host's /etc/disklet; nixos-rebuild ran on the host.
    current = ETC_DISKLET / "disk" / "current.nix"
    assert current.exists() and dev in current.read_text(), current
    calls = [json.loads(line) for line in host.fake_log.read_text().splitlines()]
    assert any(c["cmd"] == "nixos-rebuild" and c["argv"][:1] == ["switch"] for c in calls), calls


def test_kctl_apply_disk_over_an_applied_layout_needs_allow_destructive_changes(
        release: Release, host: Host) -> None:
    """After the DiskLayout above, the node has an applied layout; a one-off layout that leaves its
    disk out is refused by the agent pod, and validates once the flag reaches the agent (a fix the
    node found: kctl did not pass --allow-destructive-changes on)."""
    dev = host.loop("kctl2")
    nix = host.sandbox / "kctl2.nix"
    nix.write_text('{ disko.devices.disk.k2 = { device = "' + dev + '"; type = "disk"; content = { type = "gpt"; '
                   'partitions.p = { size = "100%"; content = { type = "filesystem"; format = "ext4"; '
                   'mountpoint = "/var/lib/kcore/kctl2-' + host.run_id + '"; }; }; }; }; }\n')
    refused = release.kctl("node", "-n", release.namespace, "apply-disk", "localhost", "-f", str(nix))
    assert refused.returncode == 1 and "applied_disk_removed" in refused.stdout + refused.stderr, \
        refused.stdout + refused.stderr
    allowed = release.kctl("node", "-n", release.namespace, "apply-disk", "localhost", "-f", str(nix),
                           "--allow-destructive-changes")
    assert allowed.returncode == 0, allowed.stdout + allowed.stderr
    assert "--allow-destructive-changes" in allowed.stdout + allowed.stderr  # the exec'd argv, echoed
    assert run(["blkid", "-p", "--", dev], timeout=30, check=False).stdout.strip() == ""  # validation only
