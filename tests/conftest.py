"""Test tiers by directory: tests/unit → unit, tests/host → host, tests/api → api, tests/vm → vm."""

from __future__ import annotations

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent
REPO = ROOT.parent


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        parts = Path(str(item.fspath)).resolve().relative_to(ROOT).parts if str(item.fspath).startswith(str(ROOT)) else ()
        if parts and parts[0] in ("unit", "host", "api", "vm"):
            item.add_marker(getattr(pytest.mark, parts[0]))
