"""The Makefile runs the project's virtualenv, and bootstrap installs only into it: the machine's own
Python (and any other checkout's editable install of disklet in it) is left as it was."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]


def make_dry_run(*targets: str) -> list[str]:
    if shutil.which("make") is None:
        pytest.skip("make is not installed")
    res = subprocess.run(["make", "-n", "-s", "-C", str(ROOT), *targets], capture_output=True, text=True,
                         timeout=60, env={"PATH": "/usr/bin:/bin", "HOME": "/nonexistent"})
    assert res.returncode == 0, res.stderr
    return [line for line in res.stdout.splitlines() if line.strip()]


@pytest.mark.parametrize("target", ["lint", "typecheck", "archcheck", "crds-check", "pytest", "e2e", "demo"])
def test_every_python_target_runs_the_project_virtualenv(target: str) -> None:
    venv_python = str(ROOT / ".venv" / "bin" / "python")
    lines = [line for line in make_dry_run(target) if "bootstrap.sh" not in line]
    assert lines, f"make -n {target} printed no command"
    assert lines[-1].startswith(venv_python + " "), (target, lines)


def test_a_missing_virtualenv_is_made_before_the_target_runs(tmp_path: Path) -> None:
    # A copy of the Makefile whose checkout has no .venv yet: make asks bootstrap for it first.
    (tmp_path / "Makefile").write_text((ROOT / "Makefile").read_text())
    if shutil.which("make") is None:
        pytest.skip("make is not installed")
    res = subprocess.run(["make", "-n", "-s", "-C", str(tmp_path), "lint"], capture_output=True, text=True,
                         timeout=60)
    assert res.returncode == 0, res.stderr
    lines = res.stdout.splitlines()
    assert lines[0] == "bash scripts/bootstrap.sh --venv", lines
    assert lines[1].startswith(f"{tmp_path}/.venv/bin/python -m ruff"), lines


def test_PY_still_overrides_the_interpreter() -> None:
    if shutil.which("make") is None:
        pytest.skip("make is not installed")
    res = subprocess.run(["make", "-n", "-s", "-C", str(ROOT), "PY=python3", "lint"], capture_output=True,
                         text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    assert res.stdout.splitlines() == ["python3 -m ruff check disklet operator agent devkit tests e2e bench"]


def test_bootstrap_installs_only_into_the_virtualenv() -> None:
    script = (ROOT / "scripts" / "bootstrap.sh").read_text()
    installs = [line.strip() for line in script.splitlines()
                if re.search(r"\bpip\b.*\binstall\b", line) and not line.strip().startswith(("#", "echo"))]
    assert installs, "bootstrap installs this package somewhere"
    for line in installs:
        assert line.startswith('"$VENV/bin/python" -m pip install'), line
    assert 'python3 -m venv --system-site-packages "$VENV"' in script
    assert 'VENV="$ROOT/.venv"' in script
    assert ".venv/" in (ROOT / ".gitignore").read_text().splitlines()
