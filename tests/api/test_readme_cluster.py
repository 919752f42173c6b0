"""README's "On a cluster" block, run as written on the real API server: the fenced block is read
out of README.md and each command runs in bash, in order, with kctl and kubectl on PATH and a Node
to discover. Nothing here runs an agent, so the last command, `kctl rollout status`, cannot see the
set converge: it runs with a short --timeout and must report on the set it was told about (the
rollout itself is the e2e and LVMVolumeGroupSet tests' subject)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from devkit.realkube import RealKube
from tests.api.kctl_fixtures import DL, LVG
from tests.api.operator_fixtures import node_object

pytestmark = pytest.mark.api

REPO = Path(__file__).resolve().parents[2]
LVGSET = "disklet.io/v1alpha1/lvmvolumegroupsets"


def readme_cluster_block() -> list[str]:
    text = (REPO / "README.md").read_text()
    section = text[text.index("On a cluster:"):]
    block = re.search(r"```sh\n(.*?)```", section, re.S)
    assert block, "README's 'On a cluster' has no ```sh block"
    return [line for line in block.group(1).splitlines() if line.strip() and not line.lstrip().startswith("#")]


def test_the_block_discovers_a_node_and_applies_what_it_checks() -> None:
    lines = readme_cluster_block()
    assert lines[0].startswith("NODE=$(kubectl get nodes"), lines[0]
    assert any("kctl apply -f examples/lvmvolumegroupset-file.yaml" in line for line in lines), \
        "the set is applied before its rollout is followed"
    for name in ("disklayout-structured-ext4.yaml", "lvmvolumegroup-file-only.yaml"):
        assert "your-node-name" in (REPO / "examples" / name).read_text(), f"{name}: an obvious placeholder"


@pytest.fixture()
def kube(real_kube: RealKube) -> RealKube:
    return real_kube


def test_readme_cluster_commands_run_as_written(kube: RealKube, tmp_path: Path) -> None:
    kube.seed("v1/nodes", node_object("readme-node-1"))
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    kctl = bin_dir / "kctl"
    kctl.write_text(f"#!{sys.executable}\nimport sys\nfrom disklet.cli.main import main\nsys.exit(main())\n")
    kctl.chmod(0o755)
    work = tmp_path / "work"
    work.mkdir()
    (work / "examples").symlink_to(REPO / "examples")
    env = {**os.environ, "KUBECONFIG": str(kube.kubeconfig),
           "PATH": f"{bin_dir}:{REPO / '.tools' / 'bin'}:{os.environ.get('PATH', '')}",
           "PYTHONPATH": os.pathsep.join([str(REPO), str(REPO / "operator"), str(REPO / "agent")])}
    shell_state = ""
    try:
        for line in readme_cluster_block():
            command = line.split("  #")[0].rstrip()
            ran = command.replace("--timeout 10m", "--timeout 3s")
            res = subprocess.run(["bash", "-c", f"{shell_state}\n{ran}\necho \"__NODE=$NODE\""],
                                 cwd=work, env=env, capture_output=True, text=True, timeout=120)
            if command.startswith("NODE="):
                node = res.stdout.strip().rsplit("__NODE=", 1)[-1]
                assert node == "readme-node-1", (node, res.stderr)
                shell_state = f"NODE={node}"
            out = res.stdout + res.stderr
            if command.startswith("kctl diff"):
                assert res.returncode in (0, 1), (command, out)  # 1: differences, as kubectl diff
            elif command.startswith("kctl rollout status"):
                assert "scratch" in out and "not found" not in out.lower(), (command, out)
            else:
                assert res.returncode == 0, (command, out)
        layout = kube.read(DL, "prod-data-pool")
        assert layout is not None and layout["spec"]["nodeName"] == "readme-node-1"
        lvg = kube.read(LVG, "data-readme-node-1")
        assert lvg is not None and lvg["spec"]["local"]["nodeName"] == "readme-node-1"
        assert kube.read(LVGSET, "scratch") is not None
        labels = kube.read("v1/nodes", "readme-node-1")["metadata"]["labels"]
        assert labels.get("disklet.io/scratch") == "true"
    finally:
        for key, name in ((DL, "prod-data-pool"), (LVG, "data-readme-node-1"), (LVGSET, "scratch")):
            kube.delete(key, name)
