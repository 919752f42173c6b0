"""A throw-away Debian VM for tests on a real kernel: device-mapper, udev, disks with identities.

The build machines' own kernel has no device-mapper and runs no udev, so thin pools, LV
activation, ``/dev/disk/by-id`` links, lsblk's udev columns and real disk identities can only be
tested in a VM. This package (test support, never shipped) builds a guest root image from Debian's
packages, boots Debian's kernel under qemu with a declared set of disks and runs a workload (a
group of pytest tests) as the guest's PID 1; docs/testing.md ("The vm tier").

Pieces:

- :class:`Disk` — one disk the guest sees: kind (``nvme``, ``scsi``, ``sata``), size, serial,
  WWN, model, rotational; ``image`` names the backing file, so the same image attached twice is
  one disk on two paths (multipath) and a later boot can attach it under another controller.
- :mod:`devkit.vm.image` — the root image (Debian packages, the host kernel's modules, this
  project's Python dependencies) cached by content hash, and the project image (this checkout).
- :mod:`devkit.vm.machine` — one boot: qemu argv, the job and results disks, the console log.
- :mod:`devkit.vm.pytest_vm` — the pytest side: every ``vm`` test module is a group of boots.
"""

from __future__ import annotations

import os
import re
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

from disklet.units import quantity_bytes

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]

KINDS = ("nvme", "scsi", "sata", "virtio")
GUEST_ENV = "DISKLET_VM_GUEST"
"""Set (to "1") inside the guest for the tests it runs."""
GUEST_PYTHON = (3, 11)
"""Debian bookworm's python3: the copied packages (compiled extensions included) must match it."""
SERIAL_RE = re.compile(r"^[A-Za-z0-9_.-]{1,20}$")


def kernel_version() -> str | None:
    """The newest kernel in /boot that has its modules in /lib/modules (Debian's linux-image-amd64;
    the guest's initramfs is built by devkit.vm.image, Debian's own is not used)."""
    mods = Path("/lib/modules")
    if not mods.is_dir():
        return None
    versions = [v.name for v in mods.iterdir()
                if (Path("/boot") / f"vmlinuz-{v.name}").is_file() and (v / "modules.dep").is_file()]
    if not versions:
        return None
    return sorted(versions, key=lambda s: [int(x) if x.isdigit() else x for x in re.split(r"(\d+)", s)])[-1]


def missing() -> str:
    """Why a VM cannot be booted here ("" when it can)."""
    if os.geteuid() != 0:
        return "vm tier: needs root (mmdebstrap builds the guest root file system)"
    for tool, pkg in (("qemu-system-x86_64", "qemu-system-x86"), ("mmdebstrap", "mmdebstrap"),
                      ("mkfs.ext4", "e2fsprogs")):
        if shutil.which(tool) is None:
            return f"vm tier: needs {tool} (apt-get install {pkg})"
    if sys.version_info[:2] != GUEST_PYTHON:
        return (f"vm tier: the guest runs Debian bookworm's Python {GUEST_PYTHON[0]}.{GUEST_PYTHON[1]} with this "
                f"interpreter's installed packages; this is Python {sys.version_info[0]}.{sys.version_info[1]}")
    if kernel_version() is None:
        return "vm tier: needs a kernel in /boot with its modules in /lib/modules (apt-get install linux-image-amd64)"
    return ""


@dataclass(frozen=True)
class Disk:
    """One disk of the guest. ``image`` defaults to the serial: two Disks with the same image are
    the same disk on two paths (give them the same serial and WWN, as a real dual-ported disk has)."""

    kind: str
    """``nvme``, ``scsi`` (virtio-scsi), ``sata`` (AHCI) or ``virtio`` (virtio-blk: a serial only; its
    kernel name follows the order on the command line, ``/dev/vdf`` first: the harness's own five
    virtio disks come before)."""
    size: str = "256Mi"
    serial: str = ""
    wwn: str | None = None
    """``0x`` + 16 hex digits (SCSI only: qemu gives NVMe/SATA no WWN of the test's choosing)."""
    model: str | None = None
    """SATA only (qemu's ``ide-hd,model=``); NVMe and SCSI report qemu's own model."""
    rotational: bool = False
    image: str = ""

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"disk kind {self.kind!r}: one of {', '.join(KINDS)}")
        if not SERIAL_RE.match(self.serial):
            raise ValueError(f"disk serial {self.serial!r}: 1-20 of [A-Za-z0-9_.-]")
        if self.wwn is not None and (self.kind != "scsi" or not re.fullmatch(r"0x[0-9a-f]{16}", self.wwn)):
            raise ValueError(f"disk {self.serial}: a WWN is 0x + 16 lower-case hex digits, on a scsi disk")
        if self.model is not None and (self.kind != "sata" or not re.fullmatch(r"[A-Za-z0-9 _.-]{1,40}", self.model)):
            raise ValueError(f"disk {self.serial}: a model is set on sata disks only (1-40 of [A-Za-z0-9 _.-])")
        if not self.image:
            object.__setattr__(self, "image", self.serial)

    @property
    def size_bytes(self) -> int:
        return quantity_bytes(self.size)


@dataclass(frozen=True)
class Boot:
    """One boot of a group: the disks attached, in order (the kernel names follow the order within a kind)."""

    disks: tuple[Disk, ...] = ()
    memory_mib: int = 1024
    cpus: int = 2


def skip_or_fail(reason: str) -> None:
    """Skip with ``reason`` — or fail under ``CI=true``, where the vm tier must run."""
    import pytest

    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"vm tier prerequisite missing in CI: {reason}")
    pytest.skip(reason)
