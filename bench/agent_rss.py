"""Agent memory: resident set (VmRSS) of an idle `disklet-agent run` process serving 10 VGs.

A real agent process (``python -m disklet_agent.cli run``) against the API mock running as a
server process; 10 file-backed LVMVolumeGroups (1Gi each, real loop devices and LVM: root) are
created, and once all are Ready and a few discovery cycles have passed, /proc/<pid>/status is
sampled. Side by side: a bare interpreter that only imports the agent (the floor any Python agent
pays). Goal: ≤ 80 MiB.
Run: python3 bench/agent_rss.py [--vgs N]   writes bench/results/agent_rss.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import secrets
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT)]

from e2e import harness as h  # noqa: E402

RESULTS = ROOT / "bench" / "results" / "agent_rss.json"
NODE = "bench-rss"
GOAL_MIB = 80.0


def vm_kib(pid: int, key: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    raise KeyError(key)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--vgs", type=int, default=10)
    ap.add_argument("--settle", type=float, default=10.0, help="idle seconds after all are Ready")
    args = ap.parse_args(argv)
    if os.geteuid() != 0:
        print("agent_rss: needs root (loop devices, LVM); skipped")
        return 0
    work = Path(tempfile.mkdtemp(prefix="disklet-bench-rss-"))
    files = work / "file-devices"
    files.mkdir()
    tag = secrets.token_hex(3)
    mock = h.MockServer(work, validate=False).start()
    kube = h.Kube(str(mock.kubeconfig))
    agent: h.Proc | None = None
    floor: h.Proc | None = None
    names = [f"rss-{tag}-{i}" for i in range(args.vgs)]
    try:
        kube.kubectl("apply", "--validate=false", "-f", str(ROOT / "crds"))
        env = h.child_env({"NODE_NAME": NODE, "KUBECONFIG": str(mock.kubeconfig), "FILE_DEVICES_DIRECTORY": str(files),
                           "DISKLET_HOST_ROOT": str(work), "DISKLET_SCAN_INTERVAL_SECONDS": "2",
                           "DISKLET_METRICS_PORT": "0", "DISKLET_LIVENESS_ENDPOINT": "",
                           "DISKLET_NAMESPACE": "disklet-bench", "DISKLET_LOG_LEVEL": "WARNING",
                           **({"DISKLET_LVM_EXTRA_CONFIG": "global{activation=0}"} if h.needs_no_activation() else {})})
        agent = h.Proc("agent", h.agent_argv(), env, work / "agent.log").start()
        floor = h.Proc("floor", [sys.executable, "-c", "import time, disklet_agent.daemon; time.sleep(600)"],
                       env, work / "floor.log").start()
        for i, name in enumerate(names):
            kube.create(h.LVG, {"apiVersion": "disklet.io/v1alpha1", "kind": "LVMVolumeGroup",
                                "metadata": {"name": name, "labels": {"disklet.io/node": NODE}},
                                "spec": {"type": "Local", "local": {"nodeName": NODE},
                                         "actualVGNameOnTheNode": f"benchrss{tag}x{i}",
                                         "fileDevices": [{"name": "a", "directory": str(files), "size": "1Gi"}]}})
        h.wait_until(lambda: all(((kube.get(h.LVG, n) or {}).get("status") or {}).get("phase") == "Ready"
                                 for n in names), timeout=300, what=f"{args.vgs} LVMVolumeGroups Ready",
                     describe=agent.tail)
        time.sleep(args.settle)
        samples = []
        for _ in range(5):
            samples.append(vm_kib(agent.pid, "VmRSS"))
            time.sleep(1)
        rss_kib = max(samples)
        hwm_kib = vm_kib(agent.pid, "VmHWM")
        floor_kib = vm_kib(floor.pid, "VmRSS")
    finally:
        if floor is not None:
            floor.stop()
        for n in names:
            kube.delete(h.LVG, n)
        if agent is not None and agent.alive():
            h.wait_until(lambda: all(kube.get(h.LVG, n) is None for n in names), timeout=180,
                         what="the agent to delete the bench VGs", describe=agent.tail)
            agent.stop()
        kube.close()
        mock.stop()
        for dev, _ in h.loops_under(work):
            h.sh(["losetup", "-d", dev], check=False)
        shutil.rmtree(work, ignore_errors=True)
    rss_mib, floor_mib = rss_kib / 1024, floor_kib / 1024
    result = {"name": "agent_rss", "python": platform.python_version(), "vgs": args.vgs,
              "rss_mib": round(rss_mib, 1), "peak_rss_mib": round(hwm_kib / 1024, 1),
              "import_floor_rss_mib": round(floor_mib, 1), "ratio_to_import_floor": round(rss_mib / floor_mib, 2),
              "samples_kib": samples, "goal_mib": GOAL_MIB, "meets_goal": rss_mib <= GOAL_MIB}
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    print(f"agent_rss: idle agent with {args.vgs} VGs {rss_mib:.1f} MiB RSS (peak {hwm_kib / 1024:.1f} MiB) vs "
          f"{floor_mib:.1f} MiB for a bare interpreter importing the agent = {rss_mib / floor_mib:.2f}x "
          f"(goal <= {GOAL_MIB:.0f} MiB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
