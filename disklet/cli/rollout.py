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

import argparse
import asyncio
import re
import time
from collections.abc import Mapping
from typing import Any

from disklet.api.lvm import RolloutSpec
from disklet.api.resources import LVM_VOLUME_GROUP, LVM_VOLUME_GROUP_SET
from disklet.labels import label_value
from disklet.lvm.transitions import FILE_DEVICES, transition_problems

from .kube import PODS, Kind, KubeError

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
TYPES = {"lvgset", "lvgsets", "lvmvolumegroupset", "lvmvolumegroupsets", "lvm-volume-group-set"}
ACTIONS = ("status", "pause", "resume", "undo")
MERGE = "application/merge-patch+json"
JSON_PATCH = "application/json-patch+json"
FAILED_REASONS = {"ChildFailed", "Blocked"}
SET_LABEL = "disklet.io/lvmvolumegroupset"
"""The label the operator puts on every child of a set."""


# ----------------------------------------------------------------------------- pure


def _condition(status: Mapping[str, Any], type_: str) -> Mapping[str, Any]:
    return next((c for c in status.get("conditions") or () if c.get("type") == type_), {})


def child_blocker(child: Mapping[str, Any] | None) -> tuple[str, str] | None:
    """(reason, message) of what keeps a child from being updated and Ready, in the child's own words
    (its Ready or VGConfigurationApplied condition), or None when it is Ready and current."""
    if not child:
        return None
    meta, st = child.get("metadata") or {}, child.get("status") or {}
    if meta.get("deletionTimestamp"):
        return "Deleting", "the LVMVolumeGroup is being deleted"
    ready = _condition(st, "Ready")
    applied = _condition(st, "VGConfigurationApplied")
    if ready.get("status") != "True":
        return str(ready.get("reason") or "NotReady"), str(ready.get("message") or "no Ready condition yet")
    if applied.get("status") == "False":
        return str(applied.get("reason") or "NotApplied"), str(applied.get("message") or "")
    if st.get("observedGeneration") != meta.get("generation"):
        return "NotObserved", f"the agent has not reported generation {meta.get('generation')} yet"
    return None


def _not_ready(child: Mapping[str, Any]) -> bool:
    return not (child.get("metadata") or {}).get("deletionTimestamp") and \
        _condition(child.get("status") or {}, "Ready").get("status") != "True"


def held_units(obj: Mapping[str, Any], children: Mapping[str, Mapping[str, Any]]) -> str:
    """Which not-Ready children use up ``maxUnavailable``, when that is what stops the next update ("" if not)."""
    spec, st = obj.get("spec") or {}, obj.get("status") or {}
    desired = int(st.get("desiredLVMVolumeGroupsCount") or 0)
    if not desired or int(st.get("updatedCount") or 0) >= desired or (spec.get("rollout") or {}).get("paused"):
        return ""
    try:
        budget = RolloutSpec.model_validate(spec.get("rollout") or {}).budget(desired)
    except ValueError:
        return ""
    down = sorted(name for name, child in children.items() if _not_ready(child))
    if len(down) < budget:
        return ""
    who = ", ".join(f"{n} on {(children[n].get('spec') or {}).get('local', {}).get('nodeName', '?')}" for n in down)
    return (f"{who} {'holds' if len(down) == 1 else 'hold'} {len(down)} of maxUnavailable {budget}: no other node "
            "is updated until it is Ready (fix it, or raise spec.rollout.maxUnavailable)")


def progress_line(obj: Mapping[str, Any], children: Mapping[str, Mapping[str, Any]] | None = None) -> str:
    """One line: revision, updated/ready counts of the desired children, and what holds the rest — in the
    blocking child's own words when ``children`` (name → LVMVolumeGroup) are given."""
    st = obj.get("status") or {}
    children = children or {}
    desired = st.get("desiredLVMVolumeGroupsCount") or 0
    line = (f"revision {st.get('currentRevision') or '?'}: {st.get('updatedReadyCount') or 0} of {desired} updated "
            f"and Ready ({st.get('updatedCount') or 0} updated, {st.get('failedCount') or 0} failed)")
    waiting = [(str(a.get("name")), str(a.get("nodeName")), str(a.get("reason")))
               for a in st.get("attention") or () if a.get("reason") != "Orphaned"]
    named = {w[0] for w in waiting}
    waiting += [(name, str(((c.get("spec") or {}).get("local") or {}).get("nodeName")), "NotReady")
                for name, c in sorted(children.items()) if name not in named and _not_ready(c)]
    if waiting:
        name, node, reason = waiting[0]
        own = child_blocker(children.get(name))
        line += f"; waiting for {name} on {node}" + (f" ({own[0]}: {own[1]})" if own else f" ({reason})")
        if len(waiting) > 1:
            line += f" and {len(waiting) - 1} more"
    held = held_units(obj, children)
    if held:
        line += f"; {held}"
    return line


def verdict(obj: Mapping[str, Any]) -> tuple[str, str]:
    """("done" | "failed" | "paused" | "stale" | "progressing", message) for a set as read from the API."""
    meta, st = obj.get("metadata") or {}, obj.get("status") or {}
    if st.get("observedGeneration") != meta.get("generation"):
        return "stale", f"waiting for the operator to observe generation {meta.get('generation')}"
    if not st.get("desiredLVMVolumeGroupsCount"):
        selector = (obj.get("spec") or {}).get("nodeSelector") or {}
        return "nomatch", (f"no node matches spec.nodeSelector {_selector_text(selector)}: the set creates nothing "
                           "(check the labels: `kubectl get nodes --show-labels`)")
    prog = _condition(st, "Progressing")
    reason, message = prog.get("reason"), str(prog.get("message") or "")
    if reason in FAILED_REASONS:
        return "failed", message or str(reason)
    if reason == "Complete":
        return "done", message
    if reason == "Paused":
        return "paused", message
    return "progressing", message


def _selector_text(selector: Mapping[str, Any]) -> str:
    parts = [f"{k}={v}" for k, v in sorted((selector.get("matchLabels") or {}).items())]
    for e in selector.get("matchExpressions") or ():
        parts.append(f"{e.get('key')} {str(e.get('operator', '')).lower()} ({','.join(e.get('values') or ())})")
    return ",".join(parts) or "{}"


_DURATION = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|ms|s|m|h)")
_UNIT_SECONDS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}


def parse_duration(text: str) -> float:
    """kubectl's ``--timeout`` (Go's duration: ``5m``, ``1h30s``, ``90s``, ``1.5h``, ``500ms``) in seconds.
    A bare number is read as seconds (kctl's older form); 0 means no timeout."""
    t = text.strip()
    try:
        value = float(t)
    except ValueError:
        pos, total = 0, 0.0
        for m in _DURATION.finditer(t):
            if m.start() != pos:
                break
            total += float(m.group(1)) * _UNIT_SECONDS[m.group(2)]
            pos = m.end()
        if not t or pos != len(t):
            raise argparse.ArgumentTypeError(
                f"invalid duration {text!r}: use a number with a unit, e.g. 90s, 5m, 1h30m (as kubectl)") from None
        return total
    if value < 0 or value != value:
        raise argparse.ArgumentTypeError(f"invalid duration {text!r}: must not be negative")
    return value


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
             "  kctl rollout status lvgset data\n  kctl rollout status lvgset/data --timeout 5m\n  kctl rollout pause lvgset data\n  kctl rollout resume lvgset data\n"
             "  kctl rollout undo lvgset data --keep-file-devices")
    r.add_argument("action", choices=ACTIONS, metavar="ACTION", help="status | pause | resume | undo")
    from .main import _dynamic

    _dynamic(r.add_argument("type", metavar="TYPE", help="lvgset (lvmvolumegroupset), or TYPE/NAME as kubectl"))
    _dynamic(r.add_argument("name", metavar="NAME", nargs="?"))
    r.add_argument("--timeout", type=parse_duration, default=600.0, metavar="DURATION",
                   help="status: give up after this long (kubectl durations: 90s, 5m, 1h30m; a bare number is "
                        "seconds; 0 waits forever; default 10m)")
    r.add_argument("--no-wait", action="store_true", help="status: print the state once; exit 1 only if failed")
    r.add_argument("--interval", type=float, default=2.0, metavar="SECONDS", help="status: poll interval (default 2)")
    r.add_argument("--keep-file-devices", action="store_true", help="undo: restore the rest, keep today's file devices")
    r.set_defaults(handler=lambda args, ctx: run(ctx, args))


async def run(ctx: Any, args: Any) -> int:
    if "/" in args.type:
        if args.name:
            ctx.error(f"there is no need to specify a resource type as a separate argument when passing "
                      f"arguments in resource/name form (got {args.type!r} and {args.name!r})")
            return EXIT_USAGE
        args.type, _, args.name = args.type.partition("/")
    if args.type not in TYPES:
        ctx.error(f"rollout works on lvgset (LVMVolumeGroupSet), not {args.type!r}")
        return EXIT_USAGE
    if not args.name:
        ctx.error(f"rollout {args.action} needs NAME: `kctl rollout {args.action} lvgset NAME` (or lvgset/NAME)")
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


OPERATOR_GRACE_SECONDS = 5.0
"""How long a set's status may lag its generation before ``status`` looks for a running operator."""
OPERATOR_SELECTOR = "app.kubernetes.io/component=operator"
"""The chart's label on the operator pods."""


async def _children(kube: Any, name: str) -> dict[str, dict[str, Any]]:
    items = await kube.list_objects(Kind.of(LVM_VOLUME_GROUP), label_selector=f"{SET_LABEL}={label_value(name)}")
    return {str(c["metadata"]["name"]): dict(c) for c in items}


def _running(pod: Mapping[str, Any]) -> bool:
    st = pod.get("status") or {}
    return st.get("phase") == "Running" and _condition(st, "Ready").get("status") == "True"


async def operator_absent(kube: Any) -> str | None:
    """Why no operator is updating the set (no Ready pod labelled as the chart's operator in any
    namespace), or None when one runs or this cannot be told (e.g. no RBAC to list pods)."""
    try:
        pods = await kube.list_objects(PODS, label_selector=OPERATOR_SELECTOR)
    except KubeError:
        return None
    if any(_running(p) for p in pods):
        return None
    if not pods:
        return f"no disklet operator pod ({OPERATOR_SELECTOR}) exists in any namespace"
    states = ", ".join(f"{(p.get('metadata') or {}).get('namespace')}/{(p.get('metadata') or {}).get('name')} "
                       f"({(p.get('status') or {}).get('phase') or 'unknown'})" for p in pods[:3])
    return f"no disklet operator pod is Running and Ready: {states}"


async def _status(ctx: Any, kube: Any, kind: Kind, args: Any) -> int:
    start = time.monotonic()
    deadline = start + args.timeout if args.timeout else None
    last = ""
    stale_since: float | None = None
    while True:
        obj = await _get(kube, kind, args.name)
        state, message = verdict(obj)
        children = await _children(kube, args.name) if state in ("progressing", "failed", "paused") else {}
        line = progress_line(obj, children) if state != "stale" else message
        if line != last:
            ctx.say(line)
            last = line
        if state == "done":
            ctx.say(f"lvmvolumegroupset/{args.name}: rollout complete")
            return EXIT_OK
        if state in ("failed", "nomatch"):
            ctx.error(f"lvmvolumegroupset/{args.name}: {message}")
            return EXIT_FAILED
        if state == "paused":
            ctx.error(f"lvmvolumegroupset/{args.name} is paused: `kctl rollout resume lvgset {args.name}` continues it")
            return EXIT_FAILED
        now = time.monotonic()
        stale_since = (stale_since or now) if state == "stale" else None
        if stale_since is not None and now - stale_since >= OPERATOR_GRACE_SECONDS:
            absent = await operator_absent(kube)
            if absent:
                seen = (obj.get("status") or {}).get("observedGeneration")
                ctx.error(f"lvmvolumegroupset/{args.name}: nobody is rolling it out: {absent}; "
                          + (f"the set's status is for generation {seen}" if seen else "the set has no status")
                          + f", its spec is at generation {(obj.get('metadata') or {}).get('generation')}\n"
                          "  hint: install or start the operator (`helm status disklet`, `kubectl get pods -A -l "
                          f"{OPERATOR_SELECTOR}`)")
                return EXIT_FAILED
        if args.no_wait:
            return EXIT_OK
        if deadline is not None and now >= deadline:
            ctx.error(f"lvmvolumegroupset/{args.name}: not complete after {args.timeout:g}s: {last}")
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
    if restored == current:
        for note in notes:
            ctx.warn(note)
        ctx.say(f"lvmvolumegroupset/{args.name}: skipped rollback: revision {revision} differs from the current "
                "template only in file devices, which are kept, so nothing would change (nothing was written)")
        return EXIT_OK
    rv = str((obj.get("metadata") or {}).get("resourceVersion") or "")
    ops = [{"op": "test", "path": "/metadata/resourceVersion", "value": rv},
           {"op": "replace", "path": "/spec/lvmVolumeGroupTemplate", "value": restored}]
    await kube.request("PATCH", kind.path(args.name), body=ops, content_type=JSON_PATCH,
                       what=f"undo LVMVolumeGroupSet/{args.name}")
    for note in notes:
        ctx.warn(note)
    ctx.say(f"lvmvolumegroupset/{args.name} rolled back to revision {revision}")
    return EXIT_OK
