"""docs/design/disklayout.md#rendering: rendering is exact (golden files), deterministic and injection-proof."""

from __future__ import annotations

import copy
import os
from pathlib import Path

import pytest
import yaml

from disklet.api.disklayout import DiskLayoutSpec
from disklet.layout import (
    LayoutError,
    extract_targets,
    layout_hash,
    nix_attr_name,
    nix_string,
    render_disko_nix,
    static_evaluate,
)
from disklet.layout.render import devices_value
from disklet.layout.samples import EXT4, MIXED, n_disks, structured

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
GOLDEN = Path(__file__).resolve().parent / "golden"
STRUCTURED_EXAMPLES = ["disklayout-structured-ext4", "disklayout-lvm-pv", "disklayout-zfs"]


def _example_layout(name: str) -> DiskLayoutSpec:
    doc = yaml.safe_load((EXAMPLES / f"{name}.yaml").read_text())
    return DiskLayoutSpec.model_validate(doc["spec"])


@pytest.mark.parametrize("name", STRUCTURED_EXAMPLES)
def test_golden(name: str) -> None:
    spec = _example_layout(name)
    assert spec.disk_layout is not None
    body = render_disko_nix(spec.disk_layout)
    golden = GOLDEN / f"{name}.nix"
    if os.environ.get("UPDATE_GOLDEN") == "1":
        golden.write_text(body)
    assert body == golden.read_text(), f"rendered body differs from {golden} (UPDATE_GOLDEN=1 to refresh)"


def test_golden_mixed() -> None:
    body = render_disko_nix(structured(MIXED))
    golden = GOLDEN / "mixed.nix"
    if os.environ.get("UPDATE_GOLDEN") == "1":
        golden.write_text(body)
    assert body == golden.read_text()


def test_deterministic() -> None:
    first = render_disko_nix(structured(n_disks(10)))
    for _ in range(3):
        assert render_disko_nix(structured(n_disks(10))) == first


def test_shape() -> None:
    body = render_disko_nix(structured(MIXED))
    assert body.rstrip().endswith("}")
    assert '"disko"."devices" = {' in body
    code = [ln for ln in body.splitlines() if not ln.startswith("#")]
    assert code[0] == "{" and code[-1] == "}"  # a plain attribute set, not a function
    for forbidden in ('"start"', '"end"', '"uuid"', '"label"'):
        assert forbidden not in body
    value = static_evaluate(body)["disko"]["devices"]
    # YAML order of disks and priorities 100*(i+1).
    assert list(value["disk"]) == ["data1", "data2"]
    parts = value["disk"]["data1"]["content"]["partitions"]
    assert [(n, p["priority"]) for n, p in parts.items()] == [("scratch", 100), ("pv", 200)]
    assert set(parts["pv"]) == {"priority", "size", "content"}  # no partition type/device
    assert value["lvm_vg"] == {"vg_kcore": {"type": "lvm_vg", "lvs": {}}}
    assert value["zpool"] == {"tank0": {"type": "zpool", "datasets": {}}}
    assert list(value) == ["disk", "lvm_vg", "zpool"]  # stubs after the disks
    assert "mountOptions" not in str(value["disk"]["data1"]["content"]["partitions"]["pv"])
    assert value == devices_value(structured(MIXED))


def test_priority_follows_position_not_name() -> None:
    data = copy.deepcopy(MIXED)
    parts = data["disks"][0]["gpt"]["partitions"]
    parts[0]["name"] = "zzz"
    parts[1]["name"] = "aaa"
    value = static_evaluate(render_disko_nix(structured(data)))["disko"]["devices"]
    assert value["disk"]["data1"]["content"]["partitions"]["zzz"]["priority"] == 100
    assert value["disk"]["data1"]["content"]["partitions"]["aaa"]["priority"] == 200


def test_mount_options_only_when_given() -> None:
    body = render_disko_nix(structured(EXT4))
    assert "mountOptions" not in body
    data = copy.deepcopy(EXT4)
    data["disks"][0]["gpt"]["partitions"][0]["content"]["mountOptions"] = []
    assert '"mountOptions" = [ ];' in render_disko_nix(structured(data))


@pytest.mark.parametrize("value,expected", [
    ("plain", '"plain"'),
    ('a"b', '"a\\"b"'),
    ("a\\b", '"a\\\\b"'),
    ("${x}", '"\\${x}"'),
    ("$${x}", '"\\$\\${x}"'),
    ('/dev/x"; y = import /etc/passwd; "', '"/dev/x\\"; y = import /etc/passwd; \\""'),
    ("", '""'),
])
def test_nix_string_escapes(value: str, expected: str) -> None:
    assert nix_string(value) == expected
    assert nix_attr_name(value) == expected
    assert static_evaluate("{ v = " + expected + "; }") == {"v": value}


@pytest.mark.parametrize("value", ["a\nb", "tab\there", "nul\x00", "é", "\u202e", "\x7f"])
def test_nix_string_rejects_control_and_non_ascii(value: str) -> None:
    with pytest.raises(LayoutError, match="control or non-ASCII"):
        nix_string(value)


INJECTIONS = [
    '/srv/x"; y = import /etc/passwd; "',
    '/srv/${builtins.readFile "/etc/passwd"}',
    "/srv/\\${x}",
    "/srv/x\\",
    "/srv/''${x}",
]


@pytest.mark.parametrize("mountpoint", INJECTIONS)
def test_injection_in_mountpoint_is_refused_by_the_model(mountpoint: str) -> None:
    data = copy.deepcopy(EXT4)
    data["disks"][0]["gpt"]["partitions"][0]["content"]["mountpoint"] = mountpoint
    with pytest.raises(Exception, match="pattern"):
        structured(data)


@pytest.mark.parametrize("mountpoint", INJECTIONS)
def test_injection_in_an_artifact_string_stays_literal(mountpoint: str) -> None:
    from disklet.layout.artifact import render_artifact

    value = copy.deepcopy(devices_value(structured(EXT4)))
    value["disk"]["data1"]["content"]["partitions"]["kcore0"]["content"]["mountpoint"] = mountpoint
    extraction = extract_targets(render_artifact(value), force_static=True)
    content = extraction.devices_value["disk"]["data1"]["content"]["partitions"]["kcore0"]["content"]
    assert content["mountpoint"] == mountpoint
    assert extraction.devices == ["/dev/nvme1n1"]


def test_injection_in_names_and_options_fails_validation() -> None:
    for field, value in (("name", 'x"; y = 1; "'), ("device", '/dev/x"; y = import /etc/passwd; "')):
        data = copy.deepcopy(EXT4)
        data["disks"][0][field] = value
        with pytest.raises(Exception, match="match|device"):
            render_disko_nix(structured(data))
    data = copy.deepcopy(EXT4)
    data["disks"][0]["gpt"]["partitions"][0]["content"]["mountOptions"] = ['${builtins.readFile "/etc/passwd"}']
    with pytest.raises(Exception, match="pattern|mount option"):
        render_disko_nix(structured(data))


def test_render_validates() -> None:
    data = copy.deepcopy(MIXED)
    data["lvmVolumeGroups"] = [{"name": "vg_other"}]
    with pytest.raises(LayoutError, match="not declared in lvmVolumeGroups"):
        render_disko_nix(structured(data))


def test_hash_is_spelling_independent() -> None:
    body = render_disko_nix(structured(EXT4))
    reformatted = """{ disko = { devices = { disk = { data1 = { device = "/dev/nvme1n1"; type = "disk";
      content = { type = "gpt"; partitions = { kcore0 = { size = "100%"; priority = 100;
      content = { mountpoint = "/var/lib/kcore/volumes1"; format = "ext4"; type = "filesystem"; }; }; }; }; }; }; }; }; }"""
    a = extract_targets(body, force_static=True)
    b = extract_targets(reformatted, force_static=True)
    assert layout_hash(a.devices_value) == layout_hash(b.devices_value)
    changed = reformatted.replace("volumes1", "volumes2")
    assert layout_hash(extract_targets(changed, force_static=True).devices_value) != layout_hash(a.devices_value)
