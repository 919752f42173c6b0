"""Every validation pattern is applied as a full match: ``re.match`` with ``$`` accepts a value with a
trailing newline, which a shell line, a label or a Nix string would carry on."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from disklet.labels import label_value
from disklet.layout.mounts import MountPolicy
from disklet.layout.schema import schema_violation
from disklet.layout.validate import zfs_pool_name_problem
from disklet.units import parse_quantity


def _value(**over: str) -> dict:  # type: ignore[type-arg]
    part = {"size": over.get("size", "100%"), "content": {"type": "filesystem", "format": "ext4",
                                                           "mountpoint": over.get("mountpoint", "/srv/a"),
                                                           "mountOptions": [over.get("option", "nofail")]}}
    return {"disk": {over.get("disk", "d"): {"type": "disk", "device": over.get("device", "/dev/vdb"),
                                             "content": {"type": "gpt", "partitions": {over.get("part", "p"): part}}}}}


@pytest.mark.parametrize("field", ["size", "mountpoint", "option", "disk", "part", "device"])
def test_the_schema_walk_refuses_a_trailing_newline(field: str) -> None:
    good = _value()
    assert schema_violation(good) is None
    base = {"size": "100%", "mountpoint": "/srv/a", "option": "nofail", "disk": "d", "part": "p", "device": "/dev/vdb"}
    bad = _value(**{field: base[field] + "\n"})
    assert schema_violation(bad) is not None, field


def test_policy_and_pool_names_refuse_a_trailing_newline() -> None:
    assert MountPolicy().problem("/srv/a\n") is not None
    assert zfs_pool_name_problem("tank\n") is not None


def test_sizes_and_label_values_refuse_a_trailing_newline() -> None:
    from disklet.api.lvm import ThinPool

    with pytest.raises(ValueError):
        parse_quantity("10Gi\n")
    with pytest.raises(ValidationError):
        ThinPool.model_validate({"name": "tp", "size": "50%\n"})
    assert "\n" not in label_value("node-a\n")
