"""Pure planning for LVMVolumeGroupSets: (set, nodes, children) → writes + status. No I/O.

The Kopf handlers in :mod:`disklet_operator.handlers.lvgset` feed this from in-memory indexes and execute
what it returns, so every decision (which child, which name, which patch, which status) is unit
tested here without an API server.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError

from disklet import API_VERSION, GROUP
from disklet.api.common import Condition, ConditionStatus, get_condition, set_condition
from disklet.api.lvm import (
    MAX_ATTENTION,
    MAX_REVISIONS,
    NAME_MAX,
    AttentionChild,
    CreatedLVG,
    LVMVolumeGroupSetSpec,
    LVMVolumeGroupSetStatus,
    LVMVolumeGroupSpec,
    Reason,
    TemplateRevision,
    backing_file_name,
)
from disklet.api.resources import NODE_LABEL
from disklet.kube.patch import merge_patch
from disklet.labels import label_value, node_label_value
from disklet.lvm.names import child_name, digest
from disklet.lvm.transitions import transition_problems

SET_LABEL = f"{GROUP}/lvmvolumegroupset"
"""Label on every child naming its set (value shortened like :func:`label_value`)."""
SET_KIND = "LVMVolumeGroupSet"
REVISION_LABEL = f"{GROUP}/lvgset-revision"
"""Label on every child: the template revision its spec was last written from (``kubectl get lvg -L``)."""
_MAX_LISTED_ERRORS = 5

# Ready condition reasons / set status reasons.
R_CREATED = "AllCreated"
R_NO_NODES = "NoMatchingNodes"
R_CREATING = "Creating"
R_CREATE_FAILED = "CreateFailed"
R_UPDATE_FAILED = "UpdateFailed"
R_VALIDATION = "ValidationFailed"
R_CONFLICT = "NameConflict"
# Attention reasons (status.attention[].reason) and Progressing condition reasons.
A_FAILED = "Failed"
A_NOT_READY = "NotReady"
A_UPDATING = "Updating"
A_ORPHANED = "Orphaned"
P_COMPLETE = "Complete"
P_ROLLING = "RollingOut"
P_PAUSED = "Paused"
P_HALTED = "ChildFailed"
P_BLOCKED = "Blocked"
_PROGRESS_REASONS = frozenset({Reason.CREATING, Reason.UPDATING})
"""VGConfigurationApplied=False reasons that mean 'still working', not 'failed'."""
_ATTENTION_MESSAGE = 256


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
class Health:
    """The few status fields a rollout reads of a child (kept small: one per child in the index)."""

    observed_current: bool = False
    """status.observedGeneration == metadata.generation: the agent has seen the latest spec."""
    ready: bool = False
    applied: str | None = None
    applied_reason: str = ""
    applied_message: str = ""
    ready_reason: str = ""

    @classmethod
    def from_body(cls, body: Mapping[str, Any]) -> Health:
        meta = body.get("metadata") or {}
        status = body.get("status") or {}
        conds = {c.get("type"): c for c in status.get("conditions") or () if isinstance(c, Mapping)}
        gen = meta.get("generation")
        applied = conds.get("VGConfigurationApplied") or {}
        ready = conds.get("Ready") or {}
        return cls(observed_current=gen is not None and status.get("observedGeneration") == gen,
                   ready=ready.get("status") == "True", applied=applied.get("status"),
                   applied_reason=str(applied.get("reason") or ""),
                   applied_message=str(applied.get("message") or "")[:_ATTENTION_MESSAGE],
                   ready_reason=str(ready.get("reason") or ""))


@dataclass(frozen=True)
class Child:
    """What the planner needs of an existing LVMVolumeGroup."""

    name: str
    labels: Mapping[str, str]
    owner_references: tuple[Mapping[str, Any], ...]
    spec: Mapping[str, Any]
    deleting: bool = False
    resource_version: str = ""
    health: Health | None = None

    @classmethod
    def from_body(cls, body: Mapping[str, Any]) -> Child:
        meta = body.get("metadata") or {}
        return cls(name=meta["name"], labels=dict(meta.get("labels") or {}),
                   owner_references=tuple(dict(r) for r in meta.get("ownerReferences") or ()),
                   spec=dict(body.get("spec") or {}), deleting=bool(meta.get("deletionTimestamp")),
                   resource_version=str(meta.get("resourceVersion") or ""),
                   health=Health.from_body(body))

    @property
    def revision(self) -> str | None:
        return self.labels.get(REVISION_LABEL)

    def ready(self) -> bool:
        """Serving (the operator's aggregate Ready, degraded included)."""
        return self.health is not None and self.health.ready

    def converged(self) -> bool:
        """The agent applied this child's current spec and the child is Ready."""
        h = self.health
        return h is not None and h.observed_current and h.applied == "True" and h.ready

    def failure(self) -> str | None:
        """Why the agent could not apply the current spec, or None (not failed, or still working)."""
        h = self.health
        if h is None or not h.observed_current or h.applied != "False" or h.applied_reason in _PROGRESS_REASONS:
            return None
        return f"{h.applied_reason}: {h.applied_message}"

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
class Slot:
    """One matching node in rollout order, and its child as this pass found it."""

    node: str
    name: str
    child: Child | None
    updated: bool = False
    """The child's spec already is the current template's."""
    spec_write: bool = False
    """This pass creates the child or writes its spec (it is updated once the write succeeded)."""

    def updated_after(self, outcome: Outcome) -> bool:
        written = self.name in outcome.created or self.name in outcome.updated
        return self.updated or (self.spec_write and written)


@dataclass
class RolloutState:
    """What the rollout gate decided this pass (for status, events and kctl)."""

    budget: int = 0
    """maxUnavailable as a count for this many nodes."""
    unavailable: int = 0
    """Children that are not Ready (or, at the current revision, have not applied it yet) before this pass."""
    paused: bool = False
    halted_by: ChildProblem | None = None
    """Halt policy: the first failed child in rollout order; nothing is written while it is set."""
    canary_pending: bool = False
    """The canary children are not all updated and Ready yet: only they may be written."""
    held: int = 0
    """Children that want a write but wait for their turn (budget, canary, pause, halt)."""


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
    revision: str = ""
    """Hash of the template (label ``disklet.io/lvgset-revision`` on children written from it)."""
    template: dict[str, Any] = field(default_factory=dict)
    slots: list[Slot] = field(default_factory=list)
    """Matching nodes in rollout order."""
    orphan_children: dict[str, Child] = field(default_factory=dict)
    failed: list[ChildProblem] = field(default_factory=list)
    """Children that failed the current template (agent report, refused write), in rollout order."""
    rollout: RolloutState = field(default_factory=RolloutState)
    failure_policy: str = "Halt"
    _slot_index: dict[str, Slot] = field(default_factory=dict, repr=False)

    @property
    def writes(self) -> int:
        return len(self.creates) + len(self.updates)

    def slot(self, name: str) -> Slot | None:
        if len(self._slot_index) != len(self.slots):
            self._slot_index = {s.name: s for s in self.slots}
        return self._slot_index.get(name)

    def slot_node(self, name: str) -> str:
        slot = self.slot(name)
        return slot.node if slot is not None else ""

    def slot_revision(self, name: str) -> str | None:
        slot = self.slot(name)
        if slot is None or slot.child is None:
            return self.revision if slot is not None and slot.updated else None
        return self.revision if slot.updated else slot.child.revision


def template_revision(spec: LVMVolumeGroupSetSpec) -> str:
    """Stable hash of the template as the model normalises it (defaults filled in)."""
    wire = spec.lvm_volume_group_template.to_wire()
    return digest(json.dumps(wire, sort_keys=True, separators=(",", ":")))


def rollout_order(nodes: Iterable[str], labels: Mapping[str, Mapping[str, str] | None], order_label: str | None) -> list[str]:
    """Deterministic rollout order: by ``order_label`` (integers first, numerically; then other values;
    nodes without the label last), ties and the default by node name."""
    def key(node: str) -> tuple[int, int, str, str]:
        value = (labels.get(node) or {}).get(order_label) if order_label else None
        if value is None:
            return (2, 0, "", node)
        try:
            return (0, int(value), "", node)
        except ValueError:
            return (1, 0, value, node)
    return sorted(nodes, key=key)


def desired_labels(set_name: str, node: str, spec: LVMVolumeGroupSetSpec) -> dict[str, str]:
    tmpl_meta = spec.lvm_volume_group_template.metadata
    labels = dict((tmpl_meta.labels if tmpl_meta else None) or {})
    labels[SET_LABEL] = label_value(set_name)
    labels[NODE_LABEL] = node_label_value(node)
    return labels


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


@dataclass
class _Candidate:
    slot: Slot
    write: ChildWrite
    spec: dict[str, Any]
    create: bool
    label_only: bool = False


def _select_nodes(result: Plan, spec: LVMVolumeGroupSetSpec,
                  nodes: Iterable[tuple[str, Mapping[str, str] | None]]) -> list[str]:
    """Step 1: matching nodes → child names; returns them in rollout order."""
    labels_of: dict[str, Mapping[str, str] | None] = {}
    for node, labels in nodes:
        if spec.node_selector.matches(dict(labels) if labels is not None else None):
            result.desired[node] = child_name(result.set_ref.name, node)
            labels_of[node] = labels
    return rollout_order(result.desired, labels_of, spec.rollout.order_label)


def _index_children(result: Plan, children: Iterable[Child]) -> dict[str, Child]:
    """Step 2: children by name (foreign objects under our names kept for the conflict check); orphans."""
    by_name: dict[str, Child] = {}
    desired_names = set(result.desired.values())
    orphans: list[CreatedLVG] = []
    for child in children:
        if not child.owned_by(result.set_ref):
            by_name.setdefault(child.name, child)  # a foreign object under our name → conflict below
            continue
        by_name[child.name] = child
        if child.name not in desired_names:
            orphans.append(CreatedLVG(lvm_volume_group_name=child.name, node_name=child.node_name() or ""))
            result.orphan_children[child.name] = child
    result.orphans = sorted(orphans, key=lambda o: o.lvm_volume_group_name)
    return by_name


def _candidates(result: Plan, spec: LVMVolumeGroupSetSpec, order: list[str], by_name: Mapping[str, Child],
                refused: Mapping[str, str]) -> list[_Candidate]:
    """Step 3: every write the template asks for (before the rollout gate), and the failed children."""
    set_ref = result.set_ref
    base_spec = spec.lvm_volume_group_template.child_spec("placeholder").to_wire()
    out: list[_Candidate] = []
    for node in order:
        name = result.desired[node]
        want_spec = dict(base_spec, local={"nodeName": node})
        want_labels = desired_labels(set_ref.name, node, spec)
        child = by_name.get(name)
        slot = Slot(node, name, child)
        if child is not None and not child.owned_by(set_ref):
            ref = controller_set(child.owner_references)
            owner = f"LVMVolumeGroupSet {ref.get('name')} (uid {ref.get('uid')})" if ref else "nobody (not created by this set)"
            result.problems.append(ChildProblem(name, node, R_CONFLICT,
                                                f"an LVMVolumeGroup named {name} already exists, owned by {owner}"))
            slot.child = None
            result.slots.append(slot)
            continue
        result.slots.append(slot)
        if child is None:
            labels = dict(want_labels, **{REVISION_LABEL: result.revision})
            body = {"apiVersion": API_VERSION, "kind": "LVMVolumeGroup",
                    "metadata": {"name": name, "labels": labels,
                                 "ownerReferences": [owner_reference(set_ref.name, set_ref.uid)]},
                    "spec": want_spec}
            out.append(_Candidate(slot, ChildWrite(name, node, body), want_spec, create=True))
            continue
        if child.deleting:
            continue  # recreated once it is gone
        result.managed_existing[name] = node
        slot.updated = _spec_equal(child.spec, want_spec)
        if slot.updated:
            want_labels[REVISION_LABEL] = result.revision  # the spec is this revision's: say so
            if (why := child.failure()) is not None:
                result.failed.append(ChildProblem(name, node, A_FAILED, why))
            elif name in refused:
                result.failed.append(ChildProblem(name, node, R_UPDATE_FAILED, refused[name]))
            label_patch = {k: v for k, v in want_labels.items() if child.labels.get(k) != v}
            if label_patch:
                out.append(_Candidate(slot, ChildWrite(name, node, {"metadata": {"labels": label_patch}}), want_spec,
                                      create=False, label_only=True))
            continue
        broken = transition_problems(child.spec, want_spec)  # a patch the CRD's rules reject is not sent
        if broken:
            problem = ChildProblem(name, node, R_UPDATE_FAILED, "not updated, the LVMVolumeGroup rules would reject "
                                   f"it: {'; '.join(map(str, broken))}")
            result.problems.append(problem)
            result.failed.append(problem)
            continue
        if name in refused:
            result.failed.append(ChildProblem(name, node, R_UPDATE_FAILED, refused[name]))
        want_labels[REVISION_LABEL] = result.revision
        patch: dict[str, Any] = {"spec": merge_patch(child.spec, want_spec)}
        label_patch = {k: v for k, v in want_labels.items() if child.labels.get(k) != v}
        if label_patch:
            patch["metadata"] = {"labels": label_patch}
        out.append(_Candidate(slot, ChildWrite(name, node, patch), want_spec, create=False))
    return out


def _unavailable(slot: Slot) -> bool:
    child = slot.child
    if child is None or child.deleting:
        return False
    return not child.converged() if slot.updated else not child.ready()


def _gate(result: Plan, spec: LVMVolumeGroupSetSpec, candidates: list[_Candidate]) -> list[_Candidate]:
    """Step 4, the rollout gate: which of the candidate writes go out this pass.

    Paused or halted: none. Otherwise label-only patches (the spec is already current) always, and
    creates and spec updates in rollout order while ``maxUnavailable`` minus the children unavailable
    now is above zero (each write uses one). While the canary children are not all updated and
    Ready, only they are eligible. ``maxUnavailable`` at or above the number of nodes lifts the limit.
    """
    rollout = spec.rollout
    state = result.rollout
    state.budget = rollout.budget(len(result.desired))
    state.unavailable = sum(1 for s in result.slots if _unavailable(s))
    state.paused = rollout.paused
    if rollout.failure_policy == "Halt" and result.failed:
        state.halted_by = result.failed[0]
    if state.paused or state.halted_by is not None:
        state.held = sum(1 for c in candidates if not c.label_only)
        return []
    canary = {s.name for s in result.slots[: rollout.canary or 0]}
    state.canary_pending = any(not (s.updated and s.child is not None and s.child.converged())
                               for s in result.slots if s.name in canary)
    unlimited = state.budget >= len(result.desired)
    left = state.budget - state.unavailable
    chosen: list[_Candidate] = []
    for cand in candidates:
        if cand.label_only:
            chosen.append(cand)
        elif state.canary_pending and cand.write.name not in canary:
            state.held += 1
        elif unlimited or left > 0:
            chosen.append(cand)
            left -= 1
        else:
            state.held += 1
    return chosen


def plan(set_ref: SetRef, spec: LVMVolumeGroupSetSpec, nodes: Iterable[tuple[str, Mapping[str, str] | None]],
         children: Iterable[Child], refused: Mapping[str, str] | None = None) -> Plan:
    """Decide every child write for one set. Children with equal spec and labels get no write.

    ``refused``: child name → server message for writes the API server refused earlier (the
    controller remembers them): such a child counts as failed for the rollout.
    """
    result = Plan(set_ref=set_ref, revision=template_revision(spec),
                  template=spec.lvm_volume_group_template.to_wire(), failure_policy=spec.rollout.failure_policy)
    order = _select_nodes(result, spec, nodes)
    by_name = _index_children(result, children)
    candidates = _candidates(result, spec, order, by_name, refused or {})
    invalid = [(c.write, err) for c in candidates if not c.label_only and (err := _validate_child(c.write.name, c.spec))]
    if invalid:  # never half-apply: one invalid child spec blocks every child write of this pass
        result.validation_failed = True
        for w, err in invalid:
            result.problems.append(ChildProblem(w.name, w.node, R_VALIDATION, err))
        return result
    for cand in _gate(result, spec, candidates):
        cand.slot.spec_write = not cand.label_only
        (result.creates if cand.create else result.updates).append(cand.write)
    return result


@dataclass
class Outcome:
    """What executing a plan did: the names created, and per-child server errors."""

    created: set[str] = field(default_factory=set)
    updated: set[str] = field(default_factory=set)
    create_errors: dict[str, str] = field(default_factory=dict)
    update_errors: dict[str, str] = field(default_factory=dict)
    refused: set[str] = field(default_factory=set)
    """Names whose write the API server refused (4xx, not transient): failed children for the rollout."""


def invalid_set_status(old: Mapping[str, Any] | None, generation: int | None, message: str,
                       now: str | None = None) -> LVMVolumeGroupSetStatus:
    """Status of a set whose spec fails the model: nothing is written to any child."""
    prev = LVMVolumeGroupSetStatus.model_validate(dict(old or {}))
    conds = set_condition(list(prev.conditions or []), "Ready", "False", R_VALIDATION, message[:32000],
                          generation, now=now)
    conds = set_condition(conds, "Progressing", "False", P_BLOCKED, "the spec is invalid: no child is written",
                          generation, now=now)
    current = prev.current_lvm_volume_groups_count or 0
    return prev.model_copy(update={"phase": "NotCreated" if current == 0 else "Pending",
                                   "reason": R_VALIDATION, "observed_generation": generation,
                                   "conditions": conds})


def _short(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= _ATTENTION_MESSAGE else text[: _ATTENTION_MESSAGE - 1] + "…"


def _attention(result: Plan, outcome: Outcome) -> tuple[list[AttentionChild], int]:
    """Children needing a look, most urgent first: failed/refused/conflicting, orphaned, not Ready.
    Returns (at most MAX_ATTENTION of them, how many there are in all)."""
    urgent: list[AttentionChild] = []
    seen: set[str] = set()
    problems = [(p.name, p.node, p.reason, p.message) for p in result.failed + result.problems]
    problems += [(n, result.slot_node(n), R_CREATE_FAILED, m) for n, m in sorted(outcome.create_errors.items())]
    problems += [(n, result.slot_node(n), R_UPDATE_FAILED, m) for n, m in sorted(outcome.update_errors.items())]
    for name, node, reason, message in problems:
        if name in seen:
            continue
        seen.add(name)
        urgent.append(AttentionChild(name=name, node_name=node, reason=reason, message=_short(message),
                                     revision=result.slot_revision(name)))
    for orphan in result.orphans:
        seen.add(orphan.lvm_volume_group_name)
        child = result.orphan_children.get(orphan.lvm_volume_group_name)
        urgent.append(AttentionChild(name=orphan.lvm_volume_group_name, node_name=orphan.node_name, reason=A_ORPHANED,
                                     message="node no longer matches spec.nodeSelector: kept, no longer updated",
                                     revision=child.revision if child else None))
    for slot in result.slots:
        child = slot.child
        if slot.name in seen:
            continue
        if slot.spec_write and slot.updated_after(outcome):
            urgent.append(AttentionChild(name=slot.name, node_name=slot.node, reason=A_UPDATING,
                                         message="the agent has not reported this generation yet",
                                         revision=result.revision))
            continue
        if child is None or child.deleting:
            continue
        if slot.updated and child.converged():
            continue
        if not slot.updated and child.ready():
            continue
        h = child.health or Health()
        if slot.updated and not h.observed_current:
            reason, message = A_UPDATING, "the agent has not reported this generation yet"
        else:
            reason, message = A_NOT_READY, f"Ready is not True ({h.ready_reason or 'no condition'})"
            if h.applied is not None and h.applied != "True":
                message += f"; VGConfigurationApplied {h.applied} ({h.applied_reason})"
        urgent.append(AttentionChild(name=slot.name, node_name=slot.node, reason=reason, message=message,
                                     revision=child.revision))
    return urgent[:MAX_ATTENTION], len(urgent)


def _revisions(result: Plan, prev: LVMVolumeGroupSetStatus) -> list[TemplateRevision]:
    """The current template first, then the newest older one (what ``kctl rollout undo`` restores)."""
    current = TemplateRevision(revision=result.revision, template=result.template)
    older = [r for r in prev.revisions or () if r.revision != result.revision]
    return [current, *older][:MAX_REVISIONS]


def _halted_by(result: Plan, outcome: Outcome) -> ChildProblem | None:
    """The failed child that halts the rollout: found by the plan, or refused by the server this pass."""
    if result.rollout.halted_by is not None or result.failure_policy != "Halt" or not outcome.refused:
        return result.rollout.halted_by
    for slot in result.slots:  # rollout order: the first refused child
        if slot.name in outcome.refused:
            message = outcome.update_errors.get(slot.name) or outcome.create_errors.get(slot.name) or "refused"
            return ChildProblem(slot.name, slot.node, R_UPDATE_FAILED, message)
    return None


def _progressing(result: Plan, outcome: Outcome, counts: dict[str, int]) -> tuple[ConditionStatus, str, str]:
    """(status, reason, message) of the Progressing condition."""
    r = result.rollout
    halted = _halted_by(result, outcome)
    desired = counts["desired"]
    line = (f"{counts['updated_ready']} of {desired} updated and Ready, {counts['updated']} updated, "
            f"revision {result.revision}")
    if result.validation_failed:
        return "False", P_BLOCKED, "a child spec fails validation: no child is written (see Ready)"
    if halted is not None:
        p = halted
        return "False", P_HALTED, _short(f"halted: LVMVolumeGroup {p.name} on node {p.node} failed: {p.message}") + f" ({line})"
    if desired and counts["updated_ready"] == desired:
        return "True", P_COMPLETE, f"rollout complete: {line}"
    if r.paused:
        return "False", P_PAUSED, f"paused (spec.rollout.paused): {line}"
    if desired == 0:
        return "True", P_COMPLETE, "no node matches"
    return "True", P_ROLLING, line + (", waiting for the canary" if r.canary_pending else "")


def build_status(result: Plan, outcome: Outcome, old: Mapping[str, Any] | None,
                 now: str | None = None) -> LVMVolumeGroupSetStatus:
    """The set's status after a pass (lastTransitionTime kept unless a condition flips)."""
    prev = LVMVolumeGroupSetStatus.model_validate(dict(old or {}))
    existing = set(result.managed_existing) | outcome.created
    updated_names = {s.name for s in result.slots if s.updated_after(outcome)}
    counts = {
        "desired": len(result.desired),
        "current": len(existing),
        "updated": len(updated_names),
        "ready": sum(1 for s in result.slots if s.child is not None and s.name in existing and s.child.ready()),
        "updated_ready": sum(1 for s in result.slots if s.updated and not s.spec_write and s.child is not None
                             and s.child.converged()),
    }
    failed = {p.name for p in result.failed} | set(outcome.create_errors) | set(outcome.update_errors)
    desired, current = counts["desired"], counts["current"]
    problems = [(p.name, p.reason, p.message) for p in result.problems + result.failed]
    problems += [(n, R_CREATE_FAILED, m) for n, m in sorted(outcome.create_errors.items())]
    problems += [(n, R_UPDATE_FAILED, m) for n, m in sorted(outcome.update_errors.items())]
    problems = list(dict.fromkeys(problems))  # a remembered refusal is both a failed child and an outcome

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
                     f"(status.attention, reason Orphaned); delete them deliberately to remove the VGs")
    if not lines:
        lines.append(f"{current}/{desired} LVMVolumeGroups created")
    cond_reason = R_CREATED if ready else (reason.split(",")[0] if reason else R_CREATING)
    gen = result.set_ref.generation
    conds: list[Condition] = set_condition(list(prev.conditions or []), "Ready", "True" if ready else "False",
                                           cond_reason, "\n".join(lines)[:32000], gen, now=now)
    p_status, p_reason, p_message = _progressing(result, outcome, counts)
    conds = set_condition(conds, "Progressing", p_status, p_reason, p_message, gen, now=now)
    attention, _ = _attention(result, outcome)
    return LVMVolumeGroupSetStatus(
        current_lvm_volume_groups_count=current, desired_lvm_volume_groups_count=desired,
        updated_count=counts["updated"], ready_count=counts["ready"], updated_ready_count=counts["updated_ready"],
        failed_count=len(failed), orphaned_count=len(result.orphans), current_revision=result.revision,
        attention=attention or None, revisions=_revisions(result, prev), phase=phase,
        reason=reason, observed_generation=gen, conditions=conds)


STATUS_KEYS = ("currentLVMVolumeGroupsCount", "desiredLVMVolumeGroupsCount", "updatedCount", "readyCount",
               "updatedReadyCount", "failedCount", "orphanedCount", "currentRevision", "attention", "revisions",
               "phase", "reason", "observedGeneration", "conditions")
LEGACY_STATUS_KEYS = ("createdLVMVolumeGroups", "orphanedLVMVolumeGroups")
"""Unbounded lists of earlier versions: cleared by the first status write."""


def status_patch(old: Mapping[str, Any] | None, new: LVMVolumeGroupSetStatus) -> dict[str, Any] | None:
    """The merge patch for ``status`` (None keys clear fields), or None when nothing changed."""
    wire = new.to_wire()
    old = dict(old or {})
    old_wire = {k: v for k, v in old.items() if k in STATUS_KEYS}
    try:
        old_norm = LVMVolumeGroupSetStatus.model_validate(old_wire).to_wire()
    except ValidationError:
        old_norm = {}
    legacy = [k for k in LEGACY_STATUS_KEYS if old.get(k) is not None]
    if old_norm == wire and not legacy:
        return None
    out = {k: wire.get(k) for k in STATUS_KEYS}
    out.update({k: None for k in legacy})
    return out


def new_orphans(result: Plan, reported: set[str]) -> list[CreatedLVG]:
    """Orphans not reported yet (each gets one Event); ``reported`` is updated."""
    out = [o for o in result.orphans if o.lvm_volume_group_name not in reported]
    reported.intersection_update(o.lvm_volume_group_name for o in result.orphans)
    reported.update(o.lvm_volume_group_name for o in out)
    return out


def reported_orphans(status: Mapping[str, Any] | None) -> set[str]:
    """Orphans the stored status already names (seeds the controller's memory after a restart)."""
    st = dict(status or {})
    names = {a.get("name") for a in st.get("attention") or () if a.get("reason") == A_ORPHANED}
    names |= {o.get("lvmVolumeGroupName") for o in st.get("orphanedLVMVolumeGroups") or ()}
    return {n for n in names if n}


def ready_condition(status: Mapping[str, Any] | None) -> Condition | None:
    prev = LVMVolumeGroupSetStatus.model_validate(dict(status or {}))
    return get_condition(prev.conditions, "Ready")
