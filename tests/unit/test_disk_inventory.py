"""BlockDevice inventory and disk selectors on a recorded server: NVMe, SATA, SAS, multipath, ZFS, LVM, USB.

The recording (``disk_recordings/server-mixed.*``) is ``lsblk -J -b -p -o <the agent's columns>`` and the
``/dev/disk/by-id`` listing of one machine with: a NixOS system NVMe (``/boot``, ``/``), two empty
1.92 TB NVMe of one model, an empty 960 GB Intel NVMe, a SATA HDD with ext4 on the whole disk mounted
at /data, a SATA SSD that is a PV of VG ``data``, one SAS LUN seen through two paths (multipath
``mpatha``), a SAS HDD partitioned for ZFS pool ``tank``, and a USB stick.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from disklet_agent.host.lsblk import parse_by_id_listing, parse_lsblk_json
from disklet_agent.logic.blockdevices import PvFact, desired_block_devices, disk_facts, listed_nodes
from disklet_agent.logic.topology import BlockTopology

from disklet.api.blockdevice import BlockDeviceStatus
from disklet.diskselect import (
    SELECTOR_AMBIGUOUS,
    SELECTOR_MATCHED_NOTHING,
    Candidate,
    DiskFacts,
    compile_selector,
    resolve_one,
)

REC = Path(__file__).parent / "disk_recordings"
LABEL_VALUE = __import__("re").compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")


def topology() -> BlockTopology:
    roots = parse_lsblk_json((REC / "server-mixed.lsblk.json").read_text())
    links = parse_by_id_listing((REC / "server-mixed.by-id.txt").read_text())
    for root in roots:
        for node in root.walk():
            node.by_id = links.get(node.kname, [])
    return BlockTopology(roots=roots, swaps=[])


PVS = {"/dev/sdb": PvFact("/dev/sdb", "pvU1", "data", "vgU1")}


@pytest.fixture(scope="module")
def inventory() -> dict[str, BlockDeviceStatus]:
    return {d.status.path: d.status for d in desired_block_devices(topology(), PVS, "node-a", "mid")}


def test_inventory_facts_of_each_transport(inventory):
    nvme = inventory["/dev/nvme1n1"]
    assert (nvme.transport, nvme.model, nvme.serial, nvme.wwn, nvme.vendor) == (
        "nvme", "SAMSUNG MZQL21T9HCJR-00A07", "S64GNE0R600123", "eui.36344730526055870025384500000001", None)
    assert (nvme.logical_sector_size, nvme.physical_sector_size, nvme.rota, nvme.removable, nvme.read_only) == (
        4096, 4096, False, False, False)
    assert nvme.by_id == ["nvme-SAMSUNG_MZQL21T9HCJR-00A07_S64GNE0R600123", "nvme-eui.36344730526055870025384500000001"]
    hdd = inventory["/dev/sda"]
    assert (hdd.transport, hdd.vendor, hdd.rota, hdd.logical_sector_size, hdd.physical_sector_size) == (
        "sata", "ATA", True, 512, 4096)
    assert hdd.by_id == ["ata-WDC_WD80EFZZ-68BTXN0_WD-CA1234AB", "wwn-0x5000cca0bec12345"]
    sas = inventory["/dev/sde"]
    assert (sas.transport, sas.vendor, sas.partition_table_type, sas.zfs_pool) == ("sas", "HGST", "gpt", "tank")
    assert sas.partitions == ["/dev/sde1", "/dev/sde9"]
    usb = inventory["/dev/sdf"]
    assert (usb.transport, usb.removable, usb.hot_plug) == ("usb", True, True)
    assert inventory["/dev/mapper/mpatha"].by_id == ["dm-name-mpatha", "dm-uuid-mpath-35000c500a1b2c3d4",
                                                     "scsi-35000c500a1b2c3d4", "wwn-0x5000c500a1b2c3d4"]


@pytest.mark.parametrize(("path", "code", "words"), [
    ("/dev/nvme0n1", "SystemDisk", "/dev/nvme0n1p2 at /"),
    ("/dev/nvme0n1p1", "Mounted", "/boot"),
    ("/dev/sda", "Mounted", "/data"),
    ("/dev/sdb", "LVMPhysicalVolume", "volume group data"),
    ("/dev/sdc", "MultipathMember", "/dev/mapper/mpatha"),
    ("/dev/sdd", "MultipathMember", "/dev/mapper/mpatha"),
    ("/dev/mapper/mpatha", "UnsupportedType", "mpath"),
    ("/dev/sde", "ZFSMember", "pool tank"),
    ("/dev/sde1", "ZFSMember", "pool tank"),
    ("/dev/sde9", "TooSmall", "1Gi"),
    ("/dev/sdf", "HasPartitionTable", "dos"),
])
def test_reason_codes(inventory, path, code, words):
    status = inventory[path]
    assert status.consumable is False
    assert status.consumable_reason_code == code
    assert words in (status.consumable_reason or "")


def test_empty_disks_are_consumable_without_reason(inventory):
    for path in ("/dev/nvme1n1", "/dev/nvme2n1", "/dev/nvme3n1"):
        assert inventory[path].consumable is True
        assert inventory[path].consumable_reason_code is None and inventory[path].consumable_reason is None


def test_selected_fields_are_valid_labels():
    for d in desired_block_devices(topology(), PVS, "node-a", None):
        for key, value in d.labels.items():
            assert LABEL_VALUE.match(value) and len(value) <= 63, (key, value)
        if d.status.path == "/dev/nvme1n1":
            assert d.labels["disklet.io/transport"] == "nvme"
            assert d.labels["disklet.io/model"] == "SAMSUNG_MZQL21T9HCJR-00A07"
        if d.status.path == "/dev/sda":
            assert d.labels["disklet.io/reason"] == "Mounted" and d.labels["disklet.io/vendor"] == "ATA"


def candidates() -> list[Candidate]:
    """What a DiskLayout selector on this node chooses from: whole disks, with their consumability."""
    out = []
    inv = {d.status.path: d.status for d in desired_block_devices(topology(), PVS, "node-a", None)}
    for node in listed_nodes(topology()):
        if node.type == "disk":
            st = inv[node.path]
            out.append(Candidate(disk_facts(node), st.consumable_reason_code, st.consumable_reason))
    return out


def test_selector_resolves_the_one_empty_intel_nvme():
    res = resolve_one(compile_selector('disk.transport == "nvme" && disk.model.startsWith("INTEL")', "m"),
                      candidates())
    assert res.ok and res.chosen is not None and res.chosen.facts.path == "/dev/nvme3n1"
    assert any(line.startswith("/dev/nvme3n1") and line.endswith(": chosen") for line in res.lines)


def test_selector_by_size_is_ambiguous_and_lists_both_candidates():
    res = resolve_one(compile_selector('disk.transport == "nvme" && disk.size >= 1Ti', "spec.x.match"), candidates())
    assert res.code == SELECTOR_AMBIGUOUS and res.chosen is None
    msg = res.message()
    assert "/dev/nvme1n1" in msg and "/dev/nvme2n1" in msg
    # the system NVMe is listed as excluded, with its reason
    assert any("nvme0n1" in line and "does not match" in line for line in res.lines)


def test_selector_by_serial_resolves_through_by_id():
    res = resolve_one(compile_selector(
        'disk.byId.exists(l, l.endsWith("_S64GNE0R600124")) && disk.size >= 1.5T', "m"), candidates())
    assert res.chosen is not None and res.chosen.facts.path == "/dev/nvme2n1"


@pytest.mark.parametrize("expr", [
    'disk.rotational',                            # the HDDs are mounted, PV, multipath, ZFS
    'disk.transport == "sas"',                    # multipath legs and the ZFS disk
    'disk.path == "/dev/nvme0n1"',               # the system disk
    'disk.transport == "usb"',                    # removable and partitioned
    'disk.model == "Micron_5300_MTFDDAK960TDS"',  # a PV
])
def test_a_disk_in_use_is_never_selected(expr):
    res = resolve_one(compile_selector(expr, "m"), candidates())
    assert res.code == SELECTOR_MATCHED_NOTHING and res.chosen is None
    assert any("not consumable" in line for line in res.lines)


def test_block_device_status_round_trips_into_the_same_facts(inventory):
    """kctl diff selects from BlockDevice objects: the same facts as the agent's live scan."""
    for node in listed_nodes(topology()):
        if node.type != "disk":
            continue
        wire = json.loads(json.dumps(inventory[node.path].to_wire()))
        from_api = DiskFacts.from_block_device_status(wire)
        live = disk_facts(node)
        assert from_api.size == live.size, node.path
        assert from_api == live, node.path


# ------------------------------------------------------------------ LVMVolumeGroup blockDeviceSelector.match


def _entries():
    """(name, labels, path, status) as the agent's BlockDevice index holds them."""
    return [(d.name, d.labels, d.status.path, json.loads(json.dumps(d.status.to_wire())))
            for d in desired_block_devices(topology(), PVS, "node-a", None)]


def test_lvg_match_selects_by_facts_and_ands_with_labels():
    from disklet_agent.logic.lvg import selected_block_devices

    from disklet.api.common import BlockDeviceSelector

    sel = BlockDeviceSelector.model_validate({"match": 'disk.transport == "nvme" && disk.size >= 1Ti'})
    assert sorted(p for _, p in selected_block_devices(sel, _entries())) == ["/dev/nvme1n1", "/dev/nvme2n1"]
    both = BlockDeviceSelector.model_validate({"match": 'disk.transport == "nvme" && disk.size >= 1Ti',
                                               "matchLabels": {"disklet.io/serial": "S64GNE0R600124"}})
    assert [p for _, p in selected_block_devices(both, _entries())] == ["/dev/nvme2n1"]
    # a label-only selector still works on entries without a status (older index values)
    labels_only = BlockDeviceSelector.model_validate({"matchLabels": {"disklet.io/transport": "nvme"}})
    assert "/dev/nvme3n1" in [p for _, p in selected_block_devices(labels_only, [e[:3] for e in _entries()])]


def test_lvg_match_is_type_checked_by_the_model():
    from pydantic import ValidationError

    from disklet.api.lvm import LVMVolumeGroupSpec

    with pytest.raises(ValidationError, match="undeclared reference to 'disk.tranport'"):
        LVMVolumeGroupSpec.model_validate({"local": {"nodeName": "n"}, "actualVGNameOnTheNode": "vg",
                                           "blockDeviceSelector": {"match": 'disk.tranport == "nvme"'}})


def test_overlapping_selections_contest_only_consumable_devices_and_name_the_other_vg():
    from disklet_agent.logic.lvg import contested_devices

    from disklet.api.common import BlockDeviceSelector

    nvme = BlockDeviceSelector.model_validate({"match": 'disk.transport == "nvme"'})
    big = BlockDeviceSelector.model_validate({"match": "disk.size >= 1Ti"})
    sata = BlockDeviceSelector.model_validate({"match": 'disk.transport == "sata"'})
    got = contested_devices(nvme, _entries(), [("vg-big", big), ("vg-sata", sata), ("vg-none", None)])
    # the two empty 1.92 TB NVMe are wanted by both; the system NVMe is not consumable, so not contested
    assert got == {"/dev/nvme1n1": ["vg-big"], "/dev/nvme2n1": ["vg-big"]}
    assert contested_devices(nvme, _entries(), [("vg-sata", sata)]) == {}


# ------------------------------------------------------------------ kctl diff's prediction from BlockDevices


def _layout(*disks: dict):
    from disklet.api.disklayout import StructuredLayout

    part = {"name": "p", "size": "100%", "content": {"type": "filesystem", "format": "xfs", "mountpoint": "/srv/x"}}
    return StructuredLayout.model_validate({"disks": [{**d, "gpt": {"partitions": [part]}} for d in disks]})


def _bd_objects():
    return [json.loads(json.dumps(d.to_object())) for d in desired_block_devices(topology(), PVS, "node-a", None)]


def test_inventory_resolution_pins_first_and_excludes_disks_of_other_entries():
    from disklet.layout.selectors import inventory_resolution

    big = 'disk.transport == "nvme" && disk.size >= 1Ti'
    # a device entry naming nvme1n1 by its by-id link takes it: the selector's only choice is nvme2n1
    ok, lines = inventory_resolution(_layout(
        {"name": "a", "device": "/dev/disk/by-id/nvme-eui.36344730526055870025384500000001"},
        {"name": "b", "match": big}), _bd_objects(), [])
    assert ok, lines
    assert any(ln.startswith("disk b: match") and "resolves to /dev/nvme2n1" in ln for ln in lines), lines
    assert any("/dev/nvme1n1" in ln and "already named by disk a" in ln for ln in lines), lines
    # pinned: the identity decides, the selector is not evaluated (even if it now matches another disk)
    pin = [{"device": "/dev/disk/by-id/nvme-eui.36344730526055870025384500000002", "disk": "b", "match": big,
            "wwn": "eui.36344730526055870025384500000002", "serial": "S64GNE0R600124"}]
    ok, lines = inventory_resolution(_layout({"name": "b", "match": 'disk.model.startsWith("INTEL")'}),
                                     _bd_objects(), pin)
    assert ok and lines == ["disk b: pinned to /dev/nvme2n1 (wwn eui.36344730526055870025384500000002, chosen at "
                            "the first apply; the selector is not evaluated again)"], lines
    gone = [{**pin[0], "wwn": "eui.ffff", "serial": "GONE"}]
    ok, lines = inventory_resolution(_layout({"name": "b", "match": big}), _bd_objects(), gone)
    assert not ok and "REFUSED: selected_disk_missing" in lines[0]


def test_a_set_template_carries_its_match_to_every_child():
    from disklet.api.lvm import LVMVolumeGroupSetSpec

    spec = LVMVolumeGroupSetSpec.model_validate({
        "nodeSelector": {"matchLabels": {"pool": "nvme"}},
        "lvmVolumeGroupTemplate": {"actualVGNameOnTheNode": "vg-fast", "blockDeviceSelector": {
            "matchLabels": {"disklet.io/consumable": "true"}, "match": 'disk.transport == "nvme" && disk.size >= 1Ti'}}})
    child = spec.lvm_volume_group_template.child_spec("n1").to_wire()
    assert child["local"] == {"nodeName": "n1"}
    assert child["blockDeviceSelector"] == {"matchLabels": {"disklet.io/consumable": "true"},
                                            "match": 'disk.transport == "nvme" && disk.size >= 1Ti'}
