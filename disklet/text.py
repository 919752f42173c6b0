"""Text from the node or the API made safe to print on a terminal (pure)."""

from __future__ import annotations

import re

_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def printable(text: str) -> str:
    """``text`` with every control character (C0 including tabs and line breaks, DEL, C1) shown as
    ``\\xNN``. Device models and serials come from disk firmware, messages from the API: an escape
    sequence in them must not move the cursor, recolour or rewrite what the terminal shows."""
    return _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", text)
