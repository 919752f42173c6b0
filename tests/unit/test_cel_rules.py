"""Every CEL rule of the generated CRDs, accepted and rejected, on create and on update.

Rules are read out of crds/*.yaml and evaluated with Google's CEL runtime (cel-expr-python)
through devkit.admission, which applies them the way kube-apiserver does (defaults,
per-node binding, oldSelf correlation through list-map keys). The pydantic models must agree on
every create case they can judge (transition rules need the old object: CRD only).
"""

from __future__ import annotations

import copy
from typing import Any

import pytest
from pydantic import ValidationError

from devkit.admission import iter_rules, load_crds, schema_of, validate_object
from disklet.api import DiskLayoutSpec, LVMVolumeGroupSetSpec, LVMVolumeGroupSpec

CRDS = load_crds()
MODELS = {"DiskLayout": DiskLayoutSpec, "LVMVolumeGroup": LVMVolumeGroupSpec, "LVMVolumeGroupSet": LVMVolumeGroupSetSpec}
BASE = "/var/lib/disklet/file-devices"


def obj(kind: str, spec: dict[str, Any]) -> dict[str, Any]:
    return {"apiVersion": "disklet.io/v1alpha1", "kind": kind, "metadata": {"name": "x"}, "spec": spec}


def fs(mountpoint="/var/lib/data1", **extra):
    return {"type": "filesystem", "format": "ext4", "mountpoint": mountpoint, **extra}


def layout(content=None, device="/dev/nvme1n1", **extra):
    return {"nodeName": "node-1", "diskLayout": {"disks": [{"name": "data1", "device": device, "gpt": {
        "partitions": [{"name": "p0", "size": "100%", "content": content or fs()}]}}], **extra}}


RAW = "{ disko.devices.disk.d1 = { type = \"disk\"; device = \"/dev/sdb\"; }; }"


def fd(name="a", size="1Gi", directory=BASE):
    return {"name": name, "directory": directory, "size": size}


def lvg(**over):
    spec = {"type": "Local", "local": {"nodeName": "node-1"}, "actualVGNameOnTheNode": "vg0", "fileDevices": [fd()]}
    spec.update(over)
    return {k: v for k, v in spec.items() if v is not None}


def lvgset(template_over=None, **over):
    tpl = {"type": "Local", "actualVGNameOnTheNode": "vg0", "fileDevices": [fd()]}
    tpl.update(template_over or {})
    spec = {"nodeSelector": {"matchLabels": {"disklet.io/storage": "true"}}, "strategy": "PerNode",
            "lvmVolumeGroupTemplate": {k: v for k, v in tpl.items() if v is not None}}
    spec.update(over)
    return spec


# (id, kind, old spec or None, new spec, expected error fragment or None)
CASES: list[tuple[str, str, dict | None, dict, str | None]] = [
    # ---------------------------------------------------------------- DiskLayout
    ("dl-structured-ok", "DiskLayout", None, layout(), None),
    ("dl-raw-ok", "DiskLayout", None, {"nodeName": "node-1", "layoutNix": RAW}, None),
    ("dl-no-source", "DiskLayout", None, {"nodeName": "node-1"}, "set exactly one layout source"),
    ("dl-two-sources", "DiskLayout", None, {**layout(), "layoutNix": RAW}, "set exactly one layout source"),
    ("dl-nix-file", "DiskLayout", None, {"nodeName": "node-1", "layoutNixFile": "./a.nix"}, "resolved by kctl"),
    ("dl-node-immutable", "DiskLayout", layout(), {**layout(), "nodeName": "node-2"}, "nodeName is immutable"),
    ("dl-node-same-ok", "DiskLayout", layout(), {**layout(), "timeoutSeconds": 600}, None),
    ("dl-timeout-0", "DiskLayout", None, {**layout(), "timeoutSeconds": 0}, "minimum"),
    ("dl-timeout-3601", "DiskLayout", None, {**layout(), "timeoutSeconds": 3601}, "maximum"),
    ("dl-timeout-3600-ok", "DiskLayout", None, {**layout(), "timeoutSeconds": 3600}, None),
    ("dl-fs-needs-mountpoint", "DiskLayout", None, layout({"type": "filesystem", "format": "ext4"}),
     "needs format and mountpoint"),
    ("dl-format-on-pv", "DiskLayout", None,
     layout({"type": "lvm_pv", "vg": "vg0", "format": "ext4"}, lvmVolumeGroups=[{"name": "vg0"}]),
     "belong to type: filesystem only"),
    ("dl-pv-needs-vg", "DiskLayout", None, layout({"type": "lvm_pv"}), "needs vg"),
    ("dl-vg-on-fs", "DiskLayout", None, layout(fs(vg="vg0")), "vg belongs to type: lvm_pv only"),
    ("dl-zfs-needs-pool", "DiskLayout", None, layout({"type": "zfs"}), "needs pool"),
    ("dl-pool-on-fs", "DiskLayout", None, layout(fs(pool="tank")), "pool belongs to type: zfs only"),
    ("dl-pv-ok", "DiskLayout", None, layout({"type": "lvm_pv", "vg": "vg0"}, lvmVolumeGroups=[{"name": "vg0"}]), None),
    ("dl-zfs-ok", "DiskLayout", None, layout({"type": "zfs", "pool": "tank"}, zfsPools=[{"name": "tank"}]), None),
    ("dl-mount-dotdot", "DiskLayout", None, layout(fs("/var/lib/../etc")), "must not contain . or .. segments"),
    ("dl-mount-dot", "DiskLayout", None, layout(fs("/var/./lib")), "must not contain . or .. segments"),
    ("dl-mount-dotfile-ok", "DiskLayout", None, layout(fs("/var/lib/.data")), None),
    ("dl-mount-root", "DiskLayout", None, layout(fs("/")), "must not be /, /boot or under /nix"),
    ("dl-mount-boot", "DiskLayout", None, layout(fs("/boot")), "must not be /, /boot or under /nix"),
    ("dl-mount-nix", "DiskLayout", None, layout(fs("/nix/store")), "must not be /, /boot or under /nix"),
    ("dl-mount-nixish-ok", "DiskLayout", None, layout(fs("/nixdata")), None),
    ("dl-device-dotdot", "DiskLayout", None, layout(device="/dev/../etc/passwd"), "must not contain .."),
    ("dl-device-pattern", "DiskLayout", None, layout(device='/dev/x"; y = 1'), "does not match"),
    ("dl-bad-format", "DiskLayout", None, layout(fs(format="ntfs")), "is not one of"),
    ("dl-unknown-key", "DiskLayout", None, layout(fs(mountOptionz=["x"])), None),  # pruned by the server; model rejects
    # ---------------------------------------------------------------- LVMVolumeGroup
    ("lvg-file-only-ok", "LVMVolumeGroup", None, lvg(), None),
    ("lvg-selector-only-ok", "LVMVolumeGroup", None, lvg(fileDevices=None, blockDeviceSelector={"matchLabels": {"a": "b"}}), None),
    ("lvg-no-local", "LVMVolumeGroup", None, lvg(local=None), "local (with nodeName) is required"),
    ("lvg-no-source", "LVMVolumeGroup", None, lvg(fileDevices=None), "set blockDeviceSelector, a non-empty fileDevices"),
    ("lvg-empty-files", "LVMVolumeGroup", None, lvg(fileDevices=[]), "set blockDeviceSelector, a non-empty fileDevices"),
    ("lvg-type-immutable", "LVMVolumeGroup", lvg(), lvg(type="Shared"), "type is immutable"),
    ("lvg-node-immutable", "LVMVolumeGroup", lvg(), lvg(local={"nodeName": "node-2"}), "local.nodeName is immutable"),
    ("lvg-vg-immutable", "LVMVolumeGroup", lvg(), lvg(actualVGNameOnTheNode="vg1"), "actualVGNameOnTheNode is immutable"),
    ("lvg-size-min", "LVMVolumeGroup", None, lvg(fileDevices=[fd(size="900Mi")]), "at least 1Gi"),
    ("lvg-size-1g-decimal", "LVMVolumeGroup", None, lvg(fileDevices=[fd(size="1G")]), "does not match"),
    ("lvg-size-fraction", "LVMVolumeGroup", None, lvg(fileDevices=[fd(size="1.5Gi")]), "does not match"),
    ("lvg-size-1024mi-ok", "LVMVolumeGroup", None, lvg(fileDevices=[fd(size="1024Mi")]), None),
    ("lvg-dir-dotdot", "LVMVolumeGroup", None, lvg(fileDevices=[fd(directory=BASE + "/../x")]), "must not contain . or .."),
    ("lvg-dir-relative", "LVMVolumeGroup", None, lvg(fileDevices=[fd(directory="var/lib")]), "does not match"),
    ("lvg-dir-immutable", "LVMVolumeGroup", lvg(), lvg(fileDevices=[fd(directory=BASE + "/b")]),
     "directory of an existing file device is immutable"),
    ("lvg-shrink", "LVMVolumeGroup", lvg(fileDevices=[fd(size="2Gi")]), lvg(fileDevices=[fd(size="1Gi")]), "may only grow"),
    ("lvg-shrink-mi", "LVMVolumeGroup", lvg(fileDevices=[fd(size="1Gi")]), lvg(fileDevices=[fd(size="1023Mi")]), "may only grow"),
    ("lvg-same-size-other-unit-ok", "LVMVolumeGroup", lvg(fileDevices=[fd(size="1Gi")]), lvg(fileDevices=[fd(size="1024Mi")]), None),
    ("lvg-grow-ok", "LVMVolumeGroup", lvg(), lvg(fileDevices=[fd(size="2Gi")]), None),
    ("lvg-append-ok", "LVMVolumeGroup", lvg(), lvg(fileDevices=[fd(), fd("b")]), None),
    ("lvg-remove", "LVMVolumeGroup", lvg(fileDevices=[fd(), fd("b")]), lvg(fileDevices=[fd("b")]), "cannot be removed"),
    ("lvg-remove-all", "LVMVolumeGroup", lvg(), lvg(fileDevices=None, blockDeviceSelector={}), "cannot be removed"),
    ("lvg-reorder-ok", "LVMVolumeGroup", lvg(fileDevices=[fd(), fd("b")]), lvg(fileDevices=[fd("b"), fd()]), None),
    ("lvg-new-entry-checked", "LVMVolumeGroup", lvg(), lvg(fileDevices=[fd(), fd("b", size="512Mi")]), "at least 1Gi"),
    ("lvg-33-entries", "LVMVolumeGroup", None, lvg(fileDevices=[fd(f"e{i}") for i in range(33)]), "is too long"),
    ("lvg-dup-names", "LVMVolumeGroup", None, lvg(fileDevices=[fd(), fd()]), None),  # server: duplicate map key; model rejects
    ("lvg-thin-ok", "LVMVolumeGroup", None, lvg(thinPools=[{"name": "tp", "size": "100%"}]), None),
    ("lvg-thin-bad-percent", "LVMVolumeGroup", None, lvg(thinPools=[{"name": "tp", "size": "101%"}]), "does not match"),
    # ---------------------------------------------------------------- LVMVolumeGroupSet
    ("set-ok", "LVMVolumeGroupSet", None, lvgset(), None),
    ("set-strategy-immutable", "LVMVolumeGroupSet", lvgset(), lvgset(strategy="Other"), "strategy is immutable"),
    ("set-type-immutable", "LVMVolumeGroupSet", lvgset(), lvgset({"type": "Shared"}), "type is immutable"),
    ("set-vg-immutable", "LVMVolumeGroupSet", lvgset(), lvgset({"actualVGNameOnTheNode": "vg1"}), "children cannot rename"),
    ("set-no-source", "LVMVolumeGroupSet", None, lvgset({"fileDevices": None}), "set blockDeviceSelector, a non-empty fileDevices"),
    ("set-remove", "LVMVolumeGroupSet", lvgset({"fileDevices": [fd(), fd("b")]}), lvgset({"fileDevices": [fd()]}), "cannot be removed"),
    ("set-dir-immutable", "LVMVolumeGroupSet", lvgset(), lvgset({"fileDevices": [fd(directory=BASE + "/z")]}), "immutable"),
    ("set-rollout-ok", "LVMVolumeGroupSet", None, lvgset(rollout={"maxUnavailable": "25%", "canary": 1, "paused": True}), None),
    ("set-rollout-count", "LVMVolumeGroupSet", None, lvgset(rollout={"maxUnavailable": 3}), None),
    ("set-rollout-bad-percent", "LVMVolumeGroupSet", None, lvgset(rollout={"maxUnavailable": "150%"}),
     "maxUnavailable is a count"),
    ("set-rollout-negative", "LVMVolumeGroupSet", None, lvgset(rollout={"maxUnavailable": -1}), "maxUnavailable is a count"),
    ("set-shrink", "LVMVolumeGroupSet", lvgset({"fileDevices": [fd(size="3Gi")]}), lvgset(), "may only grow"),
    ("set-size-min", "LVMVolumeGroupSet", None, lvgset({"fileDevices": [fd(size="100Mi")]}), "at least 1Gi"),
    ("set-dir-dots", "LVMVolumeGroupSet", None, lvgset({"fileDevices": [fd(directory=BASE + "/./x")]}), "must not contain"),
    ("set-append-grow-ok", "LVMVolumeGroupSet", lvgset(), lvgset({"fileDevices": [fd(size="2Gi"), fd("b")]}), None),
]

# Cases where the server prunes/keys differently from the model (documented, not disagreements).
MODEL_ONLY_REJECTS = {"dl-unknown-key", "lvg-dup-names"}
CRD_ONLY = {"dl-nix-file"}  # the model accepts layoutNixFile: kctl resolves it before sending


@pytest.mark.parametrize("case_id,kind,old,new,expected", CASES, ids=[c[0] for c in CASES])
def test_rule(case_id, kind, old, new, expected):
    crd = CRDS[kind]
    errors = validate_object(crd, obj(kind, new), obj(kind, old) if old is not None else None)
    if case_id in MODEL_ONLY_REJECTS:
        pass  # checked against the model below
    elif expected is None:
        assert errors == [], errors
    else:
        assert any(expected in e for e in errors), f"expected {expected!r} in {errors}"
    if old is None and case_id not in CRD_ONLY:
        model = MODELS[kind]
        should_reject = expected is not None or case_id in MODEL_ONLY_REJECTS
        if should_reject:
            with pytest.raises(ValidationError):
                model.model_validate(copy.deepcopy(new))
        else:
            model.model_validate(copy.deepcopy(new))


def test_every_rule_has_a_rejecting_case():
    """No CEL rule without a fixture that makes it fire."""
    fired: set[str] = set()
    for _case_id, kind, old, new, expected in CASES:
        if expected is None:
            continue
        fired.update(validate_object(CRDS[kind], obj(kind, new), obj(kind, old) if old is not None else None))
    for kind, crd in CRDS.items():
        for ref in iter_rules(schema_of(crd)):
            assert any(ref.message in e for e in fired), f"{kind} {ref.path}: no case rejects {ref.message!r}"


def test_rules_compile_and_stay_within_length_bounds():
    """Every string and list a rule touches is bounded (keeps the API server's cost estimate low)."""
    for kind, crd in CRDS.items():
        schema = schema_of(crd)

        def walk(node, path, inside_rule=False, kind=kind):
            has_rules = bool(node.get("x-kubernetes-validations"))
            if node.get("type") == "string" and (has_rules or inside_rule) and "enum" not in node:
                assert "maxLength" in node, f"{kind} {path}: string used by a rule without maxLength"
            if node.get("type") == "array" and (has_rules or inside_rule):
                assert "maxItems" in node, f"{kind} {path}: list used by a rule without maxItems"
            for k, sub in (node.get("properties") or {}).items():
                walk(sub, f"{path}.{k}", inside_rule or has_rules, kind)
            if isinstance(node.get("items"), dict):
                walk(node["items"], f"{path}[]", inside_rule or has_rules, kind)

        if "spec" in schema["properties"]:
            walk(schema["properties"]["spec"], "$.spec")
