"""Pure BlockDevice discovery: block topology + LVM PV facts → desired objects → a sync plan.

No I/O here (the handler reads lsblk/LVM and writes the API), so every rule is unit tested:
- which devices become BlockDevices (disks, partitions, md/mpath/rom; never loop or LVM/crypt
  mappings — those are views of other devices);
- a stable name per device (``block_device_name``: WWN/serial for disks, PARTUUID for
  partitions; the path only when the device has no identity or shares it with another device);
- ``consumable`` with the first reason it is not (docs/design/lvm.md#blockdevice), failing closed when a
  fact is unknown;
- labels mirroring the selectable facts, each value valid for Kubernetes (≤ 63, sanitized);
- ``plan_block_device_sync``: creates, updates (labels and/or status) and deletes, nothing when
  nothing changed.
"""

from __future__ import annotations

import posixpath
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from disklet.api.blockdevice import BlockDeviceStatus, block_device_name
from disklet.api.resources import BLOCK_DEVICE, NODE_LABEL
from disklet.kube.patch import owned_keys_patch
from disklet.labels import label_value as sanitize_label_value
from disklet.labels import node_label_value
from disklet.units import GIB, bytes_to_quantity

from .topology import BlockNode, BlockTopology

HOSTNAME_LABEL = "kubernetes.io/hostname"
LABEL_PREFIX = "disklet.io/"
MIN_CONSUMABLE_BYTES = GIB

# lsblk TYPEs that are real devices worth a BlockDevice; loop devices never are (docs/design/lvm.md), and
# device-mapper children (lvm, crypt, dm) are views of devices that already have one.
LISTED_TYPES = frozenset({"disk", "part", "rom", "mpath", "md", "raid0", "raid1", "raid4", "raid5", "raid6",
                          "raid10", "linear"})
NEVER_CONSUMABLE_TYPES = frozenset({"loop", "rom", "lvm", "crypt", "dm", "mpath"})
ORPHAN_PV_FSTYPE = "LVM2_member"



@dataclass(frozen=True)
class PvFact:
    """What LVM says about one device (canonical path)."""

    device: str
    pv_uuid: str
    vg_name: str = ""
    vg_uuid: str = ""
    lvm_volume_group_name: str | None = None
    """The LVMVolumeGroup named in the VG's owner tag, when disklet manages the VG."""


@dataclass
class DesiredBlockDevice:
    name: str
    labels: dict[str, str]
    status: BlockDeviceStatus

    def to_object(self) -> dict[str, Any]:
        return {"apiVersion": BLOCK_DEVICE.api_version, "kind": BLOCK_DEVICE.kind,
                "metadata": {"name": self.name, "labels": dict(self.labels)},
                "status": self.status.to_wire()}


def _identity(node: BlockNode) -> str:
    if node.type == "part":
        return f"partuuid:{node.partuuid}" if node.partuuid else ""
    if node.wwn:
        return f"wwn:{node.wwn}"
    if node.serial:
        return f"serial:{node.model or ''}:{node.serial}"
    return ""


def _listed(node: BlockNode) -> bool:
    return node.type in LISTED_TYPES and not node.kname.startswith("/dev/loop") and not node.path.startswith("/dev/loop")


def listed_nodes(topology: BlockTopology) -> list[BlockNode]:
    """Devices that get a BlockDevice, each once (an md array under two disks appears twice in lsblk)."""
    seen: set[str] = set()
    out: list[BlockNode] = []
    for node in topology.walk():
        if _listed(node) and node.kname not in seen:
            seen.add(node.kname)
            out.append(node)
    return out


def consumable_reason(node: BlockNode, pv: PvFact | None, swaps: Iterable[str] = ()) -> str | None:
    """None when the device can become a PV of a new VG now; else the first reason it cannot."""
    if node.type in NEVER_CONSUMABLE_TYPES or node.kname.startswith("/dev/dm-"):
        return f"a {node.type or 'device-mapper'} device is never consumable"
    if node.unknown_facts:
        return "state unknown: " + "; ".join(node.unknown_facts)
    if node.mountpoints:
        return f"mounted at {', '.join(node.mountpoints)}"
    if node.path in swaps or node.kname in swaps:
        return "active swap"
    if node.children:
        return f"has partitions or children: {', '.join(c.path for c in node.children)}"
    if node.holders:
        return f"held by {', '.join(node.holders)}"
    if pv is not None and (pv.vg_name or pv.vg_uuid):
        return f"LVM PV of volume group {pv.vg_name or pv.vg_uuid}"
    if node.pttype:
        return f"has a {node.pttype} partition table"
    if node.fstype and not (node.fstype == ORPHAN_PV_FSTYPE and pv is not None):
        return f"has a {node.fstype} signature"
    if node.ro:
        return "read-only"
    if node.hotplug:
        return "hot-pluggable"
    if node.size < MIN_CONSUMABLE_BYTES:
        return f"smaller than 1Gi ({node.size} bytes)"
    return None


def _bool(v: bool) -> str:
    return "true" if v else "false"


def device_labels(node_name: str, status: BlockDeviceStatus) -> dict[str, str]:
    """Labels that mirror the selectable facts (empty facts get no label)."""
    raw: dict[str, str | None] = {
        HOSTNAME_LABEL: node_name,
        NODE_LABEL: node_label_value(node_name),
        f"{LABEL_PREFIX}type": status.type,
        f"{LABEL_PREFIX}name": posixpath.basename(status.path),
        f"{LABEL_PREFIX}size": status.size,
        f"{LABEL_PREFIX}consumable": _bool(status.consumable),
        f"{LABEL_PREFIX}fstype": status.fs_type,
        f"{LABEL_PREFIX}model": status.model,
        f"{LABEL_PREFIX}serial": status.serial,
        f"{LABEL_PREFIX}wwn": status.wwn,
        f"{LABEL_PREFIX}partuuid": status.part_uuid,
        f"{LABEL_PREFIX}rota": None if status.rota is None else _bool(status.rota),
        f"{LABEL_PREFIX}hotplug": None if status.hot_plug is None else _bool(status.hot_plug),
        f"{LABEL_PREFIX}vg": status.actual_vg_name_on_the_node,
        f"{LABEL_PREFIX}lvmvolumegroup": status.lvm_volume_group_name,
    }
    out: dict[str, str] = {}
    for key, value in raw.items():
        clean = sanitize_label_value(value)
        if clean:
            out[key] = clean
    return out


def desired_block_devices(topology: BlockTopology, pv_facts: Mapping[str, PvFact], node_name: str,
                          machine_id: str | None) -> list[DesiredBlockDevice]:
    """The BlockDevice objects this node should have, sorted by name."""
    nodes = listed_nodes(topology)
    identities = {n.kname: _identity(n) for n in nodes}
    counts = Counter(i for i in identities.values() if i)
    out: dict[str, DesiredBlockDevice] = {}
    for node in nodes:
        identity = identities[node.kname]
        if identity and counts[identity] > 1:
            identity = f"{identity}@{node.kname}"  # e.g. two multipath legs share a WWN
        pv = pv_facts.get(node.path) or pv_facts.get(node.kname)
        reason = consumable_reason(node, pv, topology.swaps)
        status = BlockDeviceStatus(
            node_name=node_name, path=node.path, size=bytes_to_quantity(node.size), type=node.type,
            fs_type=node.fstype, pv_uuid=pv.pv_uuid if pv else None,
            vg_uuid=(pv.vg_uuid or None) if pv else None,
            lvm_volume_group_name=pv.lvm_volume_group_name if pv else None,
            actual_vg_name_on_the_node=(pv.vg_name or None) if pv else None,
            part_uuid=node.partuuid, serial=node.serial, wwn=node.wwn, model=node.model, rota=node.rota,
            hot_plug=node.hotplug, machine_id=machine_id or None, consumable=reason is None,
            consumable_reason=reason)
        name = block_device_name(node_name, identity, node.kname)
        out[name] = DesiredBlockDevice(name=name, labels=device_labels(node_name, status), status=status)
    return [out[k] for k in sorted(out)]


# ------------------------------------------------------------------------------ sync planning


@dataclass(frozen=True)
class BlockDeviceUpdate:
    name: str
    labels: dict[str, str | None] | None = None
    """Merge patch of metadata.labels (None values remove stale managed labels); None = unchanged."""
    status: dict[str, Any] | None = None
    """Full status to write; None = unchanged."""


@dataclass
class BlockDeviceSyncPlan:
    creates: list[DesiredBlockDevice] = field(default_factory=list)
    updates: list[BlockDeviceUpdate] = field(default_factory=list)
    deletes: list[str] = field(default_factory=list)

    @property
    def empty(self) -> bool:
        return not (self.creates or self.updates or self.deletes)


def _managed_label(key: str) -> bool:
    return key.startswith(LABEL_PREFIX) or key == HOSTNAME_LABEL


def _status_patch(old: Mapping[str, Any], new: Mapping[str, Any]) -> dict[str, Any] | None:
    """Changed facts only; a fact that disappeared maps to None (the merge patch removes it)."""
    return owned_keys_patch(old, new) or None


def plan_block_device_sync(desired: Iterable[DesiredBlockDevice], existing: Iterable[Mapping[str, Any]],
                           node_name: str) -> BlockDeviceSyncPlan:
    """What to write so the API shows exactly ``desired`` for ``node_name``.

    Only existing objects of this node (label and status both say so, or the label alone when the
    status was never written) are ever updated or deleted.
    """
    plan = BlockDeviceSyncPlan()
    mine: dict[str, Mapping[str, Any]] = {}
    for obj in existing:
        meta = obj.get("metadata") or {}
        labels = meta.get("labels") or {}
        status_node = (obj.get("status") or {}).get("nodeName")
        if labels.get(NODE_LABEL) == node_label_value(node_name) and status_node in (None, node_name) and meta.get("name"):
            mine[meta["name"]] = obj
    wanted = {d.name: d for d in desired}
    for name, d in sorted(wanted.items()):
        old = mine.get(name)
        if old is None:
            plan.creates.append(d)
            continue
        old_labels = dict((old.get("metadata") or {}).get("labels") or {})
        label_patch: dict[str, str | None] = {k: v for k, v in d.labels.items() if old_labels.get(k) != v}
        label_patch.update({k: None for k in old_labels if _managed_label(k) and k not in d.labels})
        status_patch = _status_patch(old.get("status") or {}, d.status.to_wire())
        if label_patch or status_patch is not None:
            plan.updates.append(BlockDeviceUpdate(name=name, labels=label_patch or None, status=status_patch))
    plan.deletes = sorted(n for n in mine if n not in wanted)
    return plan


def pv_facts_from_lvm(pvs: Iterable[Any], vgs: Iterable[Any], canonical: Any = None) -> dict[str, PvFact]:
    """PV facts keyed by device path from LVM report rows (``PV``/``VG`` of the LVM adapter).

    ``canonical(name) -> str | None`` maps LVM's device names to kernel paths when given.
    """
    owners = {v.uuid: v.owner for v in vgs}
    out: dict[str, PvFact] = {}
    for pv in pvs:
        device = (canonical(pv.name) if canonical else None) or pv.name
        out[device] = PvFact(device=device, pv_uuid=pv.uuid, vg_name=pv.vg_name or "", vg_uuid=pv.vg_uuid or "",
                             lvm_volume_group_name=owners.get(pv.vg_uuid) if pv.vg_uuid else None)
    return out
