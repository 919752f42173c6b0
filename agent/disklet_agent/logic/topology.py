"""The node's block devices as one value: what ``lsblk`` (plus sysfs, ``blkid``/``wipefs`` and
``/proc/swaps``) reported, with how sure the agent is of each fact. Pure data: the host adapter
(``disklet_agent.host.lsblk``) builds it, the classifier and the BlockDevice sync read it."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any


@dataclass
class BlockNode:
    """One lsblk node, with the facts the classifier needs (and how sure we are of them)."""

    path: str
    kname: str
    name: str = ""
    type: str = ""
    fstype: str | None = None
    """Filesystem/signature type (lsblk FSTYPE, else ``blkid -p`` TYPE); None = none found."""
    pttype: str | None = None
    """Partition-table type (lsblk PTTYPE, else ``blkid -p`` PTTYPE); None = none found."""
    mountpoints: list[str] = field(default_factory=list)
    pkname: str | None = None
    size: int = 0
    ro: bool = False
    rm: bool = False
    hotplug: bool = False
    rota: bool = False
    serial: str | None = None
    wwn: str | None = None
    model: str | None = None
    partuuid: str | None = None
    maj_min: str | None = None
    ptuuid: str | None = None
    """GPT disk GUID / DOS disk id (lsblk PTUUID, else ``blkid -p`` PTUUID)."""
    partlabel: str | None = None
    """GPT partition name (lsblk PARTLABEL, else ``blkid -p`` PART_ENTRY_NAME)."""
    vendor: str | None = None
    tran: str | None = None
    """Transport as lsblk reports it (nvme, sata, sas, usb, iscsi, fc, ...; empty for virtio and loop)."""
    log_sec: int = 0
    phy_sec: int = 0
    label: str | None = None
    """Filesystem label (for a zfs_member: the pool name)."""
    by_id: list[str] = field(default_factory=list)
    """Names of the /dev/disk/by-id links to this device (filled by the discovery, not by lsblk)."""
    backing_file: str | None = None
    """For loop devices: the backing file (sysfs ``loop/backing_file``)."""
    holders: list[str] = field(default_factory=list)
    """Devices stacked on this one (``/dev/dm-0``, ``/dev/md0``), from sysfs."""
    children: list[BlockNode] = field(default_factory=list)
    fstype_source: str = "lsblk"
    """Where ``fstype``/``pttype`` came from: lsblk, blkid, wipefs or size0 (empty device)."""
    probe_error: str | None = None
    """Set when the signature probe failed: the content of this device is unknown."""
    holders_error: str | None = None
    """Set when the holders directory could not be read: what sits on this device is unknown."""

    def walk(self) -> Iterator[BlockNode]:
        """This node, then every descendant depth first."""
        yield self
        for child in self.children:
            yield from child.walk()

    @property
    def has_signature(self) -> bool:
        return bool(self.fstype or self.pttype)

    @property
    def unknown_facts(self) -> list[str]:
        """Facts we could not establish (empty when everything is known)."""
        out = []
        if self.probe_error:
            out.append(f"signature probe of {self.path}: {self.probe_error}")
        if self.holders_error:
            out.append(f"holders of {self.path}: {self.holders_error}")
        return out

    @property
    def blank(self) -> bool:
        """Nothing on it at all: no children, holders, partition table or signature, and all known."""
        return not (self.children or self.holders or self.has_signature or self.mountpoints
                    or self.unknown_facts)

    def to_dict(self) -> dict[str, Any]:
        return {
            "path": self.path, "kname": self.kname, "type": self.type, "fstype": self.fstype,
            "pttype": self.pttype, "mountpoints": list(self.mountpoints), "size": self.size,
            "ro": self.ro, "rm": self.rm, "hotplug": self.hotplug, "rota": self.rota,
            "serial": self.serial, "wwn": self.wwn, "model": self.model, "partuuid": self.partuuid,
            "majMin": self.maj_min, "ptuuid": self.ptuuid, "partlabel": self.partlabel,
            "vendor": self.vendor, "tran": self.tran, "logSec": self.log_sec, "phySec": self.phy_sec,
            "label": self.label, "byId": list(self.by_id),
            "backingFile": self.backing_file, "holders": list(self.holders), "fstypeSource": self.fstype_source,
            "probeError": self.probe_error, "holdersError": self.holders_error,
            "children": [c.to_dict() for c in self.children],
        }


@dataclass
class BlockTopology:
    """A snapshot of every block device on the node plus its active swaps."""

    roots: list[BlockNode]
    swaps: list[str] = field(default_factory=list)
    swaps_error: str | None = None
    """Set when ``/proc/swaps`` could not be read: swap state is unknown."""

    def walk(self) -> Iterator[BlockNode]:
        """Every node (a device with several parents, e.g. an md array, appears once per parent)."""
        for root in self.roots:
            yield from root.walk()

    def find(self, path: str) -> BlockNode | None:
        """The node whose PATH or KNAME is ``path`` (use resolved kernel paths)."""
        for node in self.walk():
            if path in (node.path, node.kname):
                return node
        return None

    def to_dict(self) -> dict[str, Any]:
        return {"blockdevices": [r.to_dict() for r in self.roots], "swaps": list(self.swaps),
                "swapsError": self.swaps_error}
