"""Pure planning for LVMVolumeGroupSets: (set, nodes, children) → the child writes. No I/O.

The Kopf handlers in :mod:`disklet_operator.handlers.lvgset` feed this from in-memory indexes and
execute what it returns; the status of the set after that is :mod:`.lvgset_status`. Every decision
(which child, which name, which patch, the rollout gate) is unit tested here without an API server.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError

from disklet import API_VERSION, GROUP
from disklet.api.lvm import (
    NAME_MAX,
    AttentionReason,
    ConditionType,
    CreatedLVG,
    LVMVolumeGroupSetSpec,
    LVMVolumeGroupSpec,
    Reason,
    SetReason,
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

_PROGRESS_REASONS = frozenset({Reason.CREATING, Reason.UPDATING})
"""VGConfigurationApplied=False reasons that mean 'still working', not 'failed'."""
ATTENTION_MESSAGE = 256


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
        ready = conds.get(ConditionType.READY) or {}
        return cls(observed_current=gen is not None and status.get("observedGeneration") == gen,
                   ready=ready.get("status") == "True", applied=applied.get("status"),
                   applied_reason=str(applied.get("reason") or ""),
                   applied_message=str(applied.get("message") or "")[:ATTENTION_MESSAGE],
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
            result.problems.append(ChildProblem(name, node, SetReason.NAME_CONFLICT,
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
                result.failed.append(ChildProblem(name, node, AttentionReason.FAILED, why))
            elif name in refused:
                result.failed.append(ChildProblem(name, node, SetReason.UPDATE_FAILED, refused[name]))
            label_patch = {k: v for k, v in want_labels.items() if child.labels.get(k) != v}
            if label_patch:
                out.append(_Candidate(slot, ChildWrite(name, node, {"metadata": {"labels": label_patch}}), want_spec,
                                      create=False, label_only=True))
            continue
        broken = transition_problems(child.spec, want_spec)  # a patch the CRD's rules reject is not sent
        if broken:
            problem = ChildProblem(name, node, SetReason.UPDATE_FAILED, "not updated, the LVMVolumeGroup rules would reject "
                                   f"it: {'; '.join(map(str, broken))}")
            result.problems.append(problem)
            result.failed.append(problem)
            continue
        if name in refused:
            result.failed.append(ChildProblem(name, node, SetReason.UPDATE_FAILED, refused[name]))
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
            result.problems.append(ChildProblem(w.name, w.node, SetReason.VALIDATION_FAILED, err))
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
