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
