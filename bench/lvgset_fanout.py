"""Fan an LVMVolumeGroupSet out to N fake nodes with the real Kopf handlers against the API mock.

Prints, for the first pass, an idle resync pass (same code path as the resync timer) and the pass
after an operator restart (resume, nothing changed): wall time and API requests (total and per node).
Writes bench/results/lvgset_fanout.json.

    python3 bench/lvgset_fanout.py [--nodes 1000]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import aiohttp

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "operator"), str(ROOT / "tests" / "api")]

from lvgset_fixtures import LVG, LVGSET, NODES, SET_URL, file_device, lvgset, lvgset_operator, node  # noqa: E402

from devkit.kopfrun import wait_for  # noqa: E402
from devkit.kubeapi import KubeAPI, served  # noqa: E402

RESULTS = ROOT / "bench" / "results" / "lvgset_fanout.json"


def _requests(api: KubeAPI, start: int) -> dict[str, Any]:
    """Requests served since ``start``, watch streams and discovery excluded, by method and path kind."""
    kinds: Counter[str] = Counter()
    for r in api.request_log[start:]:
        url = str(r.url)
        if "watch=true" in url:
            continue
        method = str(getattr(r.method, "value", r.method)).upper()
        what = ("status" if url.endswith("/status") else "events" if "/events" in url
                else "lvmvolumegroupsets" if "/lvmvolumegroupsets" in url else "lvmvolumegroups" if "/lvmvolumegroups" in url
                else "nodes" if "/nodes" in url else "discovery")
        if what == "discovery":
            continue
        kinds[f"{method} {what}"] += 1
    return {"total": sum(kinds.values()), "by_kind": dict(sorted(kinds.items()))}


def _created(api: KubeAPI, n: int) -> bool:
    st = (api.read(LVGSET, "fan") or {}).get("status") or {}
    return st.get("phase") == "Created" and st.get("currentLVMVolumeGroupsCount") == n


async def run(n: int) -> dict[str, Any]:
    out: dict[str, Any] = {"nodes": n}
    async with served() as api:
        url = api.server_url
        for i in range(n):
            api.seed(NODES, node(f"node-{i:05d}", pool="storage"))
        async with lvgset_operator(url, resync_seconds=3600) as ctl:
            body = lvgset("fan", selector={"matchLabels": {"pool": "storage"}},
                          file_devices=[file_device("a", "10Gi")], thin_pools=[{"name": "tp", "size": "90%"}])
            await asyncio.sleep(1.0)  # Kopf's initial lists are done: count only what the set causes
            start = len(api.request_log)
            t0 = time.perf_counter()
            async with aiohttp.ClientSession(url) as s:
                r = await s.post(SET_URL, json=body)
                assert r.status in (200, 201), await r.text()
            await wait_for(lambda: _created(api, n), timeout=600, interval=0.02, message="all children created")
            first = time.perf_counter() - t0
            req = _requests(api, start)
            req["by_kind"].pop("POST lvmvolumegroupsets", None)  # the benchmark's own request
            req["total"] = sum(req["by_kind"].values())
            assert len([o for o in api.read_all(LVG)]) == n
            await asyncio.sleep(1.0)  # let trailing child events settle (coalesced no-op passes)
            state = ctl.sets["fan"]
            out["first_pass"] = {"seconds": round(first, 3), "requests": req,
                                 "requests_per_node": round(req["total"] / n, 4),
                                 "reconciler_passes": len(state.passes),
                                 "max_pass_wall_seconds": round(max(p.duration for p in state.passes), 3)}

            passes = len(state.passes)
            start = len(api.request_log)
            t0 = time.perf_counter()
            ctl.wake("fan")  # what the resync timer does
            await wait_for(lambda: len(state.passes) > passes, timeout=60, interval=0.005, message="idle pass")
            idle = time.perf_counter() - t0
            req = _requests(api, start)
            p = state.passes[-1]
            out["idle_resync_pass"] = {"seconds": round(idle, 3), "pass_seconds": round(p.duration, 4),
                                       "requests": req, "reconciler_requests": p.requests,
                                       "requests_per_node": round(req["total"] / n, 4)}

        start = len(api.request_log)
        t0 = time.perf_counter()
        async with lvgset_operator(url, resync_seconds=3600) as ctl:
            await wait_for(lambda: "fan" in ctl.sets and ctl.sets["fan"].passes, timeout=120, interval=0.005,
                           message="resume pass")
            resume = time.perf_counter() - t0
            p = ctl.sets["fan"].passes[0]
            req = _requests(api, start)
            out["resume_pass"] = {"seconds_from_operator_start": round(resume, 3), "pass_seconds": round(p.duration, 4),
                                  "requests_incl_initial_lists": req, "reconciler_requests": p.requests,
                                  "requests_per_node": round(req["total"] / n, 4)}
    return out


def planner_cost(n: int) -> dict[str, float]:
    """The controller's own CPU for the first pass (plan + validation + status), without HTTP or the mock."""
    from disklet_operator.logic.lvgset_plan import Outcome, SetRef, plan
    from disklet_operator.logic.lvgset_status import build_status

    from disklet.api.lvm import LVMVolumeGroupSetSpec

    body = lvgset("fan", selector={"matchLabels": {"pool": "storage"}}, file_devices=[file_device("a", "10Gi")])
    spec = LVMVolumeGroupSetSpec.model_validate(body["spec"])
    nodes = [(f"node-{i:05d}", {"pool": "storage"}) for i in range(n)]
    t0 = time.perf_counter()
    result = plan(SetRef("fan", "uid", 1), spec, nodes, [])
    status = build_status(result, Outcome(created={w.name for w in result.creates}), None)
    return {"plan_and_status_seconds": round(time.perf_counter() - t0, 4), "creates": len(result.creates),
            "status_attention_entries": len(status.attention or []),
            "status_bytes": len(json.dumps(status.to_wire(), separators=(",", ":")))}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--nodes", type=int, default=1000)
    ap.add_argument("--output", type=Path, default=RESULTS)
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    result = asyncio.run(run(args.nodes))
    result["planner_only_first_pass"] = planner_cost(args.nodes)
    result["note"] = ("wall times include the in-process kmock API mock, which dominates (its request matching is "
                      "O(requests) per request); the request counts and the controller's pass/planner CPU are the "
                      "figures that carry over to a real API server")
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
