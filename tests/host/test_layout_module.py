"""nix/disklet-disk.nix merges current.nix's disko.devices only when the file exists."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from disklet.hostcmd import HostRunner
from disklet.layout import nix_string, render_disko_nix
from disklet.layout.samples import EXT4, structured

MODULE = Path(__file__).resolve().parents[2] / "nix" / "disklet-disk.nix"
STUB_LIB = """{
  mkOption = o: o.default;
  mkIf = c: v: if c then v else { };
  types = { bool = null; path = null; };
}"""


def _evaluate_module(layout_file: Path, enable: bool = True) -> Any:
    expr = (f"let lib = {STUB_LIB}; config = {{ services.disklet.disk = {{ enable = {str(enable).lower()}; "
            f"layoutFile = /. + {nix_string(str(layout_file))}; }}; }}; "
            f"m = import (/. + {nix_string(str(MODULE))}) {{ inherit config lib; }}; "
            "in { config = m.config; options = builtins.attrNames m.options.services.disklet.disk; }")
    result = HostRunner().run(["nix-instantiate", "--eval", "--strict", "--json", "--expr", expr], timeout=30)
    assert result.ok, result.describe()
    return json.loads(result.stdout)


def test_module_imports_current_nix(tmp_path: Path) -> None:
    current = tmp_path / "current.nix"
    current.write_text(render_disko_nix(structured(EXT4)))
    out = _evaluate_module(current)
    assert out["options"] == ["enable", "layoutFile"]
    assert out["config"]["disko"]["devices"]["disk"]["data1"]["device"] == "/dev/nvme1n1"
    assert out["config"]["assertions"][0]["assertion"] is True


def test_module_is_inert_without_the_file_or_when_disabled(tmp_path: Path) -> None:
    assert _evaluate_module(tmp_path / "missing.nix")["config"] == {}
    current = tmp_path / "current.nix"
    current.write_text(render_disko_nix(structured(EXT4)))
    assert _evaluate_module(current, enable=False)["config"] == {}


def test_module_asserts_on_a_body_without_disko_devices(tmp_path: Path) -> None:
    current = tmp_path / "current.nix"
    current.write_text("{ other = 1; }")
    out = _evaluate_module(current)
    assert out["config"]["assertions"][0]["assertion"] is False
    assert out["config"]["disko"]["devices"] == {}
