"""Idle API traffic of N agents against the REAL kube-apiserver (envtest): requests per second.

N simulated agents, each the agent's real Kopf registry (``build_registry`` + ``configure_settings``:
node-filtered watches with the agent's watch settings, the BlockDevice scan, LVM discovery, LVG
timers, the Lease) with a stand-in LVM engine and one fake disk, so each node has one
LVMVolumeGroup and one BlockDevice. The agents run in worker processes of at most
``--per-process`` agents each (one event loop per process, as one loop cannot carry a thousand
registries on a small machine); workers start one after another and each starts its agents a
little apart. Requests are counted by the API server itself: ``apiserver_request_total`` from its
``/metrics``, by verb and resource, before and after an idle window; Lease requests and watch
re-opens are reported apart, the bench's own requests (scrapes, readiness LISTs) subtracted.
LISTs of the agents' two resources are also split by where the server answered them: from etcd
(a consistent read: every object of the type) or from its watch cache.
Also: requests per agent from start until everything is Ready (O(1) per agent) and the workers'
memory per agent. The figures are taken before anything is stopped; the workers are then stopped
(SIGTERM, then SIGKILL after ``--stop-grace``), so a slow stop cannot void them.

``--kopf-watch-defaults`` runs the agents with Kopf's default watch settings instead of the
agent's (CRD scanning on, no server-side timeout, 70 s inactivity timeout): the "before" figures.

Run: python3 bench/idle_requests.py [--agents 1 100 1000] [--per-process 125] [--interval S]
     [--window S] [--resync-interval S] [--kopf-watch-defaults]
Writes bench/results/idle_requests.json (``--out`` to write elsewhere). Needs the envtest binaries
(docs/testing.md).
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import json
import logging
import math
import os
import platform
import re
import resource
import signal
import ssl
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "agent"), str(ROOT / "operator"), str(ROOT / "tests" / "api")]

from devkit.envtest import ControlPlane, assets_dir, etcd_binary, unavailable_reason  # noqa: E402

RESULTS = ROOT / "bench" / "results" / "idle_requests.json"
METRIC = re.compile(r'^apiserver_request_total\{(?P<labels>[^}]*)\} (?P<value>\S+)$')
NAMESPACE = "disklet-bench"
Counts = collections.Counter[tuple[str, str, str]]


# ------------------------------------------------------------------------------------------ worker
def rss_kib() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


class SimAgent:
    """One simulated agent: its own thread and event loop, as one agent is one process (Kopf's
    shutdown of one operator cancels every task of its loop and may SIGKILL its thread). If the
    agent's Kopf exits by itself (an error it cannot ride out, e.g. on an overloaded API server),
    it is started again a second later, as the kubelet would, and counted in ``restarts``."""

    def __init__(self, node: str, args: argparse.Namespace) -> None:
        from agent_fixtures import FakeDisks, FakeEngine, disk  # (test doubles, not shipped)

        self.node, self.args = node, args
        self.engine = FakeEngine(node)
        self.disks = FakeDisks([disk("/dev/vdb", serial=f"S-{node}")])
        self.restarts = 0
        self.stopping = False
        self.loop: asyncio.AbstractEventLoop | None = None
        self.stop_flag: asyncio.Event | None = None
        self.thread = threading.Thread(target=lambda: asyncio.run(self.main()), name=node, daemon=True)

    def discovers(self) -> int:
        return sum(1 for c in list(self.engine.calls) if c[0] == "discover")

    async def main(self) -> None:
        import disklet_agent.daemon as agent_daemon
        import kopf
        from disklet_agent.config import AgentConfig
        from disklet_agent.deps import AgentDeps

        from disklet.kube.login import add_kopf_login

        self.loop, self.stop_flag = asyncio.get_running_loop(), asyncio.Event()
        interval = self.args.interval
        config = AgentConfig(node_name=self.node, scan_interval_seconds=interval, refused_retry_seconds=interval,
                             resync_interval_seconds=self.args.resync_interval)
        while not self.stopping:
            registry = agent_daemon.build_registry(AgentDeps(config=config), engine=self.engine,
                                                   topology_reader=self.disks.read, pv_reader=lambda: {},
                                                   lease_interval=self.args.lease_interval)
            add_kopf_login(registry)
            settings = kopf.OperatorSettings()
            agent_daemon.configure_settings(settings, config)
            if self.args.kopf_watch_defaults:
                defaults = kopf.OperatorSettings()
                settings.scanning.disabled = defaults.scanning.disabled
                settings.watching.server_timeout = defaults.watching.server_timeout
                settings.watching.inactivity_timeout = defaults.watching.inactivity_timeout
            settings.process.ultimate_exiting_timeout = None  # never SIGKILL the worker process
            with contextlib.suppress(Exception):
                await kopf.operator(registry=registry, settings=settings, standalone=True, clusterwide=True,
                                    stop_flag=self.stop_flag)
            if self.stopping:
                break
            self.restarts += 1
            await asyncio.sleep(1.0)

    def stop(self) -> None:
        self.stopping = True
        if self.loop is not None and self.stop_flag is not None:
            with contextlib.suppress(RuntimeError):  # the loop has ended already
                self.loop.call_soon_threadsafe(self.stop_flag.set)


def run_worker(args: argparse.Namespace) -> None:
    """``count`` agents (nodes ``prefix-first`` …) until SIGTERM; state in ``args.state`` (JSON)."""
    import disklet_agent.daemon  # noqa: F401 - first: it imports Kopf as the agent process does
    import kopf  # noqa: F401
    from agent_fixtures import FakeEngine  # noqa: F401

    import disklet.kube.login  # noqa: F401

    state = Path(args.state)
    base_rss = rss_kib()
    stop_all = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop_all.set())
    agents: list[SimAgent] = []

    def write_state() -> None:
        tmp = state.with_suffix(".tmp")
        tmp.write_text(json.dumps({"agents": len(agents), "base_rss_kib": base_rss, "rss_kib": rss_kib(),
                                   "discover_min": min((a.discovers() for a in agents), default=0),
                                   "restarts": sum(a.restarts for a in agents)}))
        tmp.replace(state)

    for i in range(args.first, args.first + args.count):
        if stop_all.is_set():
            break
        agent = SimAgent(f"{args.prefix}-{i}", args)
        agent.thread.start()
        agents.append(agent)
        time.sleep(args.stagger)
    while True:
        write_state()
        if stop_all.wait(2.0):
            break
    for agent in agents:
        agent.stop()
    deadline = time.monotonic() + args.stop_grace
    for agent in agents:
        agent.thread.join(timeout=max(0.0, deadline - time.monotonic()))


# ------------------------------------------------------------------------------------------ parent
def admin_get(cp: ControlPlane, path: str, attempts: int = 5) -> bytes:
    """GET as the admin, patient with a busy API server (60 s per try, 5 tries)."""
    ctx = ssl.create_default_context(cafile=str(cp.ca_file))
    req = urllib.request.Request(cp.server + path, headers={"Authorization": f"Bearer {cp.admin_token}"})
    for attempt in range(1, attempts + 1):
        try:
            with urllib.request.urlopen(req, context=ctx, timeout=60) as resp:  # noqa: S310 - our own loopback URL
                return bytes(resp.read())
        except (OSError, urllib.error.URLError):
            if attempt == attempts:
                raise
            time.sleep(2)
    raise AssertionError("unreachable")


def scrape(cp: ControlPlane) -> Counts:
    """``apiserver_request_total`` by (verb, resource, code); non-resource requests have resource "".

    Also, under the pseudo-verbs in :data:`LIST_SOURCES`, where the server answered the LISTs of
    the agents' two resources from (code ""): ``ETCD`` the LISTs it read from etcd
    (``apiserver_storage_list_total``: consistent reads, every object of the type), ``CACHE`` those
    from its watch cache (``apiserver_cache_list_total``: ``resourceVersion=0`` / ``NotOlderThan``),
    and ``ETCD-OBJECTS`` the objects the etcd LISTs fetched. :func:`diff` leaves them out."""
    body = admin_get(cp, "/metrics")
    out: Counts = collections.Counter()
    for line in body.decode().splitlines():
        m = METRIC.match(line)
        if m:
            labels = dict(re.findall(r'(\w+)="([^"]*)"', m.group("labels")))
            out[labels.get("verb", ""), labels.get("resource", ""), labels.get("code", "")] += int(float(m.group("value")))
            continue
        s = SOURCE_METRIC.match(line)
        if s:
            labels = dict(re.findall(r'(\w+)="([^"]*)"', s.group("labels")))
            res = re.search(r"lvmvolumegroups|blockdevices", labels.get("resource") or labels.get("resource_prefix") or "")
            if res:
                out[SOURCE_VERBS[s.group("metric")], res.group(0), ""] += int(float(s.group("value")))
    return out


SOURCE_METRIC = re.compile(r'^(?P<metric>apiserver_storage_list_total|apiserver_cache_list_total|'
                           r'apiserver_storage_list_fetched_objects_total)\{(?P<labels>[^}]*)\} (?P<value>\S+)$')
SOURCE_VERBS = {"apiserver_storage_list_total": "ETCD", "apiserver_cache_list_total": "CACHE",
                "apiserver_storage_list_fetched_objects_total": "ETCD-OBJECTS"}
LIST_SOURCES = tuple(SOURCE_VERBS.values())


def list_sources(after: Counts, before: Counts) -> dict[str, int]:
    """LISTs of LVMVolumeGroups and BlockDevices by where the server answered them (see :func:`scrape`),
    the bench's own readiness LISTs included (``resourceVersion=0``: ``CACHE``)."""
    out = {f"{verb} {res}": value - before[verb, res, code] for (verb, res, code), value in after.items()
           if verb in LIST_SOURCES and value > before[verb, res, code]}
    return dict(sorted(out.items()))


class Own:
    """The bench's own requests, subtracted from the server's counts."""

    def __init__(self) -> None:
        self.scrapes = 0
        self.lists = 0

    def scrape(self, cp: ControlPlane) -> Counts:
        self.scrapes += 1
        return scrape(cp)

    def list_items(self, cp: ControlPlane, plural: str) -> list[dict[str, Any]]:
        self.lists += 1
        # resourceVersion=0: from the API server's watch cache, the cheapest full read it can serve
        path = f"/apis/disklet.io/v1alpha1/{plural}?resourceVersion=0"
        return list(json.loads(admin_get(cp, path)).get("items") or [])


def diff(after: Counts, before: Counts, own_lists: int = 0, own_scrapes: int = 0) -> tuple[dict[str, int], int]:
    """Requests per "VERB resource" between two scrapes without the bench's own, and how many of them
    the server answered 429. Non-resource requests (discovery, the bench's /metrics) count as
    "GET (non-resource)" minus the bench's scrapes."""
    out: collections.Counter[str] = collections.Counter()
    throttled = 0
    for (verb, res, code), value in after.items():
        n = value - before[verb, res, code]
        if n <= 0 or verb in LIST_SOURCES:
            continue
        out[f"{verb} {res or '(non-resource)'}"] += n
        if code == "429":
            throttled += n
    for plural in ("lvmvolumegroups", "blockdevices"):
        out[f"LIST {plural}"] -= own_lists
    out["GET (non-resource)"] -= own_scrapes
    return {k: v for k, v in sorted(out.items()) if v > 0}, throttled


SERVER_OWN = ("GET (non-resource)", "LIST services")
"""What a bare API server does by itself (measured with no client: ~0.2 non-resource GETs per
second, its health and discovery loops; a LIST of Services every few minutes, its Service IP
repair loop; its own informers' re-watches of Nodes, Services, admission policies...). The agents
never read Services; their Kopf reads discovery only at start."""
AGENT_WATCHES = tuple(f"WATCH {p}" for p in ("disklayouts", "lvmvolumegroups", "blockdevices",
                                              "customresourcedefinitions"))


def split(counts: dict[str, int]) -> dict[str, dict[str, int]]:
    """Leases (the agents' PATCH/POST, the API server's own PUT), watch (re)opens, the API server's
    own loops (:data:`SERVER_OWN`) and everything else: the agents' reads and writes of state."""
    out: dict[str, dict[str, int]] = {"leases": {}, "watch": {}, "server": {}, "other": {}}
    for k, v in counts.items():
        group = ("leases" if k.endswith(" leases") else "watch" if k in AGENT_WATCHES
                 else "server" if k in SERVER_OWN or k.startswith("WATCH ") else "other")
        out[group][k] = v
    return out


def idle_rates(groups: dict[str, dict[str, int]], seconds: float) -> dict[str, Any]:
    return {"idle_requests_besides_leases": sum(groups["other"].values()),
            "idle_rps_besides_leases": round(sum(groups["other"].values()) / seconds, 3),
            "idle_lease_rps": round(sum(groups["leases"].values()) / seconds, 3),
            "idle_rewatch_rps": round(sum(groups["watch"].values()) / seconds, 3),
            "idle_server_own_rps": round(sum(groups["server"].values()) / seconds, 3)}


def read_states(states: list[Path]) -> list[dict[str, Any]]:
    out = []
    for p in states:
        try:
            out.append(json.loads(p.read_text()))
        except (OSError, ValueError):
            out.append({})
    return out


def stop_workers(workers: list[subprocess.Popen[bytes]], grace: float) -> int:
    """SIGTERM every worker, then SIGKILL what is left after ``grace`` s; how many had to be killed."""
    for w in workers:
        if w.poll() is None:
            w.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + grace
    killed = 0
    for w in workers:
        try:
            w.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            w.kill()
            w.wait(timeout=30)
            killed += 1
    return killed


async def run_agents(cp: ControlPlane, n: int, args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    own = Own()
    env = dict(os.environ, KUBECONFIG=str(cp.kubeconfig), DISKLET_NAMESPACE=NAMESPACE)
    env.pop("KUBERNETES_SERVICE_HOST", None)
    cp.apply(ROOT / "crds")
    cp.kubectl("wait", "--for", "condition=established", "--timeout", "60s", "crd", "--all")
    cp.namespace(NAMESPACE)
    prefix = f"idle-{os.getpid()}-{n}"
    from agent_fixtures import lvg  # (test doubles, not shipped)
    nodes = {f"{prefix}-{i}" for i in range(n)}
    for chunk in range(0, n, 200):
        cp.apply([lvg(f"lvg-{prefix}-{i}", f"{prefix}-{i}") for i in range(chunk, min(n, chunk + 200))])
    processes = max(1, math.ceil(n / args.per_process))
    size = math.ceil(n / processes)
    before_start = own.scrape(cp)
    t0 = time.perf_counter()
    workers: list[subprocess.Popen[bytes]] = []
    states: list[Path] = []
    figures: dict[str, Any] = {}
    try:
        for w, first in enumerate(range(0, n, size)):
            state = workdir / f"worker-{n}-{w}.json"
            states.append(state)
            log = (workdir / f"worker-{n}-{w}.log").open("wb")
            argv = [sys.executable, __file__, "--worker", "--prefix", prefix, "--first", str(first),
                    "--count", str(min(size, n - first)), "--state", str(state), "--interval", str(args.interval),
                    "--stagger", str(args.stagger), "--stop-grace", str(args.stop_grace)]
            if args.kopf_watch_defaults:
                argv.append("--kopf-watch-defaults")
            if args.lease_interval is not None:
                argv += ["--lease-interval", str(args.lease_interval)]
            argv += ["--resync-interval", str(args.resync_interval)]
            workers.append(subprocess.Popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT,
                                            stdin=subprocess.DEVNULL, start_new_session=True))
            log.close()
            # the next worker starts once this one has started its agents (a staggered start)
            while read_states([state])[0].get("agents", 0) < min(size, n - first):
                if workers[-1].poll() is not None:
                    raise RuntimeError(f"worker {w} exited {workers[-1].returncode}")
                await asyncio.sleep(0.5)

        progress = {"ready": 0, "block_devices": 0}

        def converged() -> bool:
            ready = progress["ready"] = sum(1 for o in own.list_items(cp, "lvmvolumegroups")
                        if (o.get("status") or {}).get("phase") == "Ready"
                        and (o["metadata"].get("labels") or {}).get("disklet.io/node") in nodes)
            bds = progress["block_devices"] = sum(1 for o in own.list_items(cp, "blockdevices")
                      if (o["metadata"].get("labels") or {}).get("disklet.io/node") in nodes)
            return ready == n and bds >= n

        deadline = time.perf_counter() + args.startup_timeout
        while not await asyncio.to_thread(converged):
            if time.perf_counter() > deadline:
                now = own.scrape(cp)
                reads = {f"{verb} {res} {code}": v - before_start[verb, res, code]
                         for (verb, res, code), v in now.items()
                         if verb in ("LIST", "GET") and res and v > before_start[verb, res, code]}
                sts = read_states(states)
                raise RuntimeError(
                    f"{n} agents did not converge in {args.startup_timeout}s: {progress['ready']} LVGs Ready, "
                    f"{progress['block_devices']} BlockDevices; restarts "
                    f"{sum(x.get('restarts', 0) for x in sts)}; RSS per agent "
                    f"{sum(x.get('rss_kib', 0) - x.get('base_rss_kib', 0) for x in sts) / n:.0f} KiB; "
                    f"reads by code (the bench's own included) {reads}")
            await asyncio.sleep(max(5.0, n / 50))  # two full LISTs per poll: rarer with many nodes
        startup_s = time.perf_counter() - t0

        def discover_min() -> int:
            return min(s.get("discover_min", 0) for s in read_states(states))

        # settle: two more discovery cycles for every agent, then until the server sees nothing but
        # Leases, watch (re)opens and its own non-resource requests for one interval (requests
        # refused with 429 at start are retried)
        mark = discover_min()
        while discover_min() < mark + 2:
            await asyncio.sleep(1)
        settle_from = time.perf_counter()
        lists_at, scrapes_at = own.lists, own.scrapes
        previous = own.scrape(cp)
        while time.perf_counter() - settle_from < args.settle_timeout:
            await asyncio.sleep(max(args.interval, 5.0))
            now = own.scrape(cp)
            got, _ = diff(now, previous, own.lists - lists_at, own.scrapes - scrapes_at)
            lists_at, scrapes_at, previous = own.lists, own.scrapes, now
            if not split(got)["other"]:
                break
        settle_s = time.perf_counter() - settle_from
        after_start = previous
        start, throttled = diff(after_start, before_start, own.lists, own.scrapes - 1)
        mem = read_states(states)
        mark = discover_min()
        w0 = time.perf_counter()
        await asyncio.sleep(args.window)
        idle_after = own.scrape(cp)
        measured = time.perf_counter() - w0
        restarts = sum(s.get("restarts", 0) for s in read_states(states))
        cycles = discover_min() - mark
        idle, idle_throttled = diff(idle_after, after_start, 0, 1)
        figures = {"startup_sources": list_sources(after_start, before_start),
                   "idle_sources": list_sources(idle_after, after_start),
                   "startup": start, "throttled": throttled, "idle": idle, "measured": measured, "cycles": cycles,
                   "startup_s": startup_s, "settle_s": settle_s, "mem": mem, "restarts": restarts, "idle_throttled": idle_throttled}
    finally:
        killed = stop_workers(workers, args.stop_grace)
    idle = figures["idle"]
    groups = split(idle)
    start_besides = sum(split(figures["startup"])["other"].values())
    mem_kib = sum(s.get("rss_kib", 0) - s.get("base_rss_kib", 0) for s in figures["mem"])
    return {"agents": n, "processes": len(workers), "startup_s": round(figures["startup_s"], 1),
            "settle_s": round(figures["settle_s"], 1), "startup_requests": sum(start.values()),
            "startup_requests_per_agent": round(sum(start.values()) / n, 2),
            "startup_requests_per_agent_besides_leases_watches_server": round(start_besides / n, 2),
            "startup_429": figures["throttled"], "startup_by_kind": start,
            "startup_lists_by_source": figures["startup_sources"],
            "startup_etcd_lists_per_agent": round(sum(v for k, v in figures["startup_sources"].items()
                                                      if k.startswith("ETCD ")) / n, 2),
            "idle_lists_by_source": figures["idle_sources"],
            "rss_per_agent_kib": round(mem_kib / n, 1),
            "worker_base_rss_mib": round(sum(s.get("base_rss_kib", 0) for s in figures["mem"]) / 1024 / len(workers), 1),
            "idle_window_s": round(figures["measured"], 1), "idle_cycles_min": figures["cycles"],
            **idle_rates(groups, figures["measured"]), "idle_429": figures["idle_throttled"],
            "idle_by_kind": idle, "agent_restarts": figures["restarts"],
            "agent_restarts_before_idle": sum(s.get("restarts", 0) for s in figures["mem"]),
            "workers_killed_at_stop": killed}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--agents", type=int, nargs="*", default=[1, 100, 1000])
    ap.add_argument("--per-process", type=int, default=125, help="agents per worker process")
    ap.add_argument("--interval", type=float, default=30.0, help="agent scan interval, seconds (the default's)")
    ap.add_argument("--window", type=float, default=180.0, help="idle window, seconds")
    ap.add_argument("--stagger", type=float, default=0.05, help="pause between two agents' starts, seconds")
    ap.add_argument("--startup-timeout", type=float, default=1200.0)
    ap.add_argument("--settle-timeout", type=float, default=300.0)
    ap.add_argument("--stop-grace", type=float, default=20.0, help="seconds before a worker is killed")
    ap.add_argument("--lease-interval", type=float, default=None,
                    help="seconds between Lease renewals (default: the agent's, 10 s); a longer one lets a "
                         "small machine's API server carry a thousand agents' start-up (Leases are reported apart)")
    ap.add_argument("--resync-interval", type=float, default=600.0, metavar="S",
                    help="the agents' safety-net relist period (DISKLET_RESYNC_INTERVAL_SECONDS; 0: never)")
    ap.add_argument("--kopf-watch-defaults", action="store_true",
                    help="Kopf's default watch settings instead of the agent's (the 'before' figures)")
    ap.add_argument("--note", default="", help="a note stored with the figures (e.g. the machine's load)")
    ap.add_argument("--out", type=Path, default=RESULTS)
    # worker mode (started by the bench itself)
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--prefix", help=argparse.SUPPRESS)
    ap.add_argument("--first", type=int, default=0, help=argparse.SUPPRESS)
    ap.add_argument("--count", type=int, default=0, help=argparse.SUPPRESS)
    ap.add_argument("--state", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    logging.basicConfig(level=logging.ERROR)
    logging.getLogger("kopf").setLevel(logging.CRITICAL)
    if args.worker:
        run_worker(args)
        return 0
    reason = unavailable_reason()
    if reason:
        print(f"idle_requests: skipped: {reason}")
        return 0

    def terminated(signum: int, _frame: Any) -> None:  # SIGTERM: unwind, so workers and control plane stop
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, terminated)
    rows = []
    for n in args.agents:
        workdir = Path(tempfile.mkdtemp(prefix="disklet-idle-"))
        cp = ControlPlane(assets=assets_dir(), controller_manager=False).start()
        try:
            row = asyncio.run(run_agents(cp, n, args, workdir))
        except Exception as exc:  # a scale that does not fit this machine is reported, not hidden
            logs = [p.read_text(errors="replace")[-400:] for p in sorted(workdir.glob("*.log"))[:2]]
            row = {"agents": n, "error": repr(exc)[:1500], "worker_log_tails": logs}
        finally:
            cp.stop()
            for p in sorted(workdir.iterdir()):
                p.unlink()
            workdir.rmdir()
        row["load_avg_1m_at_end"] = round(os.getloadavg()[0], 2)
        print(json.dumps(row), flush=True)
        rows.append(row)
    ok = [r for r in rows if "error" not in r]
    assets = assets_dir()
    etcd = etcd_binary(assets) if assets else None
    etcd_version = (subprocess.run([etcd, "--version"], capture_output=True, text=True, timeout=30)
                    .stdout.splitlines() or ["?"])[0] if etcd else "?"
    result = {"name": "idle_requests", "python": platform.python_version(), "cpus": os.cpu_count(),
              "etcd": etcd_version,
              "interval_s": args.interval, "window_s": args.window, "per_process": args.per_process,
              "agent_watch_settings": "Kopf defaults" if args.kopf_watch_defaults else "the agent's",
              "lease_interval_s": args.lease_interval or 10.0,
              "resync_interval_s": args.resync_interval,
              "note": args.note, "rows": rows,
              "meets_goal": bool(ok) and all(r["idle_requests_besides_leases"] == 0 for r in ok)}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
