"""Batch pre-flight (docs/layouts.md, "Batch pre-flight"): one sandboxed run for many bodies, and
every body's result exactly what the single-layout path gives (real nix-instantiate)."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest
import yaml

from disklet.api.disklayout import DiskLayoutSpec, Phase
from disklet.hostcmd import HostRunner
from disklet.layout import evaluate_nix, preflight, render_disko_nix
from disklet.layout.batch import BatchEvaluator, batch_argv, preflight_many
from disklet.layout.samples import EXT4, MIXED, n_disks, structured
from tests.host.test_layout_nix import EDGE_BODIES, INJECTIONS

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
GOLDEN = Path(__file__).resolve().parents[1] / "unit" / "golden"
CONTENT = ('content = { type = "gpt"; partitions.p = { size = "100%"; content = { type = "filesystem"; '
           'format = "ext4"; mountpoint = "/srv/p"; }; }; };')
"""A minimal disk content (disko cannot evaluate a disk without one)."""

FAILING = [
    "{ a = ; }",                                   # syntax error
    "/* unclosed comment",                         # would swallow the next body if text were spliced
    "''",                                          # unclosed indented string
    "{ a = 1; }) ; x = (",                         # tries to close a wrapper
    'throw "thrown"',
    'abort "aborted"',
    '{ a = 1 + "x"; }',                            # type error
    "let x = x; in { a = x; }",                    # infinite recursion
    "{ lib, ... }: { disko.devices = { }; }",      # a function
    "{ disko.devices.disk.x.device = builtins.readFile /etc/passwd; }",
    '{ disko.devices = import "/etc/passwd"; }',
    "{ x = builtins.readFile <etc/passwd>; }",
    "--option",                                    # option-looking bodies never reach the option parser
    "pure-eval",
    "false",
    "{ t = builtins.currentTime or 0; }",
    "42",
    "7",
    '"a string"',
    "[ 1 2 ]",
    "null",
    "",
    "{ a = \x00 }",
    "{ " + "a = 1; " * 20000 + "}",              # too long for argv (single path via stdin); a dup attr
]


def _outcome(fn: Any) -> tuple[str, Any]:
    try:
        return "value", fn()
    except Exception as exc:  # noqa: BLE001 - the exception is the outcome under comparison
        return type(exc).__name__, str(exc)


def _good_bodies() -> list[str]:
    bodies = [render_disko_nix(structured(d)) for d in (EXT4, MIXED, n_disks(3))]
    bodies += [p.read_text() for p in sorted(GOLDEN.glob("*.nix"))]
    bodies += [b for b, _ in EDGE_BODIES]
    from disklet.layout.artifact import render_artifact
    from disklet.layout.render import devices_value
    for mountpoint in INJECTIONS:
        value = devices_value(structured(EXT4))
        value["disk"]["data1"]["content"]["partitions"]["kcore0"]["content"]["mountpoint"] = mountpoint
        bodies.append(render_artifact(value))
    return bodies


def _example_items() -> list[tuple[DiskLayoutSpec, Path | None]]:
    return [(DiskLayoutSpec.model_validate(yaml.safe_load(p.read_text())["spec"]), p.parent)
            for p in sorted(EXAMPLES.glob("disklayout-*.yaml"))]


def test_every_body_evaluates_as_on_the_single_path() -> None:
    good = _good_bodies()
    # failures interleaved with good bodies: none may hide or alter another
    bodies = [b for pair in zip(good, FAILING * 2, strict=False) for b in pair] + good[len(FAILING) * 2:]
    evaluator = BatchEvaluator(HostRunner())
    batch = [_outcome(o.unwrap) for o in evaluator.evaluate(bodies)]
    single = [_outcome(lambda b=b: evaluate_nix(b)) for b in bodies]
    for body, got, want in zip(bodies, batch, single, strict=True):
        assert got == want, body[:80]
    assert {kind for kind, _ in batch} == {"value", "MalformedLayout"}
    assert sum(1 for kind, _ in batch if kind == "value") > len(good)


def test_good_bodies_take_one_evaluator_run() -> None:
    good = _good_bodies()
    runner = HostRunner()
    evaluator = BatchEvaluator(runner)
    outcomes = evaluator.evaluate(good)
    assert all(o.error is None for o in outcomes)
    assert evaluator.runs == 1
    assert runner.calls["prlimit"] == 1


def test_preflight_many_equals_preflight_over_examples_and_test_layouts() -> None:
    items = _example_items()
    items += [(DiskLayoutSpec.model_validate({"nodeName": f"n{i}", "layoutNix": body}), None)
              for i, body in enumerate(_good_bodies() + [b for b in FAILING if b and "\x00" not in b])]
    items += [(DiskLayoutSpec.model_validate({"nodeName": "s", "diskLayout": MIXED}), None),
              (DiskLayoutSpec.model_validate({"nodeName": "f", "layoutNixFile": "missing.nix"}), EXAMPLES)]
    runner = HostRunner()
    many = preflight_many(items, runner)
    runs = runner.calls["prlimit"]
    single = [preflight(spec, base_dir) for spec, base_dir in items]
    assert [dataclasses.asdict(r) for r in many] == [dataclasses.asdict(r) for r in single]
    assert {r.phase for r in many} == {Phase.PENDING, Phase.FAILED, Phase.REFUSED}
    # one batch run, plus per body that fails to evaluate (or is a bare number) its single run and
    # one more batch run for the bodies after it
    bodies = {r.body for r in single if r.body} | {b for b in FAILING if b and "\x00" not in b}
    outcomes = [_outcome(lambda b=b: evaluate_nix(b)) for b in bodies]
    alone = sum(1 for kind, value in outcomes if kind != "value" or type(value) in (int, float))
    assert runs <= 2 * alone + 1


def test_a_hung_body_is_timed_out_alone_and_others_still_evaluate() -> None:
    hang = "let f = n: if n < 0 then 0 else f (n + 1) + 0; in { a = builtins.genList (i: f i) 100000000; }"
    bodies = ["{ a = 1; }", "{ b = 2; }", hang, "{ c = 3; }", "{ d = 4; }"]
    outcomes = BatchEvaluator(HostRunner(), timeout=2).evaluate(bodies)
    assert [o.value for i, o in enumerate(outcomes) if i != 2] == [{"a": 1}, {"b": 2}, {"c": 3}, {"d": 4}]
    assert outcomes[2].error is not None
    assert "timed out" in str(outcomes[2].error) or "resource limits" in str(outcomes[2].error)


def test_argv_keeps_the_sandbox_and_refuses_option_bodies() -> None:
    argv = batch_argv(["{ a = 1; }"], 1 << 30, 31)
    single = ["prlimit", f"--as={1 << 30}", "--cpu=31", "--"]
    assert argv[:4] == single
    for flag in ("restrict-eval", "pure-eval", "nix-path", "allowed-uris", "plugin-files",
                 "allow-unsafe-native-code-during-evaluation"):
        assert flag in argv
    assert argv[-2:] == ["-E", "{ a = 1; }"]
    with pytest.raises(ValueError):
        batch_argv(["--option"], 1 << 30, 31)


def test_kctl_diff_of_a_directory_uses_one_run_and_reports_each_layout(tmp_path: Path,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    from disklet import hostcmd
    from tests.unit.test_kctl_cli import kctl

    runs: list[int] = []  # bodies per batch run: the evaluator argv carries them after -E (batch_argv)
    real_run = hostcmd.HostRunner.run

    def counting_run(self: hostcmd.HostRunner, argv: Any, *args: Any, **kwargs: Any) -> Any:
        if "-E" in argv:
            runs.append(len(argv) - list(argv).index("-E") - 1)
        return real_run(self, argv, *args, **kwargs)

    monkeypatch.setattr(hostcmd.HostRunner, "run", counting_run)
    for i in range(12):
        device = "device = ; " if i == 5 else f'device = "/dev/disk/by-id/nvme-{i}"; '
        (tmp_path / f"dl{i:02}.yaml").write_text(
            "apiVersion: disklet.io/v1alpha1\nkind: DiskLayout\n"
            f"metadata: {{name: dl{i:02}}}\nspec:\n  nodeName: node{i}\n  layoutNix: |\n"
            f"    {{ disko.devices.disk.d = {{ type = \"disk\"; {device}{CONTENT} }}; }}\n")
    code, out, _err = kctl("diff", "--offline", "-f", str(tmp_path))
    assert code == 2  # a layout fails pre-flight
    assert out.count("pre-flight: pending") == 11 and out.count("pre-flight: failed") == 1
    assert "DiskLayout/dl05" in out and "/dev/disk/by-id/nvme-11" in out
    assert runs == [12, 6]  # one run stops at the bad body (re-evaluated alone), one for the rest


DEEP_LIST = ("{ disko.devices = { disk = { }; x = builtins.foldl' (acc: _: [ acc ]) [ ] "
             "(builtins.genList (i: i) 5000); }; }")
DEEP_SET = ("{ disko.devices = { disk = { }; x = builtins.foldl' (acc: _: { a = acc; }) { } "
            "(builtins.genList (i: i) 5000); }; }")


@pytest.mark.parametrize("deep", [DEEP_LIST, DEEP_SET], ids=["list", "attrset"])
def test_one_deeply_nested_body_fails_alone_in_a_batch(deep: str) -> None:
    """A 5000-level value (built with foldl') used to raise RecursionError out of the batch's decoder
    (every layout of the pre-flight failed) and out of the value walk. Now it is that body's
    malformed-layout result, and the bodies around it are pre-flighted as usual."""
    good = render_disko_nix(structured(EXT4))
    specs = [(DiskLayoutSpec(nodeName="n", layoutNix=b), None) for b in (good, deep, good)]
    results = preflight_many(specs)
    assert [r.phase for r in results] == [Phase.PENDING, Phase.FAILED, Phase.PENDING]
    assert "nested deeper than 64 levels" in results[1].message
    single = preflight(DiskLayoutSpec(nodeName="n", layoutNix=deep))
    assert single.phase == Phase.FAILED and single.message == results[1].message


def test_kctl_diff_of_a_deep_body_reports_it_and_the_others(tmp_path: Path) -> None:
    from tests.unit.test_kctl_cli import kctl

    for i, body in enumerate([DEEP_LIST, render_disko_nix(structured(EXT4))]):
        (tmp_path / f"dl{i}.yaml").write_text(yaml.safe_dump({
            "apiVersion": "disklet.io/v1alpha1", "kind": "DiskLayout", "metadata": {"name": f"dl{i}"},
            "spec": {"nodeName": f"node{i}", "layoutNix": body}}))
    code, out, err = kctl("diff", "--offline", "-f", str(tmp_path))
    assert code == 2 and "Traceback" not in out + err, out + err
    assert out.count("pre-flight: failed") == 1 and out.count("pre-flight: pending") == 1, out
    assert "nested deeper than 64 levels" in out
