"""README's "run it" command works end to end on this machine and leaves nothing behind."""

from __future__ import annotations

import subprocess
import sys


def test_demo_runs_end_to_end_and_leaves_nothing_behind():
    before = subprocess.run(["losetup", "--list", "--noheadings", "--output", "NAME,BACK-FILE"],
                            capture_output=True, text=True, check=True).stdout
    proc = subprocess.run([sys.executable, "-m", "devkit.demo"], capture_output=True, text=True, timeout=600)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-4000:]
    assert "refused   target_device_has_active_system_mount" in out
    assert "installer-only" in out and "pending" in out
    assert "Ready with 2 loop PVs" in out
    from devkit import disko

    if not disko.missing_tools():  # the real apply: the example layout on a loop device, by disko's own scripts
        assert "applied by disko's own scripts" in out and "pending → applied" in out, out[-4000:]
        assert "ext4, mounted at" in out and "applied   <none>" in out
        assert "partition-label links removed and it is detached" in out
    assert "shrinking a file device is rejected by the API" in out
    assert "nothing left behind" in out and "demo passed" in out
    after = subprocess.run(["losetup", "--list", "--noheadings", "--output", "NAME,BACK-FILE"],
                           capture_output=True, text=True, check=True).stdout
    assert "disklet-demo-" not in after, after
    assert not [line for line in after.splitlines() if "disklet-demo-" in line and line not in before]
