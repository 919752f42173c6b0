"""The test ``udevadm`` stand-in and the clean-up of what the test disko made.

There is no udevd here, but disko names partitions ``/dev/disk/by-partlabel/<label>`` and waits
with ``udevadm trigger`` / ``udevadm settle``. On either, this makes those links for the partitions
of the sandbox's own loop devices (label from ``blkid -p -o value -s PART_ENTRY_NAME``), and
records each link it made in the sandbox's ledger so :func:`cleanup` removes exactly those.

It only ever looks at loop devices whose backing file lies inside ``$DISKO_TEST_SANDBOX``; a
label that already links to any other device is a collision and fails (exit 4), so disko's script
stops before it formats anything through that name. ``/dev/disk/by-partlabel`` is global: tests
use unique labels.
"""

from __future__ import annotations

import contextlib
import os
import re
import subprocess
import sys
from pathlib import Path

BY_PARTLABEL = Path("/dev/disk/by-partlabel")
LEDGER_NAME = ".disko-test-links"
LVM_DIR_NAME = ".disko-test-lvm"
SAFE_LABEL = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,35}$")
TIMEOUT = 30.0
NO_ACTIVATION = "global{activation=0}"


def _run(argv: list[str], timeout: float = TIMEOUT) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)  # noqa: S603


def sandbox_dir() -> Path:
    value = os.environ.get("DISKO_TEST_SANDBOX", "")
    if not value or not os.path.isabs(value) or not os.path.isdir(value):
        raise PermissionError("DISKO_TEST_SANDBOX must name the directory holding the test's loop backing files")
    return Path(os.path.realpath(value))


def inside(path: str | Path, directory: Path) -> bool:
    p = os.path.realpath(path)
    return p.startswith(str(directory) + os.sep)


def our_loops(sandbox: Path) -> list[str]:
    """Loop devices whose backing file lies inside ``sandbox`` (the only ones we may touch)."""
    res = _run(["losetup", "--list", "--noheadings", "--raw", "--output", "NAME,BACK-FILE"])
    if res.returncode != 0:
        raise RuntimeError(f"losetup --list failed: {res.stderr.strip()}")
    out = []
    for line in res.stdout.splitlines():
        name, _, back = line.strip().partition(" ")
        back = back.replace("\\x20", " ").removesuffix(" (deleted)")
        if name.startswith("/dev/loop") and back and inside(back, sandbox):
            out.append(name)
    return sorted(out)


def is_our_loop(device: str, sandbox: Path) -> bool:
    real = os.path.realpath(device)
    return re.fullmatch(r"/dev/loop[0-9]+", real) is not None and real in our_loops(sandbox)


def partitions_of(loop: str) -> list[str]:
    base = os.path.basename(loop)
    sys_dir = Path("/sys/block") / base
    if not sys_dir.is_dir():
        return []
    return sorted((f"/dev/{p.name}" for p in sys_dir.iterdir() if re.fullmatch(rf"{base}p[0-9]+", p.name)),
                  key=lambda s: int(s.rsplit("p", 1)[1]))


def part_label(part: str) -> str:
    res = _run(["blkid", "-p", "-o", "value", "-s", "PART_ENTRY_NAME", "--", part])
    return res.stdout.strip() if res.returncode == 0 else ""


def _ledger(sandbox: Path) -> Path:
    return sandbox / LEDGER_NAME


def _recorded(sandbox: Path) -> list[str]:
    f = _ledger(sandbox)
    return [line for line in f.read_text().splitlines() if line] if f.exists() else []


def sync_links(sandbox: Path) -> list[str]:
    """Make by-partlabel links for our loops' partitions; returns problems (label collisions)."""
    problems: list[str] = []
    ours: dict[str, str] = {}  # label -> partition
    our_parts: set[str] = set()
    for loop in our_loops(sandbox):
        for part in partitions_of(loop):
            our_parts.add(part)
            label = part_label(part)
            if not label:
                continue
            if not SAFE_LABEL.match(label):
                problems.append(f"{part}: partition label {label!r} is outside the test's character set")
                continue
            ours[label] = part
    recorded = _recorded(sandbox)
    # Links we made earlier whose partition is gone or relabelled: remove.
    for old in recorded:
        if ours.get(os.path.basename(old)) is None:
            with contextlib.suppress(FileNotFoundError):
                if os.path.islink(old) and (not os.path.exists(old) or os.path.realpath(old) in our_parts):
                    os.unlink(old)
    made = [old for old in recorded if os.path.basename(old) in ours]
    for label, part in sorted(ours.items()):
        link = BY_PARTLABEL / label
        if os.path.lexists(link):
            target = os.path.realpath(link)
            if target == part:
                if str(link) not in made:
                    made.append(str(link))
                continue
            if os.path.exists(link) and target not in our_parts:
                problems.append(f"label collision: {link} already points to {target}, not to the test's {part}")
                continue
            os.unlink(link)  # dangling, or one of our partitions that lost the label
        for _ in range(3):
            BY_PARTLABEL.mkdir(parents=True, exist_ok=True)
            try:
                os.symlink(f"../../{os.path.basename(part)}", link)
                break
            except FileNotFoundError:
                continue
        if str(link) not in made:
            made.append(str(link))
    _ledger(sandbox).write_text("".join(f"{m}\n" for m in made))
    return problems


def remove_links(sandbox: Path) -> list[str]:
    """Remove every link the stand-in recorded (only if it is ours or dangling)."""
    problems: list[str] = []
    parts = {p for loop in our_loops(sandbox) for p in partitions_of(loop)}
    for link in _recorded(sandbox):
        if not os.path.islink(link):
            continue
        if os.path.exists(link) and os.path.realpath(link) not in parts:
            problems.append(f"{link} now points to {os.path.realpath(link)}, not ours: left alone")
            continue
        with contextlib.suppress(FileNotFoundError):
            os.unlink(link)
    _ledger(sandbox).unlink(missing_ok=True)
    return problems


def lvm_system_dir(sandbox: Path) -> Path:
    """An LVM config dir with activation off (no device-mapper here), for disko's LVM commands."""
    d = sandbox / LVM_DIR_NAME
    d.mkdir(exist_ok=True)
    (d / "lvm.conf").write_text("global {\n  activation = 0\n}\n")
    return d


def needs_no_activation() -> bool:
    return not Path("/dev/mapper/control").exists() or not Path("/run/udev/control").exists()


def _lvm(*args: str) -> subprocess.CompletedProcess[str]:
    return _run(["lvm", args[0], "--config", NO_ACTIVATION, *args[1:]], timeout=60)


def cleanup(sandbox: Path, *, detach: bool = False, remove_vgs: bool = True) -> list[str]:
    """Undo what disko's scripts made on the sandbox's loops: mounts (deepest first), VGs whose
    PVs are all ours and PV labels (``remove_vgs``), by-partlabel links; then (``detach``) the
    loops. Returns problems."""
    sandbox = Path(os.path.realpath(sandbox))
    problems: list[str] = []
    loops = our_loops(sandbox)
    devs = set(loops) | {p for loop in loops for p in partitions_of(loop)}
    res = _run(["findmnt", "--noheadings", "--raw", "--output", "TARGET,SOURCE"])
    targets = []
    for line in res.stdout.splitlines():
        target, _, source = line.partition(" ")
        target = target.replace("\\x20", " ")
        if source in devs or inside(target, sandbox):
            targets.append(target)
    for target in sorted(set(targets), key=len, reverse=True):
        if _run(["umount", "--", target]).returncode != 0:
            r = _run(["umount", "--lazy", "--", target])
            if r.returncode != 0:
                problems.append(f"umount {target}: {r.stderr.strip()}")
    pvs = _lvm("pvs", "--noheadings", "--separator", "|", "-o", "pv_name,vg_name") if remove_vgs else None
    by_vg: dict[str, list[str]] = {}
    for line in pvs.stdout.splitlines() if pvs is not None else []:
        if "|" in line:
            pv, vg = (x.strip() for x in line.split("|", 1))
            by_vg.setdefault(vg, []).append(os.path.realpath(pv))
    for vg, members in by_vg.items():
        if vg and all(m in devs for m in members):
            r = _lvm("vgremove", "-f", "-y", "--", vg)
            if r.returncode != 0:
                problems.append(f"vgremove {vg}: {r.stderr.strip()}")
    for vg, members in by_vg.items():
        for m in members:
            if m in devs and (not vg or all(x in devs for x in by_vg[vg])):
                _lvm("pvremove", "-ff", "-y", "--", m)
    problems += remove_links(sandbox)
    if detach:
        for loop in loops:
            r = _run(["losetup", "--detach", loop])
            if r.returncode != 0:
                problems.append(f"losetup -d {loop}: {r.stderr.strip()}")
    return problems


def udevadm_main(argv: list[str]) -> int:
    """``udevadm trigger|settle [...]``: sync the sandbox's by-partlabel links. Anything else: exit 2."""
    if not argv or argv[0] not in ("trigger", "settle"):
        print(f"test udevadm: {' '.join(argv) or '(no command)'} is not supported (only trigger and settle)",
              file=sys.stderr)
        return 2
    try:
        sandbox = sandbox_dir()
    except PermissionError as exc:
        print(f"test udevadm: refusing: {exc}", file=sys.stderr)
        return 3
    problems = sync_links(sandbox)
    for p in problems:
        print(f"test udevadm: {p}", file=sys.stderr)
    return 4 if problems else 0


def modprobe_main(argv: list[str]) -> int:
    """``modprobe dm-*``: device-mapper modules are not loadable here; say so and succeed."""
    mods = [a for a in argv if not a.startswith("-")]
    if mods and all(m.startswith("dm-") or m.startswith("dm_") for m in mods):
        print(f"test modprobe: skipped {' '.join(mods)} (no module loading in tests)", file=sys.stderr)
        return 0
    print(f"test modprobe: refusing to load {' '.join(mods) or '(nothing)'}", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(udevadm_main(sys.argv[1:]))
