"""Idle API traffic of N agents against the REAL kube-apiserver (envtest): requests per second.

N simulated agents in one process, each the agent's real Kopf registry (``build_registry`` +
``configure_settings``: node-filtered watches, the BlockDevice scan, LVM discovery, LVG timers,
the Lease) with a stand-in LVM engine and one fake disk, so each node has one LVMVolumeGroup and
one BlockDevice. Watches use Kopf's production setting (no client-side watch timeout). Requests
are counted by the API server itself: ``apiserver_request_total`` from its ``/metrics``, by verb
and resource, before and after an idle window of several scan intervals; Lease requests are
reported apart. Also: requests per agent from start until everything is Ready (O(1) per agent).
Goal: 0 requests per second at idle besides Leases. Kopf's keep-alive re-watches (a watch without
an event or bookmark for 70 s is reopened from its resourceVersion) are reported apart.

Run: python3 bench/idle_requests.py [--agents 1 100 1000] [--interval S] [--window S]
Writes bench/results/idle_requests.json. Needs the envtest binaries (docs/testing.md).
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import logging
import os
import platform
import re
import resource
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "agent"), str(ROOT / "operator"), str(ROOT / "tests" / "api")]

import kopf  # noqa: E402
from agent_fixtures import FakeDisks, FakeEngine, disk, lvg  # noqa: E402  (test doubles, not shipped)
from disklet_agent.config import AgentConfig  # noqa: E402
from disklet_agent.daemon import build_registry, configure_settings  # noqa: E402
from disklet_agent.deps import AgentDeps  # noqa: E402

from devkit.envtest import ControlPlane, assets_dir, unavailable_reason  # noqa: E402
from disklet.kube.login import add_kopf_login  # noqa: E402

RESULTS = ROOT / "bench" / "results" / "idle_requests.json"
METRIC = re.compile(r'^apiserver_request_total\{(?P<labels>[^}]*)\} (?P<value>\S+)$')
NAMESPACE = "disklet-bench"


def scrape(cp: ControlPlane) -> collections.Counter[tuple[str, str]]:
    code, body = cp._http("GET", "/metrics")  # noqa: SLF001 - the fixture's admin HTTP helper
    assert code == 200, code
    out: collections.Counter[tuple[str, str]] = collections.Counter()
    for line in body.decode().splitlines():
        m = METRIC.match(line)
        if not m:
            continue
        labels = dict(re.findall(r'(\w+)="([^"]*)"', m.group("labels")))
        out[labels.get("verb", ""), labels.get("resource", "")] += int(float(m.group("value")))
    return out


def diff(after: collections.Counter[tuple[str, str]], before: collections.Counter[tuple[str, str]],
         polls: int = 0) -> dict[str, int]:
    """Requests per "VERB resource" between two scrapes, without the bench's own: non-resource
    requests (its /metrics scrapes) and ``polls`` LISTs of LVMVolumeGroups and BlockDevices."""
    out = {}
    for (verb, res), value in after.items():
        n = value - before[verb, res]
        if res in ("lvmvolumegroups", "blockdevices") and verb == "LIST":
            n -= polls
        if res and n > 0:
            out[f"{verb} {res}"] = n
    return out


async def run_agents(cp: ControlPlane, n: int, interval: float, window: float) -> dict[str, Any]:
    os.environ["KUBECONFIG"] = str(cp.kubeconfig)
    os.environ["DISKLET_NAMESPACE"] = NAMESPACE
    os.environ.pop("KUBERNETES_SERVICE_HOST", None)
    cp.apply(ROOT / "crds")
    cp.kubectl("wait", "--for", "condition=established", "--timeout", "60s", "crd", "--all")
    cp.namespace(NAMESPACE)
    tag = f"{os.getpid()}-{n}"
    nodes = [f"idle-{tag}-{i}" for i in range(n)]
    cp.apply([lvg(f"lvg-{node}", node) for node in nodes])
    stops: list[asyncio.Event] = []
    runners: list[asyncio.Task[Any]] = []
    engines: list[FakeEngine] = []
    before_start = scrape(cp)
    t0 = time.perf_counter()
    existing = asyncio.all_tasks()
    for node in nodes:
        config = AgentConfig(node_name=node, scan_interval_seconds=interval, refused_retry_seconds=interval)
        engine = FakeEngine(node)
        engines.append(engine)
        disks = FakeDisks([disk("/dev/vdb", serial=f"S-{node}")])
        registry = build_registry(AgentDeps(config=config), engine=engine, topology_reader=disks.read,
                                  pv_reader=lambda: {})
        add_kopf_login(registry)
        settings = kopf.OperatorSettings()
        configure_settings(settings, config)
        stop = asyncio.Event()
        tasks = await kopf.spawn_tasks(registry=registry, settings=settings, standalone=True, clusterwide=True,
                                       stop_flag=stop)
        stops.append(stop)
        runners.append(asyncio.create_task(kopf.run_tasks(tasks, ignored=existing)))

    polls = 0

    def converged() -> bool:
        nonlocal polls
        polls += 1
        items = json.loads(cp.kubectl("get", "lvmvolumegroups", "-o", "json").stdout)["items"]
        ready = sum(1 for o in items if o["metadata"]["name"] in {f"lvg-{x}" for x in nodes}
                    and (o.get("status") or {}).get("phase") == "Ready")
        bds = json.loads(cp.kubectl("get", "blockdevices", "-o", "json").stdout)["items"]
        mine = sum(1 for o in bds if (o["metadata"].get("labels") or {}).get("disklet.io/node") in set(nodes))
        return ready == n and mine >= n

    try:
        deadline = time.perf_counter() + 600
        while not await asyncio.to_thread(converged):
            if time.perf_counter() > deadline:
                raise RuntimeError(f"{n} agents did not converge in 600s")
            await asyncio.sleep(1)
        startup_s = time.perf_counter() - t0
        # settle: two more discovery cycles for every agent
        marks = [sum(1 for c in e.calls if c[0] == "discover") for e in engines]
        while any(sum(1 for c in e.calls if c[0] == "discover") < m + 2 for e, m in zip(engines, marks, strict=True)):
            await asyncio.sleep(0.5)
        # settle: until the API server sees no request besides Leases for one interval (watches that
        # were refused with 429 during the start are retried by Kopf: that is start-up traffic)
        settle_from = time.perf_counter()
        previous = scrape(cp)
        while time.perf_counter() - settle_from < 300:
            await asyncio.sleep(max(interval, 5.0))
            now = scrape(cp)
            quiet = not any(not k.endswith(" leases") for k in diff(now, previous))
            previous = now
            if quiet:
                break
        settle_s = time.perf_counter() - settle_from
        after_start = previous
        marks = [sum(1 for c in e.calls if c[0] == "discover") for e in engines]
        w0 = time.perf_counter()
        await asyncio.sleep(window)
        idle_after = scrape(cp)
        measured = time.perf_counter() - w0
        cycles = min(sum(1 for c in e.calls if c[0] == "discover") - m for e, m in zip(engines, marks, strict=True))
    finally:
        for stop in stops:
            stop.set()
        # stopping many operators takes a while on a loaded box; a slow stop does not void the figures
        done, pending = await asyncio.wait(runners, timeout=300)
        for task in pending:
            task.cancel()
    start = diff(after_start, before_start, polls)
    # (the settle loop's scrapes are non-resource requests: not counted)
    idle = diff(idle_after, after_start)
    # Leases: the agents' renewals (PATCH) and the API server's own identity lease (PUT, every 10 s)
    lease_idle = sum(v for k, v in idle.items() if k.endswith(" leases"))
    # WATCH: Kopf's keep-alive re-watch (a stream without an event or bookmark for 70 s is reopened
    # from its resourceVersion: no LIST, no object read), counted apart from reads of state
    watch_idle = sum(v for k, v in idle.items() if k.startswith("WATCH "))
    other_idle = {k: v for k, v in idle.items() if not k.endswith(" leases") and not k.startswith("WATCH ")}
    return {"agents": n, "startup_s": round(startup_s, 1), "settle_s": round(settle_s, 1), "startup_requests": sum(start.values()),
            "startup_requests_per_agent": round(sum(start.values()) / n, 2), "startup_by_kind": start,
            "idle_window_s": round(measured, 1), "idle_cycles_min": cycles,
            "idle_requests_besides_leases": sum(other_idle.values()),
            "idle_rps_besides_leases": round(sum(other_idle.values()) / measured, 3),
            "idle_lease_rps": round(lease_idle / measured, 3),
            "idle_rewatch_rps": round(watch_idle / measured, 3), "idle_by_kind": idle}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--agents", type=int, nargs="*", default=[1, 100, 1000])
    ap.add_argument("--interval", type=float, default=5.0, help="agent scan interval, seconds")
    ap.add_argument("--window", type=float, default=30.0, help="idle window, seconds")
    args = ap.parse_args(argv)
    reason = unavailable_reason()
    if reason:
        print(f"idle_requests: skipped: {reason}")
        return 0
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    logging.basicConfig(level=logging.ERROR)
    logging.getLogger("kopf").setLevel(logging.CRITICAL)
    rows = []
    for n in args.agents:
        cp = ControlPlane(assets=assets_dir(), controller_manager=False).start()
        try:
            row = asyncio.run(run_agents(cp, n, args.interval, args.window))
        except Exception as exc:  # a scale that does not fit this machine is reported, not hidden
            row = {"agents": n, "error": repr(exc)[:500]}
        finally:
            cp.stop()
        print(json.dumps(row), flush=True)
        rows.append(row)
    ok = [r for r in rows if "error" not in r]
    result = {"name": "idle_requests", "python": platform.python_version(), "interval_s": args.interval,
              "window_s": args.window, "rows": rows,
              "meets_goal": bool(ok) and all(r["idle_requests_besides_leases"] == 0 for r in ok)}
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {RESULTS}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
