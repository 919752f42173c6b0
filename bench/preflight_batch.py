"""Batch pre-flight: N distinct DiskLayouts pre-flighted one evaluator per layout vs one batch.

Side by side in the same run: the single path (``preflight`` per layout, one sandboxed
``nix-instantiate`` each) and ``preflight_many`` (one run for all of them), over N layouts that
differ per node (device ids, mountpoints; a mix of one-disk ext4, the mixed LVM/ZFS sample and
three-disk layouts, rendered and hand-written raw Nix). Checks that both give the same results.
Goal: the batch ≥ 20× faster for 1000 layouts. Writes bench/results/preflight_batch.json.

Run: python3 bench/preflight_batch.py [--layouts N] [--single-sample M]
(``--single-sample M`` times only M single pre-flights and scales to N: a shortcut for quick looks.)
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import platform
import time
from pathlib import Path

from disklet.api.disklayout import DiskLayoutSpec
from disklet.hostcmd import HostRunner
from disklet.layout import nix_available, preflight
from disklet.layout.batch import preflight_many
from disklet.layout.samples import EXT4, MIXED, n_disks

RESULTS = Path(__file__).resolve().parent / "results" / "preflight_batch.json"
RAW = """let fs = mp: {{ type = "filesystem"; format = "ext4"; mountpoint = mp; }};
in {{ disko.devices.disk.data = {{ type = "disk"; device = "/dev/disk/by-id/nvme-raw-{i}";
  content = {{ type = "gpt"; partitions.p = {{ size = "100%"; content = fs "/var/lib/kcore/raw{i}"; }}; }}; }}; }}
"""


def layouts(n: int) -> list[DiskLayoutSpec]:
    specs = []
    for i in range(n):
        kind = i % 4
        if kind == 3:
            specs.append(DiskLayoutSpec.model_validate({"nodeName": f"node-{i}", "layoutNix": RAW.format(i=i)}))
            continue
        data = copy.deepcopy((EXT4, MIXED, n_disks(3))[kind])
        for d, disk in enumerate(data["disks"]):
            disk["device"] = f"/dev/disk/by-id/nvme-node{i}-{d}"
        specs.append(DiskLayoutSpec.model_validate({"nodeName": f"node-{i}", "diskLayout": data}))
    return specs


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--layouts", type=int, default=1000)
    ap.add_argument("--single-sample", type=int, default=0, help="time only this many single pre-flights (0 = all)")
    args = ap.parse_args()
    if not nix_available():
        print("skipped: nix-instantiate is not installed")
        return
    specs = layouts(args.layouts)
    runner = HostRunner()
    start = time.perf_counter()
    many = preflight_many([(s, None) for s in specs], runner)
    batch_s = time.perf_counter() - start
    batch_runs = runner.calls["prlimit"]

    sample = specs[: args.single_sample] if args.single_sample else specs
    single_runner = HostRunner()
    start = time.perf_counter()
    single = [preflight(s, None, single_runner) for s in sample]
    single_measured_s = time.perf_counter() - start
    single_s = single_measured_s * len(specs) / len(sample)
    same = [dataclasses.asdict(r) for r in many[: len(sample)]] == [dataclasses.asdict(r) for r in single]
    pending = sum(1 for r in many if r.phase.value == "pending")
    result = {
        "layouts": len(specs),
        "body_bytes_total": sum(len((r.body or "").encode()) for r in many),
        "pending": pending,
        "batch_s": round(batch_s, 3),
        "batch_evaluator_runs": batch_runs,
        "batch_ms_per_layout": round(batch_s * 1000 / len(specs), 3),
        "single_s": round(single_s, 3),
        "single_evaluator_runs": single_runner.calls["prlimit"],
        "single_timed_layouts": len(sample),
        "single_ms_per_layout": round(single_s * 1000 / len(specs), 3),
        "ratio": round(single_s / batch_s, 1),
        "same_results": same,
        "meets_goal": single_s / batch_s >= 20 and same,
        "python": platform.python_version(),
        "nix": runner.run(["nix-instantiate", "--version"], timeout=10).stdout.strip(),
    }
    print(" ".join(f"{k}={v}" for k, v in result.items()))
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
