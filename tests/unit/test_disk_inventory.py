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
