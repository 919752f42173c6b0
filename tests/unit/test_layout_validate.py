"""docs/design/disklayout.md#validation: every structured-layout rule is a hard error with a clear message."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from pydantic import ValidationError

from disklet.api.disklayout import StructuredLayout
from disklet.layout import LayoutError, layout_problems, render_disko_nix, validate_structured_layout
from disklet.layout.samples import EXT4, MIXED, structured


def _part(data: dict[str, Any], disk: int = 0, part: int = 0) -> dict[str, Any]:
    return data["disks"][disk]["gpt"]["partitions"][part]


def _problems(data: dict[str, Any]) -> list[str]:
    """Problems found by validation; pydantic's field checks are bypassed with model_construct."""
    return layout_problems(_construct(data))


def _construct(data: dict[str, Any]) -> StructuredLayout:
    from disklet.api.disklayout import Disk, Gpt, NamedStub, Partition, PartitionContent, ZfsPoolStub

    def content(c: dict[str, Any]) -> PartitionContent:
        return PartitionContent.model_construct(
            type=c["type"], format=c.get("format"), mountpoint=c.get("mountpoint"),
            mount_options=c.get("mountOptions"), vg=c.get("vg"), pool=c.get("pool"))

    disks = [Disk.model_construct(name=d["name"], device=d["device"], gpt=Gpt.model_construct(partitions=[
        Partition.model_construct(name=p["name"], size=p["size"], content=content(p["content"]))
        for p in d["gpt"]["partitions"]])) for d in data["disks"]]
    vgs = [NamedStub.model_construct(name=v["name"]) for v in data.get("lvmVolumeGroups", [])] or None
    pools = [ZfsPoolStub.model_construct(name=v["name"], mountpoint=v.get("mountpoint"))
             for v in data.get("zfsPools", [])] or None
    return StructuredLayout.model_construct(disks=disks, lvm_volume_groups=vgs, zfs_pools=pools)


def test_samples_are_valid() -> None:
    validate_structured_layout(structured(EXT4))
    validate_structured_layout(structured(MIXED))
    assert _problems(MIXED) == []


def test_mount_options_survive_and_unknown_keys_are_errors() -> None:
    data = copy.deepcopy(EXT4)
    _part(data)["content"]["mountOptions"] = ["nofail", "noatime"]
    layout = structured(data)
    assert layout.disks[0].gpt.partitions[0].content.mount_options == ["nofail", "noatime"]
    assert '"mountOptions" = [ "nofail" "noatime" ];' in render_disko_nix(layout)
    data["disks"][0]["gpt"]["partitions"][0]["content"]["mountOpts"] = ["nofail"]
    with pytest.raises(ValidationError, match="mountOpts"):
        structured(data)
    data = copy.deepcopy(EXT4)
    data["disks"][0]["wipe"] = True
    with pytest.raises(ValidationError, match="wipe"):
        structured(data)


def test_all_problems_are_reported_together() -> None:
    data = copy.deepcopy(EXT4)
    data["disks"].append(copy.deepcopy(data["disks"][0]))
    with pytest.raises(LayoutError) as info:
        validate_structured_layout(_construct(data))
    err = info.value
    assert any("disk name 'data1' is used more than once" in p for p in err.problems)
    assert any("device '/dev/nvme1n1' is listed by more than one disk" in p for p in err.problems)
    assert any("mountpoint '/var/lib/kcore/volumes1' is used by more than one partition" in p for p in err.problems)
    assert str(err).startswith(f"{len(err.problems)} layout problems:")
    for problem in err.problems:
        assert problem in str(err)


def test_empty_disks() -> None:
    assert any("at least one disk" in p for p in _problems({"disks": []}))
    with pytest.raises(ValidationError):
        StructuredLayout.model_validate({"disks": []})


@pytest.mark.parametrize("name", ["1abc", "a-b", "a b", "x" * 33, "", "ä"])
def test_bad_names(name: str) -> None:
    data = copy.deepcopy(EXT4)
    data["disks"][0]["name"] = name
    assert any("name must match" in p for p in _problems(data))
    data = copy.deepcopy(EXT4)
    _part(data)["name"] = name
    assert any("name must match" in p for p in _problems(data))


def test_duplicate_partition_names() -> None:
    data = copy.deepcopy(EXT4)
    first = copy.deepcopy(_part(data))
    first["size"] = "1G"
    first["content"]["mountpoint"] = "/srv/a"
    data["disks"][0]["gpt"]["partitions"].insert(0, first)
    assert any("partition name 'kcore0' is used more than once" in p for p in _problems(data))


def test_gpt_label_length() -> None:
    data = copy.deepcopy(EXT4)
    data["disks"][0]["name"] = "d" * 15
    _part(data)["name"] = "p" * 15  # disk- + 15 + - + 15 = 36: fine
    assert _problems(data) == []
    _part(data)["name"] = "p" * 16  # 37
    assert any("GPT label" in p and "37 characters" in p for p in _problems(data))


@pytest.mark.parametrize("device", ["/dev/../etc/passwd", "/dev/sda/../x", "dev/sda", "/dev/sd a", "/dev/",
                                    "/dev/x\"; y = 1", "/etc/passwd", "/dev/${x}"])
def test_bad_devices(device: str) -> None:
    data = copy.deepcopy(EXT4)
    data["disks"][0]["device"] = device
    assert any("device" in p for p in _problems(data)), device
    with pytest.raises((ValidationError, LayoutError)):  # `..` is a CEL rule server-side, a hard error here
        validate_structured_layout(structured(data))


@pytest.mark.parametrize("device", ["/dev/nvme1n1", "/dev/disk/by-id/nvme-Samsung_SSD_980_1TB_S5.X:1+2",
                                    "/dev/disk/by-path/pci-0000:01:00.0-nvme-1"])
def test_good_devices(device: str) -> None:
    data = copy.deepcopy(EXT4)
    data["disks"][0]["device"] = device
    assert _problems(data) == []


@pytest.mark.parametrize("size", ["50%", "1.5G", "10GB", "1g", "0", "010G", "G", "-1G", "100 %"])
def test_bad_sizes(size: str) -> None:
    data = copy.deepcopy(EXT4)
    _part(data)["size"] = size
    assert any("size" in p for p in _problems(data)), size


@pytest.mark.parametrize("size", ["100%", "512M", "20G", "1", "3T", "4096K", "1P"])
def test_good_sizes(size: str) -> None:
    data = copy.deepcopy(EXT4)
    _part(data)["size"] = size
    assert _problems(data) == []


def test_hundred_percent_only_last() -> None:
    data = copy.deepcopy(EXT4)
    second = copy.deepcopy(_part(data))
    second["name"] = "more"
    second["content"]["mountpoint"] = "/srv/more"
    data["disks"][0]["gpt"]["partitions"].append(second)
    assert any("100% is allowed only on the last partition" in p for p in _problems(data))
    _part(data)["size"] = "10G"
    assert _problems(data) == []


@pytest.mark.parametrize("mountpoint,why", [
    ("/", "OS mount"), ("/boot", "OS mount"), ("/nix", "OS mount"), ("/nix/store", "OS mount"),
    ("relative/path", "absolute"), ("/srv/../etc", ". or .."), ("/srv/./x", ". or .."), ("/srv//x", "empty"),
    ("/srv/x/", "empty"), ("/srv/\nx", "printable"), ("/srv/é", "printable"),
])
def test_bad_mountpoints(mountpoint: str, why: str) -> None:
    data = copy.deepcopy(EXT4)
    _part(data)["content"]["mountpoint"] = mountpoint
    assert any(why in p for p in _problems(data)), (mountpoint, _problems(data))


def test_nix_prefix_lookalike_allowed() -> None:
    data = copy.deepcopy(EXT4)
    _part(data)["content"]["mountpoint"] = "/nixdata"
    assert _problems(data) == []


@pytest.mark.parametrize("option", ["no atime", "x;y", "a\"b", "${x}", "", "é"])
def test_bad_mount_options(option: str) -> None:
    data = copy.deepcopy(EXT4)
    _part(data)["content"]["mountOptions"] = ["nofail", option]
    assert any("mount option" in p for p in _problems(data)), option


def test_format_allow_list() -> None:
    data = copy.deepcopy(EXT4)
    _part(data)["content"]["format"] = "ntfs"
    assert any("format 'ntfs'" in p for p in _problems(data))
    with pytest.raises(ValidationError):
        structured(data)


@pytest.mark.parametrize("pool", ["mirror", "raidz", "raidz2", "draid1", "spare", "log", "cache", "special",
                                  "dedup", "_tank", "1tank"])
def test_bad_pool_names(pool: str) -> None:
    data = copy.deepcopy(MIXED)
    data["zfsPools"] = [{"name": pool}]
    data["disks"][1]["gpt"]["partitions"][0]["content"]["pool"] = pool
    assert any("pool name" in p for p in _problems(data)), pool


def test_references_both_ways() -> None:
    data = copy.deepcopy(MIXED)
    data["lvmVolumeGroups"] = [{"name": "vg_other"}]
    data["zfsPools"] = [{"name": "tank1"}]
    problems = _problems(data)
    assert any("VG 'vg_kcore', which is not declared in lvmVolumeGroups" in p for p in problems)
    assert any("'vg_other' has no lvm_pv partition" in p for p in problems)
    assert any("pool 'tank0', which is not declared in zfsPools" in p for p in problems)
    assert any("'tank1' has no zfs partition" in p for p in problems)
    data = copy.deepcopy(MIXED)
    data["lvmVolumeGroups"].append({"name": "vg_kcore"})
    assert any("'vg_kcore' is declared more than once" in p for p in _problems(data))


def test_content_fields_must_match_type() -> None:
    data = copy.deepcopy(EXT4)
    _part(data)["content"]["vg"] = "vg0"
    assert any("vg belongs to type lvm_pv only" in p for p in _problems(data))
    with pytest.raises(ValidationError):
        structured(data)


def test_a_layout_that_mounts_nothing_is_refused_saying_what_to_add() -> None:
    pv = {"name": "pv", "size": "100%", "content": {"type": "lvm_pv", "vg": "vg0"}}
    data = {"lvmVolumeGroups": [{"name": "vg0"}], "disks": [
        {"name": "a", "device": "/dev/sdb", "gpt": {"partitions": [pv]}},
        {"name": "b", "device": "/dev/sdc", "gpt": {"partitions": [copy.deepcopy(pv)]}}]}
    problems = _problems(data)
    assert len(problems) == 1 and "mounts no file system" in problems[0], problems
    assert "add a partition with content type filesystem and a mountpoint" in problems[0]
    with_fs = copy.deepcopy(data)
    with_fs["disks"][0]["gpt"]["partitions"].insert(0, copy.deepcopy(EXT4["disks"][0]["gpt"]["partitions"][0]))
    with_fs["disks"][0]["gpt"]["partitions"][0]["size"] = "1G"
    assert _problems(with_fs) == []
    with_pool = copy.deepcopy(data)
    with_pool["zfsPools"] = [{"name": "tank"}]
    with_pool["disks"][1]["gpt"]["partitions"][0]["content"] = {"type": "zfs", "pool": "tank"}
    assert "mounts no file system" in " ".join(_problems(with_pool)), "a pool without a mountpoint mounts nothing"
    with_pool["zfsPools"] = [{"name": "tank", "mountpoint": "/srv/tank"}]
    assert _problems(with_pool) == [], "the pool's root dataset is mounted at its mountpoint"


def test_a_disk_without_partitions_is_refused_saying_which_and_what_to_add() -> None:
    """The structured form of a disk without content: disko cannot evaluate one, so the model requires
    gpt.partitions and validation (of a hand-built model too) says which disk and what to add."""
    from disklet.api.disklayout import Disk

    data = copy.deepcopy(EXT4)
    data["disks"].append({"name": "bare", "device": "/dev/sdc", "gpt": {"partitions": []}})
    problems = _problems(data)
    assert len(problems) == 1 and "disk 'bare' has no content" in problems[0], problems
    assert "add gpt.partitions with at least one partition" in problems[0], problems
    with pytest.raises(ValidationError, match="partitions"):
        structured(data)
    layout = _construct(EXT4)
    layout.disks.append(Disk.model_construct(name="bare", device="/dev/sdc"))  # no gpt at all
    assert [p.split(" has no content")[0] for p in layout_problems(layout)] == ["disk 'bare'"]
    del data["disks"][0]
    only_bare = _problems(data)
    assert len(only_bare) == 1 and "has no content" in only_bare[0], "one reason, not 'mounts nothing' too"
