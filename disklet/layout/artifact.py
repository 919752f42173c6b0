"""The one artifact: the evaluated, validated ``disko.devices`` value as literal Nix.

After the sandboxed evaluation (and the schema walk, :mod:`disklet.layout.schema`) the value is
printed back by the one Nix literal emitter (:mod:`disklet.layout.nixliteral`): nothing but
attribute sets, lists, strings, integers, booleans and ``null``, every string an escaped literal,
attributes sorted. The artifact is therefore a pure function of the value: it evaluates to that value in
*any* evaluator, sandboxed or not, and the same value always prints to the same bytes.

That literal is the only thing disko ever sees and the only thing promoted to ``current.nix``;
the layout hash is the sha256 of its bytes. The user's text is evaluated only in the sandbox.
"""

from __future__ import annotations

import hashlib
from typing import Any

from .nixliteral import disko_devices_file

HEADER = ("# disklet layout artifact: the evaluated and validated disko.devices of a DiskLayout,\n"
          "# as literal Nix. Generated; do not edit (change the DiskLayout instead).\n")


def render_artifact(devices_value: dict[str, Any]) -> str:
    """``{ "disko"."devices" = <value>; }`` as literal Nix (attributes sorted, deterministic)."""
    return disko_devices_file(HEADER, devices_value, sort_keys=True)


def artifact_hash(artifact: str) -> str:
    return hashlib.sha256(artifact.encode()).hexdigest()
