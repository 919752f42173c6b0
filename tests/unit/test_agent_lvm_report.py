"""disklet-agent lvm-report: read-only pvs/vgs/lvs JSON reports in one object (for kctl support-bundle)."""

from __future__ import annotations

import io
import json

import pytest
from disklet_agent import cli

from devkit.fakehost import FakeRunner


def lvm_reports(fail: str = "") -> FakeRunner:
    """pvs/vgs/lvs answer one row each; ``fail`` fails like a missing VG."""
    runner = FakeRunner()
    for cmd, key in (("pvs", "pv"), ("vgs", "vg"), ("lvs", "lv")):
        runner.answer(cmd, (5, "", "  Volume group not found") if cmd == fail else
                      (0, json.dumps({"report": [{key: [{"name": "x"}]}]}), ""))
    return runner


@pytest.mark.parametrize("fail", ["", "vgs"])
def test_lvm_report_is_read_only_and_reports_failures(monkeypatch: pytest.MonkeyPatch, fail: str):
    runner = lvm_reports(fail)
    monkeypatch.setattr(cli.AgentDeps, "from_config", staticmethod(lambda cfg: type("D", (), {"runner": runner})()))
    out, err = io.StringIO(), io.StringIO()
    code = cli.main(["--no-nsenter", "lvm-report"], out, err)
    report = json.loads(out.getvalue())
    assert [a[0] for a in runner.argvs] == ["pvs", "vgs", "lvs"]
    assert all("--reportformat" in a and "json" in a for a in runner.argvs)
    assert not any(a[0] in ("pvcreate", "vgcreate", "lvcreate", "vgremove") for a in runner.argvs)
    if fail:
        assert code == 1 and report["vgs"] == {"error": "Volume group not found"} and "vgs:" in err.getvalue()
        assert report["pvs"]["report"][0]["pv"] == [{"name": "x"}]
    else:
        assert code == 0 and report["lvs"]["report"][0]["lv"] == [{"name": "x"}]
