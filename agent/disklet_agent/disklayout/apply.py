"""The apply pipeline (docs/design/disklayout.md#apply): stage → exclusive-open probe → disko → verify → record identities → promote
current.nix → rebuild test/switch.

Runs only after :func:`disklet_agent.disklayout.gate.plan_apply` said yes, and only ever with the
plan's ``artifact`` (the literal, checked Nix; docs/layouts.md). Right before disko every target is
opened with ``O_EXCL``: the kernel refuses that while anything (a mount, a holder, another
exclusive opener) uses the device, so a disk that became busy after the gate is refused
(``target_device_busy``). A disko or verify
failure leaves ``current.nix`` untouched. A rebuild failure happens after promotion on purpose:
disko has already written the disks, so ``current.nix`` must describe them (otherwise the next
attempt would find "foreign" non-blank disks). One apply per node at a time (a lock file).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import os
import re
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from disklet.api.disklayout import RefusalCode
from disklet.hostcmd import CommandResult, HostRunner
from disklet_agent.config import AgentConfig
from disklet_agent.host.lsblk import ProbeFailed
from disklet_agent.host.nixos import run_disko, run_rebuild
from disklet_agent.logic.topology import BlockTopology

from .gate import CURRENT_NAME, LayoutReader, disk_dir, host_reader
from .identity import IDENTITY_NAME, DiskIdentity, identities_text

DEFAULT_TIMEOUT_SECONDS = 300
MAX_TIMEOUT_SECONDS = 3600
REBUILD_TIMEOUT_SECONDS = 3600.0
TAIL_LINES = 20
LOCK_NAME = ".apply.lock"
FAILED_UNITS_RE = re.compile(r"the following units failed:\s*(.+)")


class ApplyBusy(RuntimeError):
    """Another apply holds the node's apply lock."""


def check_timeout(seconds: int | float) -> int:
    """Validate ``--timeout-seconds`` / ``spec.timeoutSeconds``: 1..3600."""
    value = int(seconds)
    if value != seconds or value < 1 or value > MAX_TIMEOUT_SECONDS:
        raise ValueError(f"timeout must be a whole number of seconds between 1 and {MAX_TIMEOUT_SECONDS} "
                         f"(hard cap), got {seconds}")
    return value


@dataclass(frozen=True)
class StepResult:
    name: str
    argv: tuple[str, ...]
    returncode: int
    timed_out: bool
    duration: float
    tail: str

    @property
    def ok(self) -> bool:
        return self.returncode == 0 and not self.timed_out

    @classmethod
    def of(cls, name: str, res: CommandResult) -> StepResult:
        return cls(name, res.argv, res.returncode, res.timed_out, res.duration, res.tail(TAIL_LINES))


@dataclass
class ApplyOutcome:
    ok: bool
    phase: str
    """Where it ended: stage, disko, verify, promote, rebuild-test, rebuild-switch or done."""
    message: str
    steps: list[StepResult] = field(default_factory=list)
    failed_units: list[str] = field(default_factory=list)
    promoted: bool = False
    refusal: RefusalCode | None = None
    """Set when the last-moment checks refused (nothing was written)."""
    identities: dict[str, dict[str, Any]] = field(default_factory=dict)
    """target as written → recorded identity (after a successful disko run)."""


@dataclass(frozen=True)
class DiskExpectation:
    device: str
    """Resolved kernel path of the disk."""
    partitions: int
    """GPT partitions the layout declares (the disk must have at least this many)."""


@dataclass(frozen=True)
class Expectation:
    disks: tuple[DiskExpectation, ...] = ()
    vg_members: tuple[tuple[str, int], ...] = ()
    """(vg, number of lvm_pv partitions/disks of this layout that join it)."""
    pools: tuple[str, ...] = ()


def expectation_from(devices_value: dict[str, Any], resolved: dict[str, str | None]) -> Expectation:
    """What the disks must look like after disko, from the evaluated ``disko.devices``."""
    disks: list[DiskExpectation] = []
    vgs: dict[str, int] = {}
    raw_disks = devices_value.get("disk") if isinstance(devices_value, dict) else None
    for disk in (raw_disks or {}).values() if isinstance(raw_disks, dict) else []:
        if not isinstance(disk, dict) or not isinstance(disk.get("device"), str):
            continue
        device = resolved.get(disk["device"]) or disk["device"]
        raw_content = disk.get("content")
        content: dict[str, Any] = raw_content if isinstance(raw_content, dict) else {}
        contents: list[dict[str, Any]] = []
        parts = content.get("partitions")
        if content.get("type") == "gpt" and isinstance(parts, dict):
            disks.append(DiskExpectation(device, len(parts)))
            contents = [p["content"] for p in parts.values() if isinstance(p, dict) and isinstance(p.get("content"), dict)]
        else:
            contents = [content]
        for c in contents:
            if c.get("type") == "lvm_pv" and isinstance(c.get("vg"), str):
                vgs[c["vg"]] = vgs.get(c["vg"], 0) + 1
    pools = devices_value.get("zpool") if isinstance(devices_value, dict) else None
    return Expectation(tuple(disks), tuple(sorted(vgs.items())),
                       tuple(sorted(pools)) if isinstance(pools, dict) else ())


def host_view(path: Path, config: AgentConfig) -> str:
    """The path as commands see it: under nsenter they run in the host's mount namespace,
    where ``<host_root>/etc/disklet`` is ``/etc/disklet``."""
    if not config.use_nsenter:
        return str(path)
    try:
        return "/" + str(path.relative_to(config.host_root))
    except ValueError:
        return str(path)


@contextlib.contextmanager
def apply_lock(directory: Path) -> Iterator[None]:
    """Non-blocking per-node apply lock (the agent and a local ``--apply`` must not overlap)."""
    directory.mkdir(parents=True, exist_ok=True)
    fd = os.open(directory / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise ApplyBusy(f"another disk apply is running on this node (lock {directory / LOCK_NAME})") from None
        yield
    finally:
        os.close(fd)


def atomic_write(path: Path, text: str) -> None:
    """Write temp, fsync, rename over ``path``, fsync the directory: old or new, never half."""
    directory = path.parent
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    dfd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)


def stage(body: str, config: AgentConfig) -> Path:
    directory = disk_dir(config)
    directory.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256(body.encode()).hexdigest()
    for old in directory.glob("staged-*.nix"):  # leftovers of earlier failed attempts
        with contextlib.suppress(OSError):
            old.unlink()
    path = directory / f"staged-{digest[:16]}.nix"
    atomic_write(path, body)
    return path


def exclusive_probe(devices: list[str]) -> list[str]:
    """Open each device ``O_RDONLY|O_EXCL`` and close it again; what the kernel says is busy (or missing)."""
    busy: list[str] = []
    for dev in devices:
        try:
            fd = os.open(dev, os.O_RDONLY | os.O_EXCL | os.O_CLOEXEC | os.O_NONBLOCK)
        except OSError as exc:
            what = "in use (EBUSY)" if exc.errno == errno.EBUSY else (exc.strerror or str(exc))
            busy.append(f"{dev}: {what}")
            continue
        os.close(fd)
    return busy


def record_identities(topology: BlockTopology, targets: dict[str, str | None]) -> dict[str, DiskIdentity]:
    """Identity of each target (as written) from a post-disko snapshot; targets not found are left out."""
    out: dict[str, DiskIdentity] = {}
    for written, rp in targets.items():
        node = topology.find(rp) if rp else None
        if node is not None:
            out[written] = DiskIdentity.of(node)
    return out


def parse_failed_units(text: str) -> list[str]:
    """Units named by switch-to-configuration's "the following units failed: a, b" line."""
    units: list[str] = []
    for m in FAILED_UNITS_RE.finditer(text):
        for u in m.group(1).split(","):
            u = u.strip().rstrip(".")
            if u and u not in units:
                units.append(u)
    return units


def verify(expect: Expectation, *, reader: LayoutReader) -> tuple[list[str], list[str]]:
    """(problems, notes): problems are detected misses; notes say what could not be checked."""
    problems: list[str] = []
    notes: list[str] = []
    try:
        topo = reader.topology()
    except ProbeFailed as exc:
        return [f"cannot re-read the disks after disko: {exc}"], notes
    member_paths: set[str] = set()
    for d in expect.disks:
        node = topo.find(d.device)
        if node is None:
            problems.append(f"{d.device} is gone after disko")
            continue
        parts = [c for c in node.children if c.type == "part"]
        member_paths |= {c.path for c in parts} | {node.path}
        if len(parts) < d.partitions:
            problems.append(f"{d.device} has {len(parts)} partition(s) after disko, the layout declares {d.partitions}")
    if expect.vg_members:
        try:
            pvs = reader.pv_members()
        except ProbeFailed as exc:
            problems.append(f"cannot verify the volume groups: {exc}")
        else:
            for vg, count in expect.vg_members:
                joined = [p for p, g in pvs if g == vg and (not member_paths or p in member_paths)]
                if len(joined) < count:
                    problems.append(f"volume group {vg} has {len(joined)} of the layout's {count} PV(s) after disko "
                                    "(disko never adds a PV to an existing VG)")
    if expect.pools:
        try:
            names = reader.imported_zpools()
        except ProbeFailed as exc:
            problems.append(f"cannot verify the ZFS pools: {exc}")
        else:
            if names is None:
                notes.append("zpool is not installed here: pool creation not verified")
            elif missing := [p for p in expect.pools if p not in names]:
                problems.append(f"ZFS pool(s) {', '.join(missing)} missing after disko (disko skips a pool "
                                "whose member already holds data)")
    return problems, notes


def _fail(phase: str, what: str, res: CommandResult | None, steps: list[StepResult], **kw: Any) -> ApplyOutcome:
    msg = what
    if res is not None:
        tail = res.tail(TAIL_LINES)
        msg += f"\n--- last output of {os.path.basename(res.argv[0]) if res.argv else 'command'} ---\n{tail}" if tail else ""
    return ApplyOutcome(False, phase, msg, steps, **kw)


def _busy_targets(staged: Path, targets: dict[str, str | None] | None, probe: Callable[[list[str]], list[str]],
                  steps: list[StepResult]) -> ApplyOutcome | None:
    """Refuse (and drop the staged file) when the kernel will not give exclusive access to a
    resolved target right before disko; None when every target is free."""
    resolved = sorted({rp for rp in (targets or {}).values() if rp})
    busy = probe(resolved) if resolved else []
    if not busy:
        return None
    with contextlib.suppress(OSError):
        staged.unlink()
    return ApplyOutcome(False, "exclusive", f"{RefusalCode.TARGET_BUSY}: the kernel refuses exclusive access "
                        "right before disko: " + "; ".join(busy) + "; nothing was written", steps,
                        refusal=RefusalCode.TARGET_BUSY)


def _disko_step(runner: HostRunner, config: AgentConfig, staged: Path, timeout: int,
                steps: list[StepResult]) -> ApplyOutcome | None:
    """Run disko on the staged file; the failure outcome, or None when it succeeded."""
    res = run_disko(runner, config, host_view(staged, config), timeout)
    steps.append(StepResult.of("disko", res))
    if res.timed_out:
        return _fail("disko", f"disko did not finish within {timeout}s and was killed (process group); "
                     "current.nix unchanged", res, steps)
    if not res.ok:
        return _fail("disko", f"disko exited {res.returncode}; current.nix unchanged", res, steps)
    return None


def _read_identities(reader: LayoutReader, targets: dict[str, str | None] | None,
                     steps: list[StepResult]) -> ApplyOutcome | dict[str, DiskIdentity]:
    """The targets' identities after disko (none without targets), or the failure outcome."""
    if not targets:
        return {}
    try:
        return record_identities(reader.topology(), targets)
    except ProbeFailed as exc:
        return ApplyOutcome(False, "verify", f"cannot read the disks' identities after disko ({exc}); "
                            "current.nix unchanged", steps)


def _promote(directory: Path, body: str, identities: dict[str, DiskIdentity] | None,
             steps: list[StepResult]) -> ApplyOutcome | None:
    """Write the identities (when targets were given) and then current.nix; None when both are written."""
    current = directory / CURRENT_NAME
    try:
        if identities is not None:
            atomic_write(directory / IDENTITY_NAME, identities_text(identities))
        atomic_write(current, body)
    except OSError as exc:
        return ApplyOutcome(False, "promote", f"disko succeeded but {current} could not be written: {exc}", steps)
    return None


def _rebuild(runner: HostRunner, config: AgentConfig, rebuild_timeout: float, done: str,
             recorded: dict[str, dict[str, Any]], steps: list[StepResult]) -> ApplyOutcome:
    """nixos-rebuild test, then switch, after a promotion; the first failure ends it."""
    for action in ("test", "switch"):
        res = run_rebuild(runner, config, action, rebuild_timeout)
        steps.append(StepResult.of(f"rebuild-{action}", res))
        if not res.ok:
            return _rebuild_failed(action, res, rebuild_timeout, done, recorded, steps)
    return ApplyOutcome(True, "done", done + "; nixos-rebuild test and switch succeeded", steps, promoted=True,
                        identities=recorded)


def _rebuild_failed(action: str, res: CommandResult, rebuild_timeout: float, done: str,
                    recorded: dict[str, dict[str, Any]], steps: list[StepResult]) -> ApplyOutcome:
    """A timed-out or failed nixos-rebuild (exit 4 of switch: activated, but some units failed)."""
    phase = f"rebuild-{action}"
    if res.timed_out:
        return _fail(phase, f"{done}; nixos-rebuild {action} did not finish within {rebuild_timeout:.0f}s",
                     res, steps, promoted=True, identities=recorded)
    units = parse_failed_units(res.stdout + "\n" + res.stderr)
    if action == "switch" and res.returncode == 4:
        what = ("nixos-rebuild switch activated the configuration but some units failed: "
                + (", ".join(units) if units else "(unit names not found in the output)"))
        return _fail(phase, f"{done}; {what}", res, steps, failed_units=units, promoted=True,
                     identities=recorded)
    return _fail(phase, f"{done}; nixos-rebuild {action} exited {res.returncode}"
                 + (f" (failed units: {', '.join(units)})" if units else ""),
                 res, steps, failed_units=units, promoted=True, identities=recorded)


def apply_layout(body: str, *, runner: HostRunner, config: AgentConfig, expect: Expectation | None = None,
                 timeout_seconds: int = DEFAULT_TIMEOUT_SECONDS, rebuild: bool = True,
                 rebuild_timeout: float = REBUILD_TIMEOUT_SECONDS, reader: LayoutReader | None = None,
                 targets: dict[str, str | None] | None = None,
                 probe: Callable[[list[str]], list[str]] = exclusive_probe) -> ApplyOutcome:
    """Run the pipeline on ``body`` (the plan's artifact); never raises for a command failure
    (ApplyBusy if another apply runs). ``targets`` (as written → resolved) are probed with O_EXCL
    before disko and their identities recorded next to current.nix afterwards.

    Stage → exclusive probe → disko → verify → identities → promote (current.nix) → rebuild; each
    step ends the pipeline with its outcome when it fails."""
    timeout = check_timeout(timeout_seconds)
    reader = reader or host_reader(runner, config)
    steps: list[StepResult] = []
    directory = disk_dir(config)
    with apply_lock(directory):
        try:
            staged = stage(body, config)
        except OSError as exc:
            return ApplyOutcome(False, "stage", f"cannot stage the layout under {directory}: {exc}", steps)
        failed = (_busy_targets(staged, targets, probe, steps)
                  or _disko_step(runner, config, staged, timeout, steps))
        if failed is not None:
            return failed
        notes: list[str] = []
        if expect is not None:
            problems, notes = verify(expect, reader=reader)
            if problems:
                return ApplyOutcome(False, "verify", "disko reported success but the result is incomplete; "
                                    "current.nix unchanged: " + "; ".join(problems), steps)
        identities = _read_identities(reader, targets, steps)
        if isinstance(identities, ApplyOutcome):
            return identities
        failed = _promote(directory, body, identities if targets else None, steps)
        if failed is not None:
            return failed
        with contextlib.suppress(OSError):
            staged.unlink()
        done = f"disko applied the layout; promoted to {directory / CURRENT_NAME}"
        if notes:
            done += " (" + "; ".join(notes) + ")"
        recorded = {k: v.to_dict() for k, v in identities.items()}
        if not rebuild:
            return ApplyOutcome(True, "done", done + "; rebuild skipped (rebuild: false)", steps, promoted=True,
                                identities=recorded)
        return _rebuild(runner, config, rebuild_timeout, done, recorded, steps)
