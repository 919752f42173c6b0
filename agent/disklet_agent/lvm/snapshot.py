"""One read of the node's LVM and loop state: losetup list + pvs + vgs + lvs (shared per cycle)."""

from __future__ import annotations

from dataclasses import dataclass, field

from ..host.losetup import LoopDevice
from ..host.lvm import LV, PV, VG, NamedVG
from .planner import canonical_device, managed_loop


@dataclass
class LvmSnapshot:
    loops: list[LoopDevice] = field(default_factory=list)
    pvs: list[PV] = field(default_factory=list)
    vgs: list[VG] = field(default_factory=list)
    lvs: list[LV] = field(default_factory=list)
    base_dirs: tuple[str, ...] = ()
    """The configured base directory and its canonical form (losetup reports resolved paths)."""
    aliases: dict[str, str] = field(default_factory=dict)
    """LVM-reported alias names resolved to kernel names."""
    error: str | None = None
    """Set when any part could not be read: then nothing may be decided from it."""
    node_vgs: list[NamedVG] | None = None
    """Every VG of the node as the node-wide read (no device filter) saw it, read next to this
    snapshot; None when it was not read or could not be. For names only (:meth:`same_name`)."""

    @property
    def ok(self) -> bool:
        return self.error is None

    def loops_by_majmin(self) -> dict[str, str]:
        return {lp.maj_min: lp.name for lp in self.loops if lp.maj_min}

    def loop(self, name: str) -> LoopDevice | None:
        return next((lp for lp in self.loops if lp.name == name), None)

    def owned_loops(self) -> list[LoopDevice]:
        return [lp for lp in self.loops if managed_loop(lp, self.base_dirs) is not None]

    def canonical(self, pv_name: str) -> str | None:
        return canonical_device(pv_name, self.loops_by_majmin(), self.aliases)

    def unresolved(self) -> list[str]:
        return [p.name for p in self.pvs if self.canonical(p.name) is None]

    def pvs_by_device(self) -> dict[str, PV]:
        out: dict[str, PV] = {}
        for p in self.pvs:
            dev = self.canonical(p.name)
            if dev is not None:
                out[dev] = p
        return out

    def vg_by_uuid(self, uuid: str) -> VG | None:
        return next((v for v in self.vgs if v.uuid == uuid), None)

    def same_name(self, vg: VG) -> list[tuple[str, str]]:
        """(UUID, device) of every OTHER volume group named like ``vg``: in this filtered read (LVM
        then warns "VG name … is used by VGs A and B" on every report) or node-wide, behind the
        filter. Sorted by UUID; the device is "" when only the filtered read saw it."""
        out: dict[str, str] = {}
        for v in self.vgs:
            if v.name == vg.name and v.uuid != vg.uuid:
                out[v.uuid] = next((p.name for p in self.pvs if p.vg_uuid == v.uuid), "")
        for row in self.node_vgs or []:
            if row.name == vg.name and row.uuid and row.uuid != vg.uuid and not out.get(row.uuid):
                out[row.uuid] = row.device
        return sorted(out.items())

    def pvs_of(self, vg: VG) -> list[PV]:
        return [p for p in self.pvs if p.vg_uuid == vg.uuid]

    def lvs_of(self, vg: VG) -> list[LV]:
        return [lv for lv in self.lvs if lv.vg_uuid == vg.uuid or (not lv.vg_uuid and lv.vg_name == vg.name)]
