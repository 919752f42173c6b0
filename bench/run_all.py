"""Run every benchmark in bench/ (each writes bench/results/<name>.json), then print one summary.

Run: python3 bench/run_all.py [--only NAME ...]   (or `make bench`). Root-only benchmarks print
"skipped" for other users. Figures are recorded in docs/performance.md.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
RESULTS = BENCH / "results"
ORDER = ["preflight", "preflight_batch", "idle_requests", "operator_rss", "scan_cost", "lvgset_fanout", "apply_to_ready",
         "idle_churn", "watch_fanout", "agent_rss"]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", nargs="*", help="benchmark names (default: all present)")
    args = ap.parse_args(argv)
    names = [n for n in ORDER if (BENCH / f"{n}.py").exists()]
    names += sorted(p.stem for p in BENCH.glob("*.py") if p.stem not in ORDER and not p.stem.startswith(("_", "run_all")))
    if args.only:
        names = [n for n in names if n in args.only]
    failed = []
    for name in names:
        print(f"==== {name}", flush=True)
        start = time.perf_counter()
        rc = subprocess.run([sys.executable, str(BENCH / f"{name}.py")], cwd=BENCH.parent, timeout=1800,
                            check=False).returncode
        print(f"---- {name}: exit {rc} in {time.perf_counter() - start:.1f}s", flush=True)
        if rc != 0:
            failed.append(name)
    print("\nresults:")
    for path in sorted(RESULTS.glob("*.json")):
        data = json.loads(path.read_text())
        keys = [k for k in ("ratio", "ratio_idle_cycle_to_busy", "ratio_agent_to_unfiltered", "ratio_to_import_floor",
                            "status_writes", "agent_events_other_nodes", "rss_mib", "slope_kib_per_node", "meets_goal") if k in data]
        print(f"  {path.stem}: " + (", ".join(f"{k}={data[k]}" for k in keys) if keys else f"see {path}"))
    if failed:
        print(f"failed: {', '.join(failed)}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
