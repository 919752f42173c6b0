"""The two ways a layout can be wrong (docs/design/disklayout.md#validation and #extraction)."""

from __future__ import annotations


class LayoutError(ValueError):
    """A structured layout (or its references) breaks a validation rule; lists every problem."""

    def __init__(self, problems: list[str] | str):
        self.problems: list[str] = [problems] if isinstance(problems, str) else list(problems)
        if len(self.problems) == 1:
            text = self.problems[0]
        else:
            text = f"{len(self.problems)} layout problems:\n" + "\n".join(f"- {p}" for p in self.problems)
        super().__init__(text)


class MalformedLayout(ValueError):
    """A body that does not parse or evaluate, is not a plain attrset, or redirects a device."""


class NixUnavailable(RuntimeError):
    """``nix-instantiate`` is not installed here (extraction may fall back to the static parser)."""


MAX_VALUE_DEPTH = 64
"""Nesting bound of an evaluated layout value. A real ``disko.devices`` is about 12 levels deep
(``disko.devices.zpool.<p>.mode.topology.vdev[].members[]``); anything past the bound is refused
before any recursive walk (schema, target walk, artifact printer, hashing) can hit Python's stack."""


def check_depth(value: object, limit: int = MAX_VALUE_DEPTH) -> None:
    """MalformedLayout when ``value`` nests attribute sets/lists deeper than ``limit`` (iterative)."""
    stack: list[tuple[object, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            children: list[object] = list(item.values())
        elif isinstance(item, list):
            children = list(item)
        else:
            continue
        if depth > limit:
            raise MalformedLayout(f"layout value is nested deeper than {limit} levels (a disko layout needs about "
                                  "12); refusing it before walking it")
        stack.extend((child, depth + 1) for child in children)
