"""The artifact through disko's own module types (no build, no disk): disko accepts it and the
shell it would run parses and names only the checked devices.

disko's library is located by ``DISKO_EVAL`` (a directory holding ``disko/`` and ``nixpkgs-lib/``);
by default the first ``shared/disko-eval`` found above the repository. Skipped when absent.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path

import pytest

from disklet.api.disklayout import DiskLayoutSpec, Phase
from disklet.hostcmd import HostRunner
from disklet.layout import preflight
from disklet.layout.samples import EXT4, MIXED, n_disks


def _disko_eval() -> Path | None:
    env = os.environ.get("DISKO_EVAL")
    if env:
        return Path(env)
    for parent in Path(__file__).resolve().parents:
        candidate = parent / "shared" / "disko-eval"
        if (candidate / "disko" / "lib").is_dir():
            return candidate
    return None


DISKO_EVAL = _disko_eval()
pytestmark = pytest.mark.skipif(DISKO_EVAL is None, reason="disko's library (DISKO_EVAL) is not available")

WRAPPER = """
let
  E = {root};
  lib = import (E + "/nixpkgs-lib/lib");
  diskoLib = import (E + "/disko/lib") {{ inherit lib; rootMountPoint = "/"; makeTest = null; eval-config = null;
                                         qemu-common = null; }};
  evaled = lib.evalModules {{ modules = [ {{ options.disko.devices = lib.mkOption {{ type = diskoLib.toplevel; }}; }}
                                         {artifact} ]; }};
in {{ create = evaled.config.disko.devices._create; mount = evaled.config.disko.devices._mount; }}
"""


@pytest.mark.parametrize("layout", [EXT4, MIXED, n_disks(2)], ids=["ext4", "mixed", "two"])
def test_disko_accepts_the_artifact_and_its_shell_parses(layout: dict, tmp_path: Path) -> None:  # type: ignore[type-arg]
    pf = preflight(DiskLayoutSpec.model_validate({"nodeName": "n", "diskLayout": layout}))
    assert pf.phase == Phase.PENDING and pf.artifact, pf.message
    art = tmp_path / "artifact.nix"
    art.write_text(pf.artifact)
    wrapper = tmp_path / "eval.nix"
    wrapper.write_text(WRAPPER.format(root=DISKO_EVAL, artifact=art))
    res = HostRunner().run(["nix-instantiate", "--eval", "--strict", "--json", "--", str(wrapper)], timeout=120)
    assert res.ok, res.describe()
    scripts = json.loads(res.stdout)
    create, mount = scripts["create"], scripts["mount"]
    for text in (create, mount):
        check = subprocess.run(["bash", "-n"], input=text, text=True, capture_output=True, timeout=30, check=False)
        assert check.returncode == 0, check.stderr
    named = set(re.findall(r'"(/dev/disk/by-id/[^"]*|/dev/nvme[^"]*)"', create))
    assert named == set(pf.target_devices)
