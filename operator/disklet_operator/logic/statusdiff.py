"""The merge patch that turns one status dict into another, top-level keys only."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def status_patch(old: Mapping[str, Any] | None, new: Mapping[str, Any], keys: set[str] | None = None) -> dict[str, Any]:
    """Changed keys of ``new`` vs ``old`` (a removed key maps to None, which deletes it in a merge patch).

    Only ``keys`` are considered when given (the fields this writer owns); lists and nested maps are
    replaced whole, which is what a JSON merge patch does with them anyway.
    """
    old = dict(old or {})
    consider = keys if keys is not None else set(old) | set(new)
    out: dict[str, Any] = {}
    for key in sorted(consider):
        if key in new:
            if old.get(key) != new[key]:
                out[key] = new[key]
        elif key in old and old[key] is not None:
            out[key] = None
    return out
