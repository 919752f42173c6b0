"""docs/design/disklayout.md#rendering (append only): partitions of an applied disk may only be appended."""

from __future__ import annotations

import copy
from typing import Any

from disklet.layout import check_append_only
from disklet.layout.render import devices_value
from disklet.layout.samples import MIXED, structured


def _value(data: dict[str, Any]) -> dict[str, Any]:
    return devices_value(structured(data))  # type: ignore[return-value]


def _base() -> dict[str, Any]:
    data = copy.deepcopy(MIXED)
    data["disks"][0]["gpt"]["partitions"][1]["size"] = "100G"  # leave room to append
    return data


def _append(data: dict[str, Any]) -> dict[str, Any]:
    new = copy.deepcopy(data)
    new["disks"][0]["gpt"]["partitions"].append(
        {"name": "extra", "size": "100%", "content": {"type": "filesystem", "format": "ext4", "mountpoint": "/srv/extra"}})
    return new


def test_identical_and_append_ok() -> None:
    old = _value(_base())
    assert check_append_only(old, old) == []
    assert check_append_only(old, _value(_append(_base()))) == []


def test_new_disk_and_removed_disk_are_not_this_rules_concern() -> None:
    old = _value(_base())
    new = copy.deepcopy(_base())
    new["disks"].append({"name": "data3", "device": "/dev/sdx", "gpt": {"partitions": [
        {"name": "p", "size": "100%", "content": {"type": "lvm_pv", "vg": "vg_kcore"}}]}})
    assert check_append_only(old, _value(new)) == []


def test_disks_matched_by_device_not_name() -> None:
    old = _value(_base())
    new = copy.deepcopy(_base())
    new["disks"][0]["name"] = "renamed"
    assert check_append_only(old, _value(new)) == []


def test_resize_rejected() -> None:
    new = _base()
    new["disks"][0]["gpt"]["partitions"][0]["size"] = "65G"
    problems = check_append_only(_value(_base()), _value(new))
    assert len(problems) == 1 and "changes size from '64G' to '65G'" in problems[0]


def test_rename_reorder_insert_rejected() -> None:
    old = _value(_base())
    renamed = _base()
    renamed["disks"][0]["gpt"]["partitions"][0]["name"] = "scratch2"
    assert any("was 'scratch' and is now 'scratch2'" in p for p in check_append_only(old, _value(renamed)))
    reordered = _base()
    parts = reordered["disks"][0]["gpt"]["partitions"]
    parts.reverse()
    assert check_append_only(old, _value(reordered))
    inserted = _base()
    inserted["disks"][0]["gpt"]["partitions"].insert(0, {"name": "first", "size": "1G", "content": {
        "type": "filesystem", "format": "vfat", "mountpoint": "/srv/first"}})
    problems = check_append_only(old, _value(inserted))
    assert any("partition 1 was 'scratch' and is now 'first'" in p for p in problems)


def test_content_change_rejected() -> None:
    new = _base()
    new["disks"][0]["gpt"]["partitions"][0]["content"]["mountOptions"] = ["nofail"]
    problems = check_append_only(_value(_base()), _value(new))
    assert any("changes content" in p for p in problems)


def test_removal_rejected() -> None:
    old = _value(_append(_base()))
    problems = check_append_only(old, _value(_base()))
    assert any("'extra' were applied and cannot be removed" in p for p in problems)


def test_append_after_hundred_percent_rejected() -> None:
    old = copy.deepcopy(MIXED)  # data1's last partition is 100%
    new = copy.deepcopy(old)
    new["disks"][0]["gpt"]["partitions"][1]["size"] = "100G"
    new = _append(new)
    problems = check_append_only(_value(old), _value(new))
    assert any("takes 100% of the disk" in p for p in problems)
    assert any("changes size from '100%' to '100G'" in p for p in problems)


def test_raw_priorities_default_like_disko() -> None:
    old = {"disk": {"a": {"device": "/dev/sda", "content": {"type": "gpt", "partitions": {
        "b": {"size": "1G"}, "a": {"size": "1G"}}}}}}
    new = copy.deepcopy(old)
    new["disk"]["a"]["content"]["partitions"]["c"] = {"size": "1G"}  # name order: a, b, c → appended
    assert check_append_only(old, new) == []
    new = copy.deepcopy(old)
    new["disk"]["a"]["content"]["partitions"]["0"] = {"size": "1G"}  # sorts first → renumbers
    assert check_append_only(old, new)
