"""Names of an LVMVolumeGroupSet's children: one function for the operator that creates them and
for kctl, which predicts them (``kctl diff``)."""

from __future__ import annotations

import hashlib

MAX_NAME = 253
HASH_LEN = 10


def digest(*parts: str) -> str:
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()[:HASH_LEN]


def shorten(text: str, limit: int, *hash_parts: str) -> str:
    """``text`` if it fits, else a prefix + ``-`` + stable hash, still a valid name/label value."""
    if len(text) <= limit:
        return text
    prefix = text[: limit - HASH_LEN - 1].rstrip("-._")
    return f"{prefix}-{digest(*(hash_parts or (text,)))}"


def child_name(set_name: str, node_name: str) -> str:
    """Deterministic child LVMVolumeGroup name: ``<set>-<node>``, cut to 253 characters with a stable
    hash of (set, node) when longer. Both inputs are DNS-1123 subdomains, so the result is one too."""
    plain = f"{set_name}-{node_name}"
    return shorten(plain, MAX_NAME, set_name, node_name)
