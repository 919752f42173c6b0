"""README's "Try it on a cluster" lines as the node tier reads and runs them (tests/node/release.py):
the containerd lines load both archives into the kubelet's namespace, k8s.io; the install block
installs over make images' values file and waits for both workloads of the release."""

from __future__ import annotations

import shlex

from tests.node.release import COMPONENTS, readme_ctr_imports, readme_install, readme_release


def test_readme_ctr_lines_load_both_archives_into_k8s_io() -> None:
    lines = readme_ctr_imports()
    archives = sorted(f"build/images/disklet-{c}.oci" for c in COMPONENTS)
    assert sorted(shlex.split(line)[-1] for line in lines) == archives, lines
    for line in lines:
        argv = shlex.split(line)
        assert argv[:2] == ["ctr", "-n"] and argv[2] == "k8s.io", line  # the CRI plugin's namespace
        assert argv[3:5] == ["images", "import"], line


def test_readme_install_block_is_what_the_node_tier_runs() -> None:
    lines = readme_install()
    name, namespace = readme_release(lines[0])
    assert "-f build/images/values.yaml" in lines[0], lines[0]
    # The lines after helm install wait for both of the release's workloads in its namespace.
    waits = sorted(shlex.split(line)[-1] for line in lines[1:] if " rollout status " in line)
    assert waits == [f"daemonset/{name}-agent", f"deployment/{name}-operator"], lines
    assert all(f"-n {namespace}" in line for line in lines[1:]), lines
