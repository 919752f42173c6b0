"""losetup adapter: find, attach, refresh, detach and list loop devices (docs/design/lvm.md rules 3, 6, 8, 9)."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

from disklet.hostcmd import HostRunner

DELETED_SUFFIX = " (deleted)"
_J_LINE = re.compile(r"^(?P<name>/dev/loop[0-9]+):.*\((?P<file>.*)\)\s*$")


class LosetupError(RuntimeError):
    """losetup failed; the state of the loop devices is unknown."""


@dataclass(frozen=True)
class LoopDevice:
    name: str
    """Canonical /dev/loopN."""
    back_file: str
    """Backing file as the kernel reports it (symlinks resolved), without the ``(deleted)`` marker."""
    deleted: bool = False
    maj_min: str = ""
    back_ino: int | None = None
    """Inode of the backing file (``BACK-INO``); None when losetup did not report it."""
    back_maj_min: str = ""
    """Device of the filesystem holding the backing file (``BACK-MAJ:MIN``)."""
    direct_io: bool | None = None
    """Whether the kernel does direct I/O on this loop now (``DIO``); None when losetup did not say."""


def attached_by_inode(loops: list[LoopDevice], dev_maj_min: str, ino: int) -> list[LoopDevice] | None:
    """What ``losetup -j FILE`` answers, from a ``losetup --list`` read: the loops whose backing
    (device, inode) is the file's (``-j`` compares exactly these). None when the list lacks them."""
    if any(lp.back_ino is None or not lp.back_maj_min for lp in loops):
        return None
    return [lp for lp in loops if lp.back_ino == ino and lp.back_maj_min == dev_maj_min and not lp.deleted]


def parse_back_file(raw: str) -> tuple[str, bool]:
    raw = raw.strip()
    if raw.endswith(DELETED_SUFFIX):
        return raw[: -len(DELETED_SUFFIX)], True
    return raw, False


LIST_COLUMNS = "NAME,BACK-FILE,MAJ:MIN,BACK-INO,BACK-MAJ:MIN,DIO"


def _flag(value: object) -> bool | None:
    """``DIO`` as util-linux prints it in JSON: ``true``/``false`` (older versions: ``"1"``/``"0"``)."""
    if isinstance(value, bool):
        return value
    if value in ("1", 1):
        return True
    if value in ("0", 0):
        return False
    return None


def parse_list_json(stdout: str) -> list[LoopDevice]:
    """``losetup -J -l -O`` :data:`LIST_COLUMNS`."""
    try:
        rows = json.loads(stdout or '{"loopdevices": []}').get("loopdevices", [])
    except ValueError as exc:
        raise LosetupError(f"unparsable losetup list: {exc}") from exc
    out = []
    for r in rows:
        back, deleted = parse_back_file(r.get("back-file") or "")
        ino = r.get("back-ino")
        out.append(LoopDevice(name=r["name"], back_file=back, deleted=deleted,
                              maj_min=(r.get("maj:min") or "").strip(),
                              back_ino=int(ino) if ino not in (None, "") else None,
                              back_maj_min=(r.get("back-maj:min") or "").strip(),
                              direct_io=_flag(r.get("dio"))))
    return out


def parse_j_output(stdout: str) -> list[LoopDevice]:
    """``losetup -j FILE`` lines: ``/dev/loop0: [65024]:2147713 (/path/file.img)``."""
    out = []
    for line in stdout.splitlines():
        m = _J_LINE.match(line.strip())
        if m:
            back, deleted = parse_back_file(m.group("file"))
            out.append(LoopDevice(name=m.group("name"), back_file=back, deleted=deleted))
        elif line.strip():
            raise LosetupError(f"unparsable losetup -j line: {line!r}")
    return out


class Losetup:
    def __init__(self, runner: HostRunner, timeout: float = 60.0):
        self.runner = runner
        self.timeout = timeout

    def list_all(self) -> list[LoopDevice]:
        res = self.runner.run(["losetup", "-J", "-l", "-O", LIST_COLUMNS], timeout=self.timeout)
        if not res.ok:
            raise LosetupError(res.describe())
        return parse_list_json(res.stdout)

    def find(self, path: str) -> list[LoopDevice]:
        """Loops attached to ``path`` (by inode, so symlinked paths match too). ``--associated=PATH`` in one
        argument: the path can never read as an option (``-j`` takes the next argument whatever it is)."""
        res = self.runner.run(["losetup", f"--associated={path}"], timeout=self.timeout)
        if not res.ok:
            raise LosetupError(res.describe())
        return parse_j_output(res.stdout)

    def attach(self, path: str) -> str:
        """Attach with ``--nooverlap`` (reuses an existing loop of the same file) and return /dev/loopN."""
        res = self.runner.run(["losetup", "--find", "--nooverlap", "--show", "--", path], timeout=self.timeout)
        name = res.stdout.strip().splitlines()[-1] if res.ok and res.stdout.strip() else ""
        if not res.ok or not re.fullmatch(r"^/dev/loop[0-9]+$", name):
            raise LosetupError(res.describe())
        return name

    def attach_direct(self, path: str) -> tuple[str, str | None]:
        """Attach with direct I/O in the same command (``--direct-io=on`` at setup, rule 3): returns the
        loop and None, or, when that attach fails (a kernel or filesystem that refuses direct I/O), the
        loop of a plain :meth:`attach` and the refusal as a warning. ``--nooverlap`` on both: a loop the
        first attempt may have left is reused, never doubled."""
        res = self.runner.run(["losetup", "--find", "--nooverlap", "--show", "--direct-io=on", "--", path],
                              timeout=self.timeout)
        name = res.stdout.strip().splitlines()[-1] if res.ok and res.stdout.strip() else ""
        if res.ok and re.fullmatch(r"^/dev/loop[0-9]+$", name):
            return name, None
        return self.attach(path), res.describe()

    def set_direct_io(self, loop: str) -> str | None:
        """Best effort: a failure is returned as a warning text, never raised (rule 3)."""
        res = self.runner.run(["losetup", "--direct-io=on", "--", loop], timeout=self.timeout)
        return None if res.ok else res.describe()

    def refresh(self, loop: str) -> None:
        res = self.runner.run(["losetup", f"--set-capacity={loop}"], timeout=self.timeout)
        if not res.ok:
            raise LosetupError(res.describe())

    def detach(self, loop: str) -> None:
        res = self.runner.run(["losetup", f"--detach={loop}"], timeout=self.timeout)
        if not res.ok:
            raise LosetupError(res.describe())
