"""CRDs on a real API server: every CEL rule's fixture (create and update), explain, printer columns."""

from __future__ import annotations

import copy
import re
import time
from typing import Any

import pytest

from devkit.admission import load_crds, schema_of, validate_object
from disklet.api.resources import DISK_LAYOUT, LVM_VOLUME_GROUP
from e2e import harness as h
from tests.unit.test_cel_rules import CASES, MODEL_ONLY_REJECTS

KINDS = {"DiskLayout": h.DL, "LVMVolumeGroup": h.LVG, "LVMVolumeGroupSet": h.LVGSET}
CRDS = load_crds()


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


def server_message(kind: str, name: str, errors: list[str]) -> str:
    """The message kube-apiserver returns (422 Invalid) for these causes, in its own format."""
    body = errors[0] if len(errors) == 1 else "[" + ", ".join(errors) + "]"
    return f'{kind}.disklet.io "{name}" is invalid: {body}'


@pytest.mark.timeout(60)
@pytest.mark.parametrize("case_id,kind,old,new,expected", CASES, ids=[c[0] for c in CASES])
def test_cel_rule_on_the_server(e2e: Any, real_only: None, scenario: Any, case_id: str, kind: str,
                                old: dict[str, Any] | None, new: dict[str, Any], expected: str | None) -> None:
    """The same fixtures as tests/unit/test_cel_rules.py, judged by kube-apiserver itself, and the
    offline emulator (devkit.admission) must say exactly what the server says, word for word."""
    k = KINDS[kind]
    name = e2e.name(f"cel-{case_id}")[:63].rstrip("-")
    should_reject = expected is not None or case_id in MODEL_ONLY_REJECTS
    emulated = validate_object(CRDS[kind], _obj(e2e, kind, name, new),
                               _obj(e2e, kind, name, old) if old is not None else None)
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
        if expected is not None:
            assert expected in exc.message, f"{case_id}: rejected, but without {expected!r}: {exc}"
        if case_id not in MODEL_ONLY_REJECTS:
            assert exc.message == server_message(kind, name, emulated), \
                f"{case_id}: the offline emulator disagrees with the server\n  server:   {exc.message}\n  emulator: {emulated}"
        return
    assert not should_reject, f"{case_id}: the server accepted what it must reject ({expected or 'model-only rule'})"
    assert emulated == [], f"{case_id}: the server accepted, the offline emulator rejects: {emulated}"


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
        spec = {"nodeName": other, "layoutNix": (
            '{ disko.devices.disk.d = { type = "disk"; device = "/dev/sdz"; content = { type = "gpt"; '
            'partitions.p = { size = "100%"; content = { type = "filesystem"; format = "ext4"; '
            'mountpoint = "/srv/p"; }; }; }; }; }')}
    else:
        spec = {"type": "Local", "local": {"nodeName": other}, "actualVGNameOnTheNode": e2e.vg_name("cols"),
                "blockDeviceSelector": {"matchLabels": {"disklet.io/e2e": "none"}}}
    name = e2e.name(f"cols-{res.singular}")
    e2e.create(KINDS[res.kind], {"apiVersion": res.api_version, "kind": res.kind, "metadata": {"name": name},
                                 "spec": spec})
    def header(*extra: str) -> list[str]:
        return re.split(r"\s{2,}", e2e.kube.kubectl("get", res.plural, name, *extra).stdout.splitlines()[0].strip())

    default, wide = header(), header("-o", "wide")
    for col in res.printer_columns:
        want = col["name"].upper()
        # kubectl shows priority-0 columns by default and the rest only with -o wide.
        assert want in wide, f"column {col['name']!r} missing from `kubectl get {res.plural} -o wide`: {wide}"
        if col.get("priority", 0) == 0:
            assert want in default, f"column {col['name']!r} missing from `kubectl get {res.plural}`: {default}"
        else:
            assert want not in default, f"wide column {col['name']!r} shown by default: {default}"
