"""Host tier: root, real loop devices, LVM, lsblk, nix-instantiate.

Outside CI a missing prerequisite skips with the reason; in CI (CI=true) it fails, because CI
has them and must run these tests.
"""

from __future__ import annotations

import os
import shutil

import pytest


def _missing() -> str:
    if os.geteuid() != 0:
        return "needs root (loop devices, LVM)"
    for tool in ("losetup", "lsblk", "lvm", "fallocate", "blkid", "wipefs", "nix-instantiate"):
        if shutil.which(tool) is None:
            return f"needs {tool} (apt-get install lvm2 util-linux nix-bin)"
    if not os.path.exists("/dev/loop-control"):
        return "needs /dev/loop-control (loop device support)"
    return ""


@pytest.fixture(autouse=True)
def _host_prerequisites() -> None:
    reason = _missing()
    if reason:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"host tier prerequisite missing in CI: {reason}")
        pytest.skip(reason)
