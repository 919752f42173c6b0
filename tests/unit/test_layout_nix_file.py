"""layoutNixFile stays next to the manifest: no absolute, .. or symlinked escape."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from disklet.cli.manifests import ManifestError, load_manifests
from disklet.layout import LayoutError, read_layout_nix_file

BODY = ('{ disko.devices.disk.d = { type = "disk"; device = "/dev/vdb"; content = { type = "gpt"; partitions.p = { '
        'size = "100%"; content = { type = "filesystem"; format = "ext4"; mountpoint = "/srv/p"; }; }; }; }; }\n')


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    (tmp_path / "manifests" / "fragments").mkdir(parents=True)
    (tmp_path / "manifests" / "fragments" / "d.nix").write_text(BODY)
    (tmp_path / "secret").write_text("apiVersion: v1\nkind: Config\nusers: [{name: admin, user: {token: s3cr3t}}]\n")
    return tmp_path


def test_relative_file_inside_the_directory_is_read(tree: Path) -> None:
    assert read_layout_nix_file("fragments/d.nix", tree / "manifests") == BODY
    assert read_layout_nix_file("./fragments/../fragments/d.nix", tree / "manifests") == BODY


@pytest.mark.parametrize("path", ["../secret", "fragments/../../secret", "{tree}/secret", "/etc/passwd"])
def test_escapes_are_refused(tree: Path, path: str) -> None:
    with pytest.raises(LayoutError, match="outside the manifest's directory"):
        read_layout_nix_file(path.format(tree=tree), tree / "manifests")


def test_symlinks_are_resolved_before_the_check(tree: Path) -> None:
    os.symlink(tree / "secret", tree / "manifests" / "layout.nix")
    with pytest.raises(LayoutError, match="outside the manifest's directory"):
        read_layout_nix_file("layout.nix", tree / "manifests")
    os.symlink(tree / "manifests" / "fragments" / "d.nix", tree / "manifests" / "inside.nix")
    assert read_layout_nix_file("inside.nix", tree / "manifests") == BODY


def test_the_explicit_switch_allows_outside(tree: Path) -> None:
    assert "s3cr3t" in read_layout_nix_file("../secret", tree / "manifests", allow_outside=True)


def test_kctl_refuses_an_untrusted_manifest_inlining_a_kubeconfig(tree: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    m = tree / "manifests" / "evil.yaml"
    m.write_text("kind: DiskLayout\nmetadata: {name: x}\nspec: {nodeName: n1, layoutNixFile: ../secret}\n")
    monkeypatch.delenv("DISKLET_LAYOUT_FILE_ANYWHERE", raising=False)
    with pytest.raises(ManifestError, match="outside the manifest's directory"):
        load_manifests(m)
    monkeypatch.setenv("DISKLET_LAYOUT_FILE_ANYWHERE", "1")
    [manifest] = load_manifests(m)
    assert "s3cr3t" in manifest.obj["spec"]["layoutNix"]


def test_directories_and_huge_files_are_refused(tree: Path) -> None:
    with pytest.raises(LayoutError, match="regular file|cannot be read"):
        read_layout_nix_file("fragments", tree / "manifests")
    (tree / "manifests" / "big.nix").write_text("#" * (300 * 1024))
    with pytest.raises(LayoutError, match="larger than"):
        read_layout_nix_file("big.nix", tree / "manifests")


def test_a_fifo_is_refused_at_once_not_waited_on(tree: Path) -> None:
    """Opening a FIFO for reading blocks until a writer comes: kctl hung. The open is non-blocking and
    only a regular file is read. (If it ever blocks again, the cleanup's writer releases the thread
    and the assertion fails instead of hanging the run.)"""
    import threading

    fifo = tree / "manifests" / "layout.fifo"
    os.mkfifo(fifo)
    result: list[BaseException | str] = []

    def read() -> None:
        try:
            result.append(read_layout_nix_file("layout.fifo", tree / "manifests"))
        except BaseException as exc:  # noqa: BLE001 - handed to the test thread
            result.append(exc)

    t = threading.Thread(target=read, daemon=True)
    t.start()
    t.join(timeout=10)
    blocked = t.is_alive()
    if blocked:  # release the reader: a writer that opens and closes
        os.close(os.open(fifo, os.O_WRONLY))
        t.join(timeout=10)
    assert not blocked, "read_layout_nix_file blocked on a FIFO"
    assert isinstance(result[0], LayoutError) and "is a FIFO, not a regular file" in str(result[0])
