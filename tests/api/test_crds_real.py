"""Every generated CRD installed on a real kube-apiserver (drift checks alone are not enough)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from devkit.envtest import Cluster, ControlPlane, assets_dir, unavailable_reason

REPO = Path(__file__).resolve().parents[2]
CRD_DIRS = [REPO / "crds", REPO / "charts" / "disklet" / "files" / "crds"]  # the chart renders the latter


def _crd_files(d: Path) -> list[Path]:
    return sorted(d.glob("disklet.io_*.yaml"))


@pytest.mark.timeout(180)
@pytest.mark.parametrize("crd_dir", CRD_DIRS, ids=["crds", "chart-crds"])
def test_every_generated_crd_is_accepted_and_established(envtest: Cluster, crd_dir: Path) -> None:
    files = _crd_files(crd_dir)
    assert len(files) == 4, files
    out = envtest.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(crd_dir))
    assert "Warning" not in out.stderr, out.stderr
    for f in files:
        name = yaml.safe_load(f.read_text())["metadata"]["name"]
        envtest.kubectl("wait", "--for", "condition=Established", "--timeout", "60s", f"crd/{name}")
        crd = envtest.get("crd", name)
        assert crd is not None
        conds = {c["type"]: c["status"] for c in crd["status"]["conditions"]}
        assert conds.get("NamesAccepted") == "True", conds
        assert conds.get("NonStructuralSchema") in (None, "False"), conds
        # What the server stored is what we generated (nothing pruned or defaulted away).
        assert crd["spec"]["versions"] == yaml.safe_load(f.read_text())["spec"]["versions"]


def test_explain_works_for_every_kind(envtest: Cluster) -> None:
    envtest.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(REPO / "crds"))
    for f in _crd_files(REPO / "crds"):
        crd = yaml.safe_load(f.read_text())
        name = crd["metadata"]["name"]
        envtest.kubectl("wait", "--for", "condition=Established", "--timeout", "60s", f"crd/{name}")
        plural = crd["spec"]["names"]["plural"]
        schema = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
        field = f"{plural}.spec" if "spec" in schema["properties"] else f"{plural}.status"
        out = envtest.wait_for(lambda f=field: envtest.kubectl("explain", f, check=False).stdout, timeout=30,
                               what=f"kubectl explain {field}")
        assert "DESCRIPTION" in out and "FIELDS" in out, out


@pytest.mark.timeout(120)
def test_control_plane_teardown_leaves_nothing(envtest: Cluster) -> None:
    """A second, apiserver-only control plane: started, used, stopped, proven gone. (Asks for the
    session's ``envtest`` only so that a missing tier skips in the one shared line.)"""
    reason = unavailable_reason()
    if reason:
        pytest.skip(reason)
    assets = assets_dir()
    assert assets is not None
    cp = ControlPlane(assets=assets, controller_manager=False).start()
    pids = [p.popen.pid for p in cp.procs]
    workdir = cp.workdir
    try:
        assert cp.get("namespace", "default") is not None
    finally:
        cp.stop()
    assert not workdir.exists()
    assert cp.leftovers() == []
    for pid in pids:
        assert not Path(f"/proc/{pid}").exists(), f"pid {pid} still exists"
