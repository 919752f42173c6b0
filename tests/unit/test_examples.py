"""Every manifest in examples/ is valid against its CRD (schema + CEL rules) and its pydantic model,
as a user would send it (kctl inlines layoutNixFile first)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from devkit.admission import load_crds, validate_object
from disklet.api import DiskLayoutSpec, LVMVolumeGroupSetSpec, LVMVolumeGroupSpec

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
MODELS = {"DiskLayout": DiskLayoutSpec, "LVMVolumeGroup": LVMVolumeGroupSpec, "LVMVolumeGroupSet": LVMVolumeGroupSetSpec}
CRDS = load_crds()


def _documents():
    for path in sorted(EXAMPLES.glob("*.yaml")):
        for i, doc in enumerate(yaml.safe_load_all(path.read_text())):
            if doc:
                yield pytest.param(path, doc, id=f"{path.name}#{i}")


DOCS = list(_documents())


def test_examples_exist_for_every_kind_users_write():
    kinds = {p.values[1]["kind"] for p in DOCS}
    assert {"DiskLayout", "LVMVolumeGroup", "LVMVolumeGroupSet"} <= kinds


@pytest.mark.parametrize("path,doc", DOCS)
def test_example_is_valid(path, doc):
    assert doc.get("apiVersion") == "disklet.io/v1alpha1", f"{path.name}: examples carry apiVersion"
    kind = doc["kind"]
    spec = dict(doc["spec"])
    MODELS[kind].model_validate(spec)
    if kind == "DiskLayout" and "layoutNixFile" in spec:
        nix = (path.parent / spec.pop("layoutNixFile")).read_text()
        spec["layoutNix"] = nix
        doc = {**doc, "spec": spec}
    errors = validate_object(CRDS[kind], doc)
    assert errors == [], f"{path.name}: {errors}"
