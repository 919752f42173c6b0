"""Crash soak of the LVM engine: SIGKILL at random points of create/append/grow/delete cycles.

Figures: kills (and how many hit a host command in flight), completed steps, retries the restart
needed, leaked loops, duplicate PVs and VG names, stray files, objects not Ready / not gone, wall
time. Needs root, lvm2, util-linux. Writes bench/results/lvm_crash_soak.json. Everything it
creates is removed at the end. Run: python3 bench/lvm_crash_soak.py [--cycles N] [--seed S].
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from devkit.lvmsoak import cleanup, soak  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cycles", type=int, default=4)
    ap.add_argument("--lvgs", type=int, default=2)
    ap.add_argument("--seed", type=int, default=None)
    ap.add_argument("--budget", type=float, default=240.0, help="no new cycle after this many seconds")
    args = ap.parse_args(argv)
    if os.geteuid() != 0:
        print("lvm_crash_soak: skipped (needs root)")
        return 0
    root = Path(tempfile.mkdtemp(prefix="disklet-soak-"))
    try:
        report = soak(root, cycles=args.cycles, lvgs=args.lvgs, seed=args.seed, budget_seconds=args.budget,
                      log=print)
    finally:
        cleanup(root)
    figures = report.figures()
    out = Path(__file__).resolve().parent / "results" / "lvm_crash_soak.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(figures, indent=1) + "\n")
    print(json.dumps(figures, indent=1))
    return 0 if report.clean else 1


if __name__ == "__main__":
    raise SystemExit(main())
