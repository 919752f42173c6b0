"""One DiskLayout per node: the oldest (creationTimestamp, then name) keeps working, others are refused."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime

from disklet.api.common import parse_rfc3339

_FAR_FUTURE = datetime.max.replace(tzinfo=UTC)


def _parse_time(value: str | None) -> datetime:
    """A missing/garbled timestamp sorts last (never steals a node)."""
    return parse_rfc3339(value) or _FAR_FUTURE


@dataclass(frozen=True)
class LayoutRef:
    """What the operator's index keeps of each DiskLayout: enough to order them."""

    name: str
    created: str | None = None

    def sort_key(self) -> tuple[datetime, str]:
        return (_parse_time(self.created), self.name)


def owner_of(refs: Iterable[LayoutRef]) -> LayoutRef | None:
    """The DiskLayout that owns the node: the oldest by creationTimestamp, then by name."""
    return min(refs, key=LayoutRef.sort_key, default=None)


def older_layout(me: str, refs: Iterable[LayoutRef]) -> str | None:
    """Name of the DiskLayout that owns the node when it is not ``me`` (``me`` is then a duplicate)."""
    owner = owner_of(refs)
    if owner is None or owner.name == me:
        return None
    return owner.name


def duplicate_message(node: str, owner: str) -> str:
    return (f"node {node} already has DiskLayout {owner}; only one DiskLayout per node is allowed. "
            f"Put every disk of the node into {owner} (or delete {owner}; this one is then pre-flighted)")
