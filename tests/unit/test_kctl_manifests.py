"""kctl manifest loading: seed style, layoutNixFile inlining, multi-doc, directories, batch refusal."""

from __future__ import annotations

from pathlib import Path

import pytest

from disklet.api.disklayout import DiskLayoutSpec
from disklet.cli.manifests import ManifestError, load_manifests, parse_documents

SEED = """\
kind: DiskLayout
metadata:
  name: prod-data-pool
spec:
  nodeId: kvm-node-192-168-40-105 # controller node id for the target machine
  diskLayout:
    disks:
    - name: data1
      device: /dev/nvme1n1 # adjust to match lsblk on the node
      gpt:
        partitions:
        - name: kcore0
          size: "100%"
          content:
            type: filesystem
            format: ext4
            mountpoint: /var/lib/kcore/volumes1
"""
LVG = """\
apiVersion: disklet.io/v1alpha1
kind: LVMVolumeGroup
metadata: {name: vg-data-n1, labels: {team: storage}}
spec:
  local: {nodeName: n1}
  actualVGNameOnTheNode: vg_data
  fileDevices: [{name: a, directory: /var/lib/disklet/file-devices, size: 10Gi}]
"""
LVGSET = """\
kind: LVMVolumeGroupSet
metadata: {name: fleet}
spec:
  nodeSelector: {matchLabels: {storage: "true"}}
  lvmVolumeGroupTemplate:
    actualVGNameOnTheNode: vg_data
    fileDevices: [{name: a, directory: /var/lib/disklet/file-devices, size: 10Gi}]
"""


def test_seed_style_document_gets_api_version_and_node_name(tmp_path: Path):
    [m] = parse_documents(SEED, "seed.yaml", tmp_path)
    assert m.ref == "DiskLayout/prod-data-pool" and m.source == "seed.yaml:1"
    assert m.obj["apiVersion"] == "disklet.io/v1alpha1" and m.obj["kind"] == "DiskLayout"
    assert m.obj["spec"]["nodeName"] == "kvm-node-192-168-40-105" and "nodeId" not in m.obj["spec"]
    assert isinstance(m.spec, DiskLayoutSpec) and m.spec.disk_layout is not None
    assert "rebuild" not in m.obj["spec"] and "timeoutSeconds" not in m.obj["spec"], "defaults are not sent"
    assert m.obj["metadata"] == {"name": "prod-data-pool"}


def test_layout_nix_file_is_read_next_to_the_manifest_and_inlined(tmp_path: Path):
    (tmp_path / "sub" / "fragments").mkdir(parents=True)
    (tmp_path / "sub" / "fragments" / "d.nix").write_text("{ disko.devices = { }; }\n")
    (tmp_path / "sub" / "m.yaml").write_text(
        "kind: DiskLayout\nmetadata: {name: x}\nspec: {nodeName: n1, layoutNixFile: ./fragments/d.nix}\n")
    [m] = load_manifests(tmp_path / "sub" / "m.yaml")
    assert m.obj["spec"] == {"nodeName": "n1", "layoutNix": "{ disko.devices = { }; }\n"}


def test_missing_layout_nix_file_is_reported_with_its_path(tmp_path: Path):
    (tmp_path / "m.yaml").write_text("kind: DiskLayout\nmetadata: {name: x}\nspec: {nodeName: n1, layoutNixFile: nope.nix}\n")
    with pytest.raises(ManifestError) as exc:
        load_manifests(tmp_path / "m.yaml")
    assert f"{tmp_path / 'm.yaml'}:1 DiskLayout/x: spec.layoutNixFile:" in str(exc.value)
    assert str(tmp_path / "nope.nix") in str(exc.value)


def test_multi_document_yaml_with_all_applyable_kinds(tmp_path: Path):
    text = "---\n" + SEED + "---\n" + LVG + "---\n# only a comment\n---\n" + LVGSET
    ms = parse_documents(text, "all.yaml", tmp_path)
    assert [(m.source, m.ref) for m in ms] == [("all.yaml:2", "DiskLayout/prod-data-pool"),
                                               ("all.yaml:20", "LVMVolumeGroup/vg-data-n1"),
                                               ("all.yaml:30", "LVMVolumeGroupSet/fleet")], "1-based first lines"
    assert ms[1].obj["metadata"]["labels"] == {"team": "storage"}
    assert ms[1].obj["spec"]["actualVGNameOnTheNode"] == "vg_data"


def test_directory_loads_yaml_files_sorted_and_skips_others(tmp_path: Path):
    (tmp_path / "b.yml").write_text(LVG)
    (tmp_path / "a.yaml").write_text(SEED)
    (tmp_path / "notes.txt").write_text("kind: nonsense")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "c.yaml").write_text("kind: nonsense")
    assert [m.ref for m in load_manifests(tmp_path)] == ["DiskLayout/prod-data-pool", "LVMVolumeGroup/vg-data-n1"]


def test_batch_is_refused_with_every_problem_and_its_location(tmp_path: Path):
    (tmp_path / "a.yaml").write_text(SEED + "---\n" + SEED.replace("prod-data-pool", "two")
                                     .replace("kvm-node-192-168-40-105", "n2").replace("mountpoint:", "mountpont:"))
    (tmp_path / "b.yaml").write_text("kind: BlockDevice\nmetadata: {name: dev-1}\n---\n"
                                     "apiVersion: v1\nkind: LVMVolumeGroup\nmetadata: {name: Bad_Name}\nspec: {}\n")
    with pytest.raises(ManifestError) as exc:
        load_manifests(tmp_path)
    text = str(exc.value)
    a, b = tmp_path / "a.yaml", tmp_path / "b.yaml"
    assert f"{a}:35 DiskLayout/two: spec.diskLayout.disks[0].gpt.partitions[0].content.mountpont: unknown field" in text
    assert f"{b}:1: kind 'BlockDevice' is not one kctl applies" in text and "written by the agent" in text
    assert f"{b}:4: apiVersion 'v1' is not served" in text
    assert f"{b}:4 LVMVolumeGroup/Bad_Name: metadata.name" in text
    assert f"{a}:1 " not in text, "the valid document is not blamed"


def test_cross_document_rules(tmp_path: Path):
    with pytest.raises(ManifestError) as exc:
        load_manifests_text(tmp_path, SEED + "---\n" + SEED)
    assert "DiskLayout/prod-data-pool is also defined at" in str(exc.value)
    with pytest.raises(ManifestError) as exc:
        load_manifests_text(tmp_path, SEED + "---\n" + SEED.replace("name: prod-data-pool", "name: other"))
    assert "one DiskLayout per node" in str(exc.value)


def test_structured_layout_rules_beyond_the_schema_are_checked(tmp_path: Path):
    text = SEED.replace("mountpoint: /var/lib/kcore/volumes1", "mountpoint: /var/lib/kcore/volumes1\n"
                        "        - name: later\n          size: 10G\n          content: {type: lvm_pv, vg: vg_missing}")
    with pytest.raises(ManifestError) as exc:
        parse_documents(text, "m.yaml", tmp_path)
    assert "m.yaml:1 DiskLayout/prod-data-pool: spec.diskLayout:" in str(exc.value)


def test_seed_node_id_conflicting_with_node_name(tmp_path: Path):
    with pytest.raises(ManifestError) as exc:
        parse_documents(SEED.replace("  nodeId:", "  nodeName: other\n  nodeId:"), "m.yaml", tmp_path)
    assert "disagree; keep only nodeName" in str(exc.value)


def test_two_layout_sources_and_bad_yaml(tmp_path: Path):
    with pytest.raises(ManifestError) as exc:
        parse_documents("kind: DiskLayout\nmetadata: {name: x}\nspec: {nodeName: n, layoutNix: '{}', layoutNixFile: a.nix}\n",
                        "m.yaml", tmp_path)
    assert "exactly one layout source" in str(exc.value)
    with pytest.raises(ManifestError) as exc:
        parse_documents("kind: [unclosed\n", "m.yaml", tmp_path)
    assert "m.yaml:2: not valid YAML" in str(exc.value)
    with pytest.raises(ManifestError, match="no such file"):
        load_manifests(tmp_path / "missing.yaml")


def load_manifests_text(tmp_path: Path, text: str):
    path = tmp_path / "m.yaml"
    path.write_text(text)
    return load_manifests(path)


def test_errors_name_the_line_of_the_field_in_plain_words(tmp_path: Path):
    text = SEED.replace("device: /dev/nvme1n1", "device: nvme1n1").replace('size: "100%"', "size: 12 parsecs")
    with pytest.raises(ManifestError) as exc:
        parse_documents("# leading comment\n" + text, "m.yaml", tmp_path)
    msg = str(exc.value)
    assert "m.yaml:10 DiskLayout/prod-data-pool: spec.diskLayout.disks[0].device:" in msg, msg
    assert "m.yaml:14 DiskLayout/prod-data-pool: spec.diskLayout.disks[0].gpt.partitions[0].size: '12 parsecs'" in msg
    for leak in ("String should match pattern", "Value error,", "^", "Input should"):
        assert leak not in msg, (leak, msg)


def test_human_message_translates_pydantic_wording():
    from disklet.cli.manifests import human_message
    assert human_message({"type": "value_error", "msg": "Value error, size 10G must be Gi"}) == "size 10G must be Gi"
    assert human_message({"type": "literal_error", "msg": "Input should be 'a' or 'b'"}) == "must be 'a' or 'b'"
    assert human_message({"type": "string_too_long", "msg": "String should have at most 3 characters"}) == \
        "must have at most 3 characters"
    assert human_message({"type": "missing", "msg": "Field required"}) == "is required"
    assert "pattern" not in human_message({"type": "string_pattern_mismatch", "input": "x y",
                                          "msg": "String should match pattern '^[a-z]+$'"})
