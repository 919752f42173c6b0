"""The one artifact and the hardened evaluator, against real nix-instantiate."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import pytest

from disklet.api.disklayout import DiskLayoutSpec, Phase
from disklet.hostcmd import HostRunner
from disklet.layout import evaluate_nix, preflight
from disklet.layout.checked import check_layout
from disklet.layout.samples import MIXED

TELLS = [
    'if builtins ? currentTime then "/dev/vda" else "/dev/vdb"',
    'if builtins.getEnv "HOME" != "" then "/dev/vda" else "/dev/vdb"',
    'if builtins.pathExists /etc then "/dev/vda" else "/dev/vdb"',
    'if builtins.nixVersion != "2.8.0" || builtins ? currentTime then "/dev/vda" else "/dev/vdb"',
]


def _raw(device_expr: str) -> str:
    return ('{ disko.devices.disk.d = { type = "disk"; device = ' + device_expr + '; content = { type = "gpt"; '
            'partitions.p = { size = "100%"; content = { type = "filesystem"; format = "ext4"; '
            'mountpoint = "/srv/data"; }; }; }; }; }')


def _unrestricted(text: str) -> object:
    """What a root `nix-instantiate --eval` (disko, nixos-rebuild) makes of ``text``: no sandbox options."""
    res = HostRunner().run(["nix-instantiate", "--eval", "--strict", "--json", "--store", "dummy://", "-"],
                           input=text, timeout=30)
    assert res.ok, res.describe()
    import json
    return json.loads(res.stdout)


@pytest.mark.parametrize("tell", TELLS)
def test_sandbox_tells_cannot_change_what_runs(tell: str) -> None:
    body = _raw(tell)
    # The old pipeline handed this text to disko: unrestricted it names a different disk.
    assert _unrestricted(body)["disko"]["devices"]["disk"]["d"]["device"] == "/dev/vda"
    checked = check_layout(body)
    assert checked.targets == ["/dev/vdb"]
    # The artifact is what runs: evaluated without any sandbox it names exactly the checked targets.
    assert _unrestricted(checked.artifact)["disko"]["devices"]["disk"]["d"]["device"] == "/dev/vdb"
    assert "builtins" not in checked.artifact and "if " not in checked.artifact


def test_preflight_result_carries_the_artifact_and_hashes_it() -> None:
    import hashlib
    pf = preflight(DiskLayoutSpec.model_validate({"nodeName": "n", "layoutNix": _raw(TELLS[0])}))
    assert pf.phase == Phase.PENDING, pf.message
    assert pf.artifact is not None and pf.target_devices == ["/dev/vdb"]
    assert pf.layout_hash == hashlib.sha256(pf.artifact.encode()).hexdigest()


def test_structured_and_raw_share_one_artifact() -> None:
    a = preflight(DiskLayoutSpec.model_validate({"nodeName": "n", "diskLayout": MIXED}))
    assert a.artifact is not None
    b = preflight(DiskLayoutSpec.model_validate({"nodeName": "n", "layoutNix": a.artifact}))
    assert a.artifact == b.artifact and a.layout_hash == b.layout_hash


def test_artifact_is_literal_only() -> None:
    checked = check_layout(_raw('let p = "/dev/"; in "${p}vdb"'))
    # attribute names and strings are quoted; nothing but literals, braces, brackets, = and ;
    stripped = re.sub(r'"(?:[^"\\$]|\\.)*"', '""', checked.artifact)
    stripped = re.sub(r"^#.*$", "", stripped, flags=re.M)
    assert re.fullmatch(r'[\s{}\[\]=;.""0-9a-z]*', stripped.replace('""', "")), stripped
    assert set(re.findall(r"[a-z]+", stripped)) <= {"true", "false", "null"}


def test_hostile_nix_conf_changes_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    conf = tmp_path / "conf"
    conf.mkdir()
    (conf / "nix.conf").write_text("allow-unsafe-native-code-during-evaluation = true\nrestrict-eval = false\n"
                                   "pure-eval = false\nnix-path = etc=/etc\nplugin-files = /nonexistent/plugin.so\n")
    probe = "{ exec = builtins ? exec; time = builtins ? currentTime; path = builtins.nixPath; }"
    # Without the hardening this configuration is honoured (the test proves it is hostile).
    res = HostRunner().run(["nix-instantiate", "--eval", "--strict", "--json", "--store", "dummy://",
                            "--option", "plugin-files", "", "-"], input=probe, timeout=30,
                           env={"NIX_CONF_DIR": str(conf)})
    assert res.ok and '"exec":true' in res.stdout, res.describe()
    for var in ("NIX_CONF_DIR", "NIX_USER_CONF_FILES"):
        monkeypatch.setenv(var, str(conf) if var == "NIX_CONF_DIR" else str(conf / "nix.conf"))
    monkeypatch.setenv("NIX_CONFIG", "allow-unsafe-native-code-during-evaluation = true")
    monkeypatch.setenv("NIX_PATH", "etc=/etc")
    assert evaluate_nix(probe) == {"exec": False, "time": False, "path": []}
    with pytest.raises(Exception, match="forbidden|not found|cannot look up"):
        evaluate_nix("{ x = builtins.readFile <etc/passwd>; }")
    assert os.environ["NIX_CONF_DIR"] == str(conf)


def test_a_hook_name_built_at_evaluation_time_is_refused_by_the_walk() -> None:
    """The text check of layoutNix (model, CEL) is only early feedback; the walk decides."""
    from disklet.api.disklayout import RefusalCode

    body = _raw('"/dev/vdb"').replace('size = "100%";', 'size = "100%"; ${"preCreate" + "Ho" + "ok"} = "reboot";')
    pf = preflight(DiskLayoutSpec.model_validate({"nodeName": "n", "layoutNix": body}))
    assert pf.phase == Phase.REFUSED and pf.refusal_reason is RefusalCode.LAYOUT_FORBIDDEN_OPTION, pf.message
    assert "partitions.p.preCreateHook" in pf.message


_OTHER_NS = ('mount -t tmpfs disklet-test /tmp || exit 99; d="${NIX_CONF_DIR:-}"; '
             'case "$d" in /tmp/*) mkdir -p "$d" && printf "trace-function-calls = true\\n" > "$d/nix.conf";; esac; '
             'exec "$@"')


class _OtherMountNamespace(HostRunner):
    """Runs every command in a fresh mount namespace (as the agent's nsenter runner runs it in the
    host's) whose ``/tmp`` is not the caller's: whoever can write there has put a ``nix.conf`` at the
    ``NIX_CONF_DIR`` the evaluator is given, if that names a directory under ``/tmp``."""

    results: list[Any]

    def full_argv(self, argv: Any) -> list[str]:
        return ["unshare", "-m", "--propagation", "private", "--", "sh", "-c", _OTHER_NS, "sh", *argv]

    def run(self, argv: Any, **kw: Any) -> Any:
        res = super().run(argv, **kw)
        self.results.append(res)
        return res


def test_the_nix_hardening_holds_in_the_namespace_where_the_evaluator_runs() -> None:
    """The agent runs nix-instantiate in the host's mount namespace; a configuration directory made in
    the agent's own container is not there, and a planted one at that path would be read. The
    evaluator's NIX_CONF_DIR names no directory in any namespace."""
    from disklet.layout.batch import evaluate_nix_many

    runner = _OtherMountNamespace()
    runner.results = []
    body = "{ x = builtins.length [ 1 2 ]; }"
    assert evaluate_nix(body, runner) == {"x": 2}
    assert [o.unwrap() for o in evaluate_nix_many([body, "{ y = 1; }"], runner)] == [{"x": 2}, {"y": 1}]
    assert runner.results and all(r.returncode == 0 for r in runner.results), [r.describe() for r in runner.results]
    assert not any("function-trace" in r.raw_stderr for r in runner.results), runner.results[0].raw_stderr[:300]
