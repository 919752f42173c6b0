"""DiskLayout pre-flight and bookkeeping (docs/design/disklayout.md#flow, step 1). Never touches a node.

Handlers (all closures over ``registry``, no module state):

- ``dl_by_node`` index: DiskLayouts by ``spec.nodeName`` (one DiskLayout per node, oldest wins);
- create/resume/spec-update: validate the spec model, check for an older DiskLayout of the node,
  pre-flight with ``disklet.layout.preflight`` (resolve, evaluate, extract targets, hash) and write
  the operator's status fields only when they change (``logic.disklayout_status``); layouts that
  arrive together (e.g. all of them at operator start) share one evaluator run
  (``disklet.layout.batch.preflight_many`` behind a short collection window, ``..batching``);
- every event: keep ``metadata.labels["disklet.io/node"] == spec.nodeName``, and re-check the
  duplicate verdict when the index disagrees with the status;
- a timer on refused duplicates only (so only they carry the operator's finalizer, briefly):
  when the older DiskLayout is gone, the newer one is pre-flighted normally.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import kopf
from pydantic import ValidationError

from disklet import GROUP, VERSION
from disklet.advice import event_message
from disklet.api.common import Condition, set_condition
from disklet.api.disklayout import DiskLayoutSpec, Phase, RefusalCode
from disklet.api.resources import DISK_LAYOUT
from disklet.hostcmd import HostRunner
from disklet.kube.client import ApiError, KubeClient
from disklet.kube.events import MAX_MESSAGE, OPERATOR, EventRecorder, operator_instance, recorder_for
from disklet.kube.login import registry_login
from disklet.kube.patch import owned_keys_patch
from disklet.layout.batch import preflight_many
from disklet.layout.mounts import MountPolicy, parse_roots
from disklet.observe import reconcile_timer, record_refusal, record_status_write

from ..batching import Batcher
from ..logic.conditions import merge_owned_conditions
from ..logic.disklayout_status import (
    OPERATOR_STATUS_KEYS,
    OWNED_CONDITIONS,
    PreflightVerdict,
    VerdictKind,
    desired_status,
    duplicate_verdict,
    invalid_spec_verdict,
    parse_status,
    verdict_from_preflight,
)
from ..logic.duplicates import LayoutRef, duplicate_message, older_layout
from ..logic.labels import node_label_patch
from ..logic.readiness import ConditionState, node_readiness
from .lvg import NODES_INDEX
from .lvg import _first as first_in_index

PLURAL = DISK_LAYOUT.plural
KIND = DISK_LAYOUT.kind
INDEX = "dl_by_node"
DEFAULT_RECHECK_SECONDS = 10.0
DEFAULT_BATCH_WINDOW = 0.1
"""Seconds the first pre-flight waits for others to share its evaluator run."""


def _node_of(spec: Mapping[str, Any] | None) -> str | None:
    node = (spec or {}).get("nodeName")
    return node if isinstance(node, str) and node else None


def _is_duplicate(status: Mapping[str, Any] | None) -> bool:
    status = status or {}
    return status.get("phase") == Phase.REFUSED and status.get("refusalReason") == RefusalCode.DUPLICATE_NODE_LAYOUT


def _owner_elsewhere(name: str, node: str | None, index: Any) -> str | None:
    if node is None or index is None:
        return None
    return older_layout(name, list(index.get(node, [])))


def _needs_duplicate_recheck(name: str, spec: Mapping[str, Any], status: Mapping[str, Any], index: Any) -> bool:
    """Does the status disagree with the index (refused for an owner that is gone or changed, or not yet refused)?"""
    node = _node_of(spec)
    owner = _owner_elsewhere(name, node, index)
    if owner is None or node is None:
        return _is_duplicate(status)
    return not (_is_duplicate(status) and status.get("message") == duplicate_message(node, owner))


logger_ = logging.getLogger("disklet.operator.disklayout")
NODE_READY = "NodeReady"


def node_condition(status: Mapping[str, Any], base: list[dict[str, Any]] | None, node: str | None,
                   nodes: Any, generation: int | None) -> tuple[list[dict[str, Any]], ConditionState] | None:
    """The conditions with ``NodeReady`` set from the Node index (as on an LVMVolumeGroup: reason
    ``NodeNotFound`` for a node that does not exist), or None when nothing changes or the registry
    has no Node index. ``base``: conditions a patch of this same pass already carries."""
    if nodes is None:
        return None
    found, ready = first_in_index(nodes, node)
    state = node_readiness(node, found, ready)
    raw = base if base is not None else list(status.get("conditions") or [])
    carried = next((c for c in raw if isinstance(c, Mapping) and c.get("type") == NODE_READY), None)
    wanted = (state.status, state.reason, state.message)
    if carried is not None and (carried.get("status"), carried.get("reason"), carried.get("message")) == wanted:
        return None
    parsed = [Condition.model_validate(dict(c)) for c in raw if isinstance(c, Mapping) and c.get("type") == NODE_READY]
    updated = set_condition(parsed, NODE_READY, state.status, state.reason, state.message, generation)
    return merge_owned_conditions(raw, updated), state


def _announce_node_ready(events: EventRecorder, obj: Any, state: ConditionState) -> None:
    """The Event of a NodeReady change: Normal NodeFound, or a Warning naming why the layout waits."""
    if state.status == "True":
        events.record(obj, "Normal", "NodeFound", state.message)
    elif state.status == "False":
        events.record(obj, "Warning", state.reason, f"{state.message}: the layout stays pending until it does")


def _node_index_of_event(event: Mapping[str, Any], name: str, status: Mapping[str, Any]) -> dict[str, list[Any]]:
    """The node index entry (as the Node index would hold it) of a Node event: empty for a deleted
    Node, else its Ready condition (None when it has none)."""
    if event.get("type") == "DELETED":
        return {}
    ready: Mapping[str, Any] = next((c for c in status.get("conditions") or [] if c.get("type") == "Ready"), {})
    return {name: [{k: ready.get(k) for k in ("status", "reason", "message")} if ready else None]}


def register(registry: kopf.OperatorRegistry, *, runner: HostRunner | None = None,
             recheck_seconds: float = DEFAULT_RECHECK_SECONDS, base_dir: Path | None = None,
             batch_window: float = DEFAULT_BATCH_WINDOW) -> None:
    """Define the DiskLayout handlers on ``registry``.

    ``runner`` evaluates Nix (``nix-instantiate``); ``recheck_seconds`` is how often a refused
    duplicate checks whether the older DiskLayout of its node is gone; ``batch_window`` is how
    long a pre-flight waits for others to share its evaluator run.
    """
    runner = runner or HostRunner()
    events = recorder_for(registry, component=OPERATOR, instance=operator_instance())
    policy = MountPolicy.of(parse_roots(os.environ.get("DISKLET_MOUNT_ROOTS")))
    batcher: Batcher[DiskLayoutSpec, Any] = Batcher(
        lambda specs: preflight_many([(spec, base_dir) for spec in specs], runner, policy), window=batch_window)

    # Index functions are async: Kopf runs a sync one in its thread pool, a thread hop per watch
    # event (≈ 43 µs against 0.1 µs; docs/performance.md, operator_rss).
    @kopf.index(GROUP, VERSION, PLURAL, registry=registry, id=INDEX)
    async def dl_by_node(name: str, spec: Mapping[str, Any], meta: Mapping[str, Any], **_: Any) -> dict[str, LayoutRef]:
        node = _node_of(spec)
        if node is None or meta.get("deletionTimestamp"):
            return {}
        return {node: LayoutRef(name=name, created=meta.get("creationTimestamp"))}

    async def judge(name: str, spec: Mapping[str, Any], index: Any) -> PreflightVerdict:
        try:
            model = DiskLayoutSpec.model_validate(dict(spec or {}))
        except ValidationError as exc:
            return invalid_spec_verdict(exc)
        owner = _owner_elsewhere(name, model.node_name, index)
        if owner is not None:
            return duplicate_verdict(model.node_name, owner)
        return verdict_from_preflight(await batcher.submit(model))

    async def reconcile(name: str, body: kopf.Body, spec: Mapping[str, Any], status: Mapping[str, Any],
                        meta: Mapping[str, Any], patch: kopf.Patch, logger: Any, index: Any, why: str) -> None:
        with reconcile_timer(KIND) as outcome:
            verdict = await judge(name, spec, index)
            old = parse_status(status)
            new = desired_status(old, verdict, meta.get("generation"))
            raw = dict(status or {})
            changes = owned_keys_patch(raw, new.to_wire(), set(OPERATOR_STATUS_KEYS) - {"conditions"})
            validated = [c for c in new.conditions or [] if c.type in OWNED_CONDITIONS]
            merged = merge_owned_conditions(raw.get("conditions"), validated)
            if merged != (raw.get("conditions") or []):
                changes["conditions"] = merged
            if verdict.phase is Phase.REFUSED:
                outcome.result = "refused"
            if not changes:
                logger.debug(f"DiskLayout {name}: status unchanged ({why})")
                return
            for key, value in changes.items():
                patch.status[key] = value
            record_status_write(KIND)  # Kopf sends the patch when the handler returns
            _announce(events, body, old.phase, old.refusal_reason, old.layout_generation, new.layout_generation, verdict, logger)

    @kopf.on.resume(GROUP, VERSION, PLURAL, registry=registry, id="preflight")
    @kopf.on.create(GROUP, VERSION, PLURAL, registry=registry, id="preflight")
    @kopf.on.update(GROUP, VERSION, PLURAL, registry=registry, id="preflight", field="spec")
    async def preflight_handler(name: str, body: kopf.Body, spec: Mapping[str, Any], status: Mapping[str, Any],
                                meta: Mapping[str, Any], patch: kopf.Patch, logger: Any, reason: str,
                                **kwargs: Any) -> None:
        await reconcile(name, body, spec, status, meta, patch, logger, kwargs.get(INDEX), str(reason))

    @kopf.on.event(GROUP, VERSION, PLURAL, registry=registry, id="bookkeeping")
    async def bookkeeping(event: Mapping[str, Any], name: str, body: kopf.Body, spec: Mapping[str, Any],
                          status: Mapping[str, Any], meta: Mapping[str, Any], labels: Mapping[str, str],
                          patch: kopf.Patch, logger: Any, **kwargs: Any) -> None:
        if event.get("type") == "DELETED" or meta.get("deletionTimestamp"):
            return
        label = node_label_patch(labels, _node_of(spec))
        if label:
            patch.metadata.setdefault("labels", {}).update(label)
        if status.get("observedGeneration") != meta.get("generation"):
            return  # the spec changed: the change handler pre-flights it in this same cycle
        index = kwargs.get(INDEX)
        if _needs_duplicate_recheck(name, spec, status, index):
            await reconcile(name, body, spec, status, meta, patch, logger, index, "duplicate re-check")
        _node_ready(body, spec, status, meta, patch, kwargs.get(NODES_INDEX))

    def _node_ready(body: kopf.Body, spec: Mapping[str, Any], status: Mapping[str, Any], meta: Mapping[str, Any],
                    patch: kopf.Patch, nodes: Any) -> None:
        pending = patch.status.get("conditions") if "conditions" in patch.status else None
        found = node_condition(status, pending, _node_of(spec), nodes, meta.get("generation"))
        if found is None:
            return
        conditions, state = found
        patch.status["conditions"] = conditions
        record_status_write(KIND)
        _announce_node_ready(events, body, state)

    kube: dict[str, KubeClient] = {}

    @kopf.on.cleanup(registry=registry, id="disklayout_node_client_cleanup")
    async def disklayout_node_client_cleanup(**_: Any) -> None:
        if "client" in kube:
            await kube.pop("client").close()

    @kopf.on.event("v1", "nodes", registry=registry, id="disklayout-node-events")
    async def node_changed(event: Mapping[str, Any], name: str, status: Mapping[str, Any], **kwargs: Any) -> None:
        """A Node created, deleted or changing Ready after its DiskLayout: no event of the DiskLayout
        says so, so the DiskLayouts of that node (the index) are re-read and their NodeReady written
        when it differs. No finalizer, no annotation on the Node (an event handler writes nothing)."""
        refs = list((kwargs.get(INDEX) or {}).get(name) or [])
        if not refs:
            return
        nodes = _node_index_of_event(event, name, status)
        client = kube.get("client")
        if client is None:
            client = kube["client"] = KubeClient(login=registry_login(registry), field_manager=OPERATOR,
                                                 max_connections=1)
        for ref in refs:
            try:
                obj = await client.get(DISK_LAYOUT, ref.name)
                if obj is None or (obj.get("metadata") or {}).get("deletionTimestamp"):
                    continue
                meta, st = obj.get("metadata") or {}, obj.get("status") or {}
                found = node_condition(st, None, _node_of(obj.get("spec") or {}), nodes, meta.get("generation"))
                if found is None:
                    continue
                conditions, state = found
                await client.patch(DISK_LAYOUT, ref.name, {"metadata": {"resourceVersion": meta.get("resourceVersion")},
                                                           "status": {"conditions": conditions}}, subresource="status")
                record_status_write(KIND)
                _announce_node_ready(events, obj, state)
            except ApiError as exc:  # changed meanwhile (its own event re-evaluates it) or unreachable
                logger_.info(f"DiskLayout {ref.name}: NodeReady not written ({exc})")

    def _refused_duplicate(status: Mapping[str, Any], **_: Any) -> bool:
        return _is_duplicate(status)

    @kopf.timer(GROUP, VERSION, PLURAL, registry=registry, id="duplicate-recheck", interval=recheck_seconds,
                when=_refused_duplicate)
    async def duplicate_recheck(name: str, body: kopf.Body, spec: Mapping[str, Any], status: Mapping[str, Any],
                                meta: Mapping[str, Any], patch: kopf.Patch, logger: Any, **kwargs: Any) -> None:
        index = kwargs.get(INDEX)
        if _needs_duplicate_recheck(name, spec, status, index):
            await reconcile(name, body, spec, status, meta, patch, logger, index, "older DiskLayout changed")


def _announce(events: EventRecorder, body: kopf.Body, old_phase: Phase | None, old_reason: str | None, old_gen: int | None,
              new_gen: int | None, verdict: PreflightVerdict, logger: Any) -> None:
    """One Kubernetes Event per transition (never per no-op reconcile)."""
    moved = old_phase != verdict.phase or (old_reason or None) != (verdict.refusal_reason or None)
    if verdict.kind is VerdictKind.VALID:
        if new_gen != old_gen:
            events.record(body, "Normal", "Validated", f"layout generation {new_gen} pre-flighted: {verdict.message}")
        return
    if not moved:
        return
    if verdict.refusal_reason is not None:
        record_refusal(verdict.refusal_reason)
    reason = {VerdictKind.DUPLICATE: "DuplicateNodeLayout", VerdictKind.NO_TARGET_DEVICES: "NoTargetDevices",
              VerdictKind.MALFORMED: "Malformed", VerdictKind.INVALID_SPEC: "InvalidSpec"}.get(verdict.kind, "Refused")
    events.record(body, "Warning", reason, verdict.message if verdict.refusal_reason is None else
                  event_message(str(verdict.refusal_reason), verdict.message, MAX_MESSAGE))
    logger.warning(f"{verdict.phase}: {verdict.message}")
