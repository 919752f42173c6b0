"""Label values: every label disklet writes or selects on goes through here, so the writer (operator,
agent) and the reader (an agent's server-side selector) always agree, even for long node names."""

from __future__ import annotations

import hashlib
import re

MAX_LABEL_VALUE = 63
_LABEL_VALUE_OK = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")
_LABEL_BAD_RUN = re.compile(r"[^-A-Za-z0-9_.]+")


def label_value(raw: str | None) -> str:
    """A valid label value for ``raw``: itself when valid; else invalid runs → ``_``, trimmed to
    alphanumerics at both ends, at most 63 characters (a long value keeps a hash suffix, so two long
    values stay distinct)."""
    if not raw:
        return ""
    if len(raw) <= MAX_LABEL_VALUE and _LABEL_VALUE_OK.fullmatch(raw):
        return raw
    value = _LABEL_BAD_RUN.sub("_", raw.strip())
    value = re.sub(r"^[^A-Za-z0-9]+|[^A-Za-z0-9]+$", "", value)
    if len(value) > MAX_LABEL_VALUE:
        digest = hashlib.sha256(raw.encode()).hexdigest()[:8]
        value = re.sub(r"[^A-Za-z0-9]+$", "", value[:54]) + "-" + digest
    return value


def node_label_value(node: str) -> str:
    """The value of ``disklet.io/node`` for a node (node names may be up to 253 characters)."""
    return label_value(node)
