"""Property tests (hypothesis): generated LVMVolumeGroup / LVMVolumeGroupSet / BlockDevice objects,
valid and hostile, through the pydantic models, the offline admission emulator and the pure
handler logic.

- nothing crashes: the model raises only ValidationError, the emulator only returns messages (a
  CEL rule that errors instead of answering is a bug in our CRDs), the handlers' pure logic
  returns its usual results;
- every rejection is a clear message (says where and what, no Python object reprs);
- the emulator (what the API server admits) and the model (what the agent and operator accept)
  agree: an object the server admits but the agent refuses would fail forever on the node, one
  the agent accepts but the server refuses cannot be created.

Deterministic (derandomized) so CI is repeatable; run with ``--hypothesis-seed`` and
``HYPOTHESIS_PROFILE=deep`` locally to search further.
"""

from __future__ import annotations

import os
from typing import Any

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from devkit import strategies as gen
from devkit.admission import load_crds, schema_of, validate_object
from disklet.api.blockdevice import BlockDevice
from disklet.api.lvm import LVMVolumeGroup, LVMVolumeGroupSet, LVMVolumeGroupSetSpec

settings.register_profile("ci", max_examples=150, deadline=None, derandomize=True,
                          suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
settings.register_profile("deep", max_examples=5000, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

CRDS = {crd["spec"]["names"]["kind"]: crd for crd in load_crds().values()}


def model_verdict(model: type, obj: dict[str, Any]) -> list[str]:
    """The model's rejection messages ([] = accepted); anything but ValidationError propagates."""
    try:
        model.model_validate(obj)
    except ValidationError as exc:
        return [f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors()]
    return []


def emulator_verdict(obj: dict[str, Any], old: dict[str, Any] | None = None) -> list[str]:
    errors = validate_object(CRDS[obj["kind"]], obj, old)
    # Rules run unless a blocking schema error stopped them (as on the server); a rule that runs
    # must answer, never error (the server would show its internal error to the user).
    broken = [e for e in errors if "failed to evaluate" in e or "evaluation error" in e]
    assert not broken, f"a CEL rule errored instead of answering: {broken}"
    return errors


def assert_clear(messages: list[str]) -> None:
    for m in messages:
        assert m.strip(), "empty rejection message"
        assert "object at 0x" not in m and "Traceback" not in m, m


def unknown_fields(schema: dict[str, Any], value: Any, path: str = "") -> list[str]:
    """Fields the schema does not declare. kubectl asks for strict field validation by default
    (``--validate=strict``), so the API server refuses them (it would prune them otherwise; the
    emulator checks the schema's keywords only)."""
    if not isinstance(schema, dict) or schema.get("x-kubernetes-preserve-unknown-fields"):
        return []
    out: list[str] = []
    if isinstance(value, dict) and "properties" in schema and "additionalProperties" not in schema:
        for k, v in value.items():
            if k not in schema["properties"]:
                out.append(f"{path}.{k}")
            else:
                out += unknown_fields(schema["properties"][k], v, f"{path}.{k}")
    elif isinstance(value, dict) and isinstance(schema.get("additionalProperties"), dict):
        for k, v in value.items():
            out += unknown_fields(schema["additionalProperties"], v, f"{path}.{k}")
    elif isinstance(value, list) and isinstance(schema.get("items"), dict):
        for i, v in enumerate(value):
            out += unknown_fields(schema["items"], v, f"{path}[{i}]")
    return out


def prune_nulls(schema: dict[str, Any], value: Any) -> Any:
    """The API server drops ``null`` for fields that are not ``nullable`` before validating."""
    if isinstance(value, dict) and isinstance(schema, dict):
        props = schema.get("properties") or {}
        return {k: prune_nulls(props.get(k, {}), v) for k, v in value.items()
                if not (v is None and not props.get(k, {}).get("nullable"))}
    if isinstance(value, list) and isinstance(schema, dict) and isinstance(schema.get("items"), dict):
        return [prune_nulls(schema["items"], v) for v in value]
    return value


def duplicate_keys(schema: dict[str, Any], value: Any, path: str = "") -> list[str]:
    """``x-kubernetes-list-type: map`` lists with two items under one key: the server's "Duplicate value"."""
    if not isinstance(schema, dict):
        return []
    out: list[str] = []
    if isinstance(value, dict):
        for k, v in value.items():
            out += duplicate_keys((schema.get("properties") or {}).get(k, {}), v, f"{path}.{k}")
    elif isinstance(value, list):
        keys = schema.get("x-kubernetes-list-map-keys") if schema.get("x-kubernetes-list-type") == "map" else None
        seen: set[tuple[Any, ...]] = set()
        for i, v in enumerate(value):
            if keys and isinstance(v, dict):
                key = tuple(repr(v.get(k)) for k in keys)
                if key in seen:
                    out.append(f"{path}[{i}]: Duplicate value: {dict(zip(keys, key, strict=True))}")
                seen.add(key)
            out += duplicate_keys(schema.get("items") or {}, v, f"{path}[{i}]")
    return out


def assert_agree(obj: dict[str, Any], model: type) -> None:
    crd = CRDS[obj["kind"]]
    schema = schema_of(crd)
    by_model = model_verdict(model, obj)
    by_server = emulator_verdict(prune_nulls(schema, obj))
    by_server += [f"unknown field {f}" for f in unknown_fields(schema, obj) if not f.startswith(".metadata")]
    by_server += duplicate_keys(schema, obj)
    assert_clear(by_model)
    assert_clear(by_server)
    what = obj.get("spec", obj.get("status"))
    assert bool(by_model) == bool(by_server), (
        f"model and admission disagree on {what!r}:\n  model: {by_model}\n  admission: {by_server}")


@given(gen.lvg_objects())
def test_lvmvolumegroup_model_and_admission_agree(obj):
    assert_agree(obj, LVMVolumeGroup)


@given(gen.lvgset_objects())
def test_lvmvolumegroupset_model_and_admission_agree(obj):
    assert_agree(obj, LVMVolumeGroupSet)


def test_found_by_fuzzing_duplicate_thin_pool_names():
    """A deep run found it: thinPools is keyed by name on the server; the model took a name twice."""
    obj = {"apiVersion": "disklet.io/v1alpha1", "kind": "LVMVolumeGroupSet", "metadata": {"name": "fleet"},
           "spec": {"nodeSelector": {}, "lvmVolumeGroupTemplate": {
               "actualVGNameOnTheNode": "vg_data", "blockDeviceSelector": {},
               "thinPools": [{"name": "tp", "size": "10Gi"}, {"name": "tp", "size": "10Gi"}]}}}
    assert_agree(obj, LVMVolumeGroupSet)
    assert any("thinPools names must be unique" in m for m in model_verdict(LVMVolumeGroupSet, obj))


@given(gen.block_device_objects())
def test_blockdevice_model_and_admission_agree(obj):
    assert_agree(obj, BlockDevice)


@given(gen.lvg_objects(), gen.lvg_objects())
def test_lvmvolumegroup_updates_never_crash_the_emulator(old, new):
    # The server stores only what it admitted: an update's old object is one that passed create
    # (an inadmissible one, e.g. fileDevices: [null], makes transition rules meaningless).
    assume(not validate_object(CRDS[old["kind"]], old))
    new["metadata"] = old["metadata"]
    assert_clear(emulator_verdict(new, old))


# -- the pure handler logic on whatever the API hands it ---------------------------------------

@given(gen.lvg_objects())
def test_agent_validation_of_admitted_objects(obj):
    from disklet.lvm.validation import validate_lvg

    if model_verdict(LVMVolumeGroup, obj):
        return
    spec = LVMVolumeGroup.model_validate(obj).spec
    problems = validate_lvg(obj["metadata"]["name"], spec, gen.BASE)
    assert_clear(problems)
    for fd in spec.file_devices or ():
        fd.bytes()  # sizes the model admitted are exact byte counts
        fd.file_path(obj["metadata"]["name"])


@given(gen.lvgset_objects(), st.lists(st.tuples(gen.node_names, st.dictionaries(
    st.sampled_from(["storage", "disklet.io/type", "k"]), st.sampled_from(["true", "", "disk"]), max_size=2)),
    max_size=4, unique_by=lambda t: t[0]), st.lists(gen.lvg_objects(), max_size=2))
def test_operator_set_planner_on_any_children(obj, nodes, children):
    from disklet_operator.logic.lvgset_plan import Child, SetRef, plan

    if model_verdict(LVMVolumeGroupSet, obj):
        return
    spec = LVMVolumeGroupSetSpec.model_validate(obj["spec"])
    ref = SetRef(name=obj["metadata"]["name"], uid="uid-1", generation=1)
    owned = [Child.from_body({**c, "metadata": {**c["metadata"], "ownerReferences": [
        {"apiVersion": "disklet.io/v1alpha1", "kind": "LVMVolumeGroupSet", "name": ref.name, "uid": ref.uid,
         "controller": True}]}}) for c in children]
    result = plan(ref, spec, nodes, owned)
    assert_clear([p.message for p in result.problems])
    if result.validation_failed:
        assert not result.creates and not result.updates  # never half-applied


@given(st.lists(gen.block_device_objects(), max_size=6, unique_by=lambda o: o["metadata"]["name"]))
def test_block_device_sync_never_touches_other_nodes(existing):
    from disklet_agent.logic.blockdevices import plan_block_device_sync

    plan = plan_block_device_sync([], existing, "node-a")
    by_name = {o["metadata"]["name"]: o for o in existing}
    for name in [*plan.deletes, *(u.name for u in plan.updates)]:
        obj = by_name[name]
        labels = obj["metadata"].get("labels") or {}
        assert labels.get("disklet.io/node") == "node-a", f"would write {name} of another node: {obj}"
        status_node = (obj.get("status") or {}).get("nodeName") if isinstance(obj.get("status"), dict) else None
        assert status_node in (None, "node-a"), f"would write {name} of node {status_node}"


def _verdicts(strategy: Any, model: type) -> set[bool]:
    seen: set[bool] = set()

    @settings(max_examples=200, derandomize=True, database=None, deadline=None,
              suppress_health_check=list(HealthCheck))
    @given(strategy)
    def collect(obj: dict[str, Any]) -> None:
        seen.add(bool(model_verdict(model, obj)))

    collect()
    return seen


def test_the_strategies_reach_both_verdicts():
    """The generators are not degenerate: each kind is sometimes admitted and sometimes refused."""
    for strategy, model in ((gen.lvg_objects(), LVMVolumeGroup), (gen.lvgset_objects(), LVMVolumeGroupSet),
                            (gen.block_device_objects(), BlockDevice)):
        seen = _verdicts(strategy, model)
        assert seen == {True, False}, f"{model.__name__}: only {'refused' if True in seen else 'admitted'} objects"


if __name__ == "__main__":  # pragma: no cover
    pytest.main([__file__, "-q"])
