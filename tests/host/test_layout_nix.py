"""Rendered and raw bodies against the real nix-instantiate (restrict-eval sandbox, docs/design/disklayout.md#rendering and #extraction)."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from disklet.api.disklayout import DiskLayoutSpec, Phase
from disklet.hostcmd import HostRunner
from disklet.layout import (
    MalformedLayout,
    evaluate_nix,
    extract_targets,
    layout_hash,
    preflight,
    render_disko_nix,
    resolve_layout,
    static_evaluate,
)
from disklet.layout.mountpaths import close_pool_roots
from disklet.layout.render import devices_value
from disklet.layout.samples import EXT4, MIXED, n_disks, structured

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
GOLDEN = Path(__file__).resolve().parents[1] / "unit" / "golden"


def _json_roundtrip(value: Any) -> Any:
    return json.loads(json.dumps(value))


@pytest.mark.parametrize("data", [EXT4, MIXED, n_disks(3)], ids=["ext4", "mixed", "three"])
def test_rendered_bodies_evaluate_to_the_structure(data: dict[str, Any]) -> None:
    layout = structured(data)
    body = render_disko_nix(layout)
    value = evaluate_nix(body)
    assert value == {"disko": {"devices": _json_roundtrip(devices_value(layout))}}
    assert value == static_evaluate(body)


@pytest.mark.parametrize("golden", sorted(GOLDEN.glob("*.nix")), ids=lambda p: p.name)
def test_golden_files_evaluate(golden: Path) -> None:
    body = golden.read_text()
    extraction = extract_targets(body)
    assert extraction.method == "eval"
    assert extraction.devices
    assert extraction.devices_value == static_evaluate(body)["disko"]["devices"]


INJECTIONS = [
    '/srv/x"; y = import /etc/passwd; "',
    '/srv/${builtins.readFile "/etc/passwd"}',
    '/srv/${builtins.readFile /etc/passwd}',
    "/srv/\\${x}",
    "/srv/x\\",
    "/srv/''${x}",
    "/srv/$${x}",
]


@pytest.mark.parametrize("mountpoint", INJECTIONS)
def test_injection_evaluates_to_the_literal(mountpoint: str) -> None:
    from disklet.layout.artifact import render_artifact

    value = copy.deepcopy(devices_value(structured(EXT4)))
    value["disk"]["data1"]["content"]["partitions"]["kcore0"]["content"]["mountpoint"] = mountpoint
    extraction = extract_targets(render_artifact(value))
    part = extraction.devices_value["disk"]["data1"]["content"]["partitions"]["kcore0"]
    assert part["content"]["mountpoint"] == mountpoint
    assert extraction.devices == ["/dev/nvme1n1"]


@pytest.mark.parametrize("text", [*INJECTIONS, '"', "\\", "${", "''", ""])
def test_the_one_emitter_is_exact_for_the_real_evaluator(text: str) -> None:
    """Hostile strings as values and as attribute names, in both orders the emitter prints."""
    from disklet.layout.nixliteral import disko_devices_file

    value = {text: {"s": text, "l": [text, None, True, 7]}, "plain": text}
    for sort_keys in (True, False):
        assert evaluate_nix(disko_devices_file("# t\n", value, sort_keys=sort_keys)) == \
            {"disko": {"devices": value}}


@pytest.mark.parametrize("body", [
    "{ disko.devices.disk.x.device = builtins.readFile /etc/passwd; }",
    '{ disko.devices.disk.x.device = builtins.readFile "/etc/passwd"; }',
    "{ disko.devices = import /etc/passwd; }",
    "{ disko.devices.disk.x.device = toString (builtins.readDir /etc); }",
    '{ disko.devices.disk.x.device = builtins.fetchurl "http://127.0.0.1:1/x"; }',
])
def test_restrict_eval_blocks_file_access(body: str) -> None:
    with pytest.raises(MalformedLayout, match="forbidden"):
        evaluate_nix(body)


def test_search_path_from_the_environment_is_ignored() -> None:
    runner = HostRunner(env={"NIX_PATH": "etc=/etc"})
    with pytest.raises(MalformedLayout, match="not found in the Nix search path|forbidden|cannot look up"):
        evaluate_nix("{ x = builtins.readFile <etc/passwd>; }", runner)


def test_pure_eval_removes_current_time() -> None:
    assert evaluate_nix("{ t = builtins.currentTime or 0; }") == {"t": 0}


@pytest.mark.parametrize("body", ["{ lib, ... }: { disko.devices = { }; }", "{ a }: { }", "x: x",
                                  "{ ... }: { disko.devices.disk.x.device = \"/dev/sda\"; }"])
def test_function_bodies_are_malformed(body: str) -> None:
    with pytest.raises(MalformedLayout, match="function"):
        evaluate_nix(body)


def test_syntax_error_and_timeout() -> None:
    with pytest.raises(MalformedLayout, match="syntax error|unexpected"):
        evaluate_nix("{ a = ; }")
    with pytest.raises(MalformedLayout, match="infinite recursion"):
        evaluate_nix("let x = x; in { a = x; }")
    with pytest.raises(MalformedLayout, match="timed out|resource limits"):
        evaluate_nix("let f = n: if n < 0 then 0 else f (n + 1) + 0; in { a = builtins.genList (i: f i) 100000000; }",
                     timeout=1)


def test_memory_bomb_is_stopped_by_the_address_space_limit() -> None:
    with pytest.raises(MalformedLayout, match="resource limits"):
        evaluate_nix("{ a = builtins.length (builtins.genList (i: [ i i i i ]) 200000000); }",
                     timeout=60, memory_bytes=256 << 20)


# Extraction edge cases the seed's lexical scanner missed: evaluation finds them all.
EDGE_BODIES: list[tuple[str, list[str]]] = [
    ('{ disko.devices.disk.x = { "device" = "/dev/sdb"; }; }', ["/dev/sdb"]),
    ('{ disko.devices.disk.x = { device =\n  "/dev/sdc"; }; }', ["/dev/sdc"]),
    ('let d = "/dev/sdd"; in { disko.devices.disk.x.device = d; }', ["/dev/sdd"]),
    ("{ disko.devices.disk.x.device = ''/dev/sde''; }", ["/dev/sde"]),
    ('let p = "/dev/"; in { disko.devices.disk.x.device = "${p}sdf"; }', ["/dev/sdf"]),
    ('{ disko.devices.disk.x.device = "/dev/" + "sdg"; }', ["/dev/sdg"]),
    ('with { d = "/dev/sdh"; }; { disko.devices.disk.x.device = d; }', ["/dev/sdh"]),
    ("""{ disko.devices.zpool.tank = { type = "zpool"; mode.topology = { type = "topology";
        vdev = [ { mode = "mirror"; members = [ "/dev/sda" "/dev/sdb" ]; } ];
        log = [ { members = [ "/dev/nvme0n1" ]; } ]; spare = [ "/dev/sdz" ]; cache = [ "/dev/nvme3n1" ]; }; }; }""",
     ["/dev/sda", "/dev/sdb", "/dev/nvme0n1", "/dev/sdz", "/dev/nvme3n1"]),
]


@pytest.mark.parametrize("body,expected", EDGE_BODIES)
def test_edge_cases_eval_finds_all_static_finds_or_refuses(body: str, expected: list[str]) -> None:
    assert extract_targets(body).devices == expected
    try:
        static = extract_targets(body, force_static=True)
    except MalformedLayout as exc:
        assert "install nix or use diskLayout" in str(exc)
    else:
        assert static.devices == expected


@pytest.mark.parametrize("body", [
    '{ disko.devices.disk.x = { device = "/dev/sda"; content = { type = "gpt"; partitions.p = '
    '{ size = "100%"; device = "/dev/sdz"; }; }; }; }',
    '{ disko.devices.disk.x = { device = "/dev/sda"; content = { type = "filesystem"; device = "/dev/sdz"; }; }; }',
    'let r = "/dev/sdz"; in { disko.devices.disk.x = { device = "/dev/sda"; content.device = r; }; }',
])
def test_redirect_rejected(body: str) -> None:
    with pytest.raises(MalformedLayout, match="redirect"):
        extract_targets(body)


def test_hash_structured_equals_handwritten_raw() -> None:
    layout = structured(MIXED)
    raw = """
    let fs = mp: { type = "filesystem"; format = "xfs"; mountpoint = mp; mountOptions = [ "nofail" "noatime" ]; };
    in {
      disko.devices = {
        zpool.tank0 = { type = "zpool"; datasets = { }; };
        lvm_vg.vg_kcore = { lvs = { }; type = "lvm_vg"; };
        disk.data2 = { type = "disk"; device = "/dev/disk/by-id/nvme-b";
          content = { type = "gpt"; partitions.z = { priority = 100; size = "100%"; content = { type = "zfs"; pool = "tank0"; }; }; }; };
        disk.data1 = { type = "disk"; device = "/dev/disk/by-id/nvme-a";
          content.type = "gpt";
          content.partitions = {
            scratch = { priority = 100; size = "64G"; content = fs "/srv/scratch"; };
            pv = { priority = 200; size = "100%"; content = { type = "lvm_pv"; vg = "vg_kcore"; }; };
          };
        };
      };
    }"""
    rendered = extract_targets(render_disko_nix(layout))
    handwritten = extract_targets(raw)
    assert layout_hash(rendered.devices_value) == layout_hash(handwritten.devices_value)
    a = preflight(DiskLayoutSpec.model_validate({"nodeName": "n", "diskLayout": MIXED}))
    b = preflight(DiskLayoutSpec.model_validate({"nodeName": "n", "layoutNix": raw}))
    assert a.phase == b.phase == Phase.PENDING
    assert a.layout_hash == b.layout_hash
    assert a.target_devices == b.target_devices == ["/dev/disk/by-id/nvme-a", "/dev/disk/by-id/nvme-b"]


@pytest.mark.parametrize("path", sorted(EXAMPLES.glob("disklayout-*.yaml")), ids=lambda p: p.name)
def test_examples_evaluate(path: Path) -> None:
    spec = DiskLayoutSpec.model_validate(yaml.safe_load(path.read_text())["spec"])
    resolved = resolve_layout(spec, base_dir=path.parent)
    assert resolved.extraction.method == "eval"
    offline = extract_targets(resolved.body, force_static=True)
    assert offline.devices == resolved.extraction.devices
    # the artifact closes ZFS pool roots (rootFsOptions.mountpoint, docs/layouts.md); the hash is the artifact's
    assert layout_hash(close_pool_roots(offline.devices_value)) == resolved.layout_hash


def test_runner_counts_the_evaluation() -> None:
    runner = HostRunner()
    extract_targets('{ disko.devices.disk.x.device = "/dev/sda"; }', runner)
    assert runner.calls["prlimit"] == 1
