"""What kctl prints: table rows, ``describe`` pages and layout diffs. Pure: objects in, text out."""

from __future__ import annotations

import difflib
from datetime import datetime
from typing import Any

import yaml
from pydantic import ValidationError

from disklet.advice import next_step as next_step_for
from disklet.api.disklayout import DiskLayoutSpec, StructuredLayout
from disklet.layout import LayoutError, render_disko_nix

from .output import NONE, Column, age, cell, field, key_values, table

DISK_LAYOUT_HEADERS = ("NAME", "NODE", "PHASE", "REASON", "DEVICES", "AGE")
DISK_LAYOUT_WIDE = ("GENERATION", "MODE", "HASH")
LVG_HEADERS = ("NAME", "NODE", "VG", "PHASE", "SIZE", "FREE", "THINPOOLS", "AGE")
LVG_WIDE = ("ALLOCATED", "CONFIG-APPLIED", "PVS")
LVGSET_HEADERS = ("NAME", "PHASE", "CURRENT", "DESIRED", "REASON", "AGE")
BD_HEADERS = ("NAME", "NODE", "PATH", "TYPE", "SIZE", "FSTYPE", "CONSUMABLE", "VG", "AGE")
BD_WIDE = ("LVG", "MODEL", "SERIAL", "REASON")
NODE_DISK_HEADERS = ("PATH", "TYPE", "SIZE", "TRANSPORT", "MODEL", "SERIAL", "FSTYPE", "CONSUMABLE", "REASON", "VG",
                     "LVG", "NAME")


def short_hash(value: str | None) -> str | None:
    return value[:12] if value else None


def name_of(obj: dict[str, Any]) -> str:
    return str(field(obj, "metadata.name", ""))


def disk_layout_row(obj: dict[str, Any], wide: bool = False, now: datetime | None = None) -> list[Any]:
    row: list[Any] = [name_of(obj), field(obj, "spec.nodeName"), field(obj, "status.phase"),
                      field(obj, "status.refusalReason"), field(obj, "status.targetDevices"),
                      age(field(obj, "metadata.creationTimestamp"), now)]
    if wide:
        row += [field(obj, "status.layoutGeneration"), field(obj, "status.nodeMode"),
                short_hash(field(obj, "status.layoutHash"))]
    return row


def lvg_pv_count(obj: dict[str, Any]) -> int:
    return sum(len(n.get("devices") or []) + len(n.get("fileDevices") or []) for n in field(obj, "status.nodes", []))


def lvg_row(obj: dict[str, Any], wide: bool = False, now: datetime | None = None) -> list[Any]:
    row: list[Any] = [name_of(obj), field(obj, "spec.local.nodeName"), field(obj, "spec.actualVGNameOnTheNode"),
                      field(obj, "status.phase"), field(obj, "status.vgSize"), field(obj, "status.vgFree"),
                      field(obj, "status.thinPoolReady"), age(field(obj, "metadata.creationTimestamp"), now)]
    if wide:
        row += [field(obj, "status.allocatedSize"), field(obj, "status.configurationApplied"), lvg_pv_count(obj)]
    return row


def lvgset_row(obj: dict[str, Any], wide: bool = False, now: datetime | None = None) -> list[Any]:
    return [name_of(obj), field(obj, "status.phase"), field(obj, "status.currentLVMVolumeGroupsCount"),
            field(obj, "status.desiredLVMVolumeGroupsCount"), field(obj, "status.reason"),
            age(field(obj, "metadata.creationTimestamp"), now)]


def bd_row(obj: dict[str, Any], wide: bool = False, now: datetime | None = None) -> list[Any]:
    s = obj.get("status") or {}
    row: list[Any] = [name_of(obj), s.get("nodeName"), s.get("path"), s.get("type"), s.get("size"), s.get("fsType"),
                      bool(s.get("consumable")), s.get("actualVGNameOnTheNode"),
                      age(field(obj, "metadata.creationTimestamp"), now)]
    if wide:
        row += [s.get("lvmVolumeGroupName"), s.get("model"), s.get("serial"), s.get("consumableReason")]
    return row


def node_disk_rows(block_devices: list[dict[str, Any]]) -> list[list[Any]]:
    """A node's BlockDevices sorted by path, with why each is not consumable (``kctl node disks``,
    ``kctl describe node``)."""
    rows = []
    for obj in sorted(block_devices, key=lambda o: str(field(o, "status.path", ""))):
        s = obj.get("status") or {}
        code, prose = s.get("consumableReasonCode"), s.get("consumableReason")
        reason = f"{code}: {prose}" if code and prose else code or prose or ""
        rows.append([s.get("path"), s.get("type"), s.get("size"), s.get("transport"), s.get("model"), s.get("serial"),
                     s.get("fsType"), "yes" if s.get("consumable") else "no", reason,
                     s.get("actualVGNameOnTheNode"), s.get("lvmVolumeGroupName"), name_of(obj)])
    return rows


# ---------------------------------------------------------------------------- layout bodies and diffs
def live_layout_body(obj: dict[str, Any]) -> tuple[str | None, str]:
    """(the Nix body the cluster holds for this DiskLayout, how it was obtained) — body None if unreadable."""
    spec = obj.get("spec") or {}
    if isinstance(spec.get("layoutNix"), str):
        return spec["layoutNix"], "spec.layoutNix"
    if spec.get("diskLayout") is not None:
        try:
            return render_disko_nix(StructuredLayout.model_validate(spec["diskLayout"])), "rendered spec.diskLayout"
        except (ValidationError, LayoutError, ValueError) as exc:
            return None, f"spec.diskLayout does not render: {str(exc).splitlines()[0]}"
    return None, "no layout source in the live object"


def unified_body_diff(name: str, live: str | None, new: str) -> str:
    """Unified diff live → manifest ('' when identical); a new object diffs against /dev/null."""
    before = [] if live is None else live.splitlines(keepends=True)
    after = new.splitlines(keepends=True)
    lines = list(difflib.unified_diff(before, after, fromfile="/dev/null" if live is None else f"live/{name}",
                                      tofile=f"manifest/{name}"))
    return "".join(ln if ln.endswith("\n") else ln + "\n" for ln in lines)


def spec_yaml_diff(ref: str, live_spec: dict[str, Any] | None, new_spec: dict[str, Any]) -> str:
    """Unified diff of two specs as YAML (LVMVolumeGroup and friends)."""
    def dump(s: dict[str, Any]) -> list[str]:
        return yaml.safe_dump(s, sort_keys=True).splitlines(keepends=True)
    lines = difflib.unified_diff([] if live_spec is None else dump(live_spec), dump(new_spec),
                                 fromfile="/dev/null" if live_spec is None else f"live/{ref}",
                                 tofile=f"manifest/{ref}")
    return "".join(lines)


SETTING_FIELDS = ("nodeName", "rebuild", "timeoutSeconds")


def setting_changes(live_spec: dict[str, Any], new_spec: DiskLayoutSpec) -> list[str]:
    """Non-body DiskLayout fields that change (defaults applied on both sides)."""
    wire = new_spec.to_wire()
    defaults = DiskLayoutSpec.model_fields
    out = []
    for key in SETTING_FIELDS:
        py = {"nodeName": "node_name", "rebuild": "rebuild", "timeoutSeconds": "timeout_seconds"}[key]
        old = live_spec.get(key, defaults[py].default)
        new = wire.get(key)
        if old != new:
            note = " (immutable: the API server will reject this; create a new DiskLayout)" if key == "nodeName" else ""
            out.append(f"{key}: {cell(old)} -> {cell(new)}{note}")
    return out


# ---------------------------------------------------------------------------- describe
def _conditions_table(conditions: list[dict[str, Any]], now: datetime | None) -> str:
    if not conditions:
        return "  <none>\n"
    rows = [[c.get("type"), c.get("status"), c.get("reason"), age(c.get("lastTransitionTime"), now),
             c.get("message")] for c in conditions]
    return table(("TYPE", "STATUS", "REASON", "AGE", "MESSAGE"), rows, indent="  ")


def events_table(events: list[dict[str, Any]], now: datetime | None) -> str:
    if not events:
        return "  <none>\n"

    def when(e: dict[str, Any]) -> str:
        return str(e.get("lastTimestamp") or e.get("eventTime") or field(e, "metadata.creationTimestamp", ""))
    rows = []
    for e in sorted(events, key=when)[-10:]:
        source = field(e, "source.component") or e.get("reportingComponent")
        count = e.get("count") or 1
        rows.append([e.get("type"), e.get("reason"), age(when(e), now) + (f" (x{count})" if count > 1 else ""),
                     source, e.get("message")])
    return table(("TYPE", "REASON", "AGE", "FROM", "MESSAGE"), rows, indent="  ")


def _partition_summary(part: dict[str, Any]) -> str:
    c = part.get("content") or {}
    what = {"filesystem": f"{c.get('format')} on {c.get('mountpoint')}", "lvm_pv": f"PV of VG {c.get('vg')}",
            "zfs": f"vdev of pool {c.get('pool')}"}.get(str(c.get("type")), str(c.get("type")))
    opts = f" ({','.join(c['mountOptions'])})" if c.get("mountOptions") else ""
    return f"{part.get('name')} {part.get('size')}: {what}{opts}"


def layout_source_lines(spec: dict[str, Any]) -> list[tuple[str, Any]]:
    if spec.get("diskLayout") is not None:
        dl = spec["diskLayout"]
        lines: list[tuple[str, Any]] = [("Source", f"diskLayout (structured, {len(dl.get('disks') or [])} disk(s))")]
        for disk in dl.get("disks") or []:
            parts = "\n".join(_partition_summary(p) for p in field(disk, "gpt.partitions", []))
            lines.append((f"Disk {disk.get('name')}", f"{disk.get('device')}\n{parts}"))
        stubs = [f"lvm_vg {s['name']}" for s in dl.get("lvmVolumeGroups") or []] + \
                [f"zpool {s['name']}" for s in dl.get("zfsPools") or []]
        if stubs:
            lines.append(("Declared", ", ".join(stubs)))
        return lines
    if isinstance(spec.get("layoutNix"), str):
        n = len(spec["layoutNix"].splitlines())
        return [("Source", f"layoutNix (raw disko Nix, {n} lines; kctl get dl NAME -o yaml shows it)")]
    return [("Source", NONE)]


def describe_disk_layout(obj: dict[str, Any], events: list[dict[str, Any]], now: datetime | None = None) -> str:
    spec = obj.get("spec") or {}
    status = obj.get("status") or {}
    meta = obj.get("metadata") or {}
    out = key_values([
        ("Name", meta.get("name")),
        ("Node", spec.get("nodeName")),
        ("Labels", ",".join(f"{k}={v}" for k, v in sorted((meta.get("labels") or {}).items())) or NONE),
        ("Created", f"{meta.get('creationTimestamp')} ({age(meta.get('creationTimestamp'), now)} ago)"),
        ("Generation", meta.get("generation")),
    ])
    out += "Spec:\n" + key_values([*layout_source_lines(spec), ("Rebuild", spec.get("rebuild", True)),
                                   ("Timeout", f"{spec.get('timeoutSeconds', 300)}s")], indent="  ")
    out += "Status:\n"
    if not status:
        out += "  <none> (the operator has not pre-flighted this object yet: is it running?)\n"
    else:
        applied = status.get("appliedLayoutGeneration")
        next_step: list[tuple[str, Any]] = []
        if status.get("phase") == "refused":
            next_step = [("Next step", next_step_for(status.get("refusalReason")))]
        elif status.get("phase") == "failed":
            next_step = [("Next step", "fix the layout and re-apply; a failed generation is not retried until "
                                       "the body changes")]
        out += key_values([
            ("Phase", status.get("phase")),
            ("Refusal reason", status.get("refusalReason")),
            ("Message", status.get("message")),
            ("Target devices", "\n".join(status.get("targetDevices") or []) or NONE),
            ("Layout hash", status.get("layoutHash")),
            ("Layout generation", f"{cell(status.get('layoutGeneration'))} (applied: {cell(applied)})"),
            ("Observed generation", status.get("observedGeneration")),
            ("Node mode", status.get("nodeMode")),
            ("Last attempt", status.get("lastAttemptTime")),
            ("Last applied", status.get("lastAppliedTime")),
            *next_step,
        ], indent="  ")
    out += "Conditions:\n" + _conditions_table(status.get("conditions") or [], now)
    out += "Events:\n" + events_table(events, now)
    return out


def describe_node(node: str, node_obj: dict[str, Any] | None, layouts: list[dict[str, Any]],
                  lvgs: list[dict[str, Any]], block_devices: list[dict[str, Any]], now: datetime | None = None) -> str:
    """Storage inventory of one node: backends, DiskLayout, LVM VGs (+ thin pools), ZFS pools, BlockDevices."""
    ready = None
    if node_obj is not None:
        cond = next((c for c in field(node_obj, "status.conditions", []) if c.get("type") == "Ready"), None)
        ready = f"Ready={cond.get('status')}" if cond else "known (no Ready condition)"
    backends: set[str] = set()
    zpools: list[str] = []
    for dl in layouts:
        for disk in field(dl, "spec.diskLayout.disks", []):
            for part in field(disk, "gpt.partitions", []):
                t = field(part, "content.type")
                backends.add({"lvm_pv": "lvm", "zfs": "zfs"}.get(str(t), str(t)))
        zpools += [s["name"] for s in field(dl, "spec.diskLayout.zfsPools", [])]
        if field(dl, "spec.layoutNix"):
            backends.add("raw disko Nix")
    if lvgs:
        backends.add("lvm")
    out = key_values([
        ("Node", node),
        ("Kubernetes node", ready or "not found (the name is still used for disklet objects)"),
        ("Storage backends", ", ".join(sorted(backends)) or NONE),
    ])
    out += "Disk layout:\n"
    if layouts:
        out += table(("NAME", "PHASE", "REASON", "DEVICES", "MODE", "AGE"),
                     [[name_of(d), field(d, "status.phase"), field(d, "status.refusalReason"),
                       field(d, "status.targetDevices"), field(d, "status.nodeMode"),
                       age(field(d, "metadata.creationTimestamp"), now)] for d in layouts], indent="  ")
    else:
        out += "  <none>\n"
    out += "LVM volume groups:\n"
    if lvgs:
        out += table(("NAME", "VG", "PHASE", "SIZE", "FREE", "ALLOCATED", "PVS", "THINPOOLS"),
                     [[name_of(g), field(g, "spec.actualVGNameOnTheNode"), field(g, "status.phase"),
                       field(g, "status.vgSize"), field(g, "status.vgFree"), field(g, "status.allocatedSize"),
                       lvg_pv_count(g), field(g, "status.thinPoolReady")] for g in lvgs], indent="  ")
        pools = [[name_of(g), p.get("name"), p.get("actualSize"), p.get("usedSize"), p.get("allocatedSize"),
                  p.get("ready")] for g in lvgs for p in field(g, "status.thinPools", [])]
        if pools:
            out += "Thin pools:\n" + table(("LVG", "POOL", "SIZE", "USED", "ALLOCATED", "READY"), pools, indent="  ")
    else:
        out += "  <none>\n"
    out += "ZFS pools (declared by the disk layout):\n" + ("".join(f"  {p}\n" for p in zpools) or "  <none>\n")
    out += "Block devices:\n"
    out += table(NODE_DISK_HEADERS, node_disk_rows(block_devices), indent="  ") if block_devices else \
        "  <none> (is the disklet agent running on this node?)\n"
    return out


def describe_object(obj: dict[str, Any], events: list[dict[str, Any]], columns: list[Column],
                    now: datetime | None = None) -> str:
    """``describe`` of any disklet kind: metadata, the printer columns, spec and status, conditions, Events."""
    meta = obj.get("metadata") or {}
    status = obj.get("status") or {}
    out = key_values([
        ("Name", meta.get("name")),
        ("Kind", obj.get("kind")),
        ("Labels", ",".join(f"{k}={v}" for k, v in sorted((meta.get("labels") or {}).items())) or NONE),
        ("Created", f"{meta.get('creationTimestamp')} ({age(meta.get('creationTimestamp'), now)} ago)"),
        ("Generation", meta.get("generation")),
    ])
    summary = [(c.header.title(), c.value(obj, now)) for c in columns[1:] if c.type != "date"]
    if summary:
        out += "Summary:\n" + key_values(summary, indent="  ")
    for section in ("spec", "status"):
        body = {k: v for k, v in (obj.get(section) or {}).items() if k != "conditions"}
        out += f"{section.title()}:\n"
        out += "".join(f"  {ln}\n" for ln in yaml.safe_dump(body, sort_keys=False).splitlines()) if body else "  <none>\n"
    out += "Conditions:\n" + _conditions_table(status.get("conditions") or [], now)
    out += "Events:\n" + events_table(events, now)
    return out
