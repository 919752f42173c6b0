"""kctl output helpers and views: tables, ages, -o yaml|json, diffs, describe pages (pure)."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest
import yaml

from disklet.api.disklayout import DiskLayoutSpec
from disklet.cli import views
from disklet.cli.output import age, as_list, cell, dump, format_age, key_values, table

NOW = datetime(2024, 5, 1, 12, 0, 0, tzinfo=UTC)


@pytest.mark.parametrize(("seconds", "text"), [
    (-5, "0s"), (0, "0s"), (59, "59s"), (119, "119s"), (120, "2m"), (330, "5m30s"), (600, "10m"),
    (3 * 3600 - 1, "179m"), (3 * 3600 + 1200, "3h20m"), (10 * 3600, "10h"), (50 * 3600, "2d2h"),
    (8 * 86400, "8d"), (400 * 86400, "400d"),
])
def test_format_age_like_kubectl(seconds: int, text: str):
    assert format_age(seconds) == text


def test_age_of_timestamps():
    assert age("2024-05-01T11:55:00Z", NOW) == "5m"
    assert age(None, NOW) == "<none>" and age("garbage", NOW) == "<none>"


def test_table_aligns_columns_without_trailing_blanks():
    text = table(("NAME", "PHASE", "DEVICES"), [["a", None, ["/dev/sdb", "/dev/sdc"]], ["longer-name", "applied", []]])
    assert text == ("NAME          PHASE     DEVICES\n"
                    "a             <none>    /dev/sdb,/dev/sdc\n"
                    "longer-name   applied   <none>\n")
    assert table(("A", "B"), [["x", ""]], indent="  ") == "  A     B\n  x     <none>\n", \
        "kubectl's tabwriter: a column is at least 6 wide with its padding"
    assert table(("A", "B", "C"), [["x", "", "y"]], keep_empty=True, no_headers=True) == "x" + " " * 11 + "y\n", \
        "an empty column keeps its width"


def test_cells_and_key_values():
    assert cell(True) == "true" and cell(False) == "false" and cell(0) == "0" and cell("") == "<none>"
    assert key_values([("Name", "x"), ("Target devices", "/dev/a\n/dev/b")]) == \
        "Name:           x\nTarget devices: /dev/a\n                /dev/b\n"


def test_dump_yaml_and_json_round_trip():
    items = as_list([{"metadata": {"name": "a"}}])
    assert json.loads(dump(items, "json"))["items"][0]["metadata"]["name"] == "a"
    assert yaml.safe_load(dump(items, "yaml")) == items
    with pytest.raises(ValueError):
        dump(items, "toml")


def _dl(status: dict | None = None) -> dict:
    return {"metadata": {"name": "a", "creationTimestamp": "2024-05-01T11:00:00Z", "generation": 2},
            "spec": {"nodeName": "n1", "layoutNix": "{ disko.devices.disk.d.device = \"/dev/sdb\"; }\n"},
            "status": status or {}}


def test_disk_layout_rows_normal_and_wide():
    obj = _dl({"phase": "refused", "refusalReason": "no_target_devices", "targetDevices": ["/dev/sdb"],
               "layoutGeneration": 3, "nodeMode": "installer-only", "layoutHash": "abcdef0123456789"})
    assert views.disk_layout_row(obj, now=NOW) == ["a", "n1", "refused", "no_target_devices", ["/dev/sdb"], "60m"]
    assert views.disk_layout_row(obj, wide=True, now=NOW)[-3:] == [3, "installer-only", "abcdef012345"]


def test_unified_body_diff_new_changed_and_identical():
    new = "{\n  device = \"/dev/sdc\";\n}\n"
    created = views.unified_body_diff("a", None, new)
    assert created.startswith("--- /dev/null\n+++ manifest/a\n@@ -0,0 +1,3 @@\n+{\n")
    changed = views.unified_body_diff("a", "{\n  device = \"/dev/sdb\";\n}\n", new)
    assert "--- live/a\n+++ manifest/a\n" in changed
    assert '-  device = "/dev/sdb";\n+  device = "/dev/sdc";\n' in changed
    assert views.unified_body_diff("a", new, new) == ""
    assert views.unified_body_diff("a", "x", "y").endswith("\n"), "no-newline-at-end lines still end a line"


def test_live_body_renders_a_structured_layout_the_same_way_kctl_does():
    spec = {"nodeName": "n1", "diskLayout": {"disks": [{"name": "d", "device": "/dev/sdb", "gpt": {"partitions": [
        {"name": "f", "size": "1G", "content": {"type": "filesystem", "format": "ext4", "mountpoint": "/srv/f"}},
        {"name": "p", "size": "100%", "content": {"type": "lvm_pv", "vg": "vg0"}}]}}],
        "lvmVolumeGroups": [{"name": "vg0"}]}}
    body, how = views.live_layout_body({"spec": spec})
    assert how == "rendered spec.diskLayout" and body is not None and '"device" = "/dev/sdb";' in body
    body, how = views.live_layout_body({"spec": {"nodeName": "n1", "diskLayout": {"disks": "nope"}}})
    assert body is None and "does not render" in how


def test_setting_changes_apply_defaults_on_both_sides():
    spec = DiskLayoutSpec.model_validate({"nodeName": "n1", "layoutNix": "{}", "timeoutSeconds": 600})
    assert views.setting_changes({"nodeName": "n1", "layoutNix": "{}"}, spec) == ["timeoutSeconds: 300 -> 600"]
    assert views.setting_changes({"nodeName": "n1", "rebuild": True, "timeoutSeconds": 600}, spec) == []
    moved = views.setting_changes({"nodeName": "n0", "timeoutSeconds": 600}, spec)
    assert moved and "immutable" in moved[0]


def test_describe_without_status_says_why():
    text = views.describe_disk_layout(_dl(), [], NOW)
    assert "Source:  layoutNix (raw disko Nix, 1 lines" in text
    assert "the operator has not pre-flighted this object yet" in text
    assert "Events:\n  <none>\n" in text


def test_node_disk_rows_sorted_with_reason():
    bds = [{"metadata": {"name": "b"}, "status": {"path": "/dev/sdc", "type": "disk", "size": "1Gi",
                                                  "consumable": False, "consumableReason": "has a xfs signature",
                                                  "consumableReasonCode": "HasFilesystem", "model": "M1",
                                                  "serial": "S1", "transport": "sata"}},
           {"metadata": {"name": "a"}, "status": {"path": "/dev/sdb", "type": "disk", "size": "2Gi", "consumable": True}}]
    rows = views.node_disk_rows(bds)
    assert [r[0] for r in rows] == ["/dev/sdb", "/dev/sdc"]
    col = {h: i for i, h in enumerate(views.NODE_DISK_HEADERS)}
    assert rows[0][col["CONSUMABLE"]] == "yes" and rows[0][col["REASON"]] == ""
    assert rows[1][col["CONSUMABLE"]] == "no" and rows[1][col["REASON"]] == "HasFilesystem: has a xfs signature"
    assert [rows[1][col[h]] for h in ("MODEL", "SERIAL", "TRANSPORT")] == ["M1", "S1", "sata"]
