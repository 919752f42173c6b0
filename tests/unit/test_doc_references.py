"""Every ``docs/...`` reference in code and every relative link in the docs points at a file (and
heading) that exists in this repository, and nothing cites a rule document the repository lacks."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
CODE_DIRS = ("disklet", "operator", "agent", "devkit", "tests", "e2e", "bench", "charts", "scripts", "nix")
CODE_SUFFIXES = {".py", ".yaml", ".yml", ".tpl", ".txt", ".sh", ".nix", ".json", ".toml"}
DOC_REF = re.compile(r"docs/[A-Za-z0-9_./-]*[A-Za-z0-9_](?:\.md)?(?:#[a-z0-9-]+)?")
MD_LINK = re.compile(r"\]\(([^)\s]+)\)")
FOREIGN = re.compile(r"\b(?:DESIGN|LVM|DISKO)\.md\b")


def code_files() -> list[Path]:
    out = [ROOT / "Makefile", ROOT / "Dockerfile", ROOT / "pyproject.toml"]
    for d in CODE_DIRS:
        out += [p for p in (ROOT / d).rglob("*") if p.is_file() and p.suffix in CODE_SUFFIXES
                and "__pycache__" not in p.parts]
    return [p for p in out if p.exists()]


def doc_files() -> list[Path]:
    return [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to dashes."""
    text = re.sub(r"[`*_]", "", heading.strip().lower())
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    return {slug(m.group(1)) for m in re.finditer(r"^#+\s+(.*)$", path.read_text(encoding="utf-8"), re.M)}


def check(target: Path, anchor: str | None, where: str) -> list[str]:
    if not target.exists():
        return [f"{where}: {target.relative_to(ROOT) if target.is_relative_to(ROOT) else target} does not exist"]
    if anchor and target.suffix == ".md" and anchor not in anchors(target):
        return [f"{where}: no heading #{anchor} in {target.relative_to(ROOT)}"]
    return []


def test_docs_references_in_code_resolve() -> None:
    problems: list[str] = []
    for path in code_files():
        text = path.read_text(encoding="utf-8", errors="replace")
        for lineno, line in enumerate(text.splitlines(), 1):
            for ref in DOC_REF.findall(line):
                file, _, anchor = ref.partition("#")
                if "/" not in file[len("docs/"):] and "." not in file[len("docs/"):] and not file.endswith(".md"):
                    continue  # "docs/" as a plain word
                problems += check(ROOT / file, anchor or None, f"{path.relative_to(ROOT)}:{lineno}")
    assert not problems, "\n".join(problems)


def test_relative_links_in_docs_resolve() -> None:
    problems: list[str] = []
    for path in doc_files():
        for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            for link in MD_LINK.findall(line):
                if re.match(r"^[a-z]+:", link) or link.startswith("<"):
                    continue
                file, _, anchor = link.partition("#")
                target = path if not file else (path.parent / file).resolve()
                problems += check(target, anchor or None, f"{path.relative_to(ROOT)}:{lineno}")
    assert not problems, "\n".join(problems)


def test_nothing_cites_rule_files_outside_the_repository() -> None:
    hits = [f"{p.relative_to(ROOT)}:{n}" for p in [*code_files(), *doc_files()]
            for n, line in enumerate(p.read_text(encoding="utf-8", errors="replace").splitlines(), 1)
            if FOREIGN.search(line) and p.name != Path(__file__).name]
    assert not hits, "cite docs/design/ instead:\n" + "\n".join(hits)
