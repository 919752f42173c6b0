"""disklet-agent argument handling and --help (no host commands)."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from disklet_agent.cli import build_parser, main


def test_help_teaches_with_examples() -> None:
    text = build_parser().format_help()
    for needle in ("apply-disk -f day2-disk.nix --apply --timeout-seconds 600", "disks -o json",
                   "echo controller-managed | sudo tee /etc/disklet/disk-management-mode",
                   "0 ok, 1 refused", "apply-disko", "run"):
        assert needle in text


@pytest.mark.parametrize("value", ["0", "3601", "-5", "abc", "1.5"])
def test_timeout_beyond_cap_is_usage_error(value: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["apply-disk", "-f", "x.nix", "--timeout-seconds", value])
    assert exc.value.code == 2
    assert "3600" in capsys.readouterr().err


def test_timeout_default_and_cap_accepted() -> None:
    assert build_parser().parse_args(["apply-disk", "-f", "x.nix"]).timeout_seconds == 300
    assert build_parser().parse_args(["apply-disk", "-f", "x.nix", "--timeout-seconds", "3600"]).timeout_seconds == 3600


def test_missing_subcommand_and_file_are_usage_errors(tmp_path: Path) -> None:
    with pytest.raises(SystemExit) as exc:
        main([])
    assert exc.value.code == 2
    err = io.StringIO()
    assert main(["apply-disk", "-f", str(tmp_path / "missing.nix")], out=io.StringIO(), err=err) == 2
    assert "cannot read" in err.getvalue()


def test_global_options_reach_the_config(tmp_path: Path) -> None:
    from disklet_agent.cli import _config

    args = build_parser().parse_args(["--host-root", str(tmp_path), "--nsenter", "disks"])
    cfg = _config(args)
    assert cfg.host_root == tmp_path and cfg.use_nsenter and cfg.etc_dir == tmp_path / "etc" / "disklet"
