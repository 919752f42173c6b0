"""Operator memory and idle CPU at N Nodes on the REAL kube-apiserver (envtest).

Per N: a fresh control plane, the CRDs, N worker Nodes, the operator as a process
(``--standalone``), one LVMVolumeGroupSet fanned out to every Node; once N children exist, the
operator's RSS (max of 5 ``VmRSS`` samples), then its CPU over an idle window (utime+stime from
``/proc/<pid>/stat``), then one template change and the RSS again once every child has the new
spec. Side by side: a bare interpreter that only imports the operator (the floor). Each row records
the machine's 1-minute load average at the end of the idle window (CPU figures on a shared box). The per-node
slope is (RSS at the largest N − RSS at the smallest N) / (difference in N).
Goal: ≤ 150 MiB at 1000 Nodes; idle CPU ≤ 1 % of a core.

Run: python3 bench/operator_rss.py [--nodes 1000 3000] [--idle 30]
Writes bench/results/operator_rss.json. Needs the envtest binaries (docs/testing.md).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "agent"), str(ROOT / "operator")]

from devkit.envtest import ControlPlane, assets_dir, free_port, unavailable_reason  # noqa: E402

RESULTS = ROOT / "bench" / "results" / "operator_rss.json"
NAMESPACE = "disklet-system"
TICKS = os.sysconf("SC_CLK_TCK")


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def sampled_rss(pid: int) -> float:
    samples = []
    for _ in range(5):
        samples.append(rss_mib(pid))
        time.sleep(0.5)
    return round(max(samples), 1)


def lvgset(size: str) -> dict[str, Any]:
    return {"apiVersion": "disklet.io/v1alpha1", "kind": "LVMVolumeGroupSet", "metadata": {"name": "bench"},
            "spec": {"strategy": "PerNode", "rollout": {"maxUnavailable": "100%"},
                     "nodeSelector": {"matchLabels": {"node-role.kubernetes.io/worker": ""}},
                     "lvmVolumeGroupTemplate": {"type": "Local", "actualVGNameOnTheNode": "bench",
                                                "fileDevices": [{"name": "f1", "directory": "/var/lib/disklet/fd",
                                                                 "size": size}]}}}


def children(cp: ControlPlane, size: str | None = None) -> int:
    out = cp.kubectl("get", "lvmvolumegroups", "-l", "disklet.io/lvmvolumegroupset=bench", "-o",
                     "jsonpath={range .items[*]}{.spec.fileDevices[0].size}{\"\\n\"}{end}", timeout=300).stdout
    sizes = [s for s in out.splitlines() if s]
    return sum(1 for s in sizes if size is None or s == size)


def wait(what: str, fn: Any, timeout: float = 900, every: float = 3) -> float:
    start = time.perf_counter()
    while not fn():
        if time.perf_counter() - start > timeout:
            raise RuntimeError(f"timed out waiting for {what}")
        time.sleep(every)
    return time.perf_counter() - start


def measure(n: int, idle: float) -> dict[str, Any]:
    cp = ControlPlane(assets=assets_dir(), controller_manager=False).start()
    proc = None
    try:
        cp.apply(ROOT / "crds")
        cp.kubectl("wait", "--for", "condition=established", "--timeout", "60s", "crd", "--all")
        cp.namespace(NAMESPACE)
        for start in range(0, n, 500):
            cp.apply([{"apiVersion": "v1", "kind": "Node",
                       "metadata": {"name": f"bench-node-{i}",
                                    "labels": {"kubernetes.io/hostname": f"bench-node-{i}",
                                               "node-role.kubernetes.io/worker": ""}}}
                      for i in range(start, min(n, start + 500))])
        env = dict(os.environ, KUBECONFIG=str(cp.kubeconfig), DISKLET_NAMESPACE=NAMESPACE,
                   PYTHONPATH=os.pathsep.join([str(ROOT), str(ROOT / "operator"), str(ROOT / "agent")]))
        argv = [sys.executable, "-c", "import sys; from disklet_operator.main import main; sys.exit(main())",
                "--standalone", "--metrics-port", str(free_port()), "--log-format", "text", "--log-level", "warning"]
        log = open(cp.workdir / "operator.log", "w")  # noqa: SIM115 - removed with the control plane
        proc = subprocess.Popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        start_rss = None
        time.sleep(5)
        start_rss = sampled_rss(proc.pid)
        cp.apply(lvgset("1Gi"))
        fanout_s = wait(f"{n} children", lambda: children(cp) >= n)
        time.sleep(10)
        rss_fanned = sampled_rss(proc.pid)
        c0, t0 = cpu_seconds(proc.pid), time.perf_counter()
        time.sleep(idle)
        idle_cpu = (cpu_seconds(proc.pid) - c0) / (time.perf_counter() - t0) * 100
        load = round(os.getloadavg()[0], 2)  # the machine's load over the idle window (shared box)
        rss_idle = sampled_rss(proc.pid)
        cp.apply(lvgset("2Gi"))
        change_s = wait("the template change on every child", lambda: children(cp, "2Gi") >= n)
        time.sleep(10)
        rss_changed = sampled_rss(proc.pid)
        return {"nodes": n, "rss_at_start_mib": start_rss, "fanout_s": round(fanout_s, 1),
                "rss_after_fanout_mib": rss_fanned, "idle_cpu_percent": round(idle_cpu, 2), "idle_window_s": idle,
                "load_avg_1m_at_idle_end": load,
                "rss_after_idle_mib": rss_idle, "template_change_s": round(change_s, 1),
                "rss_after_template_change_mib": rss_changed}
    finally:
        if proc is not None:
            proc.terminate()
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        cp.stop()


def floor_mib() -> float:
    code = "import time, disklet_operator.main; time.sleep(3)"
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), str(ROOT / "operator"), str(ROOT / "agent")]))
    p = subprocess.Popen([sys.executable, "-c", code], env=env)
    time.sleep(2.5)
    value = rss_mib(p.pid)
    p.wait()
    return round(value, 1)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--nodes", type=int, nargs="*", default=[1000, 3000])
    ap.add_argument("--idle", type=float, default=30.0, help="idle CPU window, seconds")
    args = ap.parse_args(argv)
    reason = unavailable_reason()
    if reason:
        print(f"operator_rss: skipped: {reason}")
        return 0
    rows = []
    for n in args.nodes:
        try:
            row = measure(n, args.idle)
        except Exception as exc:  # a scale that does not fit this machine is reported, not hidden
            row = {"nodes": n, "error": repr(exc)[:500]}
        print(json.dumps(row), flush=True)
        rows.append(row)
    ok = sorted((r for r in rows if "error" not in r), key=lambda r: r["nodes"])
    slope = None
    if len(ok) >= 2:
        slope = round((ok[-1]["rss_after_fanout_mib"] - ok[0]["rss_after_fanout_mib"]) * 1024
                      / (ok[-1]["nodes"] - ok[0]["nodes"]), 1)
    at_1000 = next((r for r in ok if r["nodes"] == 1000), None)
    result = {"name": "operator_rss", "python": platform.python_version(), "import_floor_mib": floor_mib(),
              "rows": rows, "slope_kib_per_node": slope,
              "meets_goal": bool(at_1000 and max(at_1000["rss_after_fanout_mib"],
                                                 at_1000["rss_after_template_change_mib"]) <= 150)}
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: v for k, v in result.items() if k != "rows"}))
    print(f"wrote {RESULTS}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
