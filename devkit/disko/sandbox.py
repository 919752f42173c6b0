"""A sandbox for the test disko: a directory holding the loop devices' backing files and the mount
root; ``close()`` unmounts, removes VGs/PV labels and by-partlabel links made on those loops,
detaches them and deletes the files — also after a failure (use :func:`disko_sandbox`)."""

from __future__ import annotations

import contextlib
import os
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

from devkit import disko as d
from devkit.disko import udev


class DiskoSandbox:
    def __init__(self, base: Path):
        self.base = Path(os.path.realpath(base))
        self.base.mkdir(parents=True, exist_ok=True)
        self.root = self.base / "root"
        self.root.mkdir(exist_ok=True)
        self.tag = "t" + uuid.uuid4().hex[:7]
        """Unique per sandbox: use it in disk names (so partition labels are unique) and VG names."""
        self.loops: list[tuple[str, Path]] = []

    def loop(self, size_mib: int = 64) -> str:
        f = self.base / f"{self.tag}-{len(self.loops)}.img"
        with open(f, "wb") as fh:
            fh.truncate(size_mib << 20)
        res = subprocess.run(["losetup", "--find", "--show", "--partscan", "--", str(f)],  # noqa: S607
                             capture_output=True, text=True, timeout=30, check=False)
        dev = res.stdout.strip()
        if res.returncode != 0 or not dev.startswith("/dev/loop"):
            f.unlink(missing_ok=True)
            raise RuntimeError(f"losetup failed: {res.stderr.strip()}")
        self.loops.append((dev, f))
        return dev

    def env(self) -> dict[str, str]:
        """What the test disko needs in its environment."""
        return {d.ENV_SANDBOX: str(self.base), d.ENV_ROOT: str(self.root)}

    def mounted(self, mountpoint: str) -> Path:
        """Where a layout's ``mountpoint`` lands under this sandbox's root."""
        return self.root / mountpoint.lstrip("/")

    def unmount_all(self) -> None:
        """Take every filesystem of the sandbox out of use (as an operator would before day 2)."""
        res = subprocess.run(["findmnt", "--noheadings", "--raw", "--output", "TARGET"],  # noqa: S607
                             capture_output=True, text=True, timeout=30, check=False)
        targets = [t for t in res.stdout.splitlines() if udev.inside(t, self.base)]
        for t in sorted(targets, key=len, reverse=True):
            subprocess.run(["umount", "--", t], capture_output=True, timeout=30, check=True)  # noqa: S607

    def close(self) -> list[str]:
        problems = udev.cleanup(self.base)
        for dev, f in reversed(self.loops):
            subprocess.run(["wipefs", "--all", "--quiet", "--", dev], capture_output=True, timeout=30,  # noqa: S607
                           check=False)
            res = subprocess.run(["losetup", "--detach", dev], capture_output=True, text=True,  # noqa: S607
                                 timeout=30, check=False)
            if res.returncode != 0 and "No such device" not in res.stderr:
                problems.append(f"losetup -d {dev}: {res.stderr.strip()}")
            f.unlink(missing_ok=True)
        self.loops.clear()
        return problems


@contextlib.contextmanager
def disko_sandbox(base: Path) -> Iterator[DiskoSandbox]:
    sb = DiskoSandbox(base)
    done = False
    try:
        yield sb
        done = True
    finally:
        problems = sb.close()
        if problems and done:  # never mask the failure that is already in flight
            raise AssertionError("test disko sandbox left things behind: " + "; ".join(problems))
