"""The lvm shell's line encoding and report parsing (pure; the host tier runs the real shell).

The shell tokenises a line itself (whitespace splits, a leading quote runs to the next same quote,
a leading ``#`` ends the line), so a hostile VG name, tag or path must never reach it: such a
command is refused by :func:`shell_line` and runs as its own argv process instead."""

from __future__ import annotations

import pytest
from disklet_agent.host.lvm import Lvm, device_filter_config
from disklet_agent.host.lvmshell import (
    LvmShell,
    ShellProtocolError,
    ShellUnsafe,
    command_messages,
    command_status,
    shell_line,
)

from devkit.fakehost import FakeRunner
from disklet.hostcmd import HostRunner

HOSTILE = [
    "vg name", "vg\tname", "vg\nvgremove -- vg0", "vg'x", 'vg"x', "vg\\x", "#vg", "vg#x", "vg;x", "vg$(id)",
    "vg`id`", "'", '"', "vg\x00", "vg\r", "vg|x", "vg*", "vg?", "vg>x", "vg<x", "vg&x", "vg!x", "vg~x", "vg{x}",
]


def _lvm() -> Lvm:
    return Lvm(HostRunner(), extra_config="global{activation=0}", owned_loops={"/dev/loop3"})


@pytest.mark.parametrize("name", HOSTILE)
def test_hostile_operands_are_never_written_to_the_shell(name: str) -> None:
    lvm = _lvm()
    for argv in (lvm.argv("vgcreate", "--addtag", f"disklet.io/lvmVolumeGroupName={name}", operands=("vg0", "/dev/loop3")),
                 lvm.argv("vgcreate", operands=(name, "/dev/loop3")),
                 lvm.argv("pvcreate", operands=(f"/dev/disk/by-id/{name}",)),
                 lvm.argv("lvremove", "--yes", operands=(f"vg0/{name}",))):
        with pytest.raises(ShellUnsafe):
            shell_line(argv)


def test_a_refused_command_runs_as_its_own_process_not_in_the_shell() -> None:
    class Shell(LvmShell):
        def _run_locked(self, *a, **k):  # type: ignore[no-untyped-def]
            raise AssertionError("written to the shell")

    runner = FakeRunner()
    lvm = Lvm(runner, shell=Shell(runner))
    assert lvm.vgremove("vg'; vgremove -ff vg0 '").ok
    assert runner.argvs[-1][-1] == "vg'; vgremove -ff vg0 '"


def test_config_text_is_one_quoted_word_and_plain_words_stay_plain() -> None:
    lvm = _lvm()
    line = shell_line(lvm.argv("vgcreate", "--addtag", "disklet.io/enabled=true", operands=("vg-0.a_b+c", "/dev/loop3")))
    cfg = device_filter_config({"/dev/loop3"}, "global{activation=0}")
    assert line == f"vgcreate --config '{cfg}' --addtag disklet.io/enabled=true -- vg-0.a_b+c /dev/loop3"
    # A config text with a quote, backslash or newline cannot be quoted safely: refused.
    for extra in ("global{x='y'}", "global{x=\"a\\\\b\"}", "global{activation=0}\nvgremove vg0"):
        with pytest.raises(ShellUnsafe):
            shell_line(["pvs", "--config", extra, "--"])
    # Only the word after --config may be quoted; only LVM commands; bounded word count.
    with pytest.raises(ShellUnsafe):
        shell_line(["pvs", "--select", "vg_name=a b"])
    with pytest.raises(ShellUnsafe):
        shell_line(["lastlog"])
    with pytest.raises(ShellUnsafe):  # an empty word would vanish and shift the operands
        shell_line(["vgcreate", "--", "", "/dev/loop3"])
    with pytest.raises(ShellUnsafe):
        shell_line(["pvcreate", "--", *(f"/dev/loop{i}" for i in range(70))])


def _status(name: str, ret: str, msg: str = "success", context: str = "shell") -> dict[str, str]:
    return {"log_seq_num": "9", "log_type": "status", "log_context": context, "log_object_name": name,
            "log_message": msg, "log_ret_code": ret}


def test_command_status_is_strict() -> None:
    warn = {"log_type": "warn", "log_context": "shell", "log_object_name": "pvs", "log_message": "w"}
    assert command_status({"report": [{"pv": []}], "log": [warn, _status("pvs", "1")]}, "pvs") == 0
    assert command_status({"log": [_status("pvcreate", "5", "failure")]}, "pvcreate") == 5
    bad = [
        {"log": []},                                                    # no status
        {"log": [_status("pvs", "1"), _status("pvs", "1")]},            # two
        {"log": [_status("pvs", "1"), warn]},                           # not last
        {"log": [_status("vgs", "1")]},                                 # another command's
        {"log": [_status("pvs", "1", context="processing")]},
        {"log": [_status("pvs", "x")]},
        {"log": [_status("pvs", "7", "failure")]},
        {"log": [_status("pvs", "1", "failure")]},                      # code and message disagree
        {"log": [_status("pvs", "1")], "extra": 1},
        {"report": []},
        [],
    ]
    for obj in bad:
        with pytest.raises(ShellProtocolError):
            command_status(obj, "pvs")


def test_lastlog_messages() -> None:
    rows = [{"log_type": "warn", "log_object_name": "pvcreate", "log_message": "WARNING: x"},
            {"log_type": "error", "log_object_name": "pvcreate", "log_message": "No device found for /dev/x."},
            {"log_type": "print", "log_object_name": "pvcreate", "log_message": "Physical volume created."},
            _status("pvcreate", "5", "failure")]
    assert command_messages({"log": rows}, "pvcreate") == (
        "Physical volume created.", "WARNING: x\nNo device found for /dev/x.")
    with pytest.raises(ShellProtocolError):
        command_messages({"log": rows}, "vgcreate")


@pytest.mark.parametrize("argv", [
    ["vgremove", "vg0\n", "vgremove", "victim"],  # a trailing newline ends the line: a second command
    ["pvs", "--config", "devices { filter = [ \"a|.*|\" ] }\n"],  # the quoted --config value too
    ["pvs", "vg0\r"],
    ["lvs", "--", "vg0\n"],
])
def test_a_word_with_a_line_break_is_refused(argv: list[str]) -> None:
    """``$`` matches before a trailing newline: the word patterns are full matches, and no line may
    hold a CR or LF anywhere (one command is one line of the shell)."""
    with pytest.raises(ShellUnsafe):
        shell_line(argv)
