"""The node label every DiskLayout and LVMVolumeGroup carries, so agents watch with a server-side selector."""

from __future__ import annotations

from collections.abc import Mapping

from disklet.api.resources import NODE_LABEL
from disklet.labels import node_label_value


def node_label_patch(labels: Mapping[str, str] | None, node: str | None) -> dict[str, str] | None:
    """``{NODE_LABEL: node}`` when the label is missing or wrong; None when nothing must change.

    Without a node name (an invalid object) the label is left alone: guessing would route the
    object to the wrong agent.
    """
    if not node:
        return None
    value = node_label_value(node)
    if (labels or {}).get(NODE_LABEL) == value:
        return None
    return {NODE_LABEL: value}
