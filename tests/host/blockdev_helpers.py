"""Loop-device helpers for N's host tests: unique names, everything undone by a finalizer stack."""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import os
import struct
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path


class Sandbox:
    """Creates loop devices, filesystems, mounts; ``close()`` undoes them in reverse order."""

    def __init__(self, base: Path):
        self.base = base
        self.tag = "nN" + uuid.uuid4().hex[:8]
        self._undo: list[Callable[[], None]] = []

    def sh(self, *argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return subprocess.run(list(argv), check=check, capture_output=True, text=True, timeout=60)  # noqa: S603

    def defer(self, fn: Callable[[], None]) -> None:
        self._undo.append(fn)

    def loop(self, size_mib: int = 64, *, partscan: bool = False) -> str:
        f = self.base / f"{self.tag}-{len(self._undo)}.img"
        with open(f, "wb") as fh:
            fh.truncate(size_mib << 20)
        argv = ["losetup", "-f", "--show", *(["-P"] if partscan else []), str(f)]
        dev = self.sh(*argv).stdout.strip()
        assert dev.startswith("/dev/loop"), dev

        def detach() -> None:
            self.sh("wipefs", "-a", "-q", dev, check=False)
            self.sh("losetup", "-d", dev, check=False)
            f.unlink(missing_ok=True)

        self.defer(detach)
        return dev

    def mkfs(self, dev: str) -> None:
        self.sh("mkfs.ext4", "-q", "-F", dev)

    def mount(self, dev: str, where: Path) -> None:
        where.mkdir(parents=True, exist_ok=True)
        self.sh("mount", dev, str(where))
        self.defer(lambda: (self.sh("umount", "-l", str(where), check=False), None)[1])

    def pvcreate(self, dev: str) -> None:
        cfg = "global{activation=0}"
        self.sh("pvcreate", "-q", "--config", cfg, dev)
        self.defer(lambda: (self.sh("pvremove", "-q", "-ff", "-y", "--config", cfg, dev, check=False), None)[1])

    def swap(self, dev: str) -> None:
        self.sh("mkswap", "-q", dev)
        self.sh("swapon", dev)
        self.defer(lambda: (self.sh("swapoff", dev, check=False), None)[1])

    def symlink(self, target: str, name: str) -> str:
        link = self.base / "by-id" / f"{self.tag}-{name}"
        link.parent.mkdir(parents=True, exist_ok=True)
        os.symlink(target, link)
        return str(link)

    def close(self) -> None:
        errors = []
        while self._undo:
            try:
                self._undo.pop()()
            except Exception as exc:  # noqa: BLE001 - keep undoing the rest
                errors.append(exc)
        if errors:
            raise errors[0]


class _BlkpgPartition(ctypes.Structure):
    _fields_ = [("start", ctypes.c_longlong), ("length", ctypes.c_longlong), ("pno", ctypes.c_int),
                ("devname", ctypes.c_char * 64), ("volname", ctypes.c_char * 64)]


class _BlkpgArg(ctypes.Structure):
    _fields_ = [("op", ctypes.c_int), ("flags", ctypes.c_int), ("datalen", ctypes.c_int),
                ("data", ctypes.c_void_p)]


BLKPG = 0x1269
BLKPG_ADD_PARTITION = 1


def add_kernel_partition(dev: str, pno: int, start_bytes: int, length_bytes: int) -> None:
    """BLKPG_ADD_PARTITION (what ``partx -a`` does): this kernel has no partition-table parsers,
    so partitions only appear when told explicitly."""
    part = _BlkpgPartition(start_bytes, length_bytes, pno, b"", b"")
    arg = _BlkpgArg(BLKPG_ADD_PARTITION, 0, ctypes.sizeof(part), ctypes.cast(ctypes.pointer(part), ctypes.c_void_p))
    fd = os.open(dev, os.O_RDONLY)
    try:
        fcntl.ioctl(fd, BLKPG, arg)
    finally:
        os.close(fd)


def write_mbr(dev: str, partitions: int, size_mib: int) -> None:
    """A DOS partition table with ``partitions`` equal primary partitions, registered with the
    kernel (no sfdisk/partx here)."""
    assert 1 <= partitions <= 4
    sectors = (size_mib << 20) // 512
    start, each = 2048, (sectors - 2048) // partitions
    mbr = bytearray(512)
    for i in range(partitions):
        entry = struct.pack("<B3sB3sII", 0, b"\xfe\xff\xff", 0x83, b"\xfe\xff\xff", start + i * each, each)
        mbr[446 + 16 * i: 446 + 16 * (i + 1)] = entry
    struct.pack_into("<I", mbr, 440, 0x12345678)
    mbr[510:512] = b"\x55\xaa"
    with open(dev, "r+b") as fh:
        fh.write(mbr)
        fh.flush()
        os.fsync(fh.fileno())
    for i in range(partitions):
        add_kernel_partition(dev, i + 1, (start + i * each) * 512, each * 512)
    for _ in range(100):
        if all(os.path.exists(f"{dev}p{i + 1}") for i in range(partitions)):
            return
        time.sleep(0.02)
    raise AssertionError(f"partition nodes of {dev} did not appear")


@contextlib.contextmanager
def open_sandbox(tmp_path: Path) -> Iterator[Sandbox]:
    """Use as a fixture body: everything the sandbox created is undone, even on failure."""
    sb = Sandbox(tmp_path)
    try:
        yield sb
    finally:
        sb.close()
