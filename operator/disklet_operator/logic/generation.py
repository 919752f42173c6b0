"""The layoutGeneration rule (docs/design/disklayout.md): it bumps only when the resolved layout changes.

``layoutHash`` is computed by ``disklet.layout`` over the *evaluated* ``disko.devices`` value, so
reformatting a raw body, re-applying the same manifest or writing the same layout as structured
YAML instead of raw Nix all yield the same hash and therefore the same generation.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class LayoutGeneration:
    layout_hash: str | None
    layout_generation: int | None
    bumped: bool
    """True when this verdict starts a new layout generation (the phase goes back to pending)."""


def next_layout_generation(old_hash: str | None, old_generation: int | None,
                           new_hash: str | None) -> LayoutGeneration:
    """The (hash, generation) pair after a pre-flight that resolved ``new_hash`` (None: did not resolve).

    A layout that does not resolve (malformed, invalid spec, duplicate) keeps the last resolved
    pair: those fields describe the last body that resolved, and going back to it later is no
    change. The first resolved body gets generation 1.
    """
    if new_hash is None:
        return LayoutGeneration(old_hash, old_generation, False)
    if new_hash == old_hash and old_generation is not None:
        return LayoutGeneration(old_hash, old_generation, False)
    return LayoutGeneration(new_hash, (old_generation or 0) + 1, True)
