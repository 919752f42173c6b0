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


def test_kubectl_completes_the_plugin(tmp_path: Path):
    kubectl = ROOT / ".tools" / "bin" / "kubectl"
    if not kubectl.exists():
        pytest.skip("kubectl not installed (scripts/bootstrap.sh)")
    for name, target in (("kubectl-disklet", "disklet.cli.main import main"),
                         ("kubectl_complete-disklet", "disklet.cli.completion import kubectl_complete as main")):
        shim = tmp_path / name
        shim.write_text(f"#!{sys.executable}\nimport sys\nfrom {target}\nsys.exit(main())\n")
        shim.chmod(shim.stat().st_mode | stat.S_IXUSR)
    env = {**os.environ, "PATH": f"{tmp_path}{os.pathsep}{os.environ.get('PATH', '')}",
           "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "operator"), str(ROOT / "agent")])}

    def complete(*words: str) -> list[str]:
        res = subprocess.run([str(kubectl), "__complete", "disklet", *words], capture_output=True, text=True,  # noqa: S603
                             env=env, timeout=60)
        return res.stdout.splitlines()
    assert "get" in complete("g") and "support-bundle" in complete("")
    assert {"dl", "lvg", "lvgset", "bd"} <= set(complete("get", ""))
    assert "--no-headers" in complete("get", "dl", "--no")
    assert complete("node", "")[:3] == ["apply-disk", "apply-disko", "disks"]
