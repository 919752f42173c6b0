"""Pure helpers of the LVMVolumeGroup wiring: selection, status merging, when to reconcile.

The agent writes ``VGConfigurationApplied``/``VGReady`` and the discovered fields; the operator
writes ``NodeReady``/``AgentReady``/``Ready``. Every status the agent writes keeps the
operator's conditions as they are on the server, so the two writers never erase each other.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from disklet.api.common import BlockDeviceSelector, LabelSelector, get_condition, set_condition
from disklet.api.lvm import ConditionType, LVGPhase, LVMVolumeGroupSpec, LVMVolumeGroupStatus, Reason
from disklet.kube.patch import owned_keys_patch

AGENT_CONDITIONS = frozenset({ConditionType.VG_CONFIGURATION_APPLIED.value, ConditionType.VG_READY.value})
DISCOVERED_FIELDS = ("nodes", "vg_uuid", "vg_size", "vg_free", "allocated_size", "extent_size", "thin_pools",
                     "thin_pool_ready")
"""Status fields ``HostLvgEngine.discover`` fills (everything but phase/conditions/generation)."""


DeviceEntry = tuple[Any, ...]
"""(name, labels, path) or (name, labels, path, status) of one of the node's BlockDevices."""


def _selects(selector: LabelSelector, entry: DeviceEntry) -> bool:
    labels = dict(entry[1])
    if isinstance(selector, BlockDeviceSelector):
        return selector.matches_device(labels, entry[3] if len(entry) > 3 else None)
    return selector.matches(labels)


def selected_block_devices(selector: LabelSelector | None, devices: Iterable[DeviceEntry]) -> list[tuple[str, str]]:
    """(BlockDevice name, path) of this node's devices the selector matches (labels, and ``match``
    over the BlockDevice's status when the selector has one); none without a selector."""
    if selector is None:
        return []
    return sorted((e[0], e[2]) for e in devices if e[2] and _selects(selector, e))


def contested_devices(selector: LabelSelector | None, devices: Iterable[DeviceEntry],
                      others: Iterable[tuple[str, LabelSelector | None]]) -> dict[str, list[str]]:
    """Consumable devices this selector shares with another LVMVolumeGroup of the node:
    path → the other LVMVolumeGroups. A device already in a VG is its VG's, not contested."""
    if selector is None:
        return {}
    entries = [e for e in devices if e[2] and len(e) > 3 and (e[3] or {}).get("consumable") is True]
    mine = {e[2] for e in entries if _selects(selector, e)}
    out: dict[str, list[str]] = {}
    for other_name, other in others:
        if other is None:
            continue
        for e in entries:
            if e[2] in mine and _selects(other, e):
                out.setdefault(e[2], []).append(other_name)
    return {k: sorted(v) for k, v in sorted(out.items())}


def with_operator_conditions(new: LVMVolumeGroupStatus, current: LVMVolumeGroupStatus | None) -> LVMVolumeGroupStatus:
    """``new`` with the conditions the agent does not own taken from ``current`` (the server's)."""
    out = new.model_copy(deep=True)
    mine = [c for c in new.conditions or [] if c.type in AGENT_CONDITIONS]
    theirs = [c for c in (current.conditions if current else None) or [] if c.type not in AGENT_CONDITIONS]
    order = [c.type for c in (current.conditions if current else None) or []]
    merged = {c.type: c for c in [*theirs, *mine]}
    ordered = [merged.pop(t) for t in order if t in merged]
    out.conditions = (ordered + list(merged.values())) or None
    return out


def merge_discovered(current: LVMVolumeGroupStatus | None, discovered: LVMVolumeGroupStatus) -> LVMVolumeGroupStatus:
    """The current status with the freshly discovered fields. Phase and conditions stay untouched,
    unless discovery found something a reconcile would report too (a VG name another VG carries:
    ``discovered.phase`` set): then its phase and the agent's conditions it names are applied, at the
    current observed generation (the next reconcile reports the same, so it writes nothing new)."""
    out = (current or LVMVolumeGroupStatus()).model_copy(deep=True)
    for name in DISCOVERED_FIELDS:
        setattr(out, name, getattr(discovered, name))
    if discovered.phase is not None:
        out.phase = discovered.phase
        out.configuration_applied = discovered.configuration_applied
        conditions = list(out.conditions or [])
        for c in discovered.conditions or []:
            if c.type in AGENT_CONDITIONS:
                conditions = set_condition(conditions, c.type, c.status, c.reason, c.message or "",
                                           out.observed_generation)
        out.conditions = conditions or None
    return out


def name_conflict_event(old: LVMVolumeGroupStatus | None,
                        new: LVMVolumeGroupStatus) -> tuple[str, str, str] | None:
    """The Warning to post when ``new`` reports a VG name conflict ``old`` did not (or another one):
    one Event per change, never one per discovery cycle."""
    now = get_condition(new.conditions, ConditionType.VG_READY)
    if now is None or now.reason != Reason.VG_NAME_CONFLICT:
        return None
    before = get_condition(old.conditions if old else None, ConditionType.VG_READY)
    if before is not None and before.reason == now.reason and before.message == now.message:
        return None
    return ("Warning", Reason.VG_NAME_CONFLICT, now.message)


def status_merge_patch(old: Mapping[str, Any] | None, new: Mapping[str, Any]) -> dict[str, Any] | None:
    """A merge patch turning status ``old`` into ``new`` (top-level keys; lists are replaced whole),
    or None when nothing changed. Keys the agent's model does not know are left alone."""
    known = {f.alias or n for n, f in LVMVolumeGroupStatus.model_fields.items()}
    return owned_keys_patch(old, new, known | set(new)) or None


def needs_reconcile(spec: LVMVolumeGroupSpec, status: LVMVolumeGroupStatus | None, generation: int | None,
                    selected: list[tuple[str, str]], node_name: str) -> str | None:
    """Why the periodic timer should run a reconcile, or None when the VG is converged.

    A converged VG is left to the node-level discovery cycle (one LVM snapshot for every VG).
    """
    if status is None or status.phase is None:
        return "no status yet"
    if generation is not None and status.observed_generation != generation:
        return f"generation {generation} not reconciled yet (observed {status.observed_generation})"
    if status.phase != LVGPhase.READY:
        return f"phase is {status.phase}"
    applied = get_condition(status.conditions, ConditionType.VG_CONFIGURATION_APPLIED)
    if applied is None or applied.status != "True":
        return "configuration not applied"
    mine = next((n for n in status.nodes or [] if n.name == node_name), None)
    have_files = {fd.name for fd in (mine.file_devices if mine else None) or []}
    missing_files = sorted({fd.name for fd in spec.file_devices or []} - have_files)
    if missing_files:
        return f"file devices {', '.join(missing_files)} are not PVs of the VG"
    have_paths = {d.path for d in (mine.devices if mine else None) or []}
    have_names = {d.block_device for d in (mine.devices if mine else None) or [] if d.block_device}
    missing_bds = sorted(n for n, p in selected if p not in have_paths and n not in have_names)
    if missing_bds:
        return f"selected block devices {', '.join(missing_bds)} are not PVs of the VG"
    if any(not tp.ready for tp in status.thin_pools or []):
        return "a thin pool is not ready"
    wanted_pools = {tp.name for tp in spec.thin_pools or []}
    if wanted_pools - {tp.name for tp in status.thin_pools or []}:
        return "a thin pool is missing"
    return None
