"""The one artifact: the evaluated, validated ``disko.devices`` value as literal Nix.

After the sandboxed evaluation (and the schema walk, :mod:`disklet.layout.schema`) the value is
printed back as Nix that contains nothing but attribute sets, lists, strings, integers, booleans
and ``null``: no functions, no conditionals, no ``let``, no builtins, no paths, no interpolation.
Every string and every attribute name is a double-quoted literal with ``\\``, ``"`` and ``$``
escaped (so ``${`` can never start an interpolation); control characters and non-ASCII are
refused. The artifact is therefore a pure function of the value: it evaluates to that value in
*any* evaluator, sandboxed or not, and the same value always prints to the same bytes.

That literal is the only thing disko ever sees and the only thing promoted to ``current.nix``;
the layout hash is the sha256 of its bytes. The user's text is evaluated only in the sandbox.
"""

from __future__ import annotations

import hashlib
from typing import Any

from .errors import MalformedLayout
from .render import INDENT, nix_attr_name, nix_string

HEADER = ("# disklet layout artifact: the evaluated and validated disko.devices of a DiskLayout,\n"
          "# as literal Nix. Generated; do not edit (change the DiskLayout instead).\n")


def _emit(value: Any, depth: int, path: str) -> str:
    pad = INDENT * depth
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
        return "[ " + " ".join(_emit(v, depth + 1, f"{path}[{i}]") for i, v in enumerate(value)) + " ]"
    if isinstance(value, dict):
        if not value:
            return "{ }"
        lines = ["{"]
        for key in sorted(value):
            if not isinstance(key, str):
                raise MalformedLayout(f"{path}: attribute name {key!r} is not a string")
            lines.append(f"{pad}{INDENT}{nix_attr_name(key)} = {_emit(value[key], depth + 1, f'{path}.{key}')};")
        lines.append(f"{pad}}}")
        return "\n".join(lines)
    raise MalformedLayout(f"{path} is a {type(value).__name__}; the artifact holds only attribute sets, lists, "
                          "strings, integers, booleans and null")


def render_artifact(devices_value: dict[str, Any]) -> str:
    """``{ "disko"."devices" = <value>; }`` as literal Nix (attributes sorted, deterministic)."""
    if not isinstance(devices_value, dict):
        raise MalformedLayout("disko.devices must be an attribute set")
    body = _emit(devices_value, 1, "disko.devices")
    return f'{HEADER}{{\n{INDENT}{nix_attr_name("disko")}.{nix_attr_name("devices")} = {body};\n}}\n'


def artifact_hash(artifact: str) -> str:
    return hashlib.sha256(artifact.encode()).hexdigest()
