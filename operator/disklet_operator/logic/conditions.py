"""Write only our own conditions into a list other writers (the agent) share with us."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from disklet.api.common import Condition


def merge_owned_conditions(raw: Iterable[Mapping[str, Any]] | None, owned: Iterable[Condition]) -> list[dict[str, Any]]:
    """``raw`` with each condition of ``owned`` replacing the one of its type (or appended).

    Conditions of other types are kept byte for byte (never normalised), so comparing the result
    with ``raw`` tells exactly whether our conditions changed.
    """
    out: list[dict[str, Any]] = [dict(c) for c in raw or [] if isinstance(c, Mapping)]
    for cond in owned:
        wire = cond.to_wire()
        for i, existing in enumerate(out):
            if existing.get("type") == cond.type:
                out[i] = wire
                break
        else:
            out.append(wire)
    return out


def parse_conditions(raw: Iterable[Any] | None) -> list[Condition]:
    """The conditions that parse as metav1.Condition (a malformed entry is skipped, never fatal)."""
    out: list[Condition] = []
    for c in raw or []:
        try:
            out.append(Condition.model_validate(c))
        except Exception:  # noqa: BLE001 - a foreign malformed condition must not break our reconcile
            continue
    return out
