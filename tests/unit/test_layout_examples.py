"""Every examples/disklayout-*.yaml pre-flights to pending (offline reading; evaluation is host-tier)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from disklet.api.disklayout import DiskLayoutSpec, Phase, RefusalCode
from disklet.layout import LayoutError, preflight, resolve_layout
from disklet.layout import extract as extract_module

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
MANIFESTS = sorted(EXAMPLES.glob("disklayout-*.yaml"))


@pytest.fixture(autouse=True)
def _offline(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(extract_module, "nix_available", lambda: False)


def _spec(path: Path) -> DiskLayoutSpec:
    doc = yaml.safe_load(path.read_text())
    assert doc["apiVersion"] == "disklet.io/v1alpha1"
    assert doc["kind"] == "DiskLayout"
    return DiskLayoutSpec.model_validate(doc["spec"])


def test_examples_exist() -> None:
    assert {p.name for p in MANIFESTS} >= {
        "disklayout-structured-ext4.yaml", "disklayout-raw-nix.yaml", "disklayout-nix-file.yaml",
        "disklayout-lvm-pv.yaml", "disklayout-zfs.yaml"}


@pytest.mark.parametrize("path", MANIFESTS, ids=lambda p: p.name)
def test_example_preflights(path: Path) -> None:
    result = preflight(_spec(path), base_dir=path.parent)
    assert result.phase == Phase.PENDING, result.message
    assert result.refusal_reason is None
    assert result.target_devices and all(d.startswith("/dev/") for d in result.target_devices)
    assert result.layout_hash is not None and len(result.layout_hash) == 64
    assert result.body and "disko" in result.body


def test_expected_targets() -> None:
    targets = {p.name: preflight(_spec(p), base_dir=p.parent).target_devices for p in MANIFESTS}
    assert targets["disklayout-structured-ext4.yaml"] == ["/dev/nvme1n1"]
    assert targets["disklayout-lvm-pv.yaml"] == ["/dev/disk/by-id/nvme-data-disk-1", "/dev/disk/by-id/nvme-data-disk-2"]
    assert targets["disklayout-nix-file.yaml"] == ["/dev/disk/by-id/nvme-Samsung_SSD_980_PRO_1TB_S5GXNX0T000000X"]


def test_structured_and_raw_examples_hash_identically() -> None:
    structured = resolve_layout(_spec(EXAMPLES / "disklayout-structured-ext4.yaml"))
    raw = resolve_layout(_spec(EXAMPLES / "disklayout-raw-nix.yaml"))
    assert structured.source == "diskLayout" and raw.source == "layoutNix"
    assert structured.body != raw.body
    assert structured.layout_hash == raw.layout_hash


def test_nix_file_needs_base_dir_and_file(tmp_path: Path) -> None:
    spec = _spec(EXAMPLES / "disklayout-nix-file.yaml")
    with pytest.raises(LayoutError, match="next to a manifest"):
        resolve_layout(spec)
    with pytest.raises(LayoutError, match="not found"):
        resolve_layout(spec, base_dir=tmp_path)
    result = preflight(spec, base_dir=tmp_path)
    assert result.phase == Phase.FAILED and "not found" in result.message
    resolved = resolve_layout(spec, base_dir=EXAMPLES)
    assert resolved.source == "layoutNixFile"
    assert resolved.body == (EXAMPLES / "fragments" / "nvme-data1.nix").read_text()


def test_preflight_failed_and_refused() -> None:
    bad = DiskLayoutSpec.model_validate({"nodeName": "n", "layoutNix": "{ disko.devices = let in { }; }"})
    result = preflight(bad)
    assert result.phase == Phase.FAILED and "install nix or use diskLayout" in result.message
    assert result.body is None and result.layout_hash is None and result.target_devices == []
    empty = DiskLayoutSpec.model_validate({"nodeName": "n", "layoutNix": "{ disko.devices = { }; }"})
    result = preflight(empty)
    assert result.phase == Phase.REFUSED and result.refusal_reason == RefusalCode.NO_TARGET_DEVICES
    assert result.layout_hash is not None
    invalid = DiskLayoutSpec.model_validate({"nodeName": "n", "diskLayout": {
        "lvmVolumeGroups": [{"name": "vg0"}],
        "disks": [{"name": "a", "device": "/dev/sda", "gpt": {"partitions": [
            {"name": "p", "size": "100%", "content": {"type": "lvm_pv", "vg": "vg1"}}]}}]}})
    result = preflight(invalid)
    assert result.phase == Phase.FAILED
    assert "not declared in lvmVolumeGroups" in result.message and "has no lvm_pv partition" in result.message
    two = DiskLayoutSpec.model_construct(node_name="n", disk_layout=None, layout_nix="{ }", layout_nix_file="x.nix")
    result = preflight(two)
    assert result.phase == Phase.FAILED and "exactly one layout source" in result.message
