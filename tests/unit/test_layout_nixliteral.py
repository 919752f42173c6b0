"""The one Nix literal emitter (disklet.layout.nixliteral): exact, injection-proof, deterministic.

Both the rendered body and the artifact are printed by it; the host tier checks the same strings
against the real nix-instantiate (tests/host/test_layout_nix.py)."""

from __future__ import annotations

from typing import Any

import pytest

from disklet.layout import LayoutError, MalformedLayout
from disklet.layout.nixliteral import disko_devices_file, nix_attr_name, nix_string, nix_value
from disklet.layout.static import static_evaluate

HOSTILE = [
    "${x}", "$${x}", "\\${x}", "''${x}", "${", "$", '"', '\\"', "\\", "x\\", "''", "#", "/*", "*/",
    'a"; y = import /etc/passwd; "', '${builtins.readFile "/etc/passwd"}', "",
]


@pytest.mark.parametrize("text", HOSTILE)
def test_hostile_strings_and_names_read_back_exactly(text: str) -> None:
    value = {text: {"s": text, "l": [text, text + text]}, "plain": text}
    for sort_keys in (True, False):
        nix = disko_devices_file("# h\n", value, sort_keys=sort_keys)
        assert static_evaluate(nix) == {"disko": {"devices": value}}
        assert "${" not in nix.replace("\\${", "")  # every ${ is escaped


@pytest.mark.parametrize("text", ["a\nb", "a\rb", "tab\there", "nul\x00", "\x7f", "é", "日本", "\u202e"])
def test_newlines_control_and_non_ascii_are_refused_in_strings_and_names(text: str) -> None:
    with pytest.raises(LayoutError, match="control or non-ASCII"):
        nix_value({"s": text}, sort_keys=True)
    with pytest.raises(LayoutError, match="control or non-ASCII"):
        nix_value({text: 1}, sort_keys=False)
    with pytest.raises(LayoutError, match="control or non-ASCII"):
        nix_attr_name(text)


def test_scalars_and_empty_containers() -> None:
    assert [nix_value(v, sort_keys=True) for v in (None, True, False, 0, 42, "", [], {})] == \
        ["null", "true", "false", "0", "42", '""', "[ ]", "{ }"]
    assert nix_string('a"b') == '"a\\"b"'


def test_order_sorted_or_as_given() -> None:
    value = {"b": 1, "a": {"d": 2, "c": 3}}
    assert nix_value(value, sort_keys=True) == '{\n  "a" = {\n    "c" = 3;\n    "d" = 2;\n  };\n  "b" = 1;\n}'
    assert nix_value(value, sort_keys=False) == '{\n  "b" = 1;\n  "a" = {\n    "d" = 2;\n    "c" = 3;\n  };\n}'
    assert disko_devices_file("", dict(reversed(list(value.items()))), sort_keys=True) == \
        disko_devices_file("", value, sort_keys=True)


@pytest.mark.parametrize("bad,where", [
    ({"a": 1.5}, "disko.devices.a is a float"),
    ({"a": [1, {"b": object()}]}, r"disko.devices.a\[1\].b is a object"),
    ({"a": {1: "x"}}, "disko.devices.a: attribute name 1 is not a string"),
])
def test_anything_but_plain_data_is_refused_with_its_place(bad: dict[str, Any], where: str) -> None:
    with pytest.raises(MalformedLayout, match=where):
        disko_devices_file("", bad, sort_keys=True)


def test_devices_must_be_an_attribute_set() -> None:
    with pytest.raises(MalformedLayout, match="must be an attribute set"):
        disko_devices_file("", ["x"], sort_keys=True)
