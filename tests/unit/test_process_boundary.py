"""No module outside ``disklet_agent/host/`` starts a process (docs/architecture.md, "Layers").

A process starts in exactly one place, the runner (``disklet/hostcmd.py``); the agent calls it only
from its host adapters, and the library only from the sandboxed Nix evaluator (``layout/evaluate.py``,
``layout/batch.py``: one argv builder each, shared by the operator, the agent and kctl). The check
reads the source (AST), so a new ``runner.run`` / ``subprocess`` / ``asyncio.create_subprocess_*``
anywhere else fails here.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
RUNTIME = [REPO / "disklet", REPO / "operator" / "disklet_operator", REPO / "agent" / "disklet_agent"]
HOST = REPO / "agent" / "disklet_agent" / "host"
RUNNER_MODULE = REPO / "disklet" / "hostcmd.py"
NIX_SANDBOX = {REPO / "disklet" / "layout" / "evaluate.py", REPO / "disklet" / "layout" / "batch.py"}

PROCESS_MODULES = {"subprocess", "pty"}
PROCESS_FUNCTIONS = {("asyncio", "create_subprocess_exec"), ("asyncio", "create_subprocess_shell"),
                     ("os", "system"), ("os", "popen"), ("os", "fork"), ("os", "forkpty"), ("os", "posix_spawn"),
                     ("os", "posix_spawnp")}
PROCESS_PREFIXES = {("os", "exec"), ("os", "spawn")}


def _dotted(node: ast.expr) -> str:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return f"{_dotted(node.value)}.{node.attr}"
    return "?"


def process_starts(source: str) -> list[str]:
    """Every place ``source`` starts a process or calls a runner: ``line: what``."""
    found: list[str] = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [f"{node.lineno}: import {a.name}" for a in node.names if a.name.split(".")[0] in PROCESS_MODULES]
        elif isinstance(node, ast.ImportFrom) and node.module:
            base = node.module.split(".")[0]
            if base in PROCESS_MODULES:
                found.append(f"{node.lineno}: from {node.module} import")
            for a in node.names:
                if (base, a.name) in PROCESS_FUNCTIONS or any(base == m and a.name.startswith(p)
                                                              for m, p in PROCESS_PREFIXES):
                    found.append(f"{node.lineno}: from {base} import {a.name}")
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            owner, name = _dotted(node.func.value), node.func.attr
            last = owner.rsplit(".", 1)[-1]
            if (owner, name) in PROCESS_FUNCTIONS or any(owner == m and name.startswith(p) for m, p in PROCESS_PREFIXES):
                found.append(f"{node.lineno}: {owner}.{name}()")
            elif name == "run" and last.lower().endswith("runner"):
                found.append(f"{node.lineno}: {owner}.run()")
    return found


def _modules() -> list[Path]:
    return sorted(p for root in RUNTIME for p in root.rglob("*.py"))


@pytest.mark.parametrize("snippet", [
    "runner.run(['vgs'], timeout=1)", "self.deps.runner.run(argv)", "lvm.runner.run(argv, timeout=2)",
    "import subprocess", "from subprocess import run", "asyncio.create_subprocess_exec('x')",
    "os.system('x')", "os.execvp('x', [])", "from os import posix_spawn",
])
def test_the_check_sees_a_process_start(snippet: str) -> None:
    assert process_starts(snippet), snippet


def test_the_check_ignores_what_starts_no_process() -> None:
    assert process_starts("asyncio.run(main())\nkopf.run()\nself.shell.run(argv)\nweb.run_app(app)") == []


def test_only_the_host_adapters_start_processes() -> None:
    offenders = {}
    for path in _modules():
        if path == RUNNER_MODULE or path.is_relative_to(HOST) or path in NIX_SANDBOX:
            continue
        if hits := process_starts(path.read_text(encoding="utf-8")):
            offenders[str(path.relative_to(REPO))] = hits
    assert not offenders, f"process starts outside disklet_agent/host/ (move them into a host adapter): {offenders}"


def test_the_allowed_places_do_start_processes() -> None:
    """The allowlist is not stale: each allowed module really calls the runner (else drop it)."""
    for path in [RUNNER_MODULE, *NIX_SANDBOX]:
        assert process_starts(path.read_text(encoding="utf-8")), path
    assert any(process_starts(p.read_text(encoding="utf-8")) for p in HOST.rglob("*.py"))
