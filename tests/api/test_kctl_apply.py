"""kctl diff/apply on the real API server: created → unchanged → configured, batch refusal, no
writes on diff (counted by the server's own request metrics)."""

from __future__ import annotations

from pathlib import Path

import pytest
from kctl_fixtures import DL, LVG, NIX_FRAGMENT, SEED_STYLE, kctl


@pytest.fixture()
def kube(real_kube):
    return real_kube


async def test_apply_creates_then_unchanged_then_configured(kube, tmp_path: Path):
    manifest = tmp_path / "day2-disk-layout.yaml"
    manifest.write_text(SEED_STYLE)

    r = await kctl(kube, "apply", "-f", str(manifest))
    assert r.code == 0, r.err
    assert r.out == "DiskLayout/prod-data-pool created\n"
    live = kube.read(DL, "prod-data-pool")
    assert live is not None
    assert live["spec"]["nodeName"] == "kvm-node-1" and "nodeId" not in live["spec"]
    managers = {(m["manager"], m["operation"]) for m in live["metadata"]["managedFields"]}
    assert managers == {("kctl", "Apply")}, "server-side apply with field manager kctl"
    owned = live["metadata"]["managedFields"][0]["fieldsV1"]["f:spec"]
    assert live["spec"]["rebuild"] is True and "f:rebuild" not in owned, \
        "only fields the user wrote are applied (the default is the server's)"

    r = await kctl(kube, "apply", "-f", str(manifest))
    assert (r.code, r.out) == (0, "DiskLayout/prod-data-pool unchanged\n")
    assert kube.read(DL, "prod-data-pool")["metadata"]["generation"] == 1

    manifest.write_text(SEED_STYLE.replace("format: ext4", "format: xfs"))
    r = await kctl(kube, "apply", "-f", str(manifest))
    assert (r.code, r.out) == (0, "DiskLayout/prod-data-pool configured\n")
    live = kube.read(DL, "prod-data-pool")
    assert live["metadata"]["generation"] == 2
    assert live["spec"]["diskLayout"]["disks"][0]["gpt"]["partitions"][0]["content"]["format"] == "xfs"


async def test_apply_inlines_layout_nix_file_and_applies_a_directory(kube, tmp_path: Path):
    (tmp_path / "fragments").mkdir()
    (tmp_path / "fragments" / "sdb.nix").write_text(NIX_FRAGMENT)
    (tmp_path / "b-node2.yml").write_text(
        "kind: DiskLayout\nmetadata: {name: node2-data}\nspec: {nodeName: node-2, layoutNixFile: ./fragments/sdb.nix}\n")
    (tmp_path / "a-lvg.yaml").write_text(
        "apiVersion: disklet.io/v1alpha1\nkind: LVMVolumeGroup\nmetadata: {name: vg-data-n1}\n"
        "spec:\n  local: {nodeName: node-1}\n  actualVGNameOnTheNode: vg_data\n"
        "  fileDevices: [{name: a, directory: /var/lib/disklet/file-devices, size: 10Gi}]\n---\n")
    (tmp_path / "README.md").write_text("not a manifest")
    r = await kctl(kube, "apply", "-f", str(tmp_path))
    assert r.code == 0, r.err
    assert r.out == "LVMVolumeGroup/vg-data-n1 created\nDiskLayout/node2-data created\n"
    live = kube.read(DL, "node2-data")
    assert live["spec"]["layoutNix"] == NIX_FRAGMENT and "layoutNixFile" not in live["spec"]
    assert kube.read(LVG, "vg-data-n1")["spec"]["actualVGNameOnTheNode"] == "vg_data"


async def test_apply_refuses_the_whole_batch_when_one_document_is_invalid(kube, tmp_path: Path):
    good = SEED_STYLE
    bad = SEED_STYLE.replace("prod-data-pool", "broken").replace("kvm-node-1", "kvm-node-2") \
        .replace("/dev/nvme1n1", "nvme1n1").replace("size: \"100%\"", "size: 50%")
    (tmp_path / "fleet.yaml").write_text(good + "---\n" + bad)
    before = kube.mutations()
    r = await kctl(kube, "apply", "-f", str(tmp_path / "fleet.yaml"))
    assert r.code == 1
    assert "nothing was sent" in r.err
    assert f"{tmp_path / 'fleet.yaml'}:29 DiskLayout/broken: spec.diskLayout.disks[0].device: 'nvme1n1' is not allowed" in r.err
    assert "should match pattern" not in r.err
    assert "partitions[0].size" in r.err
    assert kube.read_all(DL) == [] and kube.mutations() == before


async def test_apply_refuses_a_batch_whose_layout_fails_preflight(kube, tmp_path: Path):
    (tmp_path / "empty.yaml").write_text(
        "kind: DiskLayout\nmetadata: {name: empty}\nspec: {nodeName: n1, layoutNix: '{ disko.devices = { }; }'}\n")
    (tmp_path / "ok.yaml").write_text(SEED_STYLE)
    before = kube.mutations()
    r = await kctl(kube, "apply", "-f", str(tmp_path))
    assert r.code == 1 and "no_target_devices" in r.err and "nothing was sent" in r.err
    assert kube.mutations() == before
    r = await kctl(kube, "apply", "-f", str(tmp_path), "--skip-preflight")
    assert r.code == 0, r.err
    assert sorted(o["metadata"]["name"] for o in kube.read_all(DL)) == ["empty", "prod-data-pool"]


async def test_diff_new_then_changed_never_writes(kube, tmp_path: Path):
    manifest = tmp_path / "day2-disk-layout.yaml"
    manifest.write_text(SEED_STYLE)
    before = kube.mutations()
    r = await kctl(kube, "diff", "-f", str(manifest))
    assert r.code == 1, r.err  # kubectl diff: 1 = differences
    assert "pre-flight: pending" in r.out and "target devices: /dev/nvme1n1" in r.out
    assert "cluster: new (no DiskLayout/prod-data-pool in the cluster)" in r.out
    assert "+++ manifest/prod-data-pool" in r.out and '+        "device" = "/dev/nvme1n1";' in r.out
    assert kube.mutations() == before

    assert (await kctl(kube, "apply", "-f", str(manifest))).code == 0
    r = await kctl(kube, "diff", "-f", str(manifest))
    assert "layout body: no changes" in r.out and "0 new, 0 changed, 1 unchanged" in r.out
    assert r.code == 0, r.err  # no differences
    r = await kctl(kube, "diff", "-f", str(manifest), "-o", "name")
    assert (r.code, r.out) == (0, "")

    manifest.write_text(SEED_STYLE.replace("/dev/nvme1n1", "/dev/nvme2n1") + "  rebuild: false\n")
    before = kube.mutations()
    r = await kctl(kube, "diff", "-f", str(manifest))
    assert r.code == 1, r.err
    assert "--- live/prod-data-pool" in r.out
    assert '-        "device" = "/dev/nvme1n1";' in r.out and '+        "device" = "/dev/nvme2n1";' in r.out
    assert "change: rebuild: true -> false" in r.out
    assert "0 new, 1 changed, 0 unchanged" in r.out
    r = await kctl(kube, "diff", "-f", str(manifest), "-o", "name")
    assert (r.code, r.out) == (1, "disklayout.disklet.io/prod-data-pool\n")
    assert kube.mutations() == before
    assert kube.read(DL, "prod-data-pool")["spec"]["diskLayout"]["disks"][0]["device"] == "/dev/nvme1n1"


async def test_diff_reports_a_layout_that_would_be_refused(kube, tmp_path: Path):
    (tmp_path / "empty.yaml").write_text(
        "kind: DiskLayout\nmetadata: {name: empty}\nspec: {nodeName: n1, layoutNix: '{ disko.devices = { }; }'}\n")
    r = await kctl(kube, "diff", "-f", str(tmp_path / "empty.yaml"))
    assert r.code == 2  # kubectl diff: >1 = an error (the layout would be refused)
    assert "pre-flight: refused (no_target_devices)" in r.out


LVG_OUTSIDE = """\
apiVersion: disklet.io/v1alpha1
kind: LVMVolumeGroup
metadata: {name: vg-outside}
spec:
  local: {nodeName: node-1}
  actualVGNameOnTheNode: vg_outside
  fileDevices: [{name: a, directory: DIR, size: 10Gi}]
"""


async def test_apply_refuses_what_diff_refuses_and_creates_nothing(kube, tmp_path: Path):
    """An LVM directory outside the agents' base: diff says REFUSED (exit 2), so apply sends nothing (exit 1)."""
    manifest = tmp_path / "lvg.yaml"
    manifest.write_text(LVG_OUTSIDE.replace("DIR", "/srv/elsewhere"))
    diff = await kctl(kube, "diff", "-f", str(manifest))
    assert diff.code == 2 and "REFUSED: fileDevices[a]: directory '/srv/elsewhere' is outside" in diff.out
    before = kube.mutations()
    r = await kctl(kube, "apply", "-f", str(manifest))
    assert r.code == 1, r.out
    assert "nothing was sent" in r.err
    assert "node node-1: REFUSED: fileDevices[a]: directory '/srv/elsewhere' is outside" in r.err
    assert "--force-refused" in r.err
    assert r.out == ""
    assert kube.read(LVG, "vg-outside") is None and kube.mutations() == before

    # explicit intent sends it (and says so)
    r = await kctl(kube, "apply", "-f", str(manifest), "--force-refused")
    assert r.code == 0, r.err
    assert "sent although the plan refuses it" in r.err and r.out == "LVMVolumeGroup/vg-outside created\n"
    assert kube.read(LVG, "vg-outside")["spec"]["fileDevices"][0]["directory"] == "/srv/elsewhere"


async def test_a_wrong_directory_is_refused_with_a_hint_that_can_be_followed(kube, tmp_path: Path):
    manifest = tmp_path / "lvg.yaml"
    manifest.write_text(LVG_OUTSIDE.replace("DIR", "/srv/elsewhere"))
    assert (await kctl(kube, "apply", "-f", str(manifest), "--force-refused")).code == 0
    manifest.write_text(LVG_OUTSIDE.replace("DIR", "/var/lib/disklet/file-devices"))
    r = await kctl(kube, "apply", "-f", str(manifest))  # the plan knows the server's transition rules
    assert r.code == 1 and "the directory is immutable" in r.err and "nothing was sent" in r.err
    r = await kctl(kube, "apply", "-f", str(manifest), "--force-refused")  # the API server's own answer
    assert r.code == 1
    assert "add a new entry instead" not in r.err, "the entry can never be removed: adding one fixes nothing"
    assert "entries are never removed" in r.err and "delete and re-create the LVMVolumeGroup" in r.err
    assert kube.read(LVG, "vg-outside")["spec"]["fileDevices"][0]["directory"] == "/srv/elsewhere"


async def test_apply_and_delete_dry_runs_store_nothing(kube, tmp_path: Path):
    manifest = tmp_path / "day2-disk-layout.yaml"
    manifest.write_text(SEED_STYLE)
    before = kube.mutations()
    r = await kctl(kube, "apply", "-f", str(manifest), "--dry-run=client")
    assert (r.code, r.out) == (0, "DiskLayout/prod-data-pool created (dry run)\n"), r.err
    assert kube.mutations() == before
    r = await kctl(kube, "apply", "-f", str(manifest), "--dry-run=server")
    assert (r.code, r.out) == (0, "DiskLayout/prod-data-pool created (server dry run)\n"), r.err
    assert kube.read(DL, "prod-data-pool") is None

    bad = tmp_path / "bad.yaml"  # the server still judges a server dry run: nodeName is immutable
    assert (await kctl(kube, "apply", "-f", str(manifest))).code == 0
    bad.write_text(SEED_STYLE.replace("kvm-node-1", "kvm-node-9"))
    r = await kctl(kube, "apply", "-f", str(bad), "--dry-run=server")
    assert r.code == 1 and "immutable" in r.err
    assert kube.read(DL, "prod-data-pool")["spec"]["nodeName"] == "kvm-node-1"

    before = kube.mutations()
    r = await kctl(kube, "delete", "dl", "prod-data-pool", "--dry-run=client")
    assert (r.code, r.out) == (0, "DiskLayout/prod-data-pool deleted (dry run)\n"), r.err
    assert kube.mutations() == before, "a client dry run sends nothing"
    version = kube.read(DL, "prod-data-pool")["metadata"]["resourceVersion"]
    r = await kctl(kube, "delete", "dl", "prod-data-pool", "--dry-run=server")
    assert (r.code, r.out) == (0, "DiskLayout/prod-data-pool deleted (server dry run)\n"), r.err
    live = kube.read(DL, "prod-data-pool")
    assert live is not None and live["metadata"]["resourceVersion"] == version
    assert "deletionTimestamp" not in live["metadata"]


async def test_diff_prints_the_refusal_codes_own_advice(kube, tmp_path: Path):
    (tmp_path / "empty.yaml").write_text(
        "kind: DiskLayout\nmetadata: {name: empty}\nspec: {nodeName: n1, layoutNix: '{ disko.devices = { }; }'}\n")
    r = await kctl(kube, "diff", "-f", str(tmp_path / "empty.yaml"))
    assert r.code == 2
    assert "next step: Add `disko.devices.disk.<n>.device` entries. Clears when the DiskLayout is changed." in r.out


async def test_a_second_layout_for_a_node_is_refused_by_diff_and_apply(kube, tmp_path: Path):
    """The operator refuses a second DiskLayout for a node (another_disk_layout_for_node); diff says
    so before anything is written, apply sends nothing, and two layouts for one node in one batch
    are caught offline too."""
    import yaml
    from kctl_fixtures import disk_layout

    kube.seed(DL, disk_layout("first-of-n1", "n1"))
    second = tmp_path / "second.yaml"
    second.write_text(yaml.safe_dump(disk_layout("second-of-n1", "n1", device="/dev/nvme2n1")))
    r = await kctl(kube, "diff", "-f", str(second))
    assert r.code == 2, (r.out, r.err)
    assert "another_disk_layout_for_node" in r.out and "first-of-n1 (in the cluster)" in r.out, r.out
    assert "next step:" in r.out
    r = await kctl(kube, "apply", "-f", str(second))
    assert r.code != 0 and kube.read(DL, "second-of-n1") is None, (r.out, r.err)
    assert "refused: another_disk_layout_for_node: node n1 already has DiskLayout first-of-n1" in r.err, r.err

    batch = tmp_path / "batch.yaml"
    batch.write_text(yaml.safe_dump_all([disk_layout("a-n7", "n7"), disk_layout("b-n7", "n7", device="/dev/sdz")]))
    r = await kctl(kube, "diff", "--offline", "-f", str(batch))
    assert r.code == 2 and "n7" in r.err and "nothing was sent" in r.err, r.err  # the batch check
    # the layout that holds the node is itself fine
    first = tmp_path / "first.yaml"
    first.write_text(yaml.safe_dump(disk_layout("first-of-n1", "n1")))
    r = await kctl(kube, "diff", "-f", str(first))
    assert r.code in (0, 1) and "another_disk_layout_for_node" not in r.out, (r.out, r.err)
