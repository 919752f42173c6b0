"""pytest plugin loaded inside the guest (``-p devkit.vm.guestreport``): every test's outcome by node id.

Writes ``$DISKLET_VM_REPORT`` (JSON: ``{nodeid: {"outcome", "when", "longrepr", "duration"}}``)
at the end of the session, so the host reports each guest test under its own name with the guest's
failure text. Collection errors are recorded under ``"collect::<nodeid>"``.
"""

from __future__ import annotations

import json
import os
from typing import Any

import pytest

RESULTS: dict[str, dict[str, Any]] = {}


def _record(nodeid: str, outcome: str, when: str, longrepr: str, duration: float) -> None:
    entry = RESULTS.setdefault(nodeid, {"outcome": "passed", "when": "", "longrepr": "", "duration": 0.0})
    entry["duration"] += duration
    if outcome == "failed" and entry["outcome"] != "failed":
        entry.update(outcome="failed", when=when, longrepr=longrepr)
    elif outcome == "skipped" and entry["outcome"] == "passed":
        entry.update(outcome="skipped", when=when, longrepr=longrepr)


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    text = ""
    if report.skipped and isinstance(report.longrepr, tuple):
        text = str(report.longrepr[2])
    elif report.longrepr is not None:
        text = str(report.longrepr)
    sections = "".join(f"\n---- {name} ----\n{content}" for name, content in report.sections
                       if report.failed and content.strip())
    _record(report.nodeid, report.outcome, report.when, text + sections, report.duration)


def pytest_collectreport(report: pytest.CollectReport) -> None:
    if report.failed:
        _record(f"collect::{report.nodeid}", "failed", "collect", str(report.longrepr), 0.0)


def pytest_sessionfinish(session: pytest.Session) -> None:
    path = os.environ.get("DISKLET_VM_REPORT")
    if path:
        with open(path, "w", encoding="utf-8") as f:
            json.dump(RESULTS, f, indent=1)
