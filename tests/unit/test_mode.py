"""Management mode reading: new file, legacy fallback, defaults and bad values (fail safe)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from disklet_agent.disklayout.mode import read_management_mode


def test_missing_is_installer_only(tmp_path: Path) -> None:
    m = read_management_mode(tmp_path)
    assert m.mode == "installer-only" and m.source is None and m.error is None
    text = m.explain(tmp_path)
    assert "installer-only" in text and f"echo controller-managed | sudo tee {tmp_path}/disk-management-mode" in text


@pytest.mark.parametrize("content", ["controller-managed", "controller-managed\n", "  controller-managed \n"])
def test_controller_managed(tmp_path: Path, content: str) -> None:
    (tmp_path / "disk-management-mode").write_text(content)
    m = read_management_mode(tmp_path)
    assert m.controller_managed and m.source == tmp_path / "disk-management-mode" and m.error is None
    assert "promote" not in m.explain(tmp_path)


def test_legacy_fallback_and_new_file_wins(tmp_path: Path) -> None:
    (tmp_path / "disko-management-mode").write_text("controller-managed\n")
    m = read_management_mode(tmp_path)
    assert m.controller_managed and m.source == tmp_path / "disko-management-mode"
    (tmp_path / "disk-management-mode").write_text("installer-only\n")
    m = read_management_mode(tmp_path)
    assert m.mode == "installer-only" and m.source == tmp_path / "disk-management-mode"


def test_legacy_symlink_as_installed(tmp_path: Path) -> None:
    (tmp_path / "disk-management-mode").write_text("controller-managed\n")
    os.symlink("disk-management-mode", tmp_path / "disko-management-mode")
    assert read_management_mode(tmp_path).controller_managed


@pytest.mark.parametrize("content", ["Controller-Managed", "controller_managed", "yes", "", "controller-managed extra"])
def test_bad_value_is_error_and_installer_only(tmp_path: Path, content: str) -> None:
    (tmp_path / "disk-management-mode").write_text(content)
    m = read_management_mode(tmp_path)
    assert m.mode == "installer-only" and m.error
    assert "disk-management-mode" in m.error and "installer-only, controller-managed" in m.error


def test_unreadable_is_installer_only(tmp_path: Path) -> None:
    (tmp_path / "disk-management-mode").mkdir()  # a directory cannot be read as a file
    m = read_management_mode(tmp_path)
    assert m.mode == "installer-only" and m.error and "cannot be read" in m.error
    (tmp_path / "disko-management-mode").write_bytes(b"\xff\xfe")
    (tmp_path / "disk-management-mode").rmdir()
    m = read_management_mode(tmp_path)
    assert m.mode == "installer-only" and m.error
