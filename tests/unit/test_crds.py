"""The committed CRDs are exactly what the models generate, and they are well-formed."""

from __future__ import annotations

from pathlib import Path

import yaml

from disklet.api.crdgen import render_all

CRDS = Path(__file__).resolve().parents[2] / "crds"


def test_committed_crds_match_models():
    for name, text in render_all().items():
        path = CRDS / name
        assert path.exists(), f"{path} missing: run python -m disklet.api.crdgen"
        assert path.read_text() == text, f"{path} drifted from disklet/api: run python -m disklet.api.crdgen"


def _walk(schema, path="$"):
    yield path, schema
    for k, v in (schema.get("properties") or {}).items():
        yield from _walk(v, f"{path}.{k}")
    if isinstance(schema.get("items"), dict):
        yield from _walk(schema["items"], f"{path}[]")
    if isinstance(schema.get("additionalProperties"), dict):
        yield from _walk(schema["additionalProperties"], f"{path}{{}}")


def _crds():
    for name in sorted(render_all()):
        yield yaml.safe_load((CRDS / name).read_text())


def test_every_field_has_a_description_and_a_type():
    for crd in _crds():
        schema = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
        for path, node in _walk(schema):
            if path.endswith("[]") or path.endswith("{}"):
                continue
            if path == "$.metadata":
                # kube-apiserver rejects anything but `type: object` there (the server's rule, and
                # tests/api/test_crds_real.py installs the CRDs on a real server to prove it).
                assert node == {"type": "object"}, f"{crd['metadata']['name']} .metadata: {node}"
                continue
            assert node.get("description"), f"{crd['metadata']['name']} {path}: no description"
            assert node.get("type") or node.get("x-kubernetes-int-or-string"), f"{crd['metadata']['name']} {path}: no type"


def test_structural_no_refs_or_unions():
    for crd in _crds():
        text = yaml.safe_dump(crd)
        for bad in ("$ref", "anyOf", "oneOf", "allOf", "$defs"):
            assert bad not in text, f"{crd['metadata']['name']} contains {bad}"


def test_crd_basics():
    short = {}
    for crd in _crds():
        spec = crd["spec"]
        assert spec["group"] == "disklet.io" and spec["scope"] == "Cluster"
        v = spec["versions"][0]
        assert v["name"] == "v1alpha1" and v["subresources"] == {"status": {}}
        assert "disklet" in spec["names"]["categories"]
        assert v["additionalPrinterColumns"]
        short[spec["names"]["kind"]] = spec["names"]["shortNames"]
    assert short == {"DiskLayout": ["dl"], "LVMVolumeGroup": ["lvg"], "LVMVolumeGroupSet": ["lvgset"], "BlockDevice": ["bd"]}


def test_list_maps_have_required_keys():
    for crd in _crds():
        schema = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
        for path, node in _walk(schema):
            if node.get("x-kubernetes-list-type") == "map":
                keys = node["x-kubernetes-list-map-keys"]
                item = node["items"]
                for k in keys:
                    assert k in item.get("required", []) or "default" in item["properties"][k], f"{path}: map key {k} not required"
