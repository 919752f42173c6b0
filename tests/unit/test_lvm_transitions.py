"""disklet.lvm.transitions: the one grow-only / immutable-fields check (planner, kctl rollout undo, kctl diff)."""

from __future__ import annotations

from typing import Any

import pytest

from disklet.lvm.transitions import FILE_DEVICES, transition_problems


def fd(name: str = "a", size: str = "1Gi", directory: str = "/var/lib/disklet/file-devices") -> dict[str, str]:
    return {"name": name, "size": size, "directory": directory}


def spec(**over: Any) -> dict[str, Any]:
    return {"type": "Local", "local": {"nodeName": "n1"}, "actualVGNameOnTheNode": "vg", "fileDevices": [fd()],
            **over}


def problems(old: dict[str, Any] | None, new: dict[str, Any]) -> list[tuple[str, str]]:
    return [(p.field, str(p)) for p in transition_problems(old, new)]


def test_allowed_changes_are_not_problems() -> None:
    assert problems(None, spec()) == [], "a create has nothing to keep"
    assert problems(spec(), spec()) == []
    assert problems(spec(), spec(fileDevices=[fd(size="2Gi"), fd("b")])) == [], "grow and add"
    assert problems(spec(), spec(fileDevices=[fd(size="1024Mi")])) == [], "same size, other spelling"
    assert problems(spec(thinPools=[{"name": "t", "size": "10%"}]), spec()) == [], "thin pools are not grow-only here"
    template = {"actualVGNameOnTheNode": "vg"}
    assert problems(template, dict(template, local={"nodeName": "n1"})) == [], "fields old lacks are not compared"


@pytest.mark.parametrize("new,field,text", [
    (spec(actualVGNameOnTheNode="other"), "actualVGNameOnTheNode", "actualVGNameOnTheNode is immutable ('vg' → 'other')"),
    (spec(type="Shared"), "type", "type is immutable ('Local' → 'Shared')"),
    (spec(local={"nodeName": "n2"}), "local.nodeName", "local.nodeName is immutable ('n1' → 'n2')"),
    (spec(local=None), "local.nodeName", "local.nodeName is immutable ('n1' → None)"),
    (spec(fileDevices=[]), FILE_DEVICES, "file device 'a' would be removed: file devices cannot be removed"),
    (spec(fileDevices=None), FILE_DEVICES, "file device 'a' would be removed"),
    (spec(fileDevices=[fd(directory="/srv")]), FILE_DEVICES,
     "file device 'a': directory /var/lib/disklet/file-devices → /srv: the directory is immutable"),
    (spec(fileDevices=[fd(size="1023Mi")]), FILE_DEVICES, "file device 'a': size 1Gi → 1023Mi would shrink"),
    (spec(fileDevices=[fd(size="lots")]), FILE_DEVICES, "file device 'a': size 1Gi → lots: not comparable"),
])
def test_each_rule(new: dict[str, Any], field: str, text: str) -> None:
    found = problems(spec(), new)
    assert len(found) == 1 and found[0][0] == field and found[0][1].startswith(text), found


def test_every_problem_is_reported_in_order() -> None:
    old = spec(fileDevices=[fd("a", "2Gi"), fd("b")])
    new = spec(actualVGNameOnTheNode="x", fileDevices=[fd("a", "1Gi", "/srv")])
    assert [f for f, _ in problems(old, new)] == ["actualVGNameOnTheNode", FILE_DEVICES, FILE_DEVICES, FILE_DEVICES]
