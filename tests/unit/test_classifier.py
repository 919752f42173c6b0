"""Classifier per refusal code, from lsblk JSON fixtures (pure: no host)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from disklet_agent.disklayout.classifier import (
    classify_targets,
    describe_node,
    is_volume_mount,
    layout_verdict,
)
from disklet_agent.host.lsblk import parse_lsblk_json
from disklet_agent.logic.topology import BlockTopology

from disklet.api.disklayout import RefusalCode

SYSTEM = ["/", "/boot", "/boot/efi", "/nix", "/nix/store"]
VOLUMES = ["/var/lib/kcore/volumes*", "/var/lib/kcore/images"]


def dev(path: str, type_: str = "disk", *, fstype: str | None = None, mounts: list[str | None] | None = None,
        children: list[dict[str, Any]] | None = None, size: int = 10 << 30, pttype: str | None = None) -> dict[str, Any]:
    d: dict[str, Any] = {"name": path, "path": path, "kname": path, "fstype": fstype, "pttype": pttype,
                         "mountpoints": mounts or [None], "pkname": None, "type": type_, "size": size,
                         "ro": False, "rm": False, "hotplug": False, "rota": False, "serial": None,
                         "wwn": None, "model": None, "partuuid": None, "maj:min": "8:0"}
    if children:
        d["children"] = children
    return d


def topo(*devices: dict[str, Any], swaps: list[str] | None = None, swaps_error: str | None = None,
         holders: dict[str, list[str]] | None = None, probe_errors: dict[str, str] | None = None) -> BlockTopology:
    roots = parse_lsblk_json(json.dumps({"blockdevices": list(devices)}))
    t = BlockTopology(roots=roots, swaps=swaps or [], swaps_error=swaps_error)
    for n in t.walk():
        n.holders = list((holders or {}).get(n.path, []))
        n.probe_error = (probe_errors or {}).get(n.path)
    return t


def classify(t: BlockTopology, targets: list[str], resolved: dict[str, str | None] | None = None,
             applied: set[str] | None = None):
    resolved = resolved if resolved is not None else {x: x for x in targets}
    return classify_targets(targets, t, resolved=resolved, system_mounts=SYSTEM, volume_mounts=VOLUMES,
                            applied_targets=applied or set())


def one(t: BlockTopology, target: str = "/dev/sdb", **kw: Any):
    [v] = classify(t, [target], **kw)
    return v


def test_clean_disk_is_safe() -> None:
    v = one(topo(dev("/dev/sdb")))
    assert v.safe and v.code is None and v.resolved_path == "/dev/sdb"


@pytest.mark.parametrize("mount", SYSTEM)
def test_system_mount_on_a_partition(mount: str) -> None:
    t = topo(dev("/dev/sdb", children=[dev("/dev/sdb1", "part", fstype="ext4", mounts=[mount])]))
    v = one(t)
    assert not v.safe and v.code is RefusalCode.ACTIVE_SYSTEM_MOUNT
    assert "/dev/sdb1" in v.detail and mount in v.detail


@pytest.mark.parametrize("mount", ["/var/lib/kcore/volumes", "/var/lib/kcore/volumes1", "/var/lib/kcore/images",
                                   "/var/lib/kcore/images/sub"])
def test_volume_mount(mount: str) -> None:
    t = topo(dev("/dev/sdb", children=[dev("/dev/sdb1", "part", fstype="ext4", mounts=[mount])]))
    assert one(t).code is RefusalCode.ACTIVE_KCORE_VOLUME


def test_volume_glob_does_not_match_siblings() -> None:
    assert not is_volume_mount("/var/lib/kcore/imagesX", VOLUMES)
    assert not is_volume_mount("/var/lib/other", VOLUMES)
    assert is_volume_mount("/var/lib/kcore/volumes7/x", VOLUMES)


def test_other_mount_deep_descendant() -> None:
    # partition → LV → mounted somewhere unlisted: walked all the way down.
    lv = dev("/dev/mapper/vg-data", "lvm", fstype="xfs", mounts=["/srv/data"])
    t = topo(dev("/dev/sdb", children=[dev("/dev/sdb1", "part", fstype="LVM2_member", children=[lv])]))
    v = one(t)
    assert v.code is RefusalCode.ACTIVE_MOUNT  # the mount outranks the PV signature
    assert "/srv/data" in v.detail and "LVM2_member" in v.detail


def test_swap_marker_and_proc_swaps() -> None:
    t1 = topo(dev("/dev/sdb", children=[dev("/dev/sdb2", "part", fstype="swap", mounts=["[SWAP]"])]))
    assert one(t1).code is RefusalCode.ACTIVE_SWAP
    t2 = topo(dev("/dev/sdb", children=[dev("/dev/sdb2", "part", fstype="swap")]), swaps=["/dev/sdb2"])
    assert one(t2).code is RefusalCode.ACTIVE_SWAP


def test_unreadable_swaps_is_unknown() -> None:
    v = one(topo(dev("/dev/sdb"), swaps_error="cat: /proc/swaps: Permission denied"))
    assert v.code is RefusalCode.STATE_UNKNOWN and "swaps" in v.detail


def test_lvm_pv_whole_disk_and_partition() -> None:
    assert one(topo(dev("/dev/sdb", fstype="LVM2_member"))).code is RefusalCode.ACTIVE_LVM_PV
    t = topo(dev("/dev/sdb", pttype="gpt", children=[dev("/dev/sdb1", "part", fstype="LVM2_member")]))
    assert one(t, applied={"/dev/sdb"}).code is RefusalCode.ACTIVE_LVM_PV


def test_zpool_member() -> None:
    t = topo(dev("/dev/sdb", children=[dev("/dev/sdb1", "part", fstype="zfs_member")]))
    assert one(t).code is RefusalCode.ACTIVE_ZPOOL_MEMBER


def test_raid_member_by_signature_type_and_holder() -> None:
    assert one(topo(dev("/dev/sdb", fstype="linux_raid_member"))).code is RefusalCode.RAID_MEMBER
    md = dev("/dev/md0", "raid1", fstype="ext4")
    assert one(topo(dev("/dev/sdb", children=[md]))).code is RefusalCode.RAID_MEMBER
    assert one(topo(dev("/dev/sdb"), holders={"/dev/sdb": ["/dev/md127"]})).code is RefusalCode.RAID_MEMBER


def test_open_crypt_mapping() -> None:
    crypt = dev("/dev/mapper/secret", "crypt")
    assert one(topo(dev("/dev/sdb", fstype="crypto_LUKS", children=[crypt]))).code is RefusalCode.OPEN_CRYPT_MAPPING
    v = one(topo(dev("/dev/sdb", fstype="crypto_LUKS"), holders={"/dev/sdb": ["/dev/dm-3"]}))
    assert v.code is RefusalCode.OPEN_CRYPT_MAPPING and "/dev/dm-3" in v.detail
    # A closed LUKS container is not open, but it is not blank either.
    assert one(topo(dev("/dev/sdb", fstype="crypto_LUKS"))).code is RefusalCode.NOT_BLANK


def test_holders() -> None:
    v = one(topo(dev("/dev/sdb"), holders={"/dev/sdb": ["/dev/dm-0"]}))
    assert v.code is RefusalCode.HAS_HOLDERS and "/dev/dm-0" in v.detail


def test_not_found_unresolved_and_not_in_lsblk() -> None:
    v = one(topo(dev("/dev/sdb")), target="/dev/disk/by-id/gone", resolved={"/dev/disk/by-id/gone": None})
    assert v.code is RefusalCode.NOT_FOUND and v.resolved_path is None
    v = one(topo(dev("/dev/sdb")), target="/dev/null", resolved={"/dev/null": "/dev/null"})
    assert v.code is RefusalCode.NOT_FOUND and "lsblk" in v.detail


def test_by_id_resolves_to_busy_kernel_device() -> None:
    t = topo(dev("/dev/sdb", children=[dev("/dev/sdb1", "part", fstype="ext4", mounts=["/var/lib/kcore/volumes1"])]))
    by_id = "/dev/disk/by-id/nvme-Samsung_123"
    v = one(t, target=by_id, resolved={by_id: "/dev/sdb"})
    assert v.code is RefusalCode.ACTIVE_KCORE_VOLUME
    assert v.target == by_id and v.resolved_path == "/dev/sdb"


def test_unknown_fstype_refuses() -> None:
    t = topo(dev("/dev/sdb"), probe_errors={"/dev/sdb": "blkid: error: /dev/sdb: Operation not permitted"})
    v = one(t)
    assert v.code is RefusalCode.STATE_UNKNOWN and "Operation not permitted" in v.detail
    # ... also on a descendant
    t = topo(dev("/dev/sdb", pttype="gpt", children=[dev("/dev/sdb1", "part")]),
             probe_errors={"/dev/sdb1": "blkid timed out"})
    assert one(t, applied={"/dev/sdb"}).code is RefusalCode.STATE_UNKNOWN


def test_unreadable_holders_is_unknown() -> None:
    t = topo(dev("/dev/sdb"))
    t.roots[0].holders_error = "cannot read /sys/class/block/sdb/holders: Permission denied"
    v = one(t)
    assert v.code is RefusalCode.STATE_UNKNOWN and "holders" in v.detail


@pytest.mark.parametrize("kw", [{"pttype": "gpt"}, {"fstype": "ext4"}, {"fstype": "swap"},
                                {"children": [dev("/dev/sdb1", "part")]}])
def test_new_target_must_be_blank(kw: dict[str, Any]) -> None:
    v = one(topo(dev("/dev/sdb", **kw)))
    assert v.code is RefusalCode.NOT_BLANK and "wipefs" in v.detail


def test_applied_target_may_be_reapplied() -> None:
    t = topo(dev("/dev/sdb", pttype="gpt", children=[dev("/dev/sdb1", "part", fstype="ext4")]))
    assert one(t).code is RefusalCode.NOT_BLANK
    assert one(t, applied={"/dev/sdb"}).safe
    # Applied under its by-id name, re-applied under the kernel name (the adapter adds both spellings).
    by_id = "/dev/disk/by-id/wwn-0x5000"
    assert one(t, target=by_id, resolved={by_id: "/dev/sdb"}, applied={"/dev/sdb"}).safe
    # ... but being ours never excuses live state.
    t2 = topo(dev("/dev/sdb", pttype="gpt", children=[dev("/dev/sdb1", "part", fstype="ext4", mounts=["/data"])]))
    assert one(t2, applied={"/dev/sdb"}).code is RefusalCode.ACTIVE_MOUNT


def test_duplicates_after_resolution() -> None:
    t = topo(dev("/dev/sdb"), dev("/dev/sdc"))
    by_id = "/dev/disk/by-id/ata-X"
    vs = classify(t, ["/dev/sdb", by_id, "/dev/sdc"], resolved={"/dev/sdb": "/dev/sdb", by_id: "/dev/sdb",
                                                                 "/dev/sdc": "/dev/sdc"})
    assert [v.code for v in vs] == [RefusalCode.DUPLICATE_TARGET, RefusalCode.DUPLICATE_TARGET, None]
    lv = layout_verdict(vs)
    assert not lv.safe and lv.code is RefusalCode.DUPLICATE_TARGET
    assert "/dev/sdb" in lv.message and by_id in lv.message and "2 of 3" in lv.message


def test_partition_inside_another_target_overlaps() -> None:
    t = topo(dev("/dev/sdb", pttype="gpt", children=[dev("/dev/sdb1", "part")]))
    vs = classify(t, ["/dev/sdb", "/dev/sdb1"], applied={"/dev/sdb", "/dev/sdb1"})
    assert [v.code for v in vs] == [RefusalCode.DUPLICATE_TARGET, RefusalCode.DUPLICATE_TARGET]


def test_layout_verdict_lists_every_refusal_and_first_code() -> None:
    t = topo(dev("/dev/sdb", fstype="LVM2_member"), dev("/dev/sdc"),
             dev("/dev/sdd", children=[dev("/dev/sdd1", "part", mounts=["/"])]))
    vs = classify(t, ["/dev/sdb", "/dev/sdc", "/dev/sdd"])
    lv = layout_verdict(vs)
    assert lv.code is RefusalCode.ACTIVE_LVM_PV
    assert "target_device_is_active_lvm_pv" in lv.message and "target_device_has_active_system_mount" in lv.message
    assert "/dev/sdc" not in lv.message.split("target(s):")[1]
    assert [v.target for v in lv.refused] == ["/dev/sdb", "/dev/sdd"]


def test_empty_layout_is_no_target_devices() -> None:
    lv = layout_verdict([])
    assert not lv.safe and lv.code is RefusalCode.NO_TARGET_DEVICES


def test_all_safe_layout() -> None:
    lv = layout_verdict(classify(topo(dev("/dev/sdb"), dev("/dev/sdc")), ["/dev/sdb", "/dev/sdc"]))
    assert lv.safe and lv.code is None


def test_describe_node_for_disks_view() -> None:
    t = topo(dev("/dev/vda", children=[dev("/dev/vda1", "part", fstype="ext4", mounts=["/"])]), dev("/dev/sdb"))
    views = {n.path: describe_node(n, t, system_mounts=SYSTEM, volume_mounts=VOLUMES) for n in t.walk()}
    assert views["/dev/vda"].code is RefusalCode.ACTIVE_SYSTEM_MOUNT
    assert views["/dev/sdb"].safe
