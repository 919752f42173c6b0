"""Apply-to-Ready: a file-backed LVMVolumeGroup (2 × 1Gi) from create to Ready through the agent,
divided by the same host work run bare from a shell script (fallocate, losetup, pvcreate,
vgcreate, pvs). Goal ≤ 1.3×. Both sides run interleaved in one process run, same machine, same
LVM --config; the agent runs in-process (Kopf + the real LVM engine) against the API mock.

Root only; everything is created under a temporary directory and removed afterwards.
Run: python3 bench/apply_to_ready.py [--rounds N]    writes bench/results/apply_to_ready.json
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


async def agent_rounds(rounds: int, work: Path, runner: HostRunner) -> tuple[list[float], list[float], list[Breakdown]]:
    """(agent seconds, bare seconds, the agent's host commands per round), interleaved round by round."""
    agent_s: list[float] = []
    bare_s: list[float] = []
    commands: list[Breakdown] = []
    current: Breakdown = []
    files = work / "file-devices"
    files.mkdir()
    config = AgentConfig(node_name=NODE, file_devices_dir=str(files), lvm_extra_config=lvm_config(),
                         scan_interval_seconds=60)
    deps = AgentDeps.from_config(config)
    deps.runner.observers.append(
        lambda r: current.append((os.path.basename(r.argv[0]), r.duration, getattr(r, "via_shell", False))))
    async with served(work, export_kubeconfig=True) as api:
        os.environ.pop("KUBERNETES_SERVICE_HOST", None)
        os.environ.setdefault("DISKLET_NAMESPACE", "disklet-bench")
        registry = build_registry(deps)
        async with kopf_running(registry, server=api.server_url, configure=lambda s: configure_settings(s, config)):
            logging.getLogger("kopf").setLevel(logging.ERROR)  # the mock refuses same-named Events: noise
            async with aiohttp_session() as http:
                for i in range(rounds):
                    bare_s.append(await asyncio.to_thread(bare_round, runner, work))
                    name, vg = f"bench-{i}-{secrets.token_hex(2)}", f"benchagent{secrets.token_hex(3)}"
                    current.clear()
                    start = time.perf_counter()
                    await post(http, api.server_url, lvg(name, vg, files))
                    while True:
                        obj = api.read(LVG_KEY, name) or {}
                        if (obj.get("status") or {}).get("phase") == "Ready":
                            break
                        if time.perf_counter() - start > 120:
                            raise RuntimeError(f"{name} not Ready after 120s: {obj.get('status')}")
                        await asyncio.sleep(0.005)
                    agent_s.append(time.perf_counter() - start)
                    commands.append(list(current))
                    await delete(http, api.server_url, name)
                    deadline = time.perf_counter() + 60
                    while api.read(LVG_KEY, name) is not None and time.perf_counter() < deadline:
                        await asyncio.sleep(0.05)
    return agent_s, bare_s, commands


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
    args = ap.parse_args(argv)
    if os.geteuid() != 0:
        print("apply_to_ready: needs root (loop devices, LVM); skipped")
        return 0
    work = Path(tempfile.mkdtemp(prefix="disklet-bench-apply-"))
    runner = HostRunner(default_timeout=120)
    try:
        agent_s, bare_s, commands = asyncio.run(agent_rounds(args.rounds, work, runner))
    finally:
        leftovers = h.loops_under(work)
        for dev, _back in leftovers:
            runner.run(["losetup", "-d", dev], timeout=30)
        shutil.rmtree(work, ignore_errors=True)
    agent_med, bare_med = statistics.median(agent_s), statistics.median(bare_s)
    ratio = agent_med / bare_med
    # The host commands of the agent's median round, in order: (command, ms, in the lvm shell).
    median_round = commands[sorted(range(len(agent_s)), key=agent_s.__getitem__)[len(agent_s) // 2]]
    per_kind: dict[str, list[float]] = {}
    for cmd, sec, _ in (c for rnd in commands for c in rnd):
        per_kind.setdefault(cmd, []).append(sec)
    result = {
        "name": "apply_to_ready", "python": platform.python_version(), "rounds": args.rounds,
        "work": "LVMVolumeGroup with 2 x 1Gi file devices: create -> phase Ready",
        "agent_seconds": [round(x, 3) for x in agent_s], "bare_seconds": [round(x, 3) for x in bare_s],
        "agent_median_s": round(agent_med, 3), "bare_median_s": round(bare_med, 3),
        "ratio": round(ratio, 2), "goal_ratio": GOAL, "meets_goal": ratio <= GOAL,
        "lvm_config": lvm_config(), "leaked_loops_cleaned": len(leftovers),
        "agent_commands_median_round": [[c, round(sec * 1000, 1), shell] for c, sec, shell in median_round],
        "agent_command_ms_median": {c: round(statistics.median(v) * 1000, 1) for c, v in sorted(per_kind.items())},
        "agent_commands_per_round": round(sum(len(c) for c in commands) / len(commands), 1),
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    print(f"apply_to_ready: agent {agent_med:.3f}s / bare script {bare_med:.3f}s = {ratio:.2f}x "
          f"(goal <= {GOAL}x; {args.rounds} interleaved rounds)")
    print("  median round: " + ", ".join(f"{c}{'*' if sh else ''} {sec * 1000:.0f}ms" for c, sec, sh in median_round)
          + "   (* = in the lvm shell)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
