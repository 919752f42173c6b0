"""The JSON merge patches (RFC 7386) disklet writes: pure functions, no I/O.

Every status and object write of the operator and the agent is a merge patch computed here, so
"write only on change" means the same thing everywhere: an empty patch is no request.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any


def merge_patch(old: Mapping[str, Any], new: Mapping[str, Any]) -> dict[str, Any]:
    """The merge patch turning ``old`` into ``new``, recursively (None deletes a key; lists are replaced)."""
    out: dict[str, Any] = {}
    for key in old:
        if key not in new:
            out[key] = None
    for key, value in new.items():
        before = old.get(key)
        if isinstance(value, Mapping) and isinstance(before, Mapping):
            sub = merge_patch(before, value)
            if sub:
                out[key] = sub
        elif key not in old or before != value:
            out[key] = value
    return out


def owned_keys_patch(old: Mapping[str, Any] | None, new: Mapping[str, Any],
                     keys: Iterable[str] | None = None) -> dict[str, Any]:
    """Top-level keys of ``new`` that differ from ``old`` (a removed key maps to None).

    Only ``keys`` are considered when given — the fields this writer owns, so another writer's
    fields are never cleared; nested values are replaced whole.
    """
    before = dict(old or {})
    consider = set(keys) if keys is not None else set(before) | set(new)
    out: dict[str, Any] = {}
    for key in sorted(consider):
        if key in new:
            if before.get(key) != new[key]:
                out[key] = new[key]
        elif key in before and before[key] is not None:
            out[key] = None
    return out
