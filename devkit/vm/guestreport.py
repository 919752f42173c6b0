"""pytest plugin loaded inside the guest (``-p devkit.vm.guestreport``): every test's outcome by node id.

Writes ``$DISKLET_VM_REPORT`` (JSON: ``{nodeid: {"outcome", "when", "longrepr", "duration"}}``)
at the end of the session, so the host reports each guest test under its own name with the guest's
failure text. Collection errors are recorded under ``"collect::<nodeid>"``. Each test's entry is
also printed to the console as it finishes (one ``==disklet-vm-result <base64 JSON>`` line), so a
boot that is killed on its timeout still reports the tests that finished.
"""

from __future__ import annotations

import base64
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


MARK = "==disklet-vm-result "


def _announce(nodeid: str) -> None:
    line = MARK + base64.b64encode(json.dumps({nodeid: RESULTS[nodeid]}).encode()).decode() + "\n"
    try:
        with open("/dev/console", "w", encoding="utf-8") as console:
            console.write(line)
    except OSError:
        pass


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    text = ""
    if report.skipped and isinstance(report.longrepr, tuple):
        text = str(report.longrepr[2])
    elif report.longrepr is not None:
        text = str(report.longrepr)
    sections = "".join(f"\n---- {name} ----\n{content}" for name, content in report.sections
                       if report.failed and content.strip())
    _record(report.nodeid, report.outcome, report.when, text + sections, report.duration)
    if report.when == "teardown":
        _announce(report.nodeid)


def pytest_collectreport(report: pytest.CollectReport) -> None:
    if report.failed:
        _record(f"collect::{report.nodeid}", "failed", "collect", str(report.longrepr), 0.0)


def pytest_sessionfinish(session: pytest.Session) -> None:
    path = os.environ.get("DISKLET_VM_REPORT")
    if path:
        with open(path, "w", encoding="utf-8") as f:
            json.dump(RESULTS, f, indent=1)
