"""Idle churn: API requests and status writes an agent makes during N idle discovery cycles.

Two Ready file-backed LVMVolumeGroups (real LVM engine, real loop devices: root) on one node, the
agent in-process against the API mock with a short scan interval; once Ready, count every request
the agent sends during N scan intervals. Goal: 0 status writes (the only writes expected while
idle are the agent's Lease renewals, counted separately). Side by side: requests per idle cycle
versus the requests of the first (busy) cycles that created the VGs.
Run: python3 bench/idle_churn.py [--cycles N] [--interval S]   writes bench/results/idle_churn.json
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import logging
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "agent"), str(ROOT / "operator")]

import aiohttp  # noqa: E402
from disklet_agent.config import AgentConfig  # noqa: E402
from disklet_agent.daemon import build_registry, configure_settings  # noqa: E402
from disklet_agent.deps import AgentDeps  # noqa: E402

from devkit.kopfrun import kopf_running  # noqa: E402
from devkit.kubeapi import served  # noqa: E402
from e2e import harness as h  # noqa: E402

RESULTS = ROOT / "bench" / "results" / "idle_churn.json"
LVG_KEY = "disklet.io/v1alpha1/lvmvolumegroups"
NODE = "bench-idle"


def classify(req: Any) -> str:
    method = str(getattr(req, "method", "")).upper().split(".")[-1]
    path = str(getattr(req, "url", ""))
    if "/leases" in path:
        return f"{method} lease"
    if path.endswith("/status"):
        return f"{method} status"
    if "/events" in path:
        return f"{method} event"
    return f"{method} {'watch' if 'watch=' in path else 'other'}"


async def measure(cycles: int, interval: float, work: Path) -> dict[str, Any]:
    files = work / "file-devices"
    files.mkdir()
    config = AgentConfig(node_name=NODE, file_devices_dir=str(files), scan_interval_seconds=interval,
                         lvm_extra_config="global{activation=0}" if h.needs_no_activation() else "")
    deps = AgentDeps.from_config(config)
    async with served(work, export_kubeconfig=True) as api:
        os.environ.pop("KUBERNETES_SERVICE_HOST", None)
        os.environ.setdefault("DISKLET_NAMESPACE", "disklet-bench")
        names = [f"idle-{i}" for i in range(2)]
        for i, name in enumerate(names):
            api.seed(LVG_KEY, {"apiVersion": "disklet.io/v1alpha1", "kind": "LVMVolumeGroup",
                               "metadata": {"name": name, "labels": {"disklet.io/node": NODE}},
                               "spec": {"type": "Local", "local": {"nodeName": NODE},
                                        "actualVGNameOnTheNode": f"benchidle{os.getpid()}x{i}",
                                        "fileDevices": [{"name": "a", "directory": str(files), "size": "1Gi"}]}})
        registry = build_registry(deps)
        t0 = time.perf_counter()
        async with kopf_running(registry, server=api.server_url, configure=lambda s: configure_settings(s, config)):
            logging.getLogger("kopf").setLevel(logging.ERROR)
            while not all(((api.read(LVG_KEY, n) or {}).get("status") or {}).get("phase") == "Ready" for n in names):
                if time.perf_counter() - t0 > 120:
                    raise RuntimeError("LVGs not Ready after 120s")
                await asyncio.sleep(0.05)
            await asyncio.sleep(interval * 2)  # let the first discovery cycles settle
            busy = collections.Counter(classify(r) for r in api.request_log)
            busy_seconds = time.perf_counter() - t0
            start_log, start_calls = len(api.request_log), dict(deps.runner.calls)
            await asyncio.sleep(cycles * interval)
            idle = collections.Counter(classify(r) for r in api.request_log[start_log:])
            host_calls = {k: v - start_calls.get(k, 0) for k, v in deps.runner.calls.items()
                          if v - start_calls.get(k, 0)}
            async with aiohttp.ClientSession() as http:
                for name in names:
                    async with http.delete(f"{api.server_url}/apis/disklet.io/v1alpha1/lvmvolumegroups/{name}") as r:
                        await r.read()
            deadline = time.perf_counter() + 60
            while any(api.read(LVG_KEY, n) for n in names) and time.perf_counter() < deadline:
                await asyncio.sleep(0.1)
    status_writes = sum(v for k, v in idle.items() if k.endswith(" status") and not k.startswith("GET"))
    other_writes = sum(v for k, v in idle.items() if not k.startswith("GET") and not k.endswith((" status", " lease")))
    return {"idle": dict(idle), "busy": dict(busy), "busy_seconds": round(busy_seconds, 2),
            "status_writes": status_writes, "other_writes": other_writes, "host_commands_idle": host_calls}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cycles", type=int, default=10, help="idle discovery cycles to observe")
    ap.add_argument("--interval", type=float, default=1.0, help="scan interval, seconds")
    args = ap.parse_args(argv)
    if os.geteuid() != 0:
        print("idle_churn: needs root (loop devices, LVM); skipped")
        return 0
    work = Path(tempfile.mkdtemp(prefix="disklet-bench-idle-"))
    try:
        r = asyncio.run(measure(args.cycles, args.interval, work))
    finally:
        for dev, _ in h.loops_under(work):
            h.sh(["losetup", "-d", dev], check=False)
        shutil.rmtree(work, ignore_errors=True)
    idle_total = sum(r["idle"].values())
    busy_total = sum(r["busy"].values())
    per_cycle = idle_total / args.cycles
    result = {"name": "idle_churn", "python": platform.python_version(), "cycles": args.cycles,
              "interval_s": args.interval, "lvgs": 2, **r, "idle_requests": idle_total,
              "idle_requests_per_cycle": round(per_cycle, 2), "busy_requests": busy_total,
              "ratio_idle_cycle_to_busy": round(per_cycle / busy_total, 3) if busy_total else None,
              "goal_status_writes": 0, "meets_goal": r["status_writes"] == 0}
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    print(f"idle_churn: {r['status_writes']} status writes, {r['other_writes']} other object writes, "
          f"{idle_total} requests in {args.cycles} idle cycles ({per_cycle:.1f}/cycle vs {busy_total} while creating; "
          f"ratio {result['ratio_idle_cycle_to_busy']}); by kind: {r['idle']} (goal: 0 status writes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
