"""devkit.envtest.run / wait_until / tool: the one command runner and poller of the test helpers
(the envtest control plane and the e2e harness both use them)."""

from __future__ import annotations

import sys
from typing import Any

import pytest

from devkit.envtest import EnvtestError, run, tool, wait_until
from e2e import harness


def test_run_captures_output_and_passes_input_and_env() -> None:
    res = run([sys.executable, "-c", "import os,sys; print(sys.stdin.read() + os.environ['X'])"],
              input="in-", env={"X": "env"})
    assert res.returncode == 0 and res.stdout == "in-env\n"


def test_run_raises_the_chosen_error_saying_what_failed() -> None:
    argv = [sys.executable, "-c", "import sys; sys.stderr.write('boom\\n'); sys.exit(3)"]
    with pytest.raises(EnvtestError, match="exited 3: boom"):
        run(argv)
    with pytest.raises(AssertionError, match="exited 3: boom"):
        harness.sh(argv)
    assert run(argv, check=False).returncode == 3


def test_wait_until_returns_the_first_truthy_value() -> None:
    values = iter([None, 0, "", "ready"])
    assert wait_until(lambda: next(values), timeout=30, what="x", interval=0) == "ready"


def test_wait_until_fails_with_what_and_the_last_seen() -> None:
    calls: list[Any] = []
    with pytest.raises(AssertionError, match="waiting for the thing\n  last seen: described"):
        wait_until(lambda: calls.append(1), timeout=0, what="the thing", describe=lambda: "described")
    with pytest.raises(AssertionError, match="last seen: None"):
        wait_until(lambda: None, timeout=0, what="x")


def test_tool_is_found_or_named() -> None:
    assert tool("python3").endswith("python3")
    with pytest.raises(FileNotFoundError, match="no-such-tool-here not found"):
        tool("no-such-tool-here")
    assert harness.tool is tool and harness.wait_until is wait_until
