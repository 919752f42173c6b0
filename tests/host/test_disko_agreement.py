"""disklet's checks and disko's own evaluation agree on layouts that mount nothing, on disks without
content and on dangling LVM/ZFS references (docs/layouts.md#checked-against-disko-itself).

Each case runs disklet's pre-flight and disko's real evaluator (nix-instantiate over disko's types,
devkit/disko) on the same layout. Where disko evaluates a layout whose script could not work (a VG
with no PV, a PV of no VG), disklet is stricter on purpose; those cases say so.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from devkit import disko
from disklet.api.disklayout import DiskLayoutSpec, Phase
from disklet.layout import preflight
from tests.host.disko_cases import disko_sources  # noqa: F401 - fixture


def _disklet(spec: dict[str, Any]) -> tuple[bool, str, str]:
    """(accepted, message, the body disko is given)."""
    pf = preflight(DiskLayoutSpec.model_validate({"nodeName": "n", **spec}))
    if "layoutNix" in spec:
        body = spec["layoutNix"]
    elif pf.artifact:
        body = pf.artifact
    else:  # refused before rendering: give disko the same layout as disklet would render and close it
        from disklet.layout.mountpaths import close_pool_roots
        from disklet.layout.nixliteral import disko_devices_file
        from disklet.layout.render import devices_value
        from disklet.layout.samples import structured
        body = disko_devices_file("", close_pool_roots(devices_value(structured(spec["diskLayout"]))),
                                  sort_keys=False)
    return pf.phase == Phase.PENDING, pf.message, body


def _disko(body: str, tmp_path: Path) -> tuple[bool, str]:
    try:
        disko.evaluate_text(body, "/", workdir=tmp_path)
    except disko.EvalError as exc:
        return False, str(exc)
    return True, ""


def pv(vg: str, name: str = "pv") -> dict[str, Any]:
    return {"name": name, "size": "100%", "content": {"type": "lvm_pv", "vg": vg}}


FS = {"name": "fs", "size": "1G", "content": {"type": "filesystem", "format": "ext4", "mountpoint": "/srv/fs"}}


def disk(name: str, device: str, *parts: dict[str, Any]) -> dict[str, Any]:
    return {"name": name, "device": device, "gpt": {"partitions": list(parts)}}


def raw(*entries: str) -> dict[str, str]:
    return {"layoutNix": "{ disko.devices = { " + " ".join(entries) + " }; }"}


def rdisk(name: str, *parts: str) -> str:
    return (f'disk.{name} = {{ type = "disk"; device = "/dev/{name}"; content = {{ type = "gpt"; '
            + " ".join(parts) + " }; };")


RPV = 'partitions.pv = { size = "100%"; content = { type = "lvm_pv"; vg = "data"; }; };'
RFS = 'partitions.fs = { size = "1G"; content = { type = "filesystem"; format = "ext4"; mountpoint = "/srv/a"; }; };'
RFS_UNMOUNTED = 'partitions.fs = { size = "1G"; content = { type = "filesystem"; format = "ext4"; }; };'
VG = 'lvm_vg.data = { type = "lvm_vg"; };'
VG_MOUNTED_LV = ('lvm_vg.data = { type = "lvm_vg"; lvs.l = { size = "10G"; content = { type = "filesystem"; '
                 'format = "ext4"; mountpoint = "/srv/lv"; }; }; };')

AGREE = [
    ("structured-all-lvm-pv", {"diskLayout": {"lvmVolumeGroups": [{"name": "data"}],
                                              "disks": [disk("d1", "/dev/sdb", pv("data"))]}}, False),
    ("structured-two-disks-all-lvm-pv", {"diskLayout": {"lvmVolumeGroups": [{"name": "data"}], "disks": [
        disk("d1", "/dev/sdb", pv("data")), disk("d2", "/dev/sdc", pv("data"))]}}, False),
    ("structured-lvm-pv-plus-filesystem", {"diskLayout": {"lvmVolumeGroups": [{"name": "data"}],
                                                          "disks": [disk("d1", "/dev/sdb", FS, pv("data"))]}}, True),
    ("structured-lvm-pv-plus-zfs-pool", {"diskLayout": {
        "lvmVolumeGroups": [{"name": "data"}], "zfsPools": [{"name": "tank", "mountpoint": "/srv/tank"}],
        "disks": [disk("d1", "/dev/sdb", pv("data")),
                  disk("d2", "/dev/sdc", {"name": "z", "size": "100%", "content": {"type": "zfs", "pool": "tank"}})]}},
     True),
    # a pool without a mountpoint is created with mountpoint=none: it mounts nothing, and disko then has
    # no file system to mount
    ("structured-lvm-pv-plus-unmounted-zfs-pool", {"diskLayout": {
        "lvmVolumeGroups": [{"name": "data"}], "zfsPools": [{"name": "tank"}],
        "disks": [disk("d1", "/dev/sdb", pv("data")),
                  disk("d2", "/dev/sdc", {"name": "z", "size": "100%", "content": {"type": "zfs", "pool": "tank"}})]}},
     False),
    ("raw-pv-and-vg-nothing-mounted", raw(rdisk("sdb", RPV), VG), False),
    ("raw-only-an-unmounted-filesystem", raw(rdisk("sdb", RFS_UNMOUNTED)), False),
    ("raw-pv-unmounted-fs-and-vg", raw(rdisk("sdb", RPV, RFS_UNMOUNTED), VG), False),
    ("raw-pv-and-vg-with-a-mounted-lv", raw(rdisk("sdb", RPV), VG_MOUNTED_LV), True),
    ("raw-pv-vg-and-mounted-partition", raw(rdisk("sdb", RPV, RFS), VG), True),
]


@pytest.mark.parametrize(("spec", "accepted"), [(s, a) for _, s, a in AGREE], ids=[n for n, _, _ in AGREE])
def test_disklet_and_disko_agree(spec: dict[str, Any], accepted: bool, tmp_path: Path) -> None:
    ours, message, body = _disklet(spec)
    theirs, why = _disko(body, tmp_path)
    assert (ours, theirs) == (accepted, accepted), f"disklet: {ours} {message}\ndisko: {theirs} {why[-400:]}"
    if not accepted:
        assert "fileSystems" in why, why[-400:]  # disko's reason: no mounted file system
        assert "mounts no file system" in message and "add a" in message and "filesystem" in message, message


STRICTER = [  # disko evaluates these; the script it builds would not work, so disklet refuses them
    ("raw-vg-without-pv", raw(rdisk("sdb", RFS), VG_MOUNTED_LV), "has no lvm_pv member"),
    ("raw-pv-of-an-undefined-vg", raw(rdisk("sdb", RPV, RFS)), "names a VG that disko.devices.lvm_vg does not define"),
    ("raw-zfs-of-an-undefined-pool", raw(rdisk("sdb", RFS, 'partitions.z = { size = "100%"; content = '
                                                          '{ type = "zfs"; pool = "tank"; }; };')),
     "names a pool that disko.devices.zpool does not define"),
    ("raw-lv-bigger-than-the-vg", raw(rdisk("sdb", RPV, RFS), 'lvm_vg.data = { type = "lvm_vg"; lvs.l.size = "200%"; };'),
     "an LV size must match"),
]


@pytest.mark.parametrize(("spec", "says"), [(s, m) for _, s, m in STRICTER], ids=[n for n, _, _ in STRICTER])
def test_disklet_is_stricter_where_disko_evaluates_a_broken_script(spec: dict[str, Any], says: str,
                                                                  tmp_path: Path) -> None:
    ours, message, body = _disklet(spec)
    theirs, why = _disko(body, tmp_path)
    assert theirs, why[-400:]
    assert not ours and says in message, message


BARE = [
    ("raw-bare-disk-beside-a-good-one", raw('disk.sdb = { type = "disk"; device = "/dev/sdb"; };', rdisk("sdc", RFS)),
     "disko.devices.disk.sdb has no content"),
    ("raw-only-a-bare-disk", raw('disk.sdb = { type = "disk"; device = "/dev/sdb"; };'),
     "disko.devices.disk.sdb has no content"),
    ("raw-content-null", raw('disk.sdb = { type = "disk"; device = "/dev/sdb"; content = null; };', rdisk("sdc", RFS)),
     "disko.devices.disk.sdb has no content"),
    ("raw-bare-disk-and-a-pool", raw('disk.sdb = { type = "disk"; device = "/dev/sdb"; };',
                                     rdisk("sdc", 'partitions.z = { size = "100%"; content = { type = "zfs"; '
                                                  'pool = "tank"; }; };'),
                                     'zpool.tank = { type = "zpool"; mountpoint = "/srv/tank"; };'),
     "disko.devices.disk.sdb has no content"),
]


@pytest.mark.parametrize(("spec", "says"), [(s, m) for _, s, m in BARE], ids=[n for n, _, _ in BARE])
def test_a_disk_without_content_is_refused_by_both(spec: dict[str, Any], says: str, tmp_path: Path) -> None:
    ours, message, body = _disklet(spec)
    theirs, why = _disko(body, tmp_path)
    assert (ours, theirs) == (False, False), f"disklet: {ours} {message}\ndisko: {theirs} {why[-400:]}"
    assert "content._create" in why and "null" in why, why[-400:]  # disko's reason: the disk's content is null
    assert says in message and 'add content = { type = "gpt"' in message, message
    assert "mounts no file system" not in message, message  # one clear reason, not a second one it implies


def test_a_structured_disk_without_partitions_is_refused_by_both(tmp_path: Path) -> None:
    """The structured equivalent: the model (and the CRD schema) require gpt.partitions, and validation
    refuses a hand-built model without them, saying what to add; disko refuses the disk it would be."""
    from disklet.api.disklayout import Disk, Gpt, StructuredLayout
    from disklet.layout.validate import layout_problems

    with pytest.raises(ValueError, match="gpt"):
        DiskLayoutSpec.model_validate({"nodeName": "n", "diskLayout": {"disks": [
            {"name": "sdb", "device": "/dev/sdb"}, disk("sdc", "/dev/sdc", FS)]}})
    good = StructuredLayout.model_validate({"disks": [disk("sdc", "/dev/sdc", FS)]}).disks[0]
    for bare in (Disk.model_construct(name="sdb", device="/dev/sdb"),
                 Disk.model_construct(name="sdb", device="/dev/sdb", gpt=Gpt.model_construct(partitions=[]))):
        problems = layout_problems(StructuredLayout.model_construct(disks=[bare, good]))
        assert len(problems) == 1 and "disk 'sdb' has no content" in problems[0], problems
        assert "add gpt.partitions" in problems[0] and "filesystem" in problems[0], problems
    theirs, why = _disko(raw('disk.sdb = { type = "disk"; device = "/dev/sdb"; };', rdisk("sdc", RFS))["layoutNix"],
                         tmp_path)
    assert not theirs and "content._create" in why, why[-400:]


STRICTER_EMPTY_TABLE = raw('disk.sdb = { type = "disk"; device = "/dev/sdb"; content = { type = "gpt"; '
                           'partitions = { }; }; };', rdisk("sdc", RFS))


def test_disklet_refuses_an_empty_partition_table_disko_would_write(tmp_path: Path) -> None:
    """disko evaluates an empty gpt (its script writes a table with no partition over the disk); a layout
    never wants that, so disklet refuses it and says to add a partition."""
    ours, message, body = _disklet(STRICTER_EMPTY_TABLE)
    theirs, why = _disko(body, tmp_path)
    assert theirs, why[-400:]
    assert not ours and "disk.sdb.content.partitions must be a non-empty attribute set" in message, message
    assert "add at least one partition" in message, message
