"""Apply-to-Ready: a file-backed LVMVolumeGroup (2 × 1Gi) from create to Ready through the agent,
divided by the same host work run bare from a shell script (fallocate, losetup, pvcreate,
vgcreate, pvs). Goal ≤ 1.3×. Both sides run interleaved in one process run, same machine, same
LVM --config; the agent runs in-process (Kopf + the real LVM engine) against the API mock.

Root only; everything is created under a temporary directory and removed afterwards.
Run: python3 bench/apply_to_ready.py [--rounds N] [--ab]    writes bench/results/apply_to_ready.json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import platform
import secrets
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "agent"), str(ROOT / "operator")]

from disklet_agent.config import AgentConfig  # noqa: E402
from disklet_agent.daemon import build_registry, configure_settings  # noqa: E402
from disklet_agent.deps import AgentDeps  # noqa: E402
from disklet_agent.lvm.engine import LVMEngine  # noqa: E402

from devkit.kopfrun import kopf_running  # noqa: E402
from devkit.kubeapi import served  # noqa: E402
from disklet.hostcmd import HostRunner  # noqa: E402
from e2e import harness as h  # noqa: E402

RESULTS = ROOT / "bench" / "results" / "apply_to_ready.json"
LVG_KEY = "disklet.io/v1alpha1/lvmvolumegroups"
NODE = "bench-node"
GOAL = 1.3

BARE = r"""set -euo pipefail
dir=$1 vg=$2 cfg=$3
fallocate -l 1GiB "$dir/a.img"
fallocate -l 1GiB "$dir/b.img"
l1=$(losetup --find --nooverlap --show "$dir/a.img")
l2=$(losetup --find --nooverlap --show "$dir/b.img")
lvm pvcreate --config "$cfg" -q "$l1" "$l2" >/dev/null
lvm vgcreate --config "$cfg" -q --addtag disklet.io/enabled=true "$vg" "$l1" "$l2" >/dev/null
lvm pvs --config "$cfg" --reportformat json -o pv_name,vg_name,pv_size,pv_uuid "$l1" "$l2" >/dev/null
echo "$l1 $l2"
"""


def lvm_config() -> str:
    return "global{activation=0}" if h.needs_no_activation() else ""


def bare_round(runner: HostRunner, work: Path) -> float:
    d = work / f"bare-{secrets.token_hex(3)}"
    d.mkdir()
    vg = f"benchbare{secrets.token_hex(3)}"
    cfg = lvm_config() or "global{}"
    script = work / "bare.sh"
    script.write_text(BARE)
    start = time.perf_counter()
    res = runner.run(["bash", str(script), str(d), vg, cfg], timeout=120)
    elapsed = time.perf_counter() - start
    loops = res.stdout.split()
    runner.run(["lvm", "vgremove", "--config", cfg, "-f", "-q", vg], timeout=60)
    for loop in loops:
        runner.run(["lvm", "pvremove", "--config", cfg, "-q", loop], timeout=60)
        runner.run(["losetup", "-d", loop], timeout=30)
    shutil.rmtree(d, ignore_errors=True)
    if not res.ok:
        raise RuntimeError(f"bare script failed: {res.describe()}")
    return elapsed


def lvg(name: str, vg: str, directory: Path) -> dict[str, Any]:
    return {"apiVersion": "disklet.io/v1alpha1", "kind": "LVMVolumeGroup",
            "metadata": {"name": name, "labels": {"disklet.io/node": NODE}},
            "spec": {"type": "Local", "local": {"nodeName": NODE}, "actualVGNameOnTheNode": vg,
                     "fileDevices": [{"name": n, "directory": str(directory), "size": "1Gi"} for n in ("a", "b")]}}


Breakdown = list[tuple[str, float, bool]]
Span = tuple[float, float]


def covered(spans: list[Span]) -> float:
    """Seconds covered by at least one span (reads side by side count once)."""
    total, end = 0.0, float("-inf")
    for a, b in sorted(spans):
        if b > end:
            total += b - max(a, end)
            end = b
    return total


class Side:
    """One agent variant's figures: seconds per round, its host commands, where its time went."""

    def __init__(self) -> None:
        self.seconds: list[float] = []
        self.commands: list[Breakdown] = []
        self.phases: list[dict[str, float]] = []


async def agent_rounds(rounds: int, work: Path, runner: HostRunner, ab: bool = False
                       ) -> tuple[Side, list[float], Side | None]:
    """(the agent, bare seconds, the agent with its independent reads one after the other when ``ab``),
    interleaved round by round (with ``ab`` the two agent variants alternate which goes first)."""
    agent, sequential = Side(), Side() if ab else None
    bare_s: list[float] = []
    current: Breakdown = []
    spans: list[Span] = []
    files = work / "file-devices"
    files.mkdir()
    config = AgentConfig(node_name=NODE, file_devices_dir=str(files), lvm_extra_config=lvm_config(),
                         scan_interval_seconds=60)
    deps = AgentDeps.from_config(config)
    engine = LVMEngine(deps.runner, config)
    parallel = engine.parallel_reads

    def observe(r: Any) -> None:
        current.append((os.path.basename(r.argv[0]), r.duration, getattr(r, "via_shell", False)))
        now = time.perf_counter()
        spans.append((now - r.duration, now))

    deps.runner.observers.append(observe)
    async with served(work, export_kubeconfig=True) as api:
        os.environ.pop("KUBERNETES_SERVICE_HOST", None)
        os.environ.setdefault("DISKLET_NAMESPACE", "disklet-bench")
        registry = build_registry(deps, engine=engine)
        async with kopf_running(registry, server=api.server_url, configure=lambda s: configure_settings(s, config)):
            logging.getLogger("kopf").setLevel(logging.ERROR)  # the mock refuses same-named Events: noise
            async with aiohttp_session() as http:

                async def once(side: Side, tag: str) -> None:
                    name, vg = f"bench-{tag}-{secrets.token_hex(2)}", f"benchagent{secrets.token_hex(3)}"
                    current.clear()
                    spans.clear()
                    start = time.perf_counter()
                    await post(http, api.server_url, lvg(name, vg, files))
                    while True:
                        obj = api.read(LVG_KEY, name) or {}
                        if (obj.get("status") or {}).get("phase") == "Ready":
                            break
                        if time.perf_counter() - start > 120:
                            raise RuntimeError(f"{name} not Ready after 120s: {obj.get('status')}")
                        await asyncio.sleep(0.005)
                    ready = time.perf_counter()
                    side.seconds.append(ready - start)
                    side.commands.append(list(current))
                    mine = [sp for sp in spans if sp[1] <= ready]
                    host = covered(mine)
                    first = min(a for a, _ in mine) - start if mine else 0.0
                    after = ready - max(b for _, b in mine) if mine else 0.0
                    side.phases.append({"host_commands_wall": host, "before_first_command": first,
                                        "after_last_command": after,
                                        "between_commands": ready - start - host - first - after})
                    await delete(http, api.server_url, name)
                    deadline = time.perf_counter() + 60
                    while api.read(LVG_KEY, name) is not None and time.perf_counter() < deadline:
                        await asyncio.sleep(0.05)

                for i in range(rounds):
                    bare_s.append(await asyncio.to_thread(bare_round, runner, work))
                    variants = [(agent, parallel, "p")] + ([(sequential, False, "s")] if sequential else [])
                    for side, mode, tag in variants if i % 2 == 0 else variants[::-1]:
                        engine.parallel_reads = mode
                        await once(side, f"{i}{tag}")
                    engine.parallel_reads = parallel
    return agent, bare_s, sequential


def summary(side: Side, bare_s: list[float]) -> dict[str, Any]:
    med = statistics.median(side.seconds)
    # The host commands of the median round, in order: (command, ms, in the lvm shell).
    median_round = side.commands[sorted(range(len(side.seconds)), key=side.seconds.__getitem__)[len(side.seconds) // 2]]
    per_kind: dict[str, list[float]] = {}
    for cmd, sec, _ in (c for rnd in side.commands for c in rnd):
        per_kind.setdefault(cmd, []).append(sec)
    return {
        "agent_seconds": [round(x, 3) for x in side.seconds], "agent_median_s": round(med, 3),
        "ratio": round(med / statistics.median(bare_s), 2),
        "per_round_ratio_median": round(statistics.median(a / b for a, b in zip(side.seconds, bare_s, strict=True)), 2),
        "agent_commands_median_round": [[c, round(sec * 1000, 1), shell] for c, sec, shell in median_round],
        "agent_command_ms_median": {c: round(statistics.median(v) * 1000, 1) for c, v in sorted(per_kind.items())},
        "agent_commands_per_round": round(sum(len(c) for c in side.commands) / len(side.commands), 1),
        # Where the agent's time went (medians over the rounds, ms): host commands (wall time covered by
        # at least one command: reads side by side count once), Kopf + API before the first command
        # (watch event, finalizer PATCH, handler, GET), Python between commands, and after the last
        # command until the bench saw Ready (status PATCH, watch, the bench's 5 ms poll).
        "agent_phase_ms_median": {k: round(statistics.median(p[k] for p in side.phases) * 1000, 1)
                                  for k in (side.phases[0] if side.phases else {})},
    }


def aiohttp_session() -> Any:
    import aiohttp

    return aiohttp.ClientSession()


async def post(http: Any, server: str, obj: dict[str, Any]) -> None:
    async with http.post(f"{server}/apis/disklet.io/v1alpha1/lvmvolumegroups", json=obj) as r:
        if r.status >= 300:
            raise RuntimeError(f"create failed: {r.status} {await r.text()}")


async def delete(http: Any, server: str, name: str) -> None:
    async with http.delete(f"{server}/apis/disklet.io/v1alpha1/lvmvolumegroups/{name}") as r:
        await r.read()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=3, help="interleaved rounds of each side (median reported)")
    ap.add_argument("--ab", action="store_true",
                    help="also run the agent with its independent safety reads one after the other (not side by "
                         "side), alternating with the normal agent in every round: the effect of the overlap")
    args = ap.parse_args(argv)
    if os.geteuid() != 0:
        print("apply_to_ready: needs root (loop devices, LVM); skipped")
        return 0
    work = Path(tempfile.mkdtemp(prefix="disklet-bench-apply-"))
    runner = HostRunner(default_timeout=120)
    try:
        agent, bare_s, sequential = asyncio.run(agent_rounds(args.rounds, work, runner, args.ab))
    finally:
        leftovers = h.loops_under(work)
        for dev, _back in leftovers:
            runner.run(["losetup", "-d", dev], timeout=30)
        shutil.rmtree(work, ignore_errors=True)
    bare_med = statistics.median(bare_s)
    main_side = summary(agent, bare_s)
    ratio = main_side["ratio"]
    result = {
        "name": "apply_to_ready", "python": platform.python_version(), "rounds": args.rounds,
        "work": "LVMVolumeGroup with 2 x 1Gi file devices: create -> phase Ready",
        "bare_seconds": [round(x, 3) for x in bare_s], "bare_median_s": round(bare_med, 3),
        **main_side, "goal_ratio": GOAL, "meets_goal": ratio <= GOAL,
        "lvm_config": lvm_config(), "leaked_loops_cleaned": len(leftovers),
        "lvm_system_dir": os.environ.get("LVM_SYSTEM_DIR", ""),
    }
    if sequential is not None:
        result["ab_reads_one_after_the_other"] = summary(sequential, bare_s)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    print(f"apply_to_ready: agent {main_side['agent_median_s']:.3f}s / bare script {bare_med:.3f}s = {ratio:.2f}x "
          f"(per-round ratio {main_side['per_round_ratio_median']:.2f}x; goal <= {GOAL}x; {args.rounds} interleaved rounds)")
    print("  median round: " + ", ".join(f"{c}{'*' if sh else ''} {ms:.0f}ms"
                                         for c, ms, sh in main_side["agent_commands_median_round"])
          + "   (* = in the lvm shell)")
    print("  agent phases (median ms): " + ", ".join(f"{k} {v}" for k, v in main_side["agent_phase_ms_median"].items()))
    if sequential is not None:
        seq = result["ab_reads_one_after_the_other"]
        print(f"  reads one after the other (same rounds): agent {seq['agent_median_s']:.3f}s = {seq['ratio']:.2f}x "
              f"(per-round {seq['per_round_ratio_median']:.2f}x); phases: "
              + ", ".join(f"{k} {v}" for k, v in seq["agent_phase_ms_median"].items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
