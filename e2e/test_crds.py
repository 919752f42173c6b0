"""CRDs on a real API server: every CEL rule's fixture (create and update), explain, printer columns."""

from __future__ import annotations

import copy
import re
import time
from typing import Any

import pytest
import yaml

from devkit.admission import iter_rules, load_crds, schema_of
from disklet.api.resources import DISK_LAYOUT, LVM_VOLUME_GROUP
from e2e import harness as h
from tests.unit.test_cel_rules import CASES, MODEL_ONLY_REJECTS

KINDS = {"DiskLayout": h.DL, "LVMVolumeGroup": h.LVG, "LVMVolumeGroupSet": h.LVGSET}
CRDS = load_crds()
RULE_MESSAGES = {k: [r.message for r in iter_rules(schema_of(c))] for k, c in CRDS.items()}


def _obj(e2e: Any, kind: str, name: str, spec: dict[str, Any]) -> dict[str, Any]:
    return {"apiVersion": "disklet.io/v1alpha1", "kind": kind,
            "metadata": {"name": name, "labels": {h.RUN_LABEL: e2e.run}}, "spec": copy.deepcopy(spec)}


def _strict(e2e: Any, method: str, kind: h.Kind, obj: dict[str, Any], name: str | None = None) -> Any:
    path = kind.path(name)
    return e2e.kube.request(method, path, obj, query=[("fieldValidation", "Strict")])


def _replace_spec(e2e: Any, kind: h.Kind, name: str, spec: dict[str, Any]) -> None:
    """PUT the whole object with a new spec (exact, unlike a merge patch); retry on conflicts with
    controllers writing status or finalizers meanwhile."""
    for _ in range(10):
        live = e2e.kube.get(kind, name)
        live["spec"] = copy.deepcopy(spec)
        try:
            _strict(e2e, "PUT", kind, live, name)
            return
        except h.ApiError as exc:
            if exc.status != 409:
                raise
            time.sleep(0.2)
    raise AssertionError(f"{kind.plural}/{name}: PUT kept conflicting")


@pytest.mark.timeout(60)
@pytest.mark.parametrize("case_id,kind,old,new,expected", CASES, ids=[c[0] for c in CASES])
def test_cel_rule_on_the_server(e2e: Any, real_only: None, scenario: Any, case_id: str, kind: str,
                                old: dict[str, Any] | None, new: dict[str, Any], expected: str | None) -> None:
    """The same fixtures as tests/unit/test_cel_rules.py, judged by kube-apiserver itself."""
    k = KINDS[kind]
    name = e2e.name(f"cel-{case_id}")[:63].rstrip("-")
    should_reject = expected is not None or case_id in MODEL_ONLY_REJECTS
    e2e.created.append((k, name))
    try:
        if old is not None:
            _strict(e2e, "POST", k, _obj(e2e, kind, name, old))
            _replace_spec(e2e, k, name, new)
        else:
            _strict(e2e, "POST", k, _obj(e2e, kind, name, new))
    except h.ApiError as exc:
        assert should_reject, f"{case_id}: the server rejected a valid {'update' if old else 'create'}: {exc}"
        assert exc.status in (400, 422), f"{case_id}: expected 422 Invalid, got {exc}"
        if expected is not None and any(expected in m for m in RULE_MESSAGES[kind]):
            assert expected in exc.message, f"{case_id}: rejected, but without the rule's message {expected!r}: {exc}"
        return
    assert not should_reject, f"{case_id}: the server accepted what it must reject ({expected or 'model-only rule'})"


def _squash(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip()


@pytest.mark.timeout(60)
def test_explain_shows_descriptions(e2e: Any, real_only: None) -> None:
    """`kubectl explain lvmvolumegroups.spec.fileDevices` prints the field's and its children's descriptions."""
    out = e2e.kube.kubectl("explain", "lvmvolumegroups.spec.fileDevices").stdout
    schema = schema_of(CRDS["LVMVolumeGroup"])["properties"]["spec"]["properties"]["fileDevices"]
    want = [schema["description"]] + [p["description"] for p in schema["items"]["properties"].values()
                                      if p.get("description")]
    flat = _squash(out)
    for text in want:
        head = _squash(text)[:60]
        assert head in flat, f"`kubectl explain` lacks the description {head!r}:\n{out}"


@pytest.mark.timeout(60)
@pytest.mark.parametrize("res", [DISK_LAYOUT, LVM_VOLUME_GROUP], ids=lambda r: r.plural)
def test_printer_columns_render(e2e: Any, real_only: None, scenario: Any, res: Any) -> None:
    """`kubectl get <kind>` shows every declared printer column as a header."""
    other = e2e.name("no-such-node")
    if res is DISK_LAYOUT:
        spec = yaml.safe_load('{nodeName: x, layoutNix: "{ disko.devices.disk.d = { device = \\"/dev/sdz\\"; }; }"}')
        spec["nodeName"] = other
    else:
        spec = {"type": "Local", "local": {"nodeName": other}, "actualVGNameOnTheNode": e2e.vg_name("cols"),
                "blockDeviceSelector": {"matchLabels": {"disklet.io/e2e": "none"}}}
    name = e2e.name(f"cols-{res.singular}")
    e2e.create(KINDS[res.kind], {"apiVersion": res.api_version, "kind": res.kind, "metadata": {"name": name},
                                 "spec": spec})
    out = e2e.kube.kubectl("get", res.plural, name).stdout
    header = out.splitlines()[0].split()
    for col in res.printer_columns:
        want = col["name"].upper().replace(" ", "")
        assert any(want == c.replace(" ", "") for c in header) or want in out.splitlines()[0].replace(" ", ""), \
            f"column {col['name']!r} missing from `kubectl get {res.plural}`:\n{out}"
