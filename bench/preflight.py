"""Pre-flight cost: render, eval extraction, static extraction and the full check (sandboxed
evaluation + allowlist + literal artifact + read-back) for 1, 10 and 50 disks.

Prints milliseconds per operation (median of several runs) and writes bench/results/preflight.json.
Run: python3 bench/preflight.py [--repeat N]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path

from disklet.hostcmd import HostRunner
from disklet.layout import extract_targets, layout_hash, nix_available, render_disko_nix
from disklet.layout.artifact import render_artifact
from disklet.layout.checked import check_layout
from disklet.layout.samples import n_disks, structured
from disklet.layout.schema import check_schema

RESULTS = Path(__file__).resolve().parent / "results" / "preflight.json"


def _median_ms(fn: Callable[[], object], repeat: int) -> float:
    samples = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - start) * 1000)
    return round(statistics.median(samples), 3)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=7, help="runs per measurement (median reported)")
    args = parser.parse_args()
    rows = []
    have_nix = nix_available()
    for disks in (1, 10, 50):
        layout = structured(n_disks(disks))
        body = render_disko_nix(layout)
        extract_targets(body, force_static=True)  # warm the parser
        row: dict[str, object] = {
            "disks": disks,
            "body_bytes": len(body.encode()),
            "render_ms": _median_ms(lambda layout=layout: render_disko_nix(layout), args.repeat),
            "static_extract_ms": _median_ms(lambda body=body: extract_targets(body, force_static=True), args.repeat),
        }
        value = extract_targets(body, force_static=True).devices_value
        row["schema_ms"] = _median_ms(lambda value=value: check_schema(value), args.repeat)
        row["artifact_ms"] = _median_ms(lambda value=value: render_artifact(value), args.repeat)
        if have_nix:
            row["eval_extract_ms"] = _median_ms(lambda body=body: extract_targets(body), args.repeat)
            row["render_plus_eval_extract_ms"] = _median_ms(
                lambda layout=layout: layout_hash(extract_targets(render_disko_nix(layout)).devices_value), args.repeat)
            row["check_layout_ms"] = _median_ms(lambda body=body: check_layout(body), args.repeat)
        rows.append(row)
        print(" ".join(f"{k}={v}" for k, v in row.items()))
    nix_version = ""
    if have_nix:
        nix_version = HostRunner().run(["nix-instantiate", "--version"], timeout=10).stdout.strip()
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps({"python": platform.python_version(), "nix": nix_version,
                                   "repeat": args.repeat, "results": rows}, indent=2) + "\n")
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
