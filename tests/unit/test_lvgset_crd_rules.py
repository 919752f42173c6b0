"""The set's own CRD carries the rules that keep a template change from breaking its children."""

from __future__ import annotations

from pathlib import Path

import yaml

CRD = Path(__file__).resolve().parents[2] / "crds" / "disklet.io_lvmvolumegroupsets.yaml"


def _spec_schema() -> dict:
    crd = yaml.safe_load(CRD.read_text())
    return crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]


def _rules(node: dict) -> set[str]:
    return {r["rule"] for r in node.get("x-kubernetes-validations") or ()}


def test_immutable_strategy_type_and_vg_name():
    spec = _spec_schema()
    tmpl = spec["properties"]["lvmVolumeGroupTemplate"]
    assert "self == oldSelf" in _rules(spec["properties"]["strategy"])
    assert "self == oldSelf" in _rules(tmpl["properties"]["type"])
    assert "self == oldSelf" in _rules(tmpl["properties"]["actualVGNameOnTheNode"])


def test_file_devices_are_a_list_map_with_per_entry_transition_rules_and_a_removal_rule():
    tmpl = _spec_schema()["properties"]["lvmVolumeGroupTemplate"]
    fds = tmpl["properties"]["fileDevices"]
    # oldSelf correlation per entry needs a map-type list (and only objects above it)
    assert fds["x-kubernetes-list-type"] == "map" and fds["x-kubernetes-list-map-keys"] == ["name"]
    entry = _rules(fds["items"])
    assert "self.directory == oldSelf.directory" in entry
    assert any("compareTo(quantity(oldSelf.size)) >= 0" in r for r in entry), "size may only grow"
    assert any("oldSelf.fileDevices.all(o" in r and "n.name == o.name" in r for r in _rules(tmpl)), "no removal"
    assert fds.get("maxItems") == 32
