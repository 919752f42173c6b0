"""helm uninstall (last: it ends the session's release): the pods go, the VGs on the host and the
CRDs stay (crds.keep, docs/helm.md), and the objects are still there."""

from __future__ import annotations

from tests.node.release import GROUP, Host, Release


def test_helm_uninstall_leaves_vgs_and_crds(release: Release, host: Host) -> None:
    vgs_before = host.vgs()
    lvgs_before = {o["metadata"]["name"] for o in (release.get(f"lvmvolumegroups.{GROUP}") or {})["items"]}
    assert vgs_before and lvgs_before, "the earlier scenarios left no VG to keep"
    release.helm("uninstall", release.name, "--namespace", release.namespace, "--wait", "--timeout", "180s",
                 timeout=240)
    release.installed = False
    release.wait(lambda: not release.pods("agent") and not release.pods("operator"), timeout=180,
                 what="the chart's pods to be gone")
    for crd in ("disklayouts", "lvmvolumegroups", "lvmvolumegroupsets", "blockdevices"):
        assert release.get("crd", f"{crd}.{GROUP}") is not None, f"CRD {crd} removed by helm uninstall"
    lvgs_after = {o["metadata"]["name"] for o in (release.get(f"lvmvolumegroups.{GROUP}") or {})["items"]}
    assert lvgs_after == lvgs_before
    assert host.vgs() == vgs_before, "helm uninstall changed the node's VGs"
    # Nothing is left to release the objects' finalizers (that is what the agent is for):
    # the session removes them, and the host's VGs with the host sandbox.
    release.release_objects()
