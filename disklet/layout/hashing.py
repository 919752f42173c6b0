"""The layout hash: what the layout *means*, not how it is spelled.

``layout_hash`` is the sha256 (hex) of the canonical JSON of the evaluated ``disko.devices``
value: keys sorted, compact separators, ASCII only. Nix attribute sets have no order and
evaluation drops comments, whitespace, quoting and ``let``/dotted-path sugar, so a structured
``diskLayout`` and a handwritten ``layoutNix`` that evaluate to the same ``disko.devices`` (including
the ``priority`` values disklet emits) hash identically, and reformatting a raw body does not bump
``layoutGeneration``.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any


def canonical_json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False)


def layout_hash(devices_value: dict[str, Any]) -> str:
    return hashlib.sha256(canonical_json(devices_value).encode()).hexdigest()
