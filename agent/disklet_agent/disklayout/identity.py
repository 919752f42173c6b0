"""Which devices may be targets, and proof that a device is the one we applied to. (PURE)

Kernel names are not identities: after a reboot or a hot-plug ``/dev/sdb`` can be another disk,
and two paths can lead to one disk (multipath). So (docs/layouts.md, "Target devices"):

- **Eligible types.** Only whole disks (lsblk ``TYPE=disk``) that are writable (``RO=0``), not
  removable (``RM=0``) and whose kernel name is not a virtual/stacked family (loop, dm, rbd, nbd,
  drbd, zram, md, sr) may be targets. Loop devices are admitted only with the agent setting
  ``DISKLET_ALLOW_LOOP_TARGETS`` (tests and demos).
- **Identity.** After a successful apply the agent records each disk's stable identity (WWN,
  serial, model, size, GPT disk GUID, and for loop devices the backing file) next to
  ``current.nix`` (``identity.json``) and in status. A target the applied layout names is "ours"
  only when the live device matches that record; otherwise ``target_device_identity_changed``.
- **One disk, one target.** Targets with the same WWN (or serial+model) are the same disk.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from disklet_agent.logic.topology import BlockNode

IDENTITY_NAME = "identity.json"
VIRTUAL_KNAME = re.compile(r"^(loop|dm-|rbd|nbd|drbd|zram|md|sr|ram)\d*")


@dataclass(frozen=True)
class DiskIdentity:
    wwn: str | None = None
    serial: str | None = None
    model: str | None = None
    size: int = 0
    ptuuid: str | None = None
    backing_file: str | None = None

    @classmethod
    def of(cls, node: BlockNode) -> DiskIdentity:
        return cls(wwn=node.wwn, serial=node.serial, model=node.model, size=node.size,
                   ptuuid=(node.ptuuid or "").lower() or None, backing_file=node.backing_file)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> DiskIdentity:
        return cls(wwn=data.get("wwn") or None, serial=data.get("serial") or None, model=data.get("model") or None,
                   size=int(data.get("size") or 0), ptuuid=(data.get("ptuuid") or "").lower() or None,
                   backing_file=data.get("backingFile") or None)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["backingFile"] = d.pop("backing_file")
        return {k: v for k, v in d.items() if v not in (None, 0)}

    def key(self) -> str | None:
        """What makes two paths the same disk (None: nothing stable to compare)."""
        if self.wwn:
            return f"wwn:{self.wwn}"
        if self.serial:
            return f"serial:{self.serial}:{self.model or ''}"
        if self.backing_file:
            return f"file:{self.backing_file}"
        return None

    def mismatch(self, live: DiskIdentity) -> str | None:
        """Why ``live`` is not the disk this record describes (None: it is)."""
        facts = [("WWN", self.wwn, live.wwn), ("serial", self.serial, live.serial), ("model", self.model, live.model),
                 ("GPT disk GUID", self.ptuuid, live.ptuuid), ("backing file", self.backing_file, live.backing_file)]
        for what, recorded, now in facts:
            if recorded and recorded != now:
                return f"{what} was {recorded!r} when applied, now {now!r}"
        if self.size and self.size != live.size:
            return f"size was {self.size} bytes when applied, now {live.size}"
        if not (self.wwn or self.serial or self.ptuuid or self.backing_file):
            return "the recorded identity has nothing stable to compare (no WWN, serial, GPT GUID or backing file)"
        return None


def eligibility_problem(node: BlockNode, *, allow_loop: bool) -> str | None:
    """Why ``node`` may not be a target at all (None: it may)."""
    kname = node.kname.rsplit("/", 1)[-1]
    if node.type == "loop" and allow_loop and kname.startswith("loop"):
        pass
    elif node.type != "disk":
        return (f"{node.path} is a {node.type or 'device of unknown type'} (lsblk TYPE={node.type or '?'}), not a "
                "whole disk: a target must be of type disk")
    elif VIRTUAL_KNAME.match(kname):
        return f"{node.path} is a virtual or stacked device ({kname}), not a physical disk"
    if node.ro:
        return f"{node.path} is read-only"
    if node.rm:
        return f"{node.path} is removable media"
    return None


def read_identities(directory: Path) -> dict[str, DiskIdentity] | None:
    """``identity.json`` → {target as written: identity}; None when there is no record."""
    path = directory / IDENTITY_NAME
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    disks = data.get("disks") if isinstance(data, dict) else None
    if not isinstance(disks, dict):
        raise ValueError(f"{path} has no disks map")
    return {str(k): DiskIdentity.from_dict(v) for k, v in disks.items() if isinstance(v, dict)}


def identities_text(identities: Mapping[str, DiskIdentity]) -> str:
    return json.dumps({"disks": {k: v.to_dict() for k, v in sorted(identities.items())}}, indent=2,
                      sort_keys=True) + "\n"


def duplicate_identities(nodes: Iterable[tuple[str, BlockNode]]) -> list[str]:
    """Targets that are one disk under two paths (same WWN or serial+model)."""
    seen: dict[str, str] = {}
    out: list[str] = []
    for target, node in nodes:
        key = DiskIdentity.of(node).key()
        if key is None or key.startswith("file:") and not node.backing_file:
            continue
        if key in seen:
            out.append(f"{target} and {seen[key]} are the same disk ({key})")
        else:
            seen[key] = target
    return out
