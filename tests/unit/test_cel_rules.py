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


def layout(content=None, device="/dev/nvme1n1", match=None, **extra):
    disk = {"name": "data1", **({"device": device} if device is not None else {}),
            **({"match": match} if match is not None else {})}
    return {"nodeName": "node-1", "diskLayout": {"disks": [{**disk, "gpt": {
        "partitions": [{"name": "p0", "size": "100%", "content": content or fs()}]}}], **extra}}


def layout_size(size):
    spec = layout()
    parts = spec["diskLayout"]["disks"][0]["gpt"]["partitions"]
    parts.insert(0, {"name": "first", "size": size, "content": fs("/srv/first")})
    return spec


RAW = ('{ disko.devices.disk.d1 = { type = "disk"; device = "/dev/sdb"; content = { type = "gpt"; partitions.p = { '
       'size = "100%"; content = { type = "filesystem"; format = "ext4"; mountpoint = "/srv/p"; }; }; }; }; }')


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
    ("dl-raw-hook", "DiskLayout", None, {"nodeName": "node-1", "layoutNix": RAW.replace('"/dev/sdb";', '"/dev/sdb"; postCreateHook = "x";')},
     "must not use disko hooks"),
    ("dl-raw-extra-args", "DiskLayout", None, {"nodeName": "node-1", "layoutNix": RAW.replace('"/dev/sdb";', '"/dev/sdb"; extraArgs = [ ];')},
     "must not use disko hooks"),
    ("dl-node-immutable", "DiskLayout", layout(), {**layout(), "nodeName": "node-2"}, "nodeName is immutable"),
    ("dl-node-same-ok", "DiskLayout", layout(), {**layout(), "timeoutSeconds": 600}, None),
    ("dl-timeout-0", "DiskLayout", None, {**layout(), "timeoutSeconds": 0}, "should be greater than or equal to 1"),
    ("dl-timeout-3601", "DiskLayout", None, {**layout(), "timeoutSeconds": 3601}, "should be less than or equal to 3600"),
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
    ("dl-mount-dotdot", "DiskLayout", None, layout(fs("/var/lib/../etc")), "should match"),
    ("dl-mount-dot", "DiskLayout", None, layout(fs("/var/./lib")), "should match"),
    ("dl-mount-dotfile", "DiskLayout", None, layout(fs("/var/lib/.data")), "should match"),
    ("dl-mount-subshell", "DiskLayout", None, layout(fs("/data/$(touch /tmp/pwned)")), "should match"),
    ("dl-mount-quote", "DiskLayout", None, layout(fs('/data/x";reboot;"')), "should match"),
    ("dl-mount-space", "DiskLayout", None, layout(fs("/data/a b")), "should match"),
    ("dl-mount-root", "DiskLayout", None, layout(fs("/")), "should match"),
    ("dl-mount-boot", "DiskLayout", None, layout(fs("/boot")), "mountpoint is a system path"),
    ("dl-mount-boot-efi", "DiskLayout", None, layout(fs("/boot/efi")), "mountpoint is a system path"),
    ("dl-mount-nix", "DiskLayout", None, layout(fs("/nix/store")), "mountpoint is a system path"),
    ("dl-mount-etc", "DiskLayout", None, layout(fs("/etc")), "mountpoint is a system path"),
    ("dl-mount-var", "DiskLayout", None, layout(fs("/var")), "mountpoint is a system path"),
    ("dl-mount-kubelet", "DiskLayout", None, layout(fs("/var/lib/kubelet/pods")), "mountpoint is a system path"),
    ("dl-mount-agent", "DiskLayout", None, layout(fs("/etc/disklet/disk")), "mountpoint is a system path"),
    ("dl-mount-kcore-ok", "DiskLayout", None, layout(fs("/var/lib/kcore/volumes1")), None),
    ("dl-mount-nixish-ok", "DiskLayout", None, layout(fs("/nixdata")), None),
    ("dl-device-dotdot", "DiskLayout", None, layout(device="/dev/../etc/passwd"), "must not contain .."),
    ("dl-device-pattern", "DiskLayout", None, layout(device='/dev/x"; y = 1'), "should match"),
    ("dl-match-ok", "DiskLayout", None, layout(device=None, match='disk.transport == "nvme" && disk.size >= 1Ti'), None),
    ("dl-match-and-device", "DiskLayout", None, layout(match="disk.size > 0"), "set exactly one of device (a path) and match"),
    ("dl-neither-match-nor-device", "DiskLayout", None, layout(device=None), "set exactly one of device (a path) and match"),
    ("dl-device-placeholder", "DiskLayout", None, layout(device="/dev/disk/by-disklet-match/data1"),
     "reserved for match"),
    ("dl-bad-format", "DiskLayout", None, layout(fs(format="ntfs")), 'Unsupported value: "ntfs"'),
    ("dl-unknown-key", "DiskLayout", None, layout(fs(mountOptionz=["x"])), None),
    # the server cannot type-check a selector's disk variables; the model (kctl, the operator) does
    ("dl-match-typo", "DiskLayout", None, layout(device=None, match="disk.sise >= 1Ti"), None),  # pruned by the server; model rejects
    # ---------------------------------------------------------------- LVMVolumeGroup
    ("lvg-file-only-ok", "LVMVolumeGroup", None, lvg(), None),
    ("lvg-selector-only-ok", "LVMVolumeGroup", None, lvg(fileDevices=None, blockDeviceSelector={"matchLabels": {"a": "b"}}), None),
    ("lvg-no-local", "LVMVolumeGroup", None, lvg(local=None), "local (with nodeName) is required"),
    ("lvg-no-source", "LVMVolumeGroup", None, lvg(fileDevices=None), "set blockDeviceSelector, a non-empty fileDevices"),
    ("lvg-empty-files", "LVMVolumeGroup", None, lvg(fileDevices=[]), "set blockDeviceSelector, a non-empty fileDevices"),
    ("lvg-type-immutable", "LVMVolumeGroup", lvg(), lvg(type="Shared"), 'Unsupported value: "Shared"'),
    ("lvg-node-immutable", "LVMVolumeGroup", lvg(), lvg(local={"nodeName": "node-2"}), "local.nodeName is immutable"),
    ("lvg-vg-immutable", "LVMVolumeGroup", lvg(), lvg(actualVGNameOnTheNode="vg1"), "actualVGNameOnTheNode is immutable"),
    ("lvg-size-min", "LVMVolumeGroup", None, lvg(fileDevices=[fd(size="900Mi")]), "at least 1Gi"),
    ("lvg-size-1g-decimal", "LVMVolumeGroup", None, lvg(fileDevices=[fd(size="1G")]), "should match"),
    ("lvg-size-1g-hint", "LVMVolumeGroup", None, lvg(fileDevices=[fd(size="1G")]),
     "1G is a decimal size (1G is 10^9 bytes): use Mi, Gi, Ti or Pi; did you mean 1Gi?"),
    ("lvg-size-5tb-hint", "LVMVolumeGroup", None, lvg(fileDevices=[fd(size="5TB")]), "did you mean 5Ti?"),
    ("lvg-dir-newline", "LVMVolumeGroup", None, lvg(fileDevices=[fd(directory=BASE + "/a\nb")]), "should match"),
    ("lvg-dir-tab", "LVMVolumeGroup", None, lvg(fileDevices=[fd(directory=BASE + "/a\tb")]), "should match"),
    ("lvg-size-fraction", "LVMVolumeGroup", None, lvg(fileDevices=[fd(size="1.5Gi")]), "should match"),
    ("lvg-size-1024mi-ok", "LVMVolumeGroup", None, lvg(fileDevices=[fd(size="1024Mi")]), None),
    ("lvg-dir-dotdot", "LVMVolumeGroup", None, lvg(fileDevices=[fd(directory=BASE + "/../x")]), "must not contain . or .."),
    ("lvg-dir-relative", "LVMVolumeGroup", None, lvg(fileDevices=[fd(directory="var/lib")]), "should match"),
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
    ("lvg-33-entries", "LVMVolumeGroup", None, lvg(fileDevices=[fd(f"e{i}") for i in range(33)]), "must have at most 32 items"),
    ("lvg-dup-names", "LVMVolumeGroup", None, lvg(fileDevices=[fd(), fd()]), 'Duplicate value: {"name":"a"}'),
    ("lvg-thin-ok", "LVMVolumeGroup", None, lvg(thinPools=[{"name": "tp", "size": "100%"}]), None),
    ("lvg-thin-bad-percent", "LVMVolumeGroup", None, lvg(thinPools=[{"name": "tp", "size": "101%"}]), "should match"),
    # ---------------------------------------------------------------- LVMVolumeGroupSet
    ("set-ok", "LVMVolumeGroupSet", None, lvgset(), None),
    ("set-strategy-immutable", "LVMVolumeGroupSet", lvgset(), lvgset(strategy="Other"), 'Unsupported value: "Other"'),
    ("set-type-immutable", "LVMVolumeGroupSet", lvgset(), lvgset({"type": "Shared"}), 'Unsupported value: "Shared"'),
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
    # ---------------------------------------------------------------- bounded sizes (1Ei), whole-byte thin pools
    ("lvg-size-1ei-ok", "LVMVolumeGroup", None, lvg(fileDevices=[fd(size="1024Pi")]), None),
    ("lvg-size-above-1ei", "LVMVolumeGroup", None, lvg(fileDevices=[fd(size="1025Pi")]), "at most 1Ei"),
    ("lvg-size-huge", "LVMVolumeGroup", None, lvg(fileDevices=[fd(size="99999999999999999999999999Pi")]), "at most 1Ei"),
    ("lvg-thin-bytes-ok", "LVMVolumeGroup", None, lvg(thinPools=[{"name": "tp", "size": "1536Mi"}]), None),
    ("lvg-thin-1ei-ok", "LVMVolumeGroup", None, lvg(thinPools=[{"name": "tp", "size": "1Ei"}]), None),
    ("lvg-thin-zero", "LVMVolumeGroup", None, lvg(thinPools=[{"name": "tp", "size": "00"}]), "from 1 byte to 1Ei"),
    ("lvg-thin-fraction", "LVMVolumeGroup", None, lvg(thinPools=[{"name": "tp", "size": "1.5Gi"}]), "should match"),
    ("lvg-thin-above-1ei", "LVMVolumeGroup", None, lvg(thinPools=[{"name": "tp", "size": "2Ei"}]), "from 1 byte to 1Ei"),
    ("lvg-thin-huge", "LVMVolumeGroup", None, lvg(thinPools=[{"name": "tp", "size": "99999999999999999999999999"}]),
     "from 1 byte to 1Ei"),
    ("set-size-above-1ei", "LVMVolumeGroupSet", None, lvgset({"fileDevices": [fd(size="2048Pi")]}), "at most 1Ei"),
    ("set-thin-zero", "LVMVolumeGroupSet", None, lvgset({"thinPools": [{"name": "tp", "size": "0"}]}), "from 1 byte to 1Ei"),
    # ---------------------------------------------------------------- the two size grammars (docs/kctl.md#sizes)
    # LVM sizes are binary Kubernetes quantities: a decimal letter is refused with the binary spelling.
    ("lvg-thin-1g-decimal", "LVMVolumeGroup", None, lvg(thinPools=[{"name": "tp", "size": "1G"}]), "should match"),
    ("lvg-thin-1g-hint", "LVMVolumeGroup", None, lvg(thinPools=[{"name": "tp", "size": "1G"}]),
     "1G is a decimal size (1G is 10^9 bytes): use Mi, Gi, Ti or Pi; did you mean 1Gi?"),
    ("lvg-thin-500m-hint", "LVMVolumeGroup", None, lvg(thinPools=[{"name": "tp", "size": "500M"}]), "did you mean 500Mi?"),
    ("set-thin-2t-hint", "LVMVolumeGroupSet", None, lvgset({"thinPools": [{"name": "tp", "size": "2T"}]}),
     "did you mean 2Ti?"),
    ("lvg-thin-bytes-bare-ok", "LVMVolumeGroup", None, lvg(thinPools=[{"name": "tp", "size": "1073741824"}]), None),
    # DiskLayout sizes are disko's (binary letters without i): a Kubernetes binary unit gets the disko spelling.
    ("dl-size-1gi", "DiskLayout", None, layout_size("1Gi"), "should match"),
    ("dl-size-1gi-hint", "DiskLayout", None, layout_size("1Gi"),
     "1Gi is a Kubernetes unit: DiskLayout sizes are disko's, whose letters are already binary (1G = 1 GiB); write 1G"),
    ("dl-size-512mi-hint", "DiskLayout", None, layout_size("512Mi"), "write 512M"),
    ("dl-size-1g-ok", "DiskLayout", None, layout_size("1G"), None),
]

# Cases where the server prunes/keys differently from the model (documented, not disagreements).
MODEL_ONLY_REJECTS = {"dl-unknown-key"}  # the server: strict decoding error (kubectl's default), not a rule
# The server accepts these (it cannot type-check a disk selector); the model, kctl and the operator's
# pre-flight refuse them.
SERVER_ACCEPTS_MODEL_REJECTS = {"dl-match-typo"}
UNREACHABLE_RULES = {
    # Transition rules on single-value enums: changing the value fails the enum first, and after
    # such a (blocking) schema error the server runs no CEL rule at all. They guard the day a
    # second value is added.
    ("LVMVolumeGroup", "$.spec.type"), ("LVMVolumeGroupSet", "$.spec.strategy"),
    ("LVMVolumeGroupSet", "$.spec.lvmVolumeGroupTemplate.type"),
}
CRD_ONLY = {"dl-nix-file"}  # the model accepts layoutNixFile: kctl resolves it before sending


@pytest.mark.parametrize("case_id,kind,old,new,expected", CASES, ids=[c[0] for c in CASES])
def test_rule(case_id, kind, old, new, expected):
    crd = CRDS[kind]
    errors = validate_object(crd, obj(kind, new), obj(kind, old) if old is not None else None)
    if case_id in MODEL_ONLY_REJECTS:
        pass  # checked against the model below
    elif case_id in SERVER_ACCEPTS_MODEL_REJECTS:
        assert errors == [], errors  # the CRD admits it; the model below refuses it
    elif expected is None:
        assert errors == [], errors
    else:
        assert any(expected in e for e in errors), f"expected {expected!r} in {errors}"
    if old is None and case_id not in CRD_ONLY:
        model = MODELS[kind]
        should_reject = expected is not None or case_id in MODEL_ONLY_REJECTS | SERVER_ACCEPTS_MODEL_REJECTS
        if should_reject:
            with pytest.raises(ValidationError):
                model.model_validate(copy.deepcopy(new))
        else:
            model.model_validate(copy.deepcopy(new))


def _named_lvg(name: str, entry: str) -> dict[str, Any]:
    return {**obj("LVMVolumeGroup", lvg(fileDevices=[fd(entry)])), "metadata": {"name": name}}


@pytest.mark.parametrize(("lvg_len", "entry_len", "fits"), [(179, 63, True), (180, 63, False),
                                                            (200, 42, True), (200, 43, False)])
def test_composed_backing_file_name_length_is_checked_at_admission(lvg_len, entry_len, fits):
    """disklet-<lvg>.<entry>.img ≤ 255 bytes, by an object-level rule (it reads metadata.name); the
    model of the whole object agrees."""
    from disklet.api.lvm import LVMVolumeGroup
    name, entry = "l" * lvg_len, "e" * entry_len
    errors = validate_object(CRDS["LVMVolumeGroup"], _named_lvg(name, entry))
    assert (not any("longer than 255 bytes" in e for e in errors)) == fits, errors
    assert len(f"disklet-{name}.{entry}.img") <= 255 or not fits
    if fits:
        LVMVolumeGroup.model_validate(_named_lvg(name, entry))
    else:
        with pytest.raises(ValidationError, match="longer than 255 bytes"):
            LVMVolumeGroup.model_validate(_named_lvg(name, entry))


def test_every_rule_has_a_rejecting_case():
    """No CEL rule without a fixture that makes it fire."""
    fired: set[str] = set(validate_object(CRDS["LVMVolumeGroup"], _named_lvg("l" * 200, "e" * 63)))
    for _case_id, kind, old, new, expected in CASES:
        if expected is None:
            continue
        fired.update(validate_object(CRDS[kind], obj(kind, new), obj(kind, old) if old is not None else None))
    for kind, crd in CRDS.items():
        for ref in iter_rules(schema_of(crd)):
            if (kind, ref.path) in UNREACHABLE_RULES:
                assert not any(ref.message in e for e in fired), f"{kind} {ref.path} fires: drop it from UNREACHABLE_RULES"
                continue
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
