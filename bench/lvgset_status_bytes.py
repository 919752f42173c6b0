"""Size of one LVMVolumeGroupSet status write at N nodes (the bounded status: attention list and counts, not a per-child list).

Builds the status with the real planner for a few fleet states and prints the JSON bytes of the
status object the operator patches, next to what the earlier unbounded format (one
``createdLVMVolumeGroups`` entry per child) took for the same fleet. Pure: no API server.
Writes bench/results/lvgset_status_bytes.json.

    python3 bench/lvgset_status_bytes.py [--nodes 1000]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "operator")]

from disklet_operator.logic.lvgset_plan import (  # noqa: E402
    REVISION_LABEL,
    SET_LABEL,
    Child,
    Outcome,
    SetRef,
    owner_reference,
    plan,
    template_revision,
)
from disklet_operator.logic.lvgset_status import build_status  # noqa: E402

from disklet.api.lvm import LVMVolumeGroupSetSpec  # noqa: E402
from disklet.lvm.names import child_name  # noqa: E402

RESULTS = ROOT / "bench" / "results" / "lvgset_status_bytes.json"
REF = SetRef("fleet-data", "0d9f5c8e-1111-2222-3333-444455556666", 2)


def _spec(size: str) -> LVMVolumeGroupSetSpec:
    return LVMVolumeGroupSetSpec.model_validate({
        "nodeSelector": {"matchLabels": {"pool": "storage"}}, "rollout": {"maxUnavailable": "10%"},
        "lvmVolumeGroupTemplate": {"actualVGNameOnTheNode": "vg-data", "thinPools": [{"name": "tp", "size": "90%"}],
                                   "fileDevices": [{"name": "a", "directory": "/var/lib/disklet/file-devices",
                                                    "size": size}]}})


def _child(node: str, spec: LVMVolumeGroupSetSpec, ready: bool) -> Child:
    cond = [{"type": t, "status": "True" if ready else "False", "reason": "Applied" if ready else "Creating",
             "message": "", "lastTransitionTime": "2026-11-25T00:00:00Z"} for t in ("VGConfigurationApplied", "Ready")]
    return Child.from_body({
        "metadata": {"name": child_name(REF.name, node), "generation": 1,
                     "labels": {SET_LABEL: REF.name, "disklet.io/node": node, REVISION_LABEL: template_revision(spec)},
                     "ownerReferences": [owner_reference(REF.name, REF.uid)]},
        "spec": spec.lvm_volume_group_template.child_spec(node).to_wire(),
        "status": {"observedGeneration": 1, "conditions": cond}})


def _bytes(obj: Any) -> int:
    return len(json.dumps(obj, separators=(",", ":")).encode())


def measure(n: int) -> dict[str, Any]:
    nodes = [(f"worker-{i:05d}.example.internal", {"pool": "storage"}) for i in range(n)]
    old, new = _spec("10Gi"), _spec("20Gi")
    cases = {
        "fan_out_none_ready": (new, [], True),
        "steady_all_ready": (old, [_child(nd, old, True) for nd, _ in nodes], False),
        "rolling_10pct_not_ready": (new, [_child(nd, new if i < n // 2 else old, i % 10 != 0)
                                          for i, (nd, _) in enumerate(nodes)], False),
    }
    out: dict[str, Any] = {"nodes": n}
    for label, (spec, kids, creates) in cases.items():
        result = plan(REF, spec, nodes, kids)
        outcome = Outcome(created={w.name for w in result.creates}) if creates else Outcome()
        status = build_status(result, outcome, None, now="2026-11-25T00:00:00Z").to_wire()
        legacy = {k: v for k, v in status.items() if k not in ("attention", "revisions")}
        legacy["createdLVMVolumeGroups"] = [{"lvmVolumeGroupName": child_name(REF.name, nd), "nodeName": nd}
                                            for nd, _ in nodes]
        out[label] = {"status_bytes": _bytes(status), "attention_entries": len(status.get("attention") or []),
                      "revisions_bytes": _bytes(status.get("revisions")),
                      "unbounded_format_bytes": _bytes(legacy)}
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--nodes", type=int, default=1000)
    ap.add_argument("--output", type=Path, default=RESULTS)
    args = ap.parse_args(argv)
    result = {"by_nodes": [measure(n) for n in sorted({10, 100, args.nodes})],
              "note": "status object as patched (compact JSON); unbounded_format_bytes: the same status with one "
                      "createdLVMVolumeGroups entry per child, as before the bounded status"}
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
