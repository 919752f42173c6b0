"""`--version` of the operator and the agent names the commit the image was built from."""

from __future__ import annotations

import pytest

from disklet import __version__

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(("program", "revision", "expected"), [
    ("disklet-agent", "0123456789abcdef0123456789abcdef01234567",
     f"disklet-agent {__version__} (commit 0123456789abcdef0123456789abcdef01234567)"),
    ("disklet-operator", "", f"disklet-operator {__version__} (commit unknown)"),
])
def test_version_names_the_build_commit(program, revision, expected, monkeypatch, capsys):
    from disklet_agent.cli import main as agent_main
    from disklet_operator.main import parse_args as operator_args

    monkeypatch.setenv("DISKLET_REVISION", revision)
    with pytest.raises(SystemExit) as exit_:
        if program == "disklet-agent":
            agent_main(["--version"])
        else:
            operator_args(["--version"])
    assert exit_.value.code == 0
    assert capsys.readouterr().out.strip() == expected
