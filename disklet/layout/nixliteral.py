"""The one Nix literal emitter: plain data → Nix text that evaluates to exactly that data.

Both Nix files disklet writes go through here: the rendered body of a structured layout
(:mod:`disklet.layout.render`) and the artifact of an evaluated one (:mod:`disklet.layout.artifact`).
The output holds nothing but attribute sets, lists, strings, integers, booleans and ``null``: no
functions, conditionals, ``let``, builtins, paths or interpolation.

Every string and every attribute name is a double-quoted literal with ``\\``, ``"`` and ``$``
escaped (so ``${`` can never start an interpolation). Control characters (newlines included) and
non-ASCII are refused rather than escaped: no layout needs them, and refusing keeps the
escaping rule three replacements long.
"""

from __future__ import annotations

import re
from typing import Any

from .errors import LayoutError, MalformedLayout

INDENT = "  "
_NOT_PRINTABLE_ASCII = re.compile(r"[^\x20-\x7e]")

NixValue = str | int | bool | None | list["NixValue"] | dict[str, "NixValue"]


def nix_string(value: str) -> str:
    """A double-quoted Nix string literal that evaluates to exactly ``value``."""
    if not isinstance(value, str):
        raise TypeError(f"nix_string needs a str, got {type(value).__name__}")
    if _NOT_PRINTABLE_ASCII.search(value):
        raise LayoutError(f"{value!r} contains control or non-ASCII characters, which layouts do not allow")
    escaped = value.replace("\\", "\\\\").replace('"', '\\"').replace("$", "\\$")
    return f'"{escaped}"'


def nix_attr_name(name: str) -> str:
    """An attribute name, always quoted (``"data1"``), so no name can be an expression."""
    return nix_string(name)


def nix_value(value: Any, *, sort_keys: bool, depth: int = 0, path: str = "value") -> str:
    """``value`` as a Nix literal; attribute sets one attribute a line, indented ``depth`` levels.

    ``sort_keys``: attributes in sorted order (the artifact: same value, same bytes whatever the
    input order) or in insertion order (the rendered body follows the YAML). ``path`` names the
    place in a :class:`MalformedLayout` raised for anything that is not plain data.
    """
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        return nix_string(value)
    if isinstance(value, list):
        if not value:
            return "[ ]"
        return "[ " + " ".join(nix_value(v, sort_keys=sort_keys, depth=depth + 1, path=f"{path}[{i}]")
                               for i, v in enumerate(value)) + " ]"
    if isinstance(value, dict):
        if not value:
            return "{ }"
        for key in value:
            if not isinstance(key, str):
                raise MalformedLayout(f"{path}: attribute name {key!r} is not a string")
        pad = INDENT * depth
        keys = sorted(value) if sort_keys else list(value)
        lines = ["{"]
        for key in keys:
            item = nix_value(value[key], sort_keys=sort_keys, depth=depth + 1, path=f"{path}.{key}")
            lines.append(f"{pad}{INDENT}{nix_attr_name(key)} = {item};")
        lines.append(f"{pad}}}")
        return "\n".join(lines)
    raise MalformedLayout(f"{path} is a {type(value).__name__}; a Nix literal holds only attribute sets, lists, "
                          "strings, integers, booleans and null")


def disko_devices_file(header: str, devices: Any, *, sort_keys: bool) -> str:
    """``header`` then ``{ "disko"."devices" = <devices>; }``: the shape of every Nix file disklet writes."""
    if not isinstance(devices, dict):
        raise MalformedLayout("disko.devices must be an attribute set")
    body = nix_value(devices, sort_keys=sort_keys, depth=1, path="disko.devices")
    return f'{header}{{\n{INDENT}{nix_attr_name("disko")}.{nix_attr_name("devices")} = {body};\n}}\n'
