"""The layout hash: the sha256 of the one artifact (:mod:`disklet.layout.artifact`).

The artifact is the evaluated ``disko.devices`` value printed as literal Nix with sorted
attributes, so the hash is over the exact bytes disko runs, and it still means what the layout
*means*, not how it is spelled: a structured ``diskLayout`` and a handwritten ``layoutNix`` that
evaluate to the same ``disko.devices`` (including the ``priority`` values disklet emits) produce the
same artifact and hash identically, and reformatting a raw body does not bump ``layoutGeneration``.
``canonical_json`` stays for comparisons of values.
"""

from __future__ import annotations

import json
from typing import Any


def canonical_json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False)


def layout_hash(devices_value: dict[str, Any]) -> str:
    """sha256 (hex) of ``render_artifact(devices_value)``."""
    from .artifact import artifact_hash, render_artifact

    return artifact_hash(render_artifact(devices_value))
