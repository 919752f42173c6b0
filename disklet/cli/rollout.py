"""``kctl rollout status|pause|resume|undo lvgset NAME``: the LVMVolumeGroupSet rollout from the CLI.

Everything kctl decides is in the pure functions at the top (unit tested); the commands below them
only read the set, print, and send one patch.

- ``status`` polls the set and prints one progress line whenever the counts move (one line per
  batch); exit 0 when every matching node runs the current template and is Ready, 1 when the
  rollout halted on a failed child, is paused, is blocked by an invalid spec, or ``--timeout``
  passed.
- ``pause`` / ``resume`` set ``spec.rollout.paused``.
- ``undo`` puts back the previous template the operator recorded in ``status.revisions`` (the
  current one and the one before it). The LVMVolumeGroup rules still apply: file devices are never
  removed, shrunk or moved, and the VG name never changes. So undo refuses (nothing written) when
  the previous template differs in those, and says which entries; ``--keep-file-devices`` restores
  everything else and keeps today's file devices.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping
from typing import Any

from disklet.api.resources import LVM_VOLUME_GROUP_SET
from disklet.lvm.transitions import FILE_DEVICES, transition_problems

from .kube import Kind, KubeError

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
TYPES = {"lvgset", "lvgsets", "lvmvolumegroupset", "lvmvolumegroupsets", "lvm-volume-group-set"}
ACTIONS = ("status", "pause", "resume", "undo")
MERGE = "application/merge-patch+json"
JSON_PATCH = "application/json-patch+json"
FAILED_REASONS = {"ChildFailed", "Blocked"}


# ----------------------------------------------------------------------------- pure


def _condition(status: Mapping[str, Any], type_: str) -> Mapping[str, Any]:
    return next((c for c in status.get("conditions") or () if c.get("type") == type_), {})


def progress_line(obj: Mapping[str, Any]) -> str:
    """One line: revision, updated/ready counts of the desired children, and what holds the rest."""
    st = obj.get("status") or {}
    desired = st.get("desiredLVMVolumeGroupsCount") or 0
    line = (f"revision {st.get('currentRevision') or '?'}: {st.get('updatedReadyCount') or 0} of {desired} updated "
            f"and Ready ({st.get('updatedCount') or 0} updated, {st.get('failedCount') or 0} failed)")
    waiting = [a for a in st.get("attention") or () if a.get("reason") != "Orphaned"]
    if waiting:
        first = waiting[0]
        line += f"; waiting for {first.get('name')} on {first.get('nodeName')} ({first.get('reason')})"
        if len(waiting) > 1:
            line += f" and {len(waiting) - 1} more"
    return line


def verdict(obj: Mapping[str, Any]) -> tuple[str, str]:
    """("done" | "failed" | "paused" | "stale" | "progressing", message) for a set as read from the API."""
    meta, st = obj.get("metadata") or {}, obj.get("status") or {}
    if st.get("observedGeneration") != meta.get("generation"):
        return "stale", f"waiting for the operator to observe generation {meta.get('generation')}"
    prog = _condition(st, "Progressing")
    reason, message = prog.get("reason"), str(prog.get("message") or "")
    if reason in FAILED_REASONS:
        return "failed", message or str(reason)
    if reason == "Complete":
        return "done", message
    if reason == "Paused":
        return "paused", message
    return "progressing", message


def previous_revision(obj: Mapping[str, Any]) -> tuple[dict[str, Any] | None, str]:
    """(the template to restore, its revision) or (None, why not)."""
    meta, st = obj.get("metadata") or {}, obj.get("status") or {}
    if st.get("observedGeneration") != meta.get("generation"):
        return None, (f"the operator has not observed generation {meta.get('generation')} yet "
                      f"(status is for {st.get('observedGeneration')}): retry in a moment")
    revisions = list(st.get("revisions") or ())
    if not revisions or revisions[0].get("revision") != st.get("currentRevision"):
        return None, "status.revisions does not start with the current revision: retry in a moment"
    if len(revisions) < 2:
        return None, "no previous revision is recorded (the template has not changed since the operator started recording)"
    prev = revisions[1]
    return dict(prev.get("template") or {}), str(prev.get("revision"))


def undo_template(current: Mapping[str, Any], previous: Mapping[str, Any],
                  keep_file_devices: bool) -> tuple[dict[str, Any] | None, list[str]]:
    """(the template to write, notes) or (None, the conflicts) when undo cannot be done as asked."""
    problems = transition_problems(current, previous)  # the API server's rules, current → previous
    conflicts = [str(p) for p in problems]
    only_file_devices = all(p.field == FILE_DEVICES for p in problems)
    if not only_file_devices or (conflicts and not keep_file_devices):
        return None, conflicts
    restored = dict(previous)
    notes: list[str] = []
    if conflicts:
        if current.get("fileDevices"):
            restored["fileDevices"] = list(current.get("fileDevices") or ())
        notes.append("fileDevices kept as they are now (grow-only): " + "; ".join(conflicts))
    return restored, notes


# ----------------------------------------------------------------------------- commands


def add_parser(sub: Any, make: Any) -> None:
    """Register ``rollout`` on kctl's subparsers (``make``: main's helper that adds a documented subcommand)."""
    r = make(sub, "rollout", "status, pause, resume or undo an LVMVolumeGroupSet rollout",
             "Follow or steer the staged rollout of an LVMVolumeGroupSet (spec.rollout). status waits and prints "
             "a progress line per batch: exit 0 when every matching node runs the current template and is Ready, "
             "1 when the rollout halted on a failed child, is paused or blocked, or --timeout passed. pause/resume "
             "set spec.rollout.paused. undo restores the previous template recorded in status.revisions; file "
             "devices are grow-only, so undo refuses when they changed (nothing written) unless "
             "--keep-file-devices.",
             "  kctl rollout status lvgset data\n  kctl rollout pause lvgset data\n  kctl rollout resume lvgset data\n"
             "  kctl rollout undo lvgset data --keep-file-devices")
    r.add_argument("action", choices=ACTIONS, metavar="ACTION", help="status | pause | resume | undo")
    r.add_argument("type", metavar="TYPE", help="lvgset (lvmvolumegroupset)")
    r.add_argument("name", metavar="NAME")
    r.add_argument("--timeout", type=float, default=600.0, metavar="SECONDS", help="status: give up after (default 600)")
    r.add_argument("--no-wait", action="store_true", help="status: print the state once; exit 1 only if failed")
    r.add_argument("--interval", type=float, default=2.0, metavar="SECONDS", help="status: poll interval (default 2)")
    r.add_argument("--keep-file-devices", action="store_true", help="undo: restore the rest, keep today's file devices")
    r.set_defaults(handler=lambda args, ctx: run(ctx, args))


async def run(ctx: Any, args: Any) -> int:
    if args.type not in TYPES:
        ctx.error(f"rollout works on lvgset (LVMVolumeGroupSet), not {args.type!r}")
        return EXIT_USAGE
    kind = Kind.of(LVM_VOLUME_GROUP_SET)
    try:
        async with await ctx.connect() as kube:
            if args.action == "status":
                return await _status(ctx, kube, kind, args)
            if args.action in ("pause", "resume"):
                paused = args.action == "pause"
                await kube.request("PATCH", kind.path(args.name), body={"spec": {"rollout": {"paused": paused}}},
                                   content_type=MERGE, what=f"{args.action} LVMVolumeGroupSet/{args.name}")
                ctx.say(f"lvmvolumegroupset/{args.name} {'paused' if paused else 'resumed'}")
                return EXIT_OK
            return await _undo(ctx, kube, kind, args)
    except KubeError as exc:
        ctx.error(str(exc))
        return EXIT_FAILED


async def _get(kube: Any, kind: Kind, name: str) -> dict[str, Any]:
    obj = await kube.get(kind, name)
    if obj is None:
        raise KubeError(f"LVMVolumeGroupSet {name} not found")
    return dict(obj)


async def _status(ctx: Any, kube: Any, kind: Kind, args: Any) -> int:
    deadline = time.monotonic() + args.timeout
    last = ""
    while True:
        obj = await _get(kube, kind, args.name)
        state, message = verdict(obj)
        line = progress_line(obj) if state != "stale" else message
        if line != last:
            ctx.say(line)
            last = line
        if state == "done":
            ctx.say(f"lvmvolumegroupset/{args.name}: rollout complete")
            return EXIT_OK
        if state == "failed":
            ctx.error(f"lvmvolumegroupset/{args.name}: {message}")
            return EXIT_FAILED
        if state == "paused":
            ctx.error(f"lvmvolumegroupset/{args.name} is paused: `kctl rollout resume lvgset {args.name}` continues it")
            return EXIT_FAILED
        if args.no_wait:
            return EXIT_OK
        if time.monotonic() >= deadline:
            ctx.error(f"lvmvolumegroupset/{args.name}: not complete after {args.timeout:g}s")
            return EXIT_FAILED
        await asyncio.sleep(args.interval)


async def _undo(ctx: Any, kube: Any, kind: Kind, args: Any) -> int:
    obj = await _get(kube, kind, args.name)
    previous, revision = previous_revision(obj)
    if previous is None:
        ctx.error(f"lvmvolumegroupset/{args.name}: cannot undo: {revision}")
        return EXIT_FAILED
    current = dict((obj.get("spec") or {}).get("lvmVolumeGroupTemplate") or {})
    restored, notes = undo_template(current, previous, args.keep_file_devices)
    if restored is None:
        ctx.error(f"lvmvolumegroupset/{args.name}: cannot undo to revision {revision}, the API server would refuse: "
                  + "; ".join(notes)
                  + ("" if any(n.startswith("actualVG") for n in notes) else
                     "\n  hint: --keep-file-devices restores the rest and keeps today's file devices"))
        return EXIT_FAILED
    rv = str((obj.get("metadata") or {}).get("resourceVersion") or "")
    ops = [{"op": "test", "path": "/metadata/resourceVersion", "value": rv},
           {"op": "replace", "path": "/spec/lvmVolumeGroupTemplate", "value": restored}]
    await kube.request("PATCH", kind.path(args.name), body=ops, content_type=JSON_PATCH,
                       what=f"undo LVMVolumeGroupSet/{args.name}")
    for note in notes:
        ctx.warn(note)
    ctx.say(f"lvmvolumegroupset/{args.name} rolled back to revision {revision}")
    return EXIT_OK
