"""`kubectl disklet` is kctl: the console script, the krew manifest, and kubectl finding the plugin."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import yaml

from disklet import __version__

ROOT = Path(__file__).resolve().parents[2]


def test_console_scripts_and_krew_manifest():
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts["kubectl-disklet"] == scripts["kctl"] == "disklet.cli.main:main"
    krew = yaml.safe_load((ROOT / "plugins" / "krew" / "disklet.yaml").read_text())
    assert krew["kind"] == "Plugin" and krew["metadata"]["name"] == "disklet"
    assert krew["spec"]["version"] == f"v{__version__}"
    assert all(p["bin"] == "kubectl-disklet" for p in krew["spec"]["platforms"])


def test_kubectl_runs_the_plugin(tmp_path: Path):
    kubectl = ROOT / ".tools" / "bin" / "kubectl"
    if not kubectl.exists():
        pytest.skip("kubectl not installed (scripts/bootstrap.sh)")
    shim = tmp_path / "kubectl-disklet"  # what `pip install` creates for the console script
    shim.write_text(f"#!{sys.executable}\nimport sys\nfrom disklet.cli.main import main\nsys.exit(main())\n")
    shim.chmod(shim.stat().st_mode | stat.S_IXUSR)
    env = {**os.environ, "PATH": f"{tmp_path}{os.pathsep}{os.environ.get('PATH', '')}",
           "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "operator"), str(ROOT / "agent")])}
    listed = subprocess.run([str(kubectl), "plugin", "list"], capture_output=True, text=True, env=env, timeout=60)  # noqa: S603
    assert str(shim) in listed.stdout, listed.stdout + listed.stderr
    version = subprocess.run([str(kubectl), "disklet", "--version"], capture_output=True, text=True, env=env,  # noqa: S603
                             timeout=60)
    assert version.returncode == 0 and version.stdout.strip() == f"kubectl disklet {__version__}", version
    usage = subprocess.run([str(kubectl), "disklet", "get"], capture_output=True, text=True, env=env, timeout=60)  # noqa: S603
    assert usage.returncode == 2 and usage.stderr.startswith("error: kubectl disklet get:"), usage.stderr
