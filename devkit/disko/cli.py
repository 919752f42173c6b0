"""The test ``disko`` executable: disko's CLI contract, disko's own scripts, only on the test's loops.

``disko --mode format,mount --root-mountpoint R FILE`` (also ``format``, ``mount``, ``--dry-run``,
``--version``): prints ``disko version ...`` like disko's wrapper, evaluates FILE exactly as disko's
``cli.nix`` does (through disko's own module types, pinned copy) and runs the resulting script
with ``bash``. Exit codes: the script's (0 = done), 1 for usage or evaluation errors (as disko),
3 when it refuses to run (a device outside the sandbox, an unsupported kind, a hook).

Safety: it runs only with ``$DISKO_TEST_SANDBOX`` set, and only when every disk of the layout is a
loop device backed by a file inside it; partitions must be disko's by-partlabel names (which only
the test ``udevadm`` links, and only for those loops); hooks, logical volumes and mountpoints or formats with shell-active characters are refused. Mounts
go under ``$DISKO_TEST_ROOT`` (inside the sandbox) instead of R, so a test never mounts on the
host's own paths.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from devkit import disko as d
from devkit.disko import udev

MODES = {"format": "create", "mount": "mount", "format,mount": "format_mount"}
REFUSED = 3
SAFE_VALUE = re.compile(r"^[A-Za-z0-9_./:=,+%@-]+$")
USAGE = """Usage: disko [options] disk-config.nix   (disklet's test disko, never shipped)

Options:
  -m, --mode MODE          format, mount or format,mount (default: mount); destroy is never supported
  --root-mountpoint DIR    where to mount (default /mnt); replaced by $DISKO_TEST_ROOT when set
  --dry-run                print the script instead of running it
  --version                print the pinned disko version
  -h, --help               this help

Environment: DISKO_TEST_SANDBOX (required: holds the backing files of the loops it may touch),
DISKO_TEST_ROOT (mount root inside the sandbox), DISKO_EVAL_DIR (disko's sources),
DISKO_TEST_TIMEOUT (seconds for the script, default 600), DISKO_TEST_RECORD (a file: each run
appends its argv and the bytes of the config file as a JSON line).
"""


class Refused(Exception):
    pass


def _parse(argv: list[str]) -> dict[str, Any]:
    opts: dict[str, Any] = {"mode": "mount", "root": "/mnt", "dry_run": False, "file": None}
    it = iter(argv)
    for a in it:
        if a in ("-m", "--mode"):
            opts["mode"] = next(it, "")
        elif a == "--root-mountpoint":
            opts["root"] = next(it, "")
        elif a == "--dry-run":
            opts["dry_run"] = True
        elif a in ("-h", "--help"):
            opts["help"] = True
        elif a == "--version":
            opts["version"] = True
        elif a.startswith("-") and a != "-":
            raise ValueError(f"unsupported option {a}")
        elif opts["file"] is None:
            opts["file"] = a
        else:
            raise ValueError("more than one config file")
    return opts


def vm_disks() -> set[str] | None:
    """Inside disklet's test VM only (kernel command line ``disklet.vm=1``, devkit/vm): the real disks
    ``$DISKO_TEST_VM_DISKS`` (comma-separated) that the layout may use instead of sandbox loops; there
    udev and device-mapper are real, so no stand-ins are used and logical volumes are run. None
    elsewhere (the variable is ignored on any machine that is not the test VM)."""
    value = os.environ.get(d.ENV_VM_DISKS, "")
    if not value:
        return None
    try:
        with open("/proc/cmdline", encoding="utf-8") as fh:
            cmdline = fh.read().split()
    except OSError:
        return None
    if "disklet.vm=1" not in cmdline:
        return None
    return {os.path.realpath(v) for v in value.split(",") if v.startswith("/dev/")}


def check_summary(summary: dict[str, Any], sandbox: Path, vm: set[str] | None = None) -> list[str]:
    """Why the evaluated layout must not run here (empty: it may). ``vm``: the test VM's allowed disks."""
    zfs = shutil.which("zpool") is not None
    problems = _kind_problems(summary, zfs)
    loops = set(udev.our_loops(sandbox)) if vm is None else vm
    for disk in summary.get("disks", []):
        problems += _disk_problems(disk, loops, sandbox, vm, zfs)
    for pool in summary.get("pools", []):
        if pool.get("topology") or pool.get("hooks"):
            problems.append(f"zpool {pool['name']}: an explicit topology (members named by path) or hooks are not "
                            "supported; members come from the layout's zfs partitions")
    for vg in summary.get("vgs", []):
        problems += _vg_problems(vg, vm)
    return problems


def _kind_problems(summary: dict[str, Any], zfs: bool) -> list[str]:
    allowed = {"disk", "lvm_vg"} | ({"zpool"} if zfs else set())
    return [f"disko.devices.{kind} is not supported by the test disko"
            + (" (no zfs tools here)" if kind == "zpool" else "")
            for kind in summary.get("kinds", []) if kind not in allowed]


def _unsafe_values(where: str, content: dict[str, Any]) -> list[str]:
    """A mountpoint or format with characters the test disko will not hand to a shell."""
    problems = []
    for key in ("mountpoint", "format"):
        value = content.get(key)
        if value is not None and not SAFE_VALUE.match(value):
            problems.append(f"{where}: {key} {value!r} has characters the test disko will not hand to a shell")
    return problems


def _disk_problems(disk: dict[str, Any], loops: set[str], sandbox: Path, vm: set[str] | None, zfs: bool) -> list[str]:
    """A disk must be one of the sandbox's loop devices (or the VM's test disks), without hooks,
    holding at most a gpt table on itself."""
    where = f"disk {disk['name']}"
    problems = []
    if os.path.realpath(disk["device"]) not in loops:
        problems.append(f"{where}: {disk['device']} is not a loop device of the sandbox {sandbox}" if vm is None
                        else f"{where}: {disk['device']} is not one of the VM's test disks {sorted(vm)}")
    if disk.get("hooks"):
        problems.append(f"{where}: hooks are refused")
    content = disk.get("content")
    if content is None:
        return problems
    if content["type"] != "gpt" or content.get("device") != disk["device"] or content.get("hooks"):
        problems.append(f"{where}: only a gpt table on the disk itself, without hooks, is supported")
        return problems
    for part in content.get("partitions", []):
        problems += _partition_problems(f"{where} partition {part['name']}", part, zfs)
    return problems


def _partition_problems(pwhere: str, part: dict[str, Any], zfs: bool) -> list[str]:
    """disko's by-partlabel device, no hooks, and a supported content on the partition itself."""
    problems = []
    label = part.get("label", "")
    if not udev.SAFE_LABEL.match(label) or part.get("device") != f"/dev/disk/by-partlabel/{label}":
        problems.append(f"{pwhere}: device must be disko's /dev/disk/by-partlabel/<label> name "
                        f"(got {part.get('device')!r}, label {label!r})")
    if part.get("hooks"):
        problems.append(f"{pwhere}: hooks are refused")
    pc = part.get("content")
    if pc is None:
        return problems
    if pc["type"] not in ("filesystem", "lvm_pv", *(("zfs",) if zfs else ())):
        problems.append(f"{pwhere}: content type {pc['type']} is not supported by the test disko")
    problems += _unsafe_values(pwhere, pc)
    if pc.get("device") != part.get("device") or pc.get("hooks"):
        problems.append(f"{pwhere}: content must use the partition's own device, without hooks")
    return problems


def _vg_problems(vg: dict[str, Any], vm: set[str] | None) -> list[str]:
    """A VG without hooks; its LVs (only in the VM, which has device-mapper) hold file systems only."""
    problems = []
    if vg.get("hooks") or (vg.get("lvs") and vm is None):
        problems.append(f"lvm_vg {vg['name']}: logical volumes and hooks are not supported (no device-mapper)")
    for lv in vg.get("lvs") or [] if vm is not None else []:
        lvwhere = f"lvm_vg {vg['name']} lv {lv.get('name')}"
        content = lv.get("content") or {}
        if lv.get("hooks") or content.get("hooks") or content.get("type") not in (None, "filesystem"):
            problems.append(f"{lvwhere}: only file systems, without hooks, are supported")
        problems += _unsafe_values(lvwhere, content)
    return problems


def _script_env(sandbox: Path, vm: set[str] | None = None) -> dict[str, str]:
    env = dict(os.environ)
    stand_ins = [str(d.BIN)] if vm is None else []  # the VM has udev and device-mapper
    env["PATH"] = os.pathsep.join([*stand_ins, env.get("PATH", ""), "/usr/sbin", "/usr/bin", "/sbin", "/bin"])
    env["DISKO_TEST_SANDBOX"] = str(sandbox)
    env["DISKO_TEST_PYTHON"] = sys.executable
    env["PYTHONPATH"] = os.pathsep.join([str(d.REPO), *filter(None, [env.get("PYTHONPATH")])])
    if udev.needs_no_activation():
        env["LVM_SYSTEM_DIR"] = str(udev.lvm_system_dir(sandbox))
    return env


def run_script(script: str, sandbox: Path, timeout: float, vm: set[str] | None = None) -> int:
    fd, path = tempfile.mkstemp(prefix=".disko-script-", suffix=".sh", dir=sandbox)
    with os.fdopen(fd, "w") as fh:
        fh.write(script)
    proc = subprocess.Popen(["bash", "--", path], env=_script_env(sandbox, vm), start_new_session=True)  # noqa: S603
    try:
        return proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        print(f"test disko: the script did not finish within {timeout:.0f}s; killed", file=sys.stderr)
        return 124
    finally:
        Path(path).unlink(missing_ok=True)


def record(opts: dict[str, Any], argv: list[str]) -> None:
    """With ``$DISKO_TEST_RECORD``: append the argv and the bytes of FILE as one JSON line, so a test
    can prove the file disko ran is the one that was promoted."""
    path = os.environ.get(d.ENV_RECORD)
    if not path:
        return
    text = None
    if opts.get("file") and os.path.isfile(opts["file"]):
        with open(opts["file"], encoding="utf-8", errors="surrogateescape") as fh:
            text = fh.read()
    with open(path, "a", encoding="utf-8") as fh:
        fh.write(json.dumps({"argv": argv, "file": text}) + "\n")


def main(argv: list[str] | None = None) -> int:
    try:
        opts = _parse(sys.argv[1:] if argv is None else argv)
    except ValueError as exc:
        print(f"disko: {exc}\n{USAGE}", file=sys.stderr)
        return 1
    if opts.get("help"):
        print(USAGE)
        return 0
    if opts.get("version"):
        print(d.PINNED_REV)
        return 0
    print(f"disko version {d.PINNED_REV} (disklet test disko: disko's own scripts, test loops only)", flush=True)
    record(opts, argv if argv is not None else sys.argv[1:])
    if opts["mode"] not in MODES:
        print(f"aborted: mode {opts['mode']!r} is not supported by the test disko (format, mount, format,mount)",
              file=sys.stderr)
        return 1
    if not opts["file"] or not os.path.isfile(opts["file"]):
        print("aborted: disko config must be an existing file", file=sys.stderr)
        return 1
    reason = d.missing()
    if reason:
        print(f"aborted: {reason}", file=sys.stderr)
        return 1
    try:
        sandbox = udev.sandbox_dir()
        root = os.path.realpath(os.environ.get(d.ENV_ROOT) or opts["root"])
        if not udev.inside(root, sandbox) and root != str(sandbox):
            raise Refused(f"mount root {root} is outside the sandbox {sandbox} (set {d.ENV_ROOT})")
    except (PermissionError, Refused) as exc:
        print(f"test disko: refusing: {exc}", file=sys.stderr)
        return REFUSED
    try:
        ev = d.evaluate(opts["file"], root)
    except d.EvalError as exc:
        print(str(exc), file=sys.stderr)
        return 1
    vm = vm_disks()
    problems = check_summary(ev.summary, sandbox, vm)
    if problems:
        print("test disko: refusing: " + "; ".join(problems), file=sys.stderr)
        return REFUSED
    script = {"create": ev.create, "mount": ev.mount, "format_mount": ev.format_mount}[MODES[opts["mode"]]]
    if opts["dry_run"]:
        print(script)
        return 0
    timeout = float(os.environ.get(d.ENV_TIMEOUT) or 600)
    return run_script(script, sandbox, timeout, vm)


if __name__ == "__main__":
    sys.exit(main())
