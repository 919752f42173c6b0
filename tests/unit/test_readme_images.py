"""README's image-loading lines as the node tier reads them: the containerd lines it runs as written
(tests/node/release.py) load both archives into the kubelet's namespace, k8s.io."""

from __future__ import annotations

import shlex

from tests.node.release import COMPONENTS, readme_ctr_imports


def test_readme_ctr_lines_load_both_archives_into_k8s_io() -> None:
    lines = readme_ctr_imports()
    archives = sorted(f"build/images/disklet-{c}.oci" for c in COMPONENTS)
    assert sorted(shlex.split(line)[-1] for line in lines) == archives, lines
    for line in lines:
        argv = shlex.split(line)
        assert argv[:2] == ["ctr", "-n"] and argv[2] == "k8s.io", line  # the CRI plugin's namespace
        assert argv[3:5] == ["images", "import"], line
