"""Crash soak (slow, host tier): SIGKILL the engine — with every host command it has in flight —
at random points of create / append / grow / delete cycles of file-backed LVMVolumeGroups, dozens
of times, run each step again (the restart), and check the host after every step: no leaked loop,
no duplicate PV or VG name, no stray file; every object Ready or gone.

Not part of `make test` (it takes a few minutes on a loaded 2-core machine). Run it with
``DISKLET_SLOW=1 python3 -m pytest -m slow tests/host/test_lvm_crash_soak.py -s``, or the same
soak with its figures as a benchmark: ``python3 bench/lvm_crash_soak.py``.
"""

from __future__ import annotations

import json
import os
import uuid
from pathlib import Path

import pytest

from devkit.lvmsoak import cleanup, soak

pytestmark = [pytest.mark.slow, pytest.mark.host]


@pytest.mark.skipif(os.environ.get("DISKLET_SLOW") != "1", reason="slow soak: set DISKLET_SLOW=1 to run it")
def test_sigkill_at_random_points_leaves_nothing_stranded(tmp_path: Path) -> None:
    root = tmp_path / f"soak-{uuid.uuid4().hex[:8]}"
    root.mkdir()
    seed = int(os.environ.get("DISKLET_SOAK_SEED", "0")) or None
    try:
        report = soak(root, cycles=int(os.environ.get("DISKLET_SOAK_CYCLES", "4")), lvgs=2, seed=seed,
                      max_kill_delay=1.2, budget_seconds=240, log=print)
        print(json.dumps(report.figures(), indent=1))
        assert report.kills >= 24, report.figures()
        assert report.clean, report.figures()
    finally:
        cleanup(root)
