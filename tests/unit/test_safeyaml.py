"""Bounded YAML loading: alias bombs, recursion, depth and size are refused before expansion."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from disklet.cli.manifests import ManifestError, load_manifests, parse_documents
from disklet.safeyaml import MAX_BYTES, Limits, YamlLimitError, safe_load_all


def alias_bomb(levels: int, fan: int = 9) -> str:
    """The classic "billion laughs": each level lists the previous one ``fan`` times."""
    text = "kind: LVMVolumeGroup\nmetadata: {name: bomb}\nspec:\n  l0: &l0 [" + ",".join(['"lol"'] * fan) + "]\n"
    for i in range(1, levels + 1):
        text += f"  l{i}: &l{i} [" + ",".join([f"*l{i - 1}"] * fan) + "]\n"
    return text


def test_alias_bomb_is_refused_by_its_expanded_size_before_construction():
    # 6 levels, 54 aliases: under the alias count, but 9^6 ≈ 531k nodes once expanded.
    text = alias_bomb(6)
    assert text.count("*") < Limits().max_aliases
    with pytest.raises(YamlLimitError, match="expands to more than 200000 YAML nodes"):
        safe_load_all(text)


def test_too_many_aliases_and_recursive_aliases():
    many = "a: &a 1\nb: [" + ",".join(["*a"] * 101) + "]\n"
    with pytest.raises(YamlLimitError, match="more than 100 YAML aliases"):
        safe_load_all(many)
    with pytest.raises(YamlLimitError, match="recursive YAML alias"):
        safe_load_all("a: &a [1, *a]\n")


def test_depth_and_size():
    with pytest.raises(YamlLimitError, match="nested deeper than 64 levels"):
        safe_load_all("[" * 5000 + "]" * 5000)
    with pytest.raises(YamlLimitError, match="nested deeper than 3 levels"):
        safe_load_all("a: &a {b: {c: 1}}\nd: {e: *a}\n", Limits(max_depth=3))
    with pytest.raises(YamlLimitError, match=f"larger than {MAX_BYTES} bytes"):
        safe_load_all("# " + "x" * MAX_BYTES)


def test_ordinary_documents_load_like_safe_load_all():
    text = "a: 1\nb: &x {c: [1, 2]}\nd: *x\ne: {<<: *x, f: yes}\n---\n- 1\n---\n"
    assert safe_load_all(text) == list(yaml.safe_load_all(text))
    with pytest.raises(yaml.YAMLError):
        safe_load_all("a: [unclosed\n")
    with pytest.raises(yaml.YAMLError):  # still the safe constructor: no Python objects
        safe_load_all("!!python/object/apply:os.system ['true']\n")


def test_kctl_refuses_an_alias_bomb_with_a_clear_message(tmp_path: Path):
    with pytest.raises(ManifestError) as exc:
        parse_documents(alias_bomb(6), "bomb.yaml", tmp_path)
    assert str(exc.value).startswith("bomb.yaml: refused: document expands to more than")


def test_kctl_refuses_an_oversized_file_without_reading_it(tmp_path: Path):
    big = tmp_path / "big.yaml"
    with big.open("wb") as f:
        f.truncate(MAX_BYTES + 1)  # sparse: nothing to read if the size check comes first
    with pytest.raises(ManifestError, match=f"big.yaml: refused: larger than {MAX_BYTES} bytes"):
        load_manifests(big)


# ------------------------------------------------------------------ numbers and constructor errors
def test_a_5000_digit_integer_is_a_clean_refusal() -> None:
    """Python refuses to convert ints of more than 4300 digits (ValueError): that used to escape as a
    traceback from kctl."""
    from disklet.safeyaml import YamlLimitError, safe_load_all

    with pytest.raises(YamlLimitError, match="integer of 5000 characters"):
        safe_load_all("spec:\n  timeoutSeconds: " + "9" * 5000 + "\n")
    with pytest.raises(YamlLimitError, match="float of"):
        safe_load_all("a: " + "1" * 100 + ".5\n")


def test_base_60_numbers_are_strings_and_long_ones_are_refused_before_any_arithmetic() -> None:
    from disklet.safeyaml import YamlLimitError, safe_load_all

    assert safe_load_all("a: 1:30\nb: 190:20:30.15\nc: 12\nd: 0x1f\ne: 1.5\n") == [
        {"a": "1:30", "b": "190:20:30.15", "c": 12, "d": 31, "e": 1.5}]
    with pytest.raises(YamlLimitError, match="numbers are limited to 64 characters"):
        safe_load_all("a: " + ":".join(["1"] * 20000) + "\n")


def test_every_constructor_error_is_a_limit_error(monkeypatch: pytest.MonkeyPatch) -> None:

    from disklet import safeyaml

    def broken(_loader: object, node: yaml.Node) -> object:
        raise OverflowError("boom")

    monkeypatch.setitem(safeyaml._ComposingLoader.yaml_constructors, "tag:yaml.org,2002:timestamp", broken)
    with pytest.raises(safeyaml.YamlLimitError, match="OverflowError: boom"):
        safeyaml.safe_load_all("a: 2001-12-14\n")


def test_kctl_diff_of_a_huge_integer_is_an_error_message_not_a_traceback(tmp_path: Path) -> None:
    from tests.unit.test_kctl_cli import kctl

    (tmp_path / "m.yaml").write_text("apiVersion: disklet.io/v1alpha1\nkind: DiskLayout\nmetadata: {name: x}\n"
                                     "spec:\n  nodeName: n\n  timeoutSeconds: " + "9" * 5000 + "\n")
    code, out, err = kctl("diff", "--offline", "-f", str(tmp_path / "m.yaml"))
    assert code != 0 and "Traceback" not in out + err and "integer of 5000 characters" in out + err, out + err
