"""What the disko-oracle host tests share: every DiskLayout the repository shows a user, and the
fixture that needs disko's sources (skips, or fails under CI, without them)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from devkit import disko

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def disko_sources() -> None:
    """Import it into a test module (``from tests.host.disko_cases import disko_sources``): every
    test there then needs disko's sources."""
    reason = disko.missing()
    if reason:
        disko.skip_or_fail(reason)


def documented_disklayouts() -> list[tuple[str, dict[str, Any], Path]]:
    """(where, manifest, base directory) of every DiskLayout in examples/disklayout-*.yaml and in
    the YAML blocks of docs/*.md (their relative file references resolve against examples/)."""
    out = []
    for f in sorted((REPO / "examples").glob("disklayout-*.yaml")):
        for doc in yaml.safe_load_all(f.read_text()):
            if isinstance(doc, dict) and doc.get("kind") == "DiskLayout":
                out.append((f.name, doc, f.parent))
    for f in sorted((REPO / "docs").glob("*.md")):
        for i, block in enumerate(re.findall(r"```ya?ml\n(.*?)```", f.read_text(), re.S)):
            try:
                docs = list(yaml.safe_load_all(block))
            except yaml.YAMLError:
                continue
            for doc in docs:
                if isinstance(doc, dict) and doc.get("kind") == "DiskLayout" and isinstance(doc.get("spec"), dict):
                    out.append((f"{f.name}[{i}]", doc, REPO / "examples"))
    return out
