"""`disklet-agent apply-disk -f -` reads the body from stdin (what `kctl node apply-disk` streams)."""

from __future__ import annotations

import io
import sys

from disklet_agent.cli import main

BODY = ('{ disko.devices.disk.d = { type = "disk"; device = "/dev/disklet-test-no-such-disk"; content = { '
        'type = "gpt"; partitions.p = { size = "100%"; content = { type = "filesystem"; format = "ext4"; '
        'mountpoint = "/srv/p"; }; }; }; }; }\n')


def test_apply_disk_reads_stdin(monkeypatch, tmp_path):
    monkeypatch.setattr(sys, "stdin", io.StringIO(BODY))
    out, err = io.StringIO(), io.StringIO()
    code = main(["--host-root", str(tmp_path), "apply-disk", "-f", "-"], out, err)
    assert code == 1, err.getvalue()
    assert "/dev/disklet-test-no-such-disk" in out.getvalue()
    assert "target_device_not_found" in out.getvalue() + err.getvalue()
