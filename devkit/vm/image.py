"""The guest's images, cached by content: the root image and the project image.

- **Root image** (``root-<hash>.img``, ext4): Debian bookworm ``minbase`` from ``mmdebstrap`` with
  :data:`PACKAGES`, the host kernel's modules (the guest boots the host's ``/boot/vmlinuz``), the
  PID 1 stub (it runs ``devkit/vm/guest-init.sh`` from the project image) and this project's Python dependencies copied from the
  host's installed distributions into ``/opt/disklet-site`` (no network in the guest, no pip).
  Its initramfs (``initrd-<hash>.img``: busybox and the few modules that mount the root) is built
  with it. The hash covers the suite, the package list, the kernel version, the init scripts and every
  copied distribution's name and version, so it is rebuilt only when one of them changes (about
  a minute: mostly mmdebstrap's downloads). The guest always boots it with qemu's
  ``snapshot=on``: the cached file is never written.
- **Project image** (``project-<hash>.img``, ext4, read-only in the guest): this checkout's
  ``disklet``, ``operator``, ``agent``, ``devkit``, ``tests``, ``conftest.py``, ``pyproject.toml``
  and disko's sources for the test disko, mounted at ``/opt/disklet``. Hash: every file's path
  and bytes. Building it takes about a second; the newest few are kept.

The cache lives in ``$DISKLET_VM_CACHE`` (default ``~/.cache/disklet-vm``), outside the repository;
builds take a lock there and publish by rename, so concurrent runs never see half an image.
"""

from __future__ import annotations

import compileall
import contextlib
import fcntl
import hashlib
import importlib.metadata as md
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path

from packaging.requirements import Requirement

from devkit import disko
from devkit.vm import REPO, kernel_version

SUITE = "bookworm"
PACKAGES = ("lvm2", "thin-provisioning-tools", "udev", "util-linux", "mount", "e2fsprogs", "kmod", "python3",
            "gdisk", "parted", "nix-bin", "dosfstools", "procps", "busybox-static")
"""What the guest's tests call: LVM and device-mapper, udev, lsblk/blkid/wipefs/losetup, mkfs,
modprobe, sgdisk/partprobe and nix-instantiate for disko's scripts; busybox for the initramfs."""
INITRAMFS_MODULES = ("virtio_pci", "virtio_blk", "crc32c_generic", "ext4")
"""What the guest needs to mount its root (Debian builds them as modules); the rest loads from the root."""
ROOTS = ("disklet", "pytest", "pytest-asyncio", "pytest-timeout")
"""Distributions whose requirement closure is copied into the guest (``disklet`` itself comes from the
project image, never from an installed copy)."""
ROOT_IMAGE_SIZE = 3 << 30
PROJECT_DIRS = ("disklet", "operator", "agent", "devkit", "tests")
PROJECT_FILES = ("conftest.py", "pyproject.toml")
FORMAT = "5"
BASE_FORMAT = "1"
"""Bumped when the way images are built changes."""
BUILD_TIMEOUT = 900.0
KEEP_PROJECT_IMAGES = 3
SKIP_PARTS = {"__pycache__", ".pytest_cache", ".mypy_cache", ".ruff_cache", ".hypothesis"}


def cache_dir() -> Path:
    env = os.environ.get("DISKLET_VM_CACHE")
    if env:
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "disklet-vm"


@contextlib.contextmanager
def _locked(directory: Path) -> Iterator[None]:
    directory.mkdir(parents=True, exist_ok=True)
    with open(directory / ".lock", "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def distributions(roots: Iterable[str] = ROOTS) -> list[md.Distribution]:
    """The installed distributions ``roots`` need (their requirement closure, markers evaluated; the
    ``disklet`` distribution itself left out)."""
    seen: dict[str, md.Distribution] = {}
    todo: list[tuple[str, frozenset[str]]] = [(r, frozenset()) for r in roots]
    while todo:
        name, extras = todo.pop()
        key = _norm(name)
        if key in seen and not extras:
            continue
        try:
            dist = md.distribution(name)
        except md.PackageNotFoundError as exc:
            raise RuntimeError(f"vm image: {name} is not installed here (run make bootstrap)") from exc
        seen[key] = dist
        for text in dist.requires or []:
            req = Requirement(text)
            envs = [{"extra": e} for e in extras] or [{"extra": ""}]
            if req.marker is not None and not any(req.marker.evaluate(env) for env in envs):
                continue
            if _norm(req.name) not in seen:
                todo.append((req.name, frozenset(req.extras)))
    return sorted((d for k, d in seen.items() if k != "disklet"), key=lambda d: _norm(d.metadata["Name"]))


def _dist_files(dist: md.Distribution) -> Iterator[tuple[Path, str]]:
    """(file on the host, path relative to site-packages) of one distribution's importable files."""
    for f in dist.files or []:
        rel = str(f)
        if rel.startswith(("..", "/")) or "__pycache__" in rel:
            continue
        src = Path(str(dist.locate_file(f)))
        if src.is_file():
            yield src, rel


def root_inputs() -> tuple[str, list[md.Distribution], str]:
    kver = kernel_version()
    if kver is None:
        raise RuntimeError("vm image: no kernel in /boot with modules in /lib/modules")
    dists = distributions()
    h = hashlib.sha256()
    for part in (FORMAT, SUITE, ",".join(PACKAGES), kver, sys.version_info[:2].__repr__(), STUB, INIT,
                 "\n".join(f"{_norm(d.metadata['Name'])}=={d.version}" for d in dists)):
        h.update(part.encode() + b"\0")
    return h.hexdigest()[:16], dists, kver


def root_image(log: Path | None = None) -> tuple[Path, Path]:
    """The cached root image and its initramfs for the current inputs (built when missing)."""
    digest, dists, kver = root_inputs()
    out = cache_dir() / f"root-{digest}.img"
    initrd = cache_dir() / f"initrd-{digest}.img"
    if out.is_file() and initrd.is_file():
        return out, initrd
    with _locked(cache_dir()):
        if out.is_file() and initrd.is_file():
            return out, initrd
        _build_root(out, initrd, dists, kver, log)
        for old in [*cache_dir().glob("root-*.img"), *cache_dir().glob("initrd-*.img")]:
            if old not in (out, initrd):
                old.unlink(missing_ok=True)
    return out, initrd


def _module_order(kver: str, names: Iterable[str]) -> list[str]:
    """Paths (relative to /lib/modules/<kver>) of ``names`` and their dependencies, dependencies first."""
    base = Path("/lib/modules") / kver
    deps: dict[str, list[str]] = {}
    by_name: dict[str, str] = {}
    for line in (base / "modules.dep").read_text(encoding="utf-8").splitlines():
        mod, _, rest = line.partition(":")
        deps[mod] = rest.split()
        by_name[_norm(Path(mod).name.split(".ko")[0]).replace("-", "_")] = mod
    order: list[str] = []

    def visit(mod: str) -> None:
        if mod in order:
            return
        for dep in reversed(deps.get(mod, [])):
            visit(dep)
        order.append(mod)

    for name in names:
        found = by_name.get(name.replace("-", "_"))
        if found is not None:  # else built into this kernel: nothing to load
            visit(found)
    return order


def _cpio(entries: list[tuple[str, int, bytes, int]]) -> bytes:
    """A newc cpio archive of (name, mode, data, rdev) entries (what the kernel unpacks as initramfs)."""
    out = bytearray()
    for ino, (name, mode, data, rdev) in enumerate([*entries, ("TRAILER!!!", 0, b"", 0)], start=1):
        raw = name.encode() + b"\0"
        fields = [ino, mode, 0, 0, 1, 0, len(data), 0, 0, os.major(rdev), os.minor(rdev), len(raw), 0]
        out += b"070701" + b"".join(f"{f:08X}".encode() for f in fields) + raw
        out += b"\0" * (-len(out) % 4) + data + b"\0" * (-len(data) % 4)
    return bytes(out)


STUB = """#!/bin/sh
# disklet test VM: the root's PID 1 mounts the project disk (found by its virtio serial) and runs
# the project's own guest init from it, so changing that script never rebuilds the root image.
mount -t proc proc /proc
mount -t sysfs sys /sys
for b in /sys/block/vd*; do
  [ "$(cat "$b/serial" 2>/dev/null)" = disklet-project ] && mount -o ro "/dev/${b##*/}" /opt/disklet
done
exec /bin/sh /opt/disklet/devkit/vm/guest-init.sh
"""
INIT = """#!/bin/sh
# disklet test VM initramfs: load what the root needs, find it by its virtio serial, switch to it.
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
for m in $(cat /modules); do insmod "/lib/modules/$m" 2>/dev/null; done
root=""
i=0
while [ -z "$root" ] && [ "$i" -lt 600 ]; do
  for b in /sys/block/vd*; do
    [ "$(cat "$b/serial" 2>/dev/null)" = disklet-root ] && root="/dev/${b##*/}"
  done
  [ -z "$root" ] && sleep 0.1
  i=$((i + 1))
done
mkdir -p /newroot
if ! mount -t ext4 -o rw "$root" /newroot; then
  echo "== disklet-vm: initramfs cannot mount the root disk ($root)"
  echo o > /proc/sysrq-trigger
fi
mount --move /dev /newroot/dev
umount /proc /sys
exec switch_root /newroot /init.sh
"""


def _build_initrd(out: Path, rootfs: Path, kver: str) -> None:
    busybox = (rootfs / "bin" / "busybox").read_bytes()
    modules = _module_order(kver, INITRAMFS_MODULES)
    dirs = ["bin", "dev", "proc", "sys", "newroot", "lib", "lib/modules"]
    entries: list[tuple[str, int, bytes, int]] = [(d, 0o040755, b"", 0) for d in dirs]
    entries.append(("dev/console", 0o020600, b"", os.makedev(5, 1)))
    entries.append(("bin/busybox", 0o100755, busybox, 0))
    for tool in ("sh", "mount", "umount", "insmod", "cat", "sleep", "mkdir", "switch_root"):
        entries.append((f"bin/{tool}", 0o120777, b"busybox", 0))
    for mod in modules:
        name = Path(mod).name
        entries.append((f"lib/modules/{name}", 0o100644, (Path("/lib/modules") / kver / mod).read_bytes(), 0))
    entries.append(("modules", 0o100644, "".join(Path(m).name + "\n" for m in modules).encode(), 0))
    entries.append(("init", 0o100755, INIT.encode(), 0))
    out.write_bytes(_cpio(entries))


def _run(argv: list[str], log: Path | None, timeout: float = BUILD_TIMEOUT) -> None:
    res = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)  # noqa: S603
    if log is not None:
        with log.open("a", encoding="utf-8") as f:
            f.write(f"$ {' '.join(argv)}\n{res.stdout}{res.stderr}\n")
    if res.returncode != 0:
        raise RuntimeError(f"vm image: {argv[0]} exited {res.returncode}: {(res.stderr or res.stdout)[-2000:]}")


def _debian_tar(log: Path | None) -> Path:
    """mmdebstrap's output as a tar, cached by suite and package list (the slow, networked part)."""
    h = hashlib.sha256(f"{BASE_FORMAT}\0{SUITE}\0{','.join(PACKAGES)}".encode()).hexdigest()[:16]
    out = cache_dir() / f"debian-{h}.tar"
    if out.is_file():
        return out
    partial = cache_dir() / f"debian-{h}.partial.tar"
    _run(["mmdebstrap", "--variant=minbase", "--quiet", f"--include={','.join(PACKAGES)}",
          "--dpkgopt=path-exclude=/usr/share/doc/*", "--dpkgopt=path-exclude=/usr/share/man/*",
          "--dpkgopt=path-exclude=/usr/share/locale/*", "--", SUITE, str(partial)], log)
    partial.rename(out)
    for old in cache_dir().glob("debian-*.tar"):
        if old != out:
            old.unlink(missing_ok=True)
    return out


def _compile(tree: Path, prefix: str) -> None:
    """Byte-compile ``tree`` as the guest will import it from ``prefix`` (the guest never writes .pyc;
    compiling pydantic and friends at each import costs minutes under emulation)."""
    compileall.compile_dir(str(tree), quiet=2, stripdir=str(tree), prependdir=prefix, workers=0)


def _build_root(out: Path, initrd: Path, dists: list[md.Distribution], kver: str, log: Path | None) -> None:
    base = _debian_tar(log)
    with tempfile.TemporaryDirectory(prefix="rootfs-", dir=cache_dir()) as tmp:
        rootfs = Path(tmp) / "rootfs"
        rootfs.mkdir()
        _run(["tar", "-xf", str(base), "-C", str(rootfs), "--numeric-owner"], log)
        mods = rootfs / "lib" / "modules"
        mods.mkdir(parents=True, exist_ok=True)
        shutil.copytree(f"/lib/modules/{kver}", mods / kver, symlinks=True)
        site = rootfs / "opt" / "disklet-site"
        for dist in dists:
            for src, rel in _dist_files(dist):
                dst = site / rel
                dst.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(src, dst)
        _compile(site, "/opt/disklet-site")
        (rootfs / "init.sh").write_text(STUB, encoding="utf-8")
        (rootfs / "init.sh").chmod(0o755)
        (rootfs / "opt" / "disklet").mkdir(parents=True, exist_ok=True)
        (rootfs / "etc" / "hostname").write_text("disklet-vm\n", encoding="utf-8")
        partial_initrd = initrd.with_name(initrd.name + ".partial")
        _build_initrd(partial_initrd, rootfs, kver)
        partial_initrd.rename(initrd)
        partial = out.with_name(out.name + ".partial")
        with open(partial, "wb") as f:
            f.truncate(ROOT_IMAGE_SIZE)
        _run(["mkfs.ext4", "-q", "-F", "-L", "disklet-root", "-d", str(rootfs), "--", str(partial)], log)
        partial.rename(out)


def _project_files() -> list[tuple[Path, str]]:
    out: list[tuple[Path, str]] = []
    for d in PROJECT_DIRS:
        for p in sorted((REPO / d).rglob("*")):
            if p.is_file() and not (SKIP_PARTS & set(p.relative_to(REPO).parts)) and p.suffix != ".pyc":
                out.append((p, str(p.relative_to(REPO))))
    out.extend((REPO / f, f) for f in PROJECT_FILES)
    ev = disko.eval_dir()
    if ev is not None and ev.is_dir():
        for sub in ("disko", "nixpkgs-lib"):
            for p in sorted((ev / sub).rglob("*")):
                if p.is_file() and ".git" not in p.parts:
                    out.append((p, str(Path("disko-eval") / p.relative_to(ev))))
    return out


def project_image(log: Path | None = None) -> Path:
    """The cached project image of this checkout (built when any file changed)."""
    files = _project_files()
    h = hashlib.sha256(FORMAT.encode())
    for src, rel in files:
        h.update(rel.encode() + b"\0" + hashlib.sha256(src.read_bytes()).digest())
    out = cache_dir() / f"project-{h.hexdigest()[:16]}.img"
    if out.is_file():
        os.utime(out)
        return out
    with _locked(cache_dir()):
        if out.is_file():
            return out
        with tempfile.TemporaryDirectory(prefix="project-", dir=cache_dir()) as tmp:
            tree = Path(tmp) / "tree"
            for src, rel in files:
                dst = tree / rel
                dst.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(src, dst)
            _compile(tree, "/opt/disklet")
            size = sum(p.stat().st_size for p in tree.rglob("*") if p.is_file())
            partial = out.with_name(out.name + ".partial")
            with open(partial, "wb") as f:
                f.truncate(max(64 << 20, size * 2 + (64 << 20)))
            _run(["mkfs.ext4", "-q", "-F", "-L", "disklet-proj", "-d", str(tree), "--", str(partial)], log)
            partial.rename(out)
        images = sorted(cache_dir().glob("project-*.img"), key=lambda p: p.stat().st_mtime, reverse=True)
        for old in images[KEEP_PROJECT_IMAGES:]:
            old.unlink(missing_ok=True)
    return out
