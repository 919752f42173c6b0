"""devkit/node.py's pieces that need no root: the pause root file system, the cgroup sweep, the
one-line reason the node tier cannot run. The node itself is exercised by the node tier."""

from __future__ import annotations

import os
import shutil
import tarfile
from pathlib import Path

import pytest

from devkit import node as n


def test_pause_rootfs_holds_sleep_and_exactly_what_its_loader_needs(tmp_path: Path) -> None:
    if shutil.which("ldd") is None or shutil.which("sleep") is None:
        pytest.skip("ldd/sleep missing")
    out = tmp_path / "rootfs.tar"
    n.pause_rootfs(out)
    with tarfile.open(out) as tar:
        files = {m.name for m in tar.getmembers() if m.isfile()}
        dirs = {m.name for m in tar.getmembers() if m.isdir()}
    assert "bin/sleep" in files
    libs = files - {"bin/sleep"}
    assert libs and all(name.startswith(("lib", "usr/lib")) for name in libs), libs
    assert any("ld-linux" in name or "ld-musl" in name for name in libs), libs  # the interpreter
    assert {"tmp", "dev", "proc", "sys"} <= dirs and all(str(Path(f).parent) in dirs for f in files)


def test_cgroup_sweep_removes_empty_trees_deepest_first(tmp_path: Path) -> None:
    top = tmp_path / "k8s.io"
    (top / "pod-a" / "c1").mkdir(parents=True)
    (top / "pod-b").mkdir()
    n._remove_cgroup_tree(top)
    assert not top.exists()
    keep = tmp_path / "busy"
    (keep / "x").mkdir(parents=True)
    (keep / "x" / "cgroup.procs").write_text("1\n")  # a plain directory with a file is not removable
    n._remove_cgroup_tree(keep)
    assert (keep / "x" / "cgroup.procs").exists()


def test_unavailable_reason_says_what_is_missing(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("KUBEBUILDER_ASSETS", str(tmp_path))
    reason = n.node_unavailable_reason()
    assert reason and reason.startswith("node tier skipped") and "KUBEBUILDER_ASSETS" in reason
    for b in ("kube-apiserver", "kube-controller-manager"):
        (tmp_path / b).write_text("#!/bin/sh\n")
        os.chmod(tmp_path / b, 0o755)
    if shutil.which("etcd") and shutil.which("openssl"):
        reason = n.node_unavailable_reason()
        assert reason and "kubelet" in reason and "kube-scheduler" in reason, reason
