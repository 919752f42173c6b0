"""docs/design/disklayout.md#extraction: the walk over an evaluated disko.devices value (pure; evaluation is host-tier)."""

from __future__ import annotations

import pytest

from disklet.layout import (
    Extraction,
    MalformedLayout,
    NixUnavailable,
    devices_value_of,
    extract_targets,
    walk_targets,
)
from disklet.layout import extract as extract_module


def _disk(device: str, **extra: object) -> dict[str, object]:
    return {"type": "disk", "device": device, "content": {"type": "gpt", "partitions": {}}, **extra}


def test_disks_and_dedup() -> None:
    value = {"disk": {"b": _disk("/dev/sdb"), "a": _disk("/dev/sda"), "c": _disk("/dev/sda")}}
    assert walk_targets(value) == ["/dev/sda", "/dev/sdb"]


def test_zpool_members_and_string_mode() -> None:
    value = {
        "disk": {"a": _disk("/dev/sda")},
        "zpool": {
            "p1": {"type": "zpool", "mode": "mirror"},
            "p2": {"type": "zpool", "mode": {"topology": {"vdev": [{"members": ["/dev/sdb", "/dev/sda"]}],
                                                          "spare": ["/dev/sdc"], "cache": []}}},
        },
    }
    assert walk_targets(value) == ["/dev/sda", "/dev/sdb", "/dev/sdc"]


@pytest.mark.parametrize("where", [
    {"disk": {"a": _disk("/dev/sda", content={"type": "gpt", "partitions": {"p": {"device": "/dev/sdz"}}})}},
    {"disk": {"a": _disk("/dev/sda", content={"type": "gpt", "partitions": {
        "p": {"size": "100%", "content": {"type": "filesystem", "device": "/dev/sdz"}}}})}},
    {"disk": {"a": _disk("/dev/sda", content={"type": "filesystem", "device": "/dev/sdz"})}},
    {"disk": {"a": _disk("/dev/sda")}, "nodev": {"tmp": {"fsType": "tmpfs", "device": "none"}}},
    {"disk": {"a": _disk("/dev/sda")}, "lvm_vg": {"vg": {"lvs": {"lv": {"content": {"device": "/dev/sdq"}}}}}},
])
def test_redirects_rejected(where: dict[str, object]) -> None:
    with pytest.raises(MalformedLayout, match="redirect"):
        walk_targets(where)


def test_non_string_device_key_is_not_a_redirect_target_but_disk_needs_string() -> None:
    with pytest.raises(MalformedLayout, match="has no device string"):
        walk_targets({"disk": {"a": {"type": "disk", "device": 3}}})
    with pytest.raises(MalformedLayout, match="has no device"):
        walk_targets({"disk": {"a": {"type": "disk"}}})


def test_no_targets_is_not_an_error() -> None:
    assert walk_targets({}) == []
    assert walk_targets({"lvm_vg": {"vg": {"type": "lvm_vg", "lvs": {}}}}) == []


@pytest.mark.parametrize("value,message", [
    ([], "not an attribute set"),
    ("x", "not an attribute set"),
    ({"disko": {}}, "does not define disko.devices"),
    ({"other": 1}, "does not define disko.devices"),
    ({"disko": {"devices": []}}, "not an attribute set"),
])
def test_devices_value_of(value: object, message: str) -> None:
    with pytest.raises(MalformedLayout, match=message):
        devices_value_of(value)


def test_shape_errors() -> None:
    with pytest.raises(MalformedLayout, match="disk is a list"):
        walk_targets({"disk": []})
    with pytest.raises(MalformedLayout, match="not a list"):
        walk_targets({"zpool": {"p": {"mode": {"topology": {"vdev": {"members": []}}}}}})


def test_static_fallback_when_nix_missing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(extract_module, "nix_available", lambda: False)
    body = '{ disko.devices.disk.x = { device = "/dev/sdb"; }; }'
    extraction = extract_targets(body)
    assert extraction == Extraction(devices=["/dev/sdb"], devices_value={"disk": {"x": {"device": "/dev/sdb"}}},
                                    method="static")
    with pytest.raises(NixUnavailable):
        extract_targets(body, static_fallback=False)


def test_static_redirect_rejected() -> None:
    body = '{ disko.devices.disk.x = { device = "/dev/sdb"; content.device = "/dev/sda"; }; }'
    with pytest.raises(MalformedLayout, match="redirect"):
        extract_targets(body, force_static=True)


def test_static_missing_disko_devices() -> None:
    with pytest.raises(MalformedLayout, match="does not define disko.devices"):
        extract_targets("{ disk.x.device = \"/dev/sda\"; }", force_static=True)
