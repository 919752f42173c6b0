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
    from disklet_agent.cli import config_from_args

    args = build_parser().parse_args(["--host-root", str(tmp_path), "--nsenter", "disks"])
    cfg = config_from_args(args)
    assert cfg.host_root == tmp_path and cfg.use_nsenter and cfg.etc_dir == tmp_path / "etc" / "disklet"


# ------------------------------------------------------------------ apply-disk output (stdout and stderr agree)
def _apply_disk(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, plan: object) -> tuple[int, str, str]:
    import disklet_agent.cli as cli

    monkeypatch.setattr(cli, "plan_apply", lambda *_a, **_k: plan)
    f = tmp_path / "l.nix"
    f.write_text("{ }")
    out, err = io.StringIO(), io.StringIO()
    code = main(["--host-root", str(tmp_path), "apply-disk", "-f", str(f)], out=out, err=err)
    return code, out.getvalue(), err.getvalue()


def _plan(**kw: object) -> object:
    from disklet_agent.disklayout.gate import ApplyPlan

    return ApplyPlan(**{"ok": False, "failed": False, "code": None, "message": "", **kw})  # type: ignore[arg-type]


def test_a_refusal_names_its_code_once(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from disklet.api.disklayout import RefusalCode

    plan = _plan(code=RefusalCode.VOLUME_GROUP_EXISTS, targets=["/dev/sdb"],
                 message="volume_group_exists: volume group(s) data already exist on the node")
    code, _out, err = _apply_disk(monkeypatch, tmp_path, plan)
    assert code == 1 and err.count("volume_group_exists") == 1, err
    assert err.startswith("refused: volume_group_exists: volume group(s) data")


def test_a_target_is_not_shown_safe_when_the_layout_is_refused(monkeypatch: pytest.MonkeyPatch,
                                                              tmp_path: Path) -> None:
    from disklet_agent.disklayout.classifier import Verdict

    from disklet.api.disklayout import RefusalCode

    plan = _plan(code=RefusalCode.PARTITION_LABEL_COLLISION, targets=["/dev/sdb"],
                 verdicts=[Verdict("/dev/sdb", "/dev/sdb", True, None, "blank")],
                 message="partition_label_collision: disk-a-p (on /dev/sda2)")
    code, out, err = _apply_disk(monkeypatch, tmp_path, plan)
    assert code == 1 and "refused: partition_label_collision" in err
    assert " safe " not in out and "clear" in out, out
    assert "layout refused: partition_label_collision" in out


def test_a_type_refusal_prints_no_empty_verdict_table(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from disklet_agent.disklayout.identity import eligibility_problem
    from disklet_agent.logic.topology import BlockNode

    from disklet.api.disklayout import RefusalCode

    node = BlockNode(path="/dev/sdb1", kname="/dev/sdb1", type="part", size=1 << 30)
    why = eligibility_problem(node, allow_loop=False)
    assert why is not None and "(TYPE=disk)" not in why and "a target must be of type disk" in why
    assert "TYPE=part" in why
    plan = _plan(code=RefusalCode.NOT_WHOLE_DISK, targets=["/dev/sdb1"], message=f"target_device_not_whole_disk: {why}")
    code, out, err = _apply_disk(monkeypatch, tmp_path, plan)
    assert code == 1 and "TARGET" not in out and "not classified" in out, out
    assert err.count("target_device_not_whole_disk") == 1


def test_device_strings_with_control_characters_are_escaped_in_tables() -> None:
    from disklet_agent.cli import write_table

    from disklet.cli.output import table

    out = io.StringIO()
    write_table([["DEVICE", "MODEL"], ["/dev/sdb", "evil\x1b[2J\rmodel\n"]], out)
    assert "\x1b" not in out.getvalue() and "\r" not in out.getvalue()
    assert "evil\\x1b[2J\\x0dmodel\\x0a" in out.getvalue()
    text = table(["NAME", "SERIAL"], [["bd", "S\x1b]0;title\x07N\x9b"]])
    assert "\x1b" not in text and "\x07" not in text and "\x9b" not in text and "S\\x1b]0;title\\x07N\\x9b" in text
