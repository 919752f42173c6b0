"""DiskLayout end to end: operator pre-flight, the agent's mode gate, classifier and apply."""

from __future__ import annotations

import json
import shutil
from typing import Any

import pytest

from e2e import harness as h

WAIT = 60


def _layout(e2e: Any, name: str, device: str, **spec: Any) -> dict[str, Any]:
    # The disk name makes disko's GPT labels (disk-<disk>-<partition>), which are global on the host.
    body = {"nodeName": e2e.node, "diskLayout": {"disks": [{"name": f"d{e2e.run}", "device": device, "gpt": {"partitions": [
        {"name": "p0", "size": "100%",
         "content": {"type": "filesystem", "format": "ext4", "mountpoint": f"/var/lib/kcore/{name}"}}]}}]}}
    body.update(spec)
    return {"apiVersion": "disklet.io/v1alpha1", "kind": "DiskLayout", "metadata": {"name": name}, "spec": body}


def _phase(e2e: Any, name: str, phase: str, *, timeout: float = WAIT, **fields: Any) -> dict[str, Any]:
    """Wait until the DiskLayout reports ``phase`` (and every given status field) for its current generation."""

    def ok() -> dict[str, Any] | None:
        obj = e2e.kube.get(h.DL, name)
        st = (obj or {}).get("status") or {}
        if st.get("phase") != phase or any(st.get(k) != v for k, v in fields.items()):
            return None
        return obj

    want = f"DiskLayout {name} phase={phase}" + "".join(f" {k}={v}" for k, v in fields.items())
    return h.wait_until(ok, timeout=timeout, what=want, describe=e2e.describe(h.DL, name))  # type: ignore[no-any-return]


@pytest.fixture
def installer_only(e2e: Any) -> Any:
    e2e.mode_file.unlink(missing_ok=True)
    yield
    e2e.mode_file.unlink(missing_ok=True)


@pytest.fixture
def node_disk_state(e2e: Any) -> Any:
    """The applied layout the agent persists under the sandbox's /etc/disklet/disk goes with the test."""
    yield
    shutil.rmtree(e2e.sandbox / "etc" / "disklet" / "disk", ignore_errors=True)
    e2e.mode_file.unlink(missing_ok=True)


def test_structured_layout_stays_pending_in_installer_only(scenario: Any, local_only: None, root_only: None,
                                                          installer_only: None) -> None:
    dev = scenario.ledger.loop(scenario.name("pending"))
    name = scenario.name("pending")
    scenario.create(h.DL, _layout(scenario, name, dev))
    obj = _phase(scenario, name, "pending", nodeMode="installer-only")
    st = obj["status"]
    assert st.get("layoutHash") and st.get("layoutGeneration") == 1, h.brief(obj)
    assert dev in (st.get("targetDevices") or []), h.brief(obj)
    text = json.dumps(st.get("conditions") or [])
    assert "installer-only" in text and "controller-managed" in text, \
        f"no condition names the mode and how to promote: {h.brief(obj)}"
    assert not scenario.fake_log.exists() or "disko" not in scenario.fake_log.read_text(), "disko ran in installer-only"


def test_promoted_node_applies(scenario: Any, local_only: None, root_only: None, node_disk_state: None) -> None:
    """pending → applied after the documented promotion. With the test disko (docs/testing.md) disko's
    own scripts partition, format and mount the loop device; otherwise the recording fake partitions it."""
    scenario.mode_file.unlink(missing_ok=True)
    dev = scenario.ledger.loop(scenario.name("apply"))
    name = scenario.name("apply")
    scenario.create(h.DL, _layout(scenario, name, dev))
    _phase(scenario, name, "pending")
    scenario.mode_file.write_text("controller-managed\n")  # the documented promotion
    obj = _phase(scenario, name, "applied", timeout=90)
    st = obj["status"]
    assert st.get("appliedLayoutGeneration") == st.get("layoutGeneration"), h.brief(obj)
    if scenario.real:  # the Ready condition is what `kubectl wait` reads (docs/kctl.md)
        waited = scenario.kube.kubectl("wait", "--for=condition=Ready", f"disklayout/{name}", "--timeout=60s",
                                       timeout=90)
        assert "condition met" in waited.stdout, waited.stdout + waited.stderr
    calls = [json.loads(line) for line in scenario.fake_log.read_text().splitlines()]
    assert any(c["cmd"] == "nixos-rebuild" and c["argv"][:1] == ["switch"] for c in calls), calls
    current = scenario.sandbox / "etc" / "disklet" / "disk" / "current.nix"
    assert current.exists() and dev in current.read_text(), f"{current} not promoted"
    assert h.sh(["lsblk", "-n", "-o", "TYPE", f"{dev}p1"], check=False).stdout.strip() == "part"
    if not scenario.real_disko:
        assert [c["cmd"] for c in calls if c["cmd"] == "disko"], f"disko never ran: {calls}"
        return
    probe = h.sh(["blkid", "-p", "-o", "export", "--", f"{dev}p1"]).stdout
    assert "TYPE=ext4" in probe and f"PART_ENTRY_NAME=disk-d{scenario.run}-p0" in probe, probe
    where = scenario.disko_root / "var" / "lib" / "kcore" / name
    assert h.sh(["findmnt", "-n", "-o", "SOURCE", "--mountpoint", str(where)]).stdout.strip() == f"{dev}p1"
    # Day 2 through the API: a new generation that changes the mounted partition is refused by the node.
    scenario.kube.patch(h.DL, name, {"spec": {"diskLayout": {"disks": [{"name": f"d{scenario.run}", "device": dev,
        "gpt": {"partitions": [{"name": "p0", "size": "100%", "content": {
            "type": "filesystem", "format": "ext3", "mountpoint": f"/var/lib/kcore/{name}"}}]}}]}}})
    refused = _phase(scenario, name, "refused", refusalReason="target_device_has_active_mount", timeout=90)
    assert f"{dev}p1 is mounted at {where}" in refused["status"]["message"], h.brief(refused)
    assert "TYPE=ext4" in h.sh(["blkid", "-p", "-o", "export", "--", f"{dev}p1"]).stdout


def _root_disk() -> str | None:
    src = h.sh(["findmnt", "-n", "-o", "SOURCE", "/"], check=False).stdout.strip()
    if not src.startswith("/dev/"):
        return None
    parent = h.sh(["lsblk", "-n", "-d", "-o", "PKNAME", src], check=False).stdout.strip()
    return f"/dev/{parent}" if parent else src


def test_layout_on_the_root_disk_is_refused(scenario: Any, local_only: None, node_disk_state: None) -> None:
    disk = _root_disk()
    if disk is None:
        pytest.skip("/ is not on a block device here (overlay/container root)")
    scenario.mode_file.write_text("controller-managed\n")
    name = scenario.name("rootdisk")
    scenario.create(h.DL, _layout(scenario, name, disk))
    _phase(scenario, name, "refused", refusalReason="target_device_has_active_system_mount")
    assert not scenario.fake_log.exists() or disk not in scenario.fake_log.read_text()


def test_second_layout_for_the_node_is_refused(scenario: Any, local_only: None, root_only: None,
                                               installer_only: None) -> None:
    first, second = scenario.name("first"), scenario.name("second")
    scenario.create(h.DL, _layout(scenario, first, scenario.ledger.loop(first)))
    _phase(scenario, first, "pending")
    scenario.create(h.DL, _layout(scenario, second, scenario.ledger.loop(second)))
    _phase(scenario, second, "refused", refusalReason="another_disk_layout_for_node")
    assert scenario.kube.get(h.DL, first)["status"]["phase"] == "pending"


def test_malformed_nix_fails(scenario: Any, local_only: None, installer_only: None) -> None:
    name = scenario.name("malformed")
    scenario.create(h.DL, {"apiVersion": "disklet.io/v1alpha1", "kind": "DiskLayout", "metadata": {"name": name},
                           "spec": {"nodeName": scenario.node, "layoutNix": "{ disko.devices = { disk = "}})
    obj = _phase(scenario, name, "failed")
    assert obj["status"].get("message"), f"failed without saying why: {h.brief(obj)}"


def test_identical_resubmit_keeps_layout_generation(scenario: Any, local_only: None, root_only: None,
                                                    installer_only: None) -> None:
    name = scenario.name("resubmit")
    dev = scenario.ledger.loop(name)
    scenario.create(h.DL, _layout(scenario, name, dev))
    before = _phase(scenario, name, "pending")["status"]
    # Same body, resubmitted with a change outside it: a new generation for the operator to see.
    scenario.kube.patch(h.DL, name, {"spec": {"timeoutSeconds": 301}})
    gen = scenario.kube.get(h.DL, name)["metadata"]["generation"]
    after = _phase(scenario, name, "pending", observedGeneration=gen)["status"]
    assert after["layoutGeneration"] == before["layoutGeneration"], (before, after)
    assert after["layoutHash"] == before["layoutHash"], (before, after)
