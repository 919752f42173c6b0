"""Host-command runner under a flood: peak RSS and wall time while a command prints 300 MB.

A child interpreter runs ``HostRunner().run`` on a command that writes 300 MB to stdout and reports
its own peak resident set (ru_maxrss) next to the same interpreter that only imported the runner.
Goal: the flood costs no more than a few times the per-stream cap (8 MiB), far below the agent's
512Mi limit (before the cap: 878 MB RSS). Also records the wall time of a 1 s timeout whose
command leaves a detached descendant holding the pipe for 6 s (before: 6 s).
Run: python3 bench/runner_flood.py   writes bench/results/runner_flood.json
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results" / "runner_flood.json"
FLOOD_BYTES = 300_000_000

CHILD = """
import json, resource, sys, time
sys.path.insert(0, {root!r})
from disklet.hostcmd import HostRunner
floor = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
start = time.monotonic()
res = HostRunner().run(["sh", "-c", "head -c {n} /dev/zero"], timeout=120)
flood_s = time.monotonic() - start
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
start = time.monotonic()
held = HostRunner().run(["sh", "-c", "setsid sleep 6 & sleep 30"], timeout=1)
held_s = time.monotonic() - start
print(json.dumps(dict(floor_kib=floor, peak_kib=peak, kept_chars=len(res.stdout), truncated=res.truncated,
                      flood_seconds=round(flood_s, 2), held_pipe_timeout_seconds=round(held_s, 2),
                      held_pipe_timed_out=held.timed_out)))
"""


def main() -> int:
    out = subprocess.run([sys.executable, "-c", CHILD.format(root=str(ROOT), n=FLOOD_BYTES)],
                         capture_output=True, text=True, check=True, timeout=300).stdout
    data = json.loads(out)
    data["flood_bytes"] = FLOOD_BYTES
    data["rss_mib"] = round(data["peak_kib"] / 1024, 1)
    data["rss_growth_mib"] = round((data["peak_kib"] - data["floor_kib"]) / 1024, 1)
    data["meets_goal"] = data["rss_growth_mib"] <= 32 and data["held_pipe_timeout_seconds"] < 3
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(data, indent=2) + "\n")
    print(json.dumps(data, indent=2))
    return 0 if data["meets_goal"] else 1


if __name__ == "__main__":
    sys.exit(main())
