"""Host file operations through the runner (with nsenter the host filesystem is reachable only by commands)."""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from disklet.hostcmd import HostRunner


class FileOpError(RuntimeError):
    """A host file operation failed."""


class Presence(Enum):
    ABSENT = "absent"
    PRESENT = "present"
    UNKNOWN = "unknown"


@dataclass(frozen=True)
class FileProbe:
    """Three distinct outcomes (rule 3): absent, present with N allocated bytes, unknown (do nothing)."""

    presence: Presence
    allocated: int = 0
    apparent: int = 0
    error: str = ""
    dev_maj_min: str = ""
    """``MAJ:MIN`` of the filesystem holding the file and its inode: what ``losetup -j`` matches on."""
    ino: int | None = None


@dataclass(frozen=True)
class FsSpace:
    available: int
    total: int


class HostFiles:
    def __init__(self, runner: HostRunner, timeout: float = 60.0):
        self.runner = runner
        self.timeout = timeout

    def probe(self, path: str) -> FileProbe:
        """Allocated bytes from ``stat`` blocks, so a sparse file cannot pass for a full one.

        The last component is NOT followed (no ``-L``): a backing file that is a symbolic link is
        reported as such and never used, wherever it points."""
        res = self.runner.run(["stat", "-c", "%b %B %s %Hd:%Ld %i %F", "--", path], timeout=self.timeout)
        if res.ok:
            parts = res.stdout.split(maxsplit=5)
            try:
                blocks, bsize, size, ino = int(parts[0]), int(parts[1]), int(parts[2]), int(parts[4])
                dev = parts[3]
            except (IndexError, ValueError):
                return FileProbe(Presence.UNKNOWN, error=f"unparsable stat output {res.stdout!r}")
            if len(parts) > 5 and "symbolic link" in parts[5]:
                return FileProbe(Presence.UNKNOWN, error=f"{path} is a symbolic link: a backing file must be a regular "
                                                         "file inside the base directory; refusing to follow it")
            if len(parts) > 5 and "regular" not in parts[5]:
                return FileProbe(Presence.UNKNOWN, error=f"{path} is not a regular file ({parts[5].strip()})")
            return FileProbe(Presence.PRESENT, allocated=blocks * bsize, apparent=size, dev_maj_min=dev, ino=ino)
        # ENOENT, or ENOTDIR: a component of the path's directory is not a directory (a regular file
        # on the way), so nothing can exist at this path. Both are proof of absence; anything else
        # (permissions, I/O errors, a timeout) is not.
        if not res.timed_out and ("No such file or directory" in res.stderr or "Not a directory" in res.stderr):
            return FileProbe(Presence.ABSENT)
        return FileProbe(Presence.UNKNOWN, error=res.describe())

    def fs_space(self, directory: str) -> FsSpace:
        res = self.runner.run(["stat", "-f", "-c", "%a %S %b", "--", directory], timeout=self.timeout)
        try:
            avail, frsize, total = (int(x) for x in res.stdout.split())
        except ValueError as exc:
            raise FileOpError(f"cannot read free space of {directory}: {res.describe()}") from exc
        if not res.ok:
            raise FileOpError(f"cannot read free space of {directory}: {res.describe()}")
        return FsSpace(available=avail * frsize, total=total * frsize)

    def _check(self, argv: list[str]) -> None:
        res = self.runner.run(argv, timeout=self.timeout)
        if not res.ok:
            raise FileOpError(res.describe())

    def mkdir_p(self, directory: str) -> None:
        self._check(["mkdir", "-p", "--", directory])

    def fallocate(self, path: str, size: int) -> None:
        self._check(["fallocate", "-l", str(size), "--", path])

    def rm_f(self, path: str) -> None:
        self._check(["rm", "-f", "--", path])

    def realpaths(self, paths: list[str]) -> dict[str, str]:
        """Canonical form of each path (missing components allowed) in ONE ``realpath`` command."""
        if not paths:
            return {}
        res = self.runner.run(["realpath", "-m", "--", *paths], timeout=self.timeout)
        lines = res.stdout.splitlines()
        if not res.ok or len(lines) != len(paths):
            raise FileOpError(res.describe())
        return dict(zip(paths, lines, strict=True))

    def realpath(self, path: str, must_exist: bool = False) -> str:
        """Canonical path (``-m``: missing components allowed unless ``must_exist``)."""
        res = self.runner.run(["realpath", "-e" if must_exist else "-m", "--", path], timeout=self.timeout)
        if not res.ok or not res.stdout.strip():
            raise FileOpError(res.describe())
        return res.stdout.strip()
