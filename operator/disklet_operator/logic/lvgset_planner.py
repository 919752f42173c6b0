"""Pure planning for LVMVolumeGroupSets: (set, nodes, children) → writes + status. No I/O.

The Kopf handlers in :mod:`disklet_operator.handlers.lvgset` feed this from in-memory indexes and execute
what it returns, so every decision (which child, which name, which patch, which status) is unit
tested here without an API server.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError

from disklet import API_VERSION, GROUP
from disklet.api.common import Condition, get_condition, set_condition
from disklet.api.lvm import (
    NAME_MAX,
    CreatedLVG,
    LVMVolumeGroupSetSpec,
    LVMVolumeGroupSetStatus,
    LVMVolumeGroupSpec,
    backing_file_name,
)
from disklet.api.resources import NODE_LABEL
from disklet.kube.patch import merge_patch
from disklet.labels import label_value, node_label_value
from disklet.units import QuantityError, quantity_bytes

SET_LABEL = f"{GROUP}/lvmvolumegroupset"
"""Label on every child naming its set (value shortened like :func:`label_value`)."""
SET_KIND = "LVMVolumeGroupSet"
MAX_NAME = 253
HASH_LEN = 10
_MAX_LISTED_ERRORS = 5

# Ready condition reasons / set status reasons.
R_CREATED = "AllCreated"
R_NO_NODES = "NoMatchingNodes"
R_CREATING = "Creating"
R_CREATE_FAILED = "CreateFailed"
R_UPDATE_FAILED = "UpdateFailed"
R_VALIDATION = "ValidationFailed"
R_CONFLICT = "NameConflict"


def _digest(*parts: str) -> str:
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()[:HASH_LEN]


def _shorten(text: str, limit: int, *hash_parts: str) -> str:
    """``text`` if it fits, else a prefix + ``-`` + stable hash, still a valid name/label value."""
    if len(text) <= limit:
        return text
    prefix = text[: limit - HASH_LEN - 1].rstrip("-._")
    return f"{prefix}-{_digest(*(hash_parts or (text,)))}"


def child_name(set_name: str, node_name: str) -> str:
    """Deterministic child LVMVolumeGroup name: ``<set>-<node>``, cut to 253 characters with a stable
    hash of (set, node) when longer. Both inputs are DNS-1123 subdomains, so the result is one too."""
    plain = f"{set_name}-{node_name}"
    return _shorten(plain, MAX_NAME, set_name, node_name)


def owner_reference(set_name: str, set_uid: str) -> dict[str, Any]:
    return {"apiVersion": API_VERSION, "kind": SET_KIND, "name": set_name, "uid": set_uid,
            "controller": True, "blockOwnerDeletion": True}


def controller_set(owner_refs: Iterable[Mapping[str, Any]] | None) -> Mapping[str, Any] | None:
    """The LVMVolumeGroupSet controller reference among ``owner_refs``, if any."""
    for ref in owner_refs or ():
        if ref.get("kind") == SET_KIND and str(ref.get("apiVersion", "")).startswith(f"{GROUP}/") and ref.get("controller"):
            return ref
    return None


@dataclass(frozen=True)
class SetRef:
    name: str
    uid: str
    generation: int | None = None


@dataclass(frozen=True)
class Child:
    """What the planner needs of an existing LVMVolumeGroup."""

    name: str
    labels: Mapping[str, str]
    owner_references: tuple[Mapping[str, Any], ...]
    spec: Mapping[str, Any]
    deleting: bool = False
    resource_version: str = ""

    @classmethod
    def from_body(cls, body: Mapping[str, Any]) -> Child:
        meta = body.get("metadata") or {}
        return cls(name=meta["name"], labels=dict(meta.get("labels") or {}),
                   owner_references=tuple(dict(r) for r in meta.get("ownerReferences") or ()),
                   spec=dict(body.get("spec") or {}), deleting=bool(meta.get("deletionTimestamp")),
                   resource_version=str(meta.get("resourceVersion") or ""))

    def node_name(self) -> str | None:
        return (self.spec.get("local") or {}).get("nodeName")

    def owned_by(self, set_ref: SetRef) -> bool:
        ref = controller_set(self.owner_references)
        return ref is not None and ref.get("uid") == set_ref.uid


@dataclass
class ChildWrite:
    name: str
    node: str
    body: dict[str, Any]
    """Create: the whole object. Update: the merge patch (metadata.labels and/or spec)."""


@dataclass
class ChildProblem:
    name: str
    node: str
    reason: str
    message: str


@dataclass
class Plan:
    set_ref: SetRef
    desired: dict[str, str] = field(default_factory=dict)
    """node → child name for every matching node."""
    creates: list[ChildWrite] = field(default_factory=list)
    updates: list[ChildWrite] = field(default_factory=list)
    managed_existing: dict[str, str] = field(default_factory=dict)
    """child name → node for desired children that exist and are not being deleted."""
    orphans: list[CreatedLVG] = field(default_factory=list)
    problems: list[ChildProblem] = field(default_factory=list)
    """Children not written this pass and why (conflict, predicted rejection, validation)."""
    validation_failed: bool = False
    """True: at least one child spec failed the model; NO child is written this pass."""

    @property
    def writes(self) -> int:
        return len(self.creates) + len(self.updates)


def desired_labels(set_name: str, node: str, spec: LVMVolumeGroupSetSpec) -> dict[str, str]:
    tmpl_meta = spec.lvm_volume_group_template.metadata
    labels = dict((tmpl_meta.labels if tmpl_meta else None) or {})
    labels[SET_LABEL] = label_value(set_name)
    labels[NODE_LABEL] = node_label_value(node)
    return labels


def _transition_problems(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[str]:
    """The child CRD's transition rules, checked before writing: a patch they reject is not sent."""
    out: list[str] = []
    for key in ("type", "actualVGNameOnTheNode"):
        if key in old and old.get(key) != new.get(key):
            out.append(f"{key} is immutable ({old.get(key)!r} → {new.get(key)!r})")
    old_node = (old.get("local") or {}).get("nodeName")
    if old_node and old_node != (new.get("local") or {}).get("nodeName"):
        out.append("local.nodeName is immutable")
    new_fds = {fd.get("name"): fd for fd in new.get("fileDevices") or ()}
    for ofd in old.get("fileDevices") or ():
        nfd = new_fds.get(ofd.get("name"))
        if nfd is None:
            out.append(f"file device {ofd.get('name')!r} would be removed (the child has it, the template does not)")
            continue
        if nfd.get("directory") != ofd.get("directory"):
            out.append(f"file device {ofd.get('name')!r}: directory is immutable")
        try:
            if quantity_bytes(str(nfd.get("size"))) < quantity_bytes(str(ofd.get("size"))):
                out.append(f"file device {ofd.get('name')!r}: size {ofd.get('size')} → {nfd.get('size')} would shrink")
        except QuantityError:
            out.append(f"file device {ofd.get('name')!r}: size not comparable")
    return out


def _spec_equal(existing: Mapping[str, Any], desired: Mapping[str, Any]) -> bool:
    if dict(existing) == desired:
        return True
    try:  # server defaults / different spellings of the same thing
        return LVMVolumeGroupSpec.model_validate(dict(existing)).to_wire() == desired
    except ValidationError:
        return False


def _validate_child(name: str, spec: dict[str, Any]) -> str | None:
    try:
        model = LVMVolumeGroupSpec.model_validate(spec)
    except ValidationError as exc:
        return "; ".join(f"{'.'.join(map(str, e['loc'])) or 'spec'}: {e['msg']}" for e in exc.errors())
    for fd in model.file_devices or ():
        if len(backing_file_name(name, fd.name)) > NAME_MAX:
            return (f"backing file name {backing_file_name(name, fd.name)[:40]}... exceeds NAME_MAX ({NAME_MAX}): "
                    "shorten the set, node or file device name")
    return None


def plan(set_ref: SetRef, spec: LVMVolumeGroupSetSpec, nodes: Iterable[tuple[str, Mapping[str, str] | None]],
         children: Iterable[Child]) -> Plan:
    """Decide every child write for one set. Children with equal spec and labels get no write."""
    result = Plan(set_ref=set_ref)
    selector = spec.node_selector
    for node, labels in nodes:
        if selector.matches(labels):
            result.desired[node] = child_name(set_ref.name, node)
    by_name: dict[str, Child] = {}
    orphans: list[CreatedLVG] = []
    desired_names = {n: node for node, n in result.desired.items()}
    for known in children:
        if not known.owned_by(set_ref):
            by_name.setdefault(known.name, known)  # a foreign object under our name → conflict below
            continue
        by_name[known.name] = known
        if known.name not in desired_names:
            orphans.append(CreatedLVG(lvm_volume_group_name=known.name, node_name=known.node_name() or ""))
    result.orphans = sorted(orphans, key=lambda o: o.lvm_volume_group_name)

    template = spec.lvm_volume_group_template
    base_spec = template.child_spec("placeholder").to_wire()
    pending: list[tuple[ChildWrite, dict[str, Any], bool]] = []
    for node in sorted(result.desired):
        name = result.desired[node]
        want_spec = dict(base_spec, local={"nodeName": node})
        want_labels = desired_labels(set_ref.name, node, spec)
        child = by_name.get(name)
        if child is not None and not child.owned_by(set_ref):
            ref = controller_set(child.owner_references)
            owner = f"LVMVolumeGroupSet {ref.get('name')} (uid {ref.get('uid')})" if ref else "nobody (not created by this set)"
            result.problems.append(ChildProblem(name, node, R_CONFLICT,
                                                f"an LVMVolumeGroup named {name} already exists, owned by {owner}"))
            continue
        if child is None:
            body = {"apiVersion": API_VERSION, "kind": "LVMVolumeGroup",
                    "metadata": {"name": name, "labels": want_labels,
                                 "ownerReferences": [owner_reference(set_ref.name, set_ref.uid)]},
                    "spec": want_spec}
            pending.append((ChildWrite(name, node, body), want_spec, True))
            continue
        if child.deleting:
            continue  # recreated once it is gone
        result.managed_existing[name] = node
        label_patch = {k: v for k, v in want_labels.items() if child.labels.get(k) != v}
        spec_same = _spec_equal(child.spec, want_spec)
        if not label_patch and spec_same:
            continue
        patch: dict[str, Any] = {}
        if label_patch:
            patch["metadata"] = {"labels": label_patch}
        if not spec_same:
            broken = _transition_problems(child.spec, want_spec)
            if broken:
                result.problems.append(ChildProblem(name, node, R_UPDATE_FAILED,
                                                    f"not updated, the LVMVolumeGroup rules would reject it: {'; '.join(broken)}"))
                continue
            spec_patch = merge_patch(child.spec, want_spec)
            if spec_patch:
                patch["spec"] = spec_patch
        pending.append((ChildWrite(name, node, patch), want_spec, False))

    invalid = [(w, err) for w, s, _ in pending if (err := _validate_child(w.name, s))]
    if invalid:  # never half-apply: one invalid child spec blocks every child write of this pass
        result.validation_failed = True
        for w, err in invalid:
            result.problems.append(ChildProblem(w.name, w.node, R_VALIDATION, err))
        return result
    for w, _, is_create in pending:
        (result.creates if is_create else result.updates).append(w)
    return result


@dataclass
class Outcome:
    """What executing a plan did: the names created, and per-child server errors."""

    created: set[str] = field(default_factory=set)
    updated: set[str] = field(default_factory=set)
    create_errors: dict[str, str] = field(default_factory=dict)
    update_errors: dict[str, str] = field(default_factory=dict)


def invalid_set_status(old: Mapping[str, Any] | None, generation: int | None, message: str,
                       now: str | None = None) -> LVMVolumeGroupSetStatus:
    """Status of a set whose spec fails the model: nothing is written to any child."""
    prev = LVMVolumeGroupSetStatus.model_validate(dict(old or {}))
    conds = set_condition(list(prev.conditions or []), "Ready", "False", R_VALIDATION, message[:32000],
                          generation, now=now)
    current = len(prev.created_lvm_volume_groups or [])
    return prev.model_copy(update={"phase": "NotCreated" if current == 0 else "Pending",
                                   "reason": R_VALIDATION, "observed_generation": generation,
                                   "conditions": conds})


def build_status(result: Plan, outcome: Outcome, old: Mapping[str, Any] | None,
                 now: str | None = None) -> LVMVolumeGroupSetStatus:
    """The set's status after a pass (lastTransitionTime kept unless Ready flips)."""
    prev = LVMVolumeGroupSetStatus.model_validate(dict(old or {}))
    node_of = {name: node for node, name in result.desired.items()}
    existing = dict(result.managed_existing)
    for name in outcome.created:
        existing[name] = node_of[name]
    created = [CreatedLVG(lvm_volume_group_name=n, node_name=existing[n]) for n in sorted(existing)]
    desired = len(result.desired)
    current = len(created)
    problems = [(p.name, p.reason, p.message) for p in result.problems]
    problems += [(n, R_CREATE_FAILED, m) for n, m in sorted(outcome.create_errors.items())]
    problems += [(n, R_UPDATE_FAILED, m) for n, m in sorted(outcome.update_errors.items())]

    if desired == 0:
        phase, reason = "NotCreated", R_NO_NODES
    elif current == desired:
        phase, reason = "Created", None
    elif current == 0 and problems:
        phase, reason = "NotCreated", problems[0][1]
    else:
        phase, reason = "Pending", R_CREATING
    if problems:
        reasons = sorted({p[1] for p in problems})
        reason = reasons[0] if len(reasons) == 1 else ",".join(reasons)
    ready = phase == "Created" and not problems
    lines = [f"{n}: {m}" for n, _, m in problems[:_MAX_LISTED_ERRORS]]
    if len(problems) > _MAX_LISTED_ERRORS:
        lines.append(f"... and {len(problems) - _MAX_LISTED_ERRORS} more")
    if result.orphans:
        lines.append(f"{len(result.orphans)} LVMVolumeGroup(s) kept for nodes that no longer match "
                     f"(status.orphanedLVMVolumeGroups); delete them deliberately to remove the VGs")
    if not lines:
        lines.append(f"{current}/{desired} LVMVolumeGroups created")
    cond_reason = R_CREATED if ready else (reason.split(",")[0] if reason else R_CREATING)
    conds: list[Condition] = set_condition(list(prev.conditions or []), "Ready", "True" if ready else "False",
                                           cond_reason, "\n".join(lines)[:32000], result.set_ref.generation, now=now)
    return LVMVolumeGroupSetStatus(
        created_lvm_volume_groups=created or None, orphaned_lvm_volume_groups=result.orphans or None,
        current_lvm_volume_groups_count=current, desired_lvm_volume_groups_count=desired, phase=phase,
        reason=reason, observed_generation=result.set_ref.generation, conditions=conds)


STATUS_KEYS = ("createdLVMVolumeGroups", "orphanedLVMVolumeGroups", "currentLVMVolumeGroupsCount",
               "desiredLVMVolumeGroupsCount", "phase", "reason", "observedGeneration", "conditions")


def status_patch(old: Mapping[str, Any] | None, new: LVMVolumeGroupSetStatus) -> dict[str, Any] | None:
    """The merge patch for ``status`` (None keys clear fields), or None when nothing changed."""
    wire = new.to_wire()
    old_wire = {k: v for k, v in dict(old or {}).items() if k in STATUS_KEYS}
    try:
        old_norm = LVMVolumeGroupSetStatus.model_validate(old_wire).to_wire()
    except ValidationError:
        old_norm = {}
    if old_norm == wire:
        return None
    return {k: wire.get(k) for k in STATUS_KEYS}


def new_orphans(result: Plan, old: Mapping[str, Any] | None) -> list[CreatedLVG]:
    """Orphans not yet reported in the old status (each gets one Event)."""
    before = {o.get("lvmVolumeGroupName") for o in (dict(old or {}).get("orphanedLVMVolumeGroups") or ())}
    return [o for o in result.orphans if o.lvm_volume_group_name not in before]


def ready_condition(status: Mapping[str, Any] | None) -> Condition | None:
    prev = LVMVolumeGroupSetStatus.model_validate(dict(status or {}))
    return get_condition(prev.conditions, "Ready")
