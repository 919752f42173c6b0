"""Pure discovery: the status of one LVMVolumeGroup from a snapshot (docs/design/lvm.md rules 4, 10, 11)."""

from __future__ import annotations

import posixpath
from collections.abc import Mapping
from dataclasses import dataclass

from disklet.api.common import Condition, set_condition
from disklet.api.lvm import (
    ConditionType,
    LVGPhase,
    LVMVolumeGroupSpec,
    LVMVolumeGroupStatus,
    NodeDevice,
    NodeFileDevice,
    NodeStatus,
    Reason,
    ThinPoolStatus,
)
from disklet.lvm.sizing import plan_thin_pool
from disklet.lvm.thinpool import PoolFill
from disklet.units import bytes_to_quantity

from ..host.lvm import VG
from .planner import managed_loop
from .snapshot import LvmSnapshot


@dataclass(frozen=True)
class VgLookup:
    vg: VG | None
    error: str | None = None


def find_vg(snap: LvmSnapshot, lvg_name: str, vg_name: str, uuid_hint: str | None) -> VgLookup:
    """Identity is the VG UUID; ownership is the owner tag, always: a UUID read from status (which
    anyone allowed to patch status can write) never makes a VG ours on its own."""
    if uuid_hint:
        vg = snap.vg_by_uuid(uuid_hint)
        if vg is not None and vg.owner == lvg_name:
            return VgLookup(vg)
        if vg is not None:
            return VgLookup(None, f"the volume group with UUID {uuid_hint} ({vg.name}) does not carry the owner tag "
                                  f"disklet.io/lvmVolumeGroupName={lvg_name}: not touching it")
    same_name = [v for v in snap.vgs if v.name == vg_name]
    ours = [v for v in same_name if v.owner == lvg_name]
    if len(ours) == 1:
        return VgLookup(ours[0])
    if len(ours) > 1:
        return VgLookup(None, f"{len(ours)} volume groups named {vg_name} carry the owner tag of {lvg_name}: "
                              "rename or remove the extra ones (vgrename by UUID)")
    if same_name:
        v = same_name[0]
        owner = f"owned by LVMVolumeGroup {v.owner}" if v.owner else "not managed by disklet"
        return VgLookup(None, f"a volume group named {vg_name} (UUID {v.uuid}) already exists on the node and is "
                              f"{owner}: choose another actualVGNameOnTheNode or tag it "
                              f"disklet.io/lvmVolumeGroupName={lvg_name} to adopt it")
    return VgLookup(None)


def name_ambiguity(snap: LvmSnapshot, vg: VG) -> str | None:
    """Why the managed VG's name is ambiguous on the node (another VG, with another UUID, carries it),
    or None. The message names both UUIDs; it is the same text on every read of the same state."""
    others = snap.same_name(vg)
    if not others:
        return None
    named = ", ".join(f"{uuid} (on {dev})" if dev else uuid for uuid, dev in others)
    return (f"volume group name {vg.name} is used by VGs {vg.uuid} (this LVMVolumeGroup's) and {named}: LVM refuses "
            f"to act on a name that is ambiguous, so the agent changes nothing on {vg.name} while it is; rename the "
            f"other volume group by its UUID (vgrename {others[0][0]} NEWNAME) or remove it")


def name_conflict_status(discovered: LVMVolumeGroupStatus, message: str) -> LVMVolumeGroupStatus:
    """``discovered`` with what a reconcile of the ambiguous VG reports: phase ``NotReady``, nothing
    applied, ``VGConfigurationApplied`` and ``VGReady`` False for ``VGNameConflict`` (``message``).
    The condition's generation is the caller's (the object's observed generation)."""
    out = discovered.model_copy(deep=True)
    out.phase = LVGPhase.NOT_READY
    out.configuration_applied = False
    conditions: list[Condition] = []
    for t in (ConditionType.VG_CONFIGURATION_APPLIED, ConditionType.VG_READY):
        conditions = set_condition(conditions, t, "False", Reason.VG_NAME_CONFLICT, message)
    out.conditions = conditions
    return out


def quantity(n: int | None) -> str | None:
    """Bytes as a Kubernetes quantity (``10Gi``), None stays None."""
    return None if n is None else bytes_to_quantity(int(n))


def _limit_pct(limit: str) -> int:
    return int(limit.rstrip("%"))


def _fill_fields(fill: PoolFill | None) -> dict[str, object]:
    """Thin-pool health fields of the status (data/metadata %, chunk and metadata LV size)."""
    if fill is None:
        return {}
    return {"data_percent": fill.data_percent, "metadata_percent": fill.metadata_percent,
            "chunk_size": quantity(fill.chunk_size), "metadata_size": quantity(fill.metadata_size)}


def discover_status(lvg_name: str, spec: LVMVolumeGroupSpec, snap: LvmSnapshot, node_name: str, vg: VG,
                    block_devices: Mapping[str, str] | None = None) -> LVMVolumeGroupStatus | None:
    """Discovered fields only (no phase/conditions); None when a backing file cannot be read this cycle."""
    devices: list[NodeDevice] = []
    file_devices: dict[str, NodeFileDevice] = {}
    bd_names = dict(block_devices or {})
    for pv in snap.pvs_of(vg):
        dev = snap.canonical(pv.name)
        if dev is None:
            return None  # an alias we cannot resolve: do not write a partial status
        if dev.startswith("/dev/loop"):
            loop = snap.loop(dev)
            if loop is None or not loop.back_file:
                return None
            owner = vg.owner
            parsed = managed_loop(loop, snap.base_dirs, owner) if owner else None
            if parsed is None:
                continue  # not ours by the backing-file marker: never reported
            file_devices[parsed[1]] = NodeFileDevice(
                name=parsed[1], file_path=loop.back_file, loop_device=dev, size=quantity(pv.size), pv_uuid=pv.uuid)
        else:
            devices.append(NodeDevice(block_device=bd_names.get(dev) or bd_names.get(pv.name), path=dev,
                                      pv_size=quantity(pv.size), dev_size=quantity(pv.dev_size), pv_uuid=pv.uuid))
    devices.sort(key=lambda d: d.path)
    node = NodeStatus(name=node_name, devices=devices or None,
                      file_devices=[file_devices[k] for k in sorted(file_devices)] or None)
    lvs = snap.lvs_of(vg)
    pools: list[ThinPoolStatus] = []
    ready = 0
    for tp in spec.thin_pools or []:
        lv = next((x for x in lvs if x.name == tp.name and x.is_thin_pool), None)
        if lv is None:
            pools.append(ThinPoolStatus(name=tp.name, allocation_limit=tp.allocation_limit, ready=False,
                                        message="thin pool does not exist yet"))
            continue
        allocated = sum(x.size for x in lvs if x.pool_lv == tp.name)
        used = int(lv.size * (lv.data_percent or 0.0) / 100)
        available = lv.size * _limit_pct(tp.allocation_limit) // 100 - allocated
        action = plan_thin_pool(tp.size, vg_size=vg.size, vg_free=vg.free, extent=vg.extent_size or 1,
                                current_size=lv.size)
        ok = action.kind == "none"
        ready += ok
        pools.append(ThinPoolStatus(
            name=tp.name, actual_size=quantity(lv.size), used_size=quantity(used), allocated_size=quantity(allocated),
            allocation_limit=tp.allocation_limit, available_space=quantity(max(available, 0)), ready=ok,
            message=None if ok else f"thin pool is below its requested size {tp.size}",
            **_fill_fields(lv.fill)))
    return LVMVolumeGroupStatus(
        nodes=[node], vg_uuid=vg.uuid, vg_size=quantity(vg.size), vg_free=quantity(vg.free), allocated_size=quantity(vg.size - vg.free),
        extent_size=quantity(vg.extent_size), thin_pools=pools or None,
        thin_pool_ready=f"{ready}/{len(spec.thin_pools)}" if spec.thin_pools else None)


def status_file_paths(status: LVMVolumeGroupStatus | None, node_name: str) -> dict[str, str]:
    """basename → recorded filePath of this node's file devices (rule 8 keys by basename)."""
    out: dict[str, str] = {}
    for node in (status.nodes or []) if status else []:
        if node.name != node_name:
            continue
        for fd in node.file_devices or []:
            out[posixpath.basename(fd.file_path)] = fd.file_path
    return out
