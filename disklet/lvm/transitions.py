"""The LVMVolumeGroup spec's transition rules as one pure check, before anything is sent.

The API server enforces them with the CRD's CEL rules (``disklet.api.lvm``): ``type``,
``actualVGNameOnTheNode`` and ``local.nodeName`` never change; a file device is never removed,
its directory never changes and its size only grows (docs/lvm.md). Three callers ask the same
question about two wire specs (``old`` as stored, ``new`` as it would be written) and must get
the same answer: the LVMVolumeGroupSet planner (does not send a patch the server would refuse),
``kctl rollout undo`` (is the previous template still reachable) and ``kctl diff`` (what the
server would refuse).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from disklet.units import QuantityError, quantity_bytes

FILE_DEVICES = "fileDevices"
IMMUTABLE_KEYS = ("type", "actualVGNameOnTheNode")


@dataclass(frozen=True)
class TransitionProblem:
    """One rule ``old`` → ``new`` breaks: the field (``fileDevices`` for any file-device rule) and why."""

    field: str
    message: str

    def __str__(self) -> str:
        return self.message


def transition_problems(old: Mapping[str, Any] | None, new: Mapping[str, Any]) -> list[TransitionProblem]:
    """What the API server would refuse when the LVMVolumeGroup spec ``old`` becomes ``new`` (wire dicts).

    A field ``old`` does not have is not compared (nothing to keep); no ``old`` means a create.
    """
    if not old:
        return []
    out: list[TransitionProblem] = []
    for key in IMMUTABLE_KEYS:
        if key in old and old.get(key) != new.get(key):
            out.append(TransitionProblem(key, f"{key} is immutable ({old.get(key)!r} → {new.get(key)!r})"))
    old_node = (old.get("local") or {}).get("nodeName")
    new_node = (new.get("local") or {}).get("nodeName")
    if old_node and old_node != new_node:
        out.append(TransitionProblem("local.nodeName", f"local.nodeName is immutable ({old_node!r} → {new_node!r})"))
    new_fds = {fd.get("name"): fd for fd in new.get(FILE_DEVICES) or ()}
    for ofd in old.get(FILE_DEVICES) or ():
        name = ofd.get("name")
        nfd = new_fds.get(name)
        if nfd is None:
            out.append(TransitionProblem(FILE_DEVICES, f"file device {name!r} would be removed: file devices cannot "
                                                       "be removed (the backing file holds a PV)"))
            continue
        if nfd.get("directory") != ofd.get("directory"):
            out.append(TransitionProblem(FILE_DEVICES, f"file device {name!r}: directory {ofd.get('directory')} → "
                                                       f"{nfd.get('directory')}: the directory is immutable"))
        try:
            shrinks = quantity_bytes(str(nfd.get("size"))) < quantity_bytes(str(ofd.get("size")))
        except QuantityError:
            out.append(TransitionProblem(FILE_DEVICES, f"file device {name!r}: size {ofd.get('size')} → "
                                                       f"{nfd.get('size')}: not comparable"))
            continue
        if shrinks:
            out.append(TransitionProblem(FILE_DEVICES, f"file device {name!r}: size {ofd.get('size')} → "
                                                       f"{nfd.get('size')} would shrink: file devices only grow"))
    return out
