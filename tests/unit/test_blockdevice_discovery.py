"""Pure BlockDevice discovery: which devices, names, consumability, labels, sync plans."""

from __future__ import annotations

import re
from datetime import UTC, datetime

import pytest
from disklet_agent.logic.blockdevices import (
    PvFact,
    consumable_reason,
    desired_block_devices,
    plan_block_device_sync,
    sanitize_label_value,
)
from disklet_agent.logic.lvg import (
    merge_discovered,
    needs_reconcile,
    selected_block_devices,
    status_merge_patch,
    with_operator_conditions,
)
from disklet_agent.logic.topology import BlockNode, BlockTopology

from disklet.api.common import LabelSelector
from disklet.api.lvm import LVMVolumeGroupSpec, LVMVolumeGroupStatus
from disklet.kube.lease import lease_object, micro_time

GIB = 1024 ** 3
LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")


def node(path: str, type_: str = "disk", size: int = 10 * GIB, **kw) -> BlockNode:
    return BlockNode(path=path, kname=path, name=path, type=type_, size=size, **kw)


def topo(*roots: BlockNode, swaps: list[str] | None = None) -> BlockTopology:
    return BlockTopology(roots=list(roots), swaps=swaps or [])


def by_path(desired):
    return {d.status.path: d for d in desired}


def test_loop_and_dm_children_are_not_block_devices_and_partitions_are():
    t = topo(node("/dev/loop0", "loop"), node("/dev/sda", serial="A", children=[
        node("/dev/sda1", "part", partuuid="u1", children=[node("/dev/dm-0", "lvm")])]), node("/dev/sr0", "rom"))
    d = by_path(desired_block_devices(t, {}, "n1", MACHINE_ID))
    assert set(d) == {"/dev/sda", "/dev/sda1", "/dev/sr0"}
    assert d["/dev/sr0"].status.consumable is False
    assert d["/dev/sda"].status.machine_id == APP_SPECIFIC


MACHINE_ID = "3d1219c7c4c5404aaa1f6d2a48adfda4\n"
APP_SPECIFIC = "eb4cc67fb4ea4749ad70c1e990bae5c3"
"""``systemd-id128 machine-id --app-specific=5e2a7c1d9b4f4e0a8c6d3f1b2a9e7c40`` on a machine whose
/etc/machine-id is MACHINE_ID (systemd 252)."""


def test_the_machine_id_itself_is_never_published():
    from disklet_agent.logic.blockdevices import app_specific_machine_id

    assert app_specific_machine_id(MACHINE_ID) == APP_SPECIFIC
    d = desired_block_devices(topo(node("/dev/sda", serial="A")), {}, "n1", MACHINE_ID)
    text = d[0].status.model_dump_json()
    assert MACHINE_ID.strip() not in text and APP_SPECIFIC in text
    for bad in (None, "", "not-hex", "3d1219c7", "zz" * 16):
        assert app_specific_machine_id(bad) is None


@pytest.mark.parametrize(("kw", "pv", "swaps", "expect"), [
    ({}, None, [], None),
    ({"type_": "rom"}, None, [], "rom"),
    ({"mountpoints": ["/data"]}, None, [], "mounted at /data"),
    ({"fstype": "xfs"}, None, [], "xfs signature"),
    ({"pttype": "gpt"}, None, [], "gpt partition table"),
    ({"holders": ["/dev/dm-3"]}, None, [], "held by /dev/dm-3"),
    ({"ro": True}, None, [], "read-only"),
    ({"hotplug": True}, None, [], "hot-pluggable"),
    ({"size": GIB - 1}, None, [], "smaller than 1Gi"),
    ({}, None, ["/dev/x"], "active swap"),
    ({"probe_error": "blkid: EPERM"}, None, [], "state unknown"),
    ({"fstype": "LVM2_member"}, PvFact("/dev/x", "PV", "vg9", "VGU"), [], "PV of volume group vg9"),
    ({"fstype": "LVM2_member"}, PvFact("/dev/x", "PV"), [], None),  # orphan PV: can join a VG
    ({"fstype": "LVM2_member"}, None, [], "LVM2_member signature"),  # LVM cannot see it: unknown owner
])
def test_consumable_rules(kw, pv, swaps, expect):
    reason = consumable_reason(node("/dev/x", **kw), pv, swaps)
    if expect is None:
        assert reason is None
    else:
        assert reason is not None and expect in reason


def test_children_make_a_disk_not_consumable():
    assert "partitions" in consumable_reason(node("/dev/x", children=[node("/dev/x1", "part")]), None)


def test_names_are_stable_across_renames_and_distinct_for_shared_identity():
    a = desired_block_devices(topo(node("/dev/sdb", wwn="0xAA", children=[node("/dev/sdb1", "part", partuuid="P1")])),
                              {}, "n1", None)
    b = desired_block_devices(topo(node("/dev/sdc", wwn="0xAA", children=[node("/dev/sdc1", "part", partuuid="P1")])),
                              {}, "n1", None)
    assert [d.name for d in a] == [d.name for d in b]
    other_node = desired_block_devices(topo(node("/dev/sdb", wwn="0xAA")), {}, "n2", None)
    assert other_node[0].name not in {d.name for d in a}
    # two multipath legs with one WWN: two objects, not one overwritten twice
    legs = desired_block_devices(topo(node("/dev/sdb", wwn="0xBB"), node("/dev/sdc", wwn="0xBB")), {}, "n1", None)
    assert len({d.name for d in legs}) == 2
    # no identity at all: the path names it
    p1 = desired_block_devices(topo(node("/dev/vda")), {}, "n1", None)
    p2 = desired_block_devices(topo(node("/dev/vdb")), {}, "n1", None)
    assert p1[0].name != p2[0].name


def test_labels_mirror_facts_and_are_valid():
    weird = node("/dev/nvme0n1", model="Samsung SSD 980 PRO 2TB / weird:chars", serial="S" * 80, wwn="eui.0025")
    d = desired_block_devices(topo(weird), {}, "n1", None)[0]
    assert all(LABEL_VALUE.match(v) and len(v) <= 63 for v in d.labels.values())
    assert d.labels["disklet.io/model"] == "Samsung_SSD_980_PRO_2TB_weird_chars"
    assert d.labels["disklet.io/name"] == "nvme0n1" and d.labels["disklet.io/consumable"] == "true"
    assert len(d.labels["disklet.io/serial"]) == 63
    assert "disklet.io/fstype" not in d.labels
    assert LabelSelector.model_validate({"matchLabels": {"disklet.io/type": "disk"}}).matches(d.labels)


@pytest.mark.parametrize("raw", ["ok", "a b", "-x-", "ü", "x" * 100, "_a_", "a" * 63, "."])
def test_sanitize_label_value(raw):
    v = sanitize_label_value(raw)
    assert LABEL_VALUE.match(v) and len(v) <= 63


def test_sanitize_keeps_long_values_distinct():
    assert sanitize_label_value("x" * 70 + "a") != sanitize_label_value("x" * 70 + "b")


def _existing(desired):
    return [{"metadata": {"name": d.name, "labels": dict(d.labels)}, "status": d.status.to_wire()} for d in desired]


def test_sync_plan_is_empty_when_nothing_changed_and_precise_otherwise():
    t = topo(node("/dev/sdb", serial="B"), node("/dev/sdc", serial="C"))
    desired = desired_block_devices(t, {}, "n1", None)
    assert plan_block_device_sync(desired, _existing(desired), "n1").empty
    # sdb becomes a PV; sdc is gone; sdd is new
    t2 = topo(node("/dev/sdb", serial="B"), node("/dev/sdd", serial="D"))
    desired2 = desired_block_devices(t2, {"/dev/sdb": PvFact("/dev/sdb", "PV", "vg0", "VGU")}, "n1", None)
    plan = plan_block_device_sync(desired2, _existing(desired), "n1")
    assert [c.status.path for c in plan.creates] == ["/dev/sdd"]
    assert [n for n in plan.deletes] == [by_path(desired)["/dev/sdc"].name]
    (upd,) = plan.updates
    assert upd.labels == {"disklet.io/consumable": "false", "disklet.io/vg": "vg0", "disklet.io/reason": "LVMPhysicalVolume"}
    assert upd.status["pvUUID"] == "PV" and upd.status["consumable"] is False


def test_sync_plan_removes_stale_facts_and_never_touches_other_nodes():
    old = desired_block_devices(topo(node("/dev/sdb", serial="B", fstype="xfs")), {}, "n1", None)
    new = desired_block_devices(topo(node("/dev/sdb", serial="B")), {}, "n1", None)
    existing = _existing(old) + [{"metadata": {"name": "dev-x", "labels": {"disklet.io/node": "n2"}},
                                  "status": {"nodeName": "n2"}},
                                 {"metadata": {"name": "dev-y", "labels": {"disklet.io/node": "n1"}},
                                  "status": {"nodeName": "n2"}}]
    plan = plan_block_device_sync(new, existing, "n1")
    assert plan.deletes == []
    (upd,) = plan.updates
    assert upd.labels["disklet.io/fstype"] is None and upd.status["fsType"] is None


# ----------------------------------------------------------------------------- LVG helpers


def _spec(**kw):
    base = {"type": "Local", "local": {"nodeName": "n1"}, "actualVGNameOnTheNode": "vg0",
            "fileDevices": [{"name": "a", "directory": "/var/lib/disklet/file-devices", "size": "1Gi"}]}
    return LVMVolumeGroupSpec.model_validate({**base, **kw})


def _ready_status(**kw):
    base = {"phase": "Ready", "observedGeneration": 1, "conditions": [
        {"type": "VGConfigurationApplied", "status": "True", "reason": "Applied", "lastTransitionTime": "t"},
        {"type": "VGReady", "status": "True", "reason": "Applied", "lastTransitionTime": "t"}],
        "nodes": [{"name": "n1", "fileDevices": [{"name": "a", "filePath": "/f", "loopDevice": "/dev/loop1"}],
                   "devices": [{"blockDevice": "dev-1", "path": "/dev/sdb"}]}]}
    return LVMVolumeGroupStatus.model_validate({**base, **kw})


def test_needs_reconcile():
    spec = _spec()
    assert needs_reconcile(spec, None, 1, [], "n1") == "no status yet"
    assert needs_reconcile(spec, _ready_status(), 1, [("dev-1", "/dev/sdb")], "n1") is None
    assert "generation 2" in needs_reconcile(spec, _ready_status(), 2, [], "n1")
    assert "dev-2" in needs_reconcile(spec, _ready_status(), 1, [("dev-2", "/dev/sdc")], "n1")
    spec2 = _spec(fileDevices=[{"name": "a", "directory": "/var/lib/disklet/file-devices", "size": "1Gi"},
                               {"name": "b", "directory": "/var/lib/disklet/file-devices", "size": "1Gi"}])
    assert "b" in needs_reconcile(spec2, _ready_status(), 1, [], "n1")
    assert needs_reconcile(spec, _ready_status(phase="NotReady"), 1, [], "n1") == "phase is NotReady"
    spec3 = _spec(thinPools=[{"name": "tp", "size": "50%"}])
    assert needs_reconcile(spec3, _ready_status(), 1, [], "n1") == "a thin pool is missing"


def test_selected_block_devices():
    sel = LabelSelector.model_validate({"matchLabels": {"disklet.io/consumable": "true"}})
    devs = [("b", {"disklet.io/consumable": "true"}, "/dev/sdb"), ("a", {"disklet.io/consumable": "false"}, "/dev/sda")]
    assert selected_block_devices(sel, devs) == [("b", "/dev/sdb")]
    assert selected_block_devices(None, devs) == []


def test_status_merging_keeps_operator_conditions_and_patches_minimally():
    server = _ready_status()
    server.conditions = [*server.conditions, server.conditions[0].model_copy(update={"type": "AgentReady"})]
    engine = _ready_status(phase="NotReady")  # the engine's view lacks the operator's condition
    merged = with_operator_conditions(engine, server)
    assert [c.type for c in merged.conditions] == ["VGConfigurationApplied", "VGReady", "AgentReady"]
    assert status_merge_patch(server.to_wire(), merged.to_wire()) == {"phase": "NotReady"}
    assert status_merge_patch(merged.to_wire(), merged.to_wire()) is None
    discovered = LVMVolumeGroupStatus(vg_size="2Gi")
    out = merge_discovered(server, discovered)
    assert out.phase == "Ready" and out.vg_size == "2Gi" and out.nodes is None
    patch = status_merge_patch(server.to_wire(), out.to_wire())
    assert patch == {"vgSize": "2Gi", "nodes": None}
    assert status_merge_patch({"phase": "Ready", "foreignKey": 1}, {"phase": "Ready"}) is None


def test_lease_body_microtime():
    t = datetime(2024, 5, 6, 7, 8, 9, 12, tzinfo=UTC)
    assert micro_time(t) == "2024-05-06T07:08:09.000012Z"
    body = lease_object("n1", "ns", t)
    assert body["metadata"]["name"] == "disklet-agent-n1" and body["spec"]["holderIdentity"] == "n1"
    assert body["spec"]["leaseDurationSeconds"] == 60 and body["spec"]["renewTime"] == micro_time(t)
