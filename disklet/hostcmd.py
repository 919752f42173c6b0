"""The one runner for host commands (docs/design/product.md#host-commands, docs/security.md "Host commands"), shared by agent, operator and kctl.

Every command is an argv list with a bounded timeout, never a shell string. In a pod the agent
runs commands in the host's namespaces through ``nsenter -t 1 -m -u -i -n --``; in tests and
local use they run directly. The process whose namespaces are entered is PID 1 (the host's init)
unless the runner is given another target (:func:`resolve_nsenter_target`: a PID, or
``name:<process name>``) — for sandboxes whose PID 1 is not the host's init. Each command starts its own process group so a timeout kills the
whole group (hung ``lvm`` children otherwise pile up). Benign LVM noise is filtered from stderr.

Two bounds hold whatever the command does:

- **Time.** Reading stops at the deadline even when a descendant that left the process group
  (``setsid``) still holds the output pipe; the group is killed and the result is marked timed out.
  Once the command itself has exited, what is already in the pipes is read and a descendant that
  keeps them open is not waited for.
- **Memory.** Each stream keeps at most ``max_output_bytes``: its head and its tail, with a line
  saying how many bytes were cut in between (``CommandResult.truncated``). The rest is read and
  dropped, so a command printing hundreds of megabytes costs a few megabytes of memory.
"""

from __future__ import annotations

import asyncio
import os
import re
import selectors
import signal
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from disklet.nsenter_target import DEFAULT_NSENTER_TARGET, check_nsenter_target

# Which host namespaces and why (docs/security.md): mount (host binaries, /dev, LVM config), UTS
# (LVM writes the host name into VG metadata), IPC (device-mapper udev semaphores), net (disko/nix
# use the host's resolver). Not PID: the agent pod already shares the host's (hostPID, which
# nsenter needs to find the host's PID 1), so ``-p`` would only add a forked process.
NSENTER_PREFIX: tuple[str, ...] = ("nsenter", "-t", "1", "-m", "-u", "-i", "-n", "--")
DEFAULT_TIMEOUT = 60.0
# Per stream: what the biggest legitimate report (lsblk/pvs JSON of a large node) needs, many
# times over, and small against the agent's memory limit.
DEFAULT_MAX_OUTPUT = 8 * 1024**2
# After the command has exited: how long to wait for more bytes before leaving the pipe to a
# descendant that still holds it (its own output is already in the pipe).
EXIT_DRAIN_SECONDS = 0.2
# After a kill at the deadline: how long to keep collecting what was already written.
KILL_DRAIN_SECONDS = 0.2
_CHUNK = 64 * 1024

BENIGN_STDERR_PATTERNS: tuple[re.Pattern[str], ...] = (
    # LVM warns about every inherited descriptor; it is never a failure.
    re.compile(r"^File descriptor \d+ \(.*\) leaked on \S+ invocation\. Parent PID \d+: .*$"),
)


def filter_stderr(stderr: str, extra: Sequence[re.Pattern[str]] = ()) -> str:
    """Drop benign lines (and blank ones); keep everything else verbatim."""
    keep = []
    for line in stderr.splitlines():
        stripped = line.strip()
        if not stripped:
            continue
        if any(p.match(stripped) for p in (*BENIGN_STDERR_PATTERNS, *extra)):
            continue
        keep.append(line)
    return "\n".join(keep)


@dataclass(frozen=True)
class CommandResult:
    argv: tuple[str, ...]
    returncode: int
    stdout: str
    stderr: str
    """stderr with benign noise filtered out."""
    raw_stderr: str
    duration: float
    timed_out: bool = False
    truncated: bool = False
    """Output was longer than the runner's cap: the middle was cut (a note marks the place)."""
    via_shell: bool = False
    """Run inside the agent's persistent ``lvm`` shell, not as a process of its own."""

    @property
    def ok(self) -> bool:
        return self.returncode == 0 and not self.timed_out

    def tail(self, lines: int = 20) -> str:
        """The last lines of output, for a condition message or a status."""
        text = "\n".join(x for x in (self.stdout.strip(), self.stderr.strip()) if x)
        return "\n".join(text.splitlines()[-lines:])

    def describe(self) -> str:
        what = " ".join(self.argv)
        if self.timed_out:
            return f"`{what}` timed out after {self.duration:.0f}s"
        detail = self.stderr.strip() or self.stdout.strip()
        return f"`{what}` exited {self.returncode}" + (f": {detail}" if detail else "")


class NsenterTargetError(RuntimeError):
    """The nsenter target is malformed or names no running process: no host command can run."""


def _comm(pid: int, proc: Path) -> str | None:
    try:
        return (proc / str(pid) / "comm").read_text().strip()
    except OSError:
        return None


def _start_time(pid: int, proc: Path) -> float:
    # Field 22 of /proc/PID/stat, counted after the ")" that ends the command name.
    return float((proc / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()[19])


def resolve_nsenter_target(spec: str, *, proc: Path = Path("/proc"), cached: int | None = None) -> int:
    """The PID nsenter enters for ``spec``: the PID itself, or the oldest process whose name
    (``/proc/PID/comm``) is the one after ``name:``; ``cached`` is kept while it still has that
    name. Fails closed (:class:`NsenterTargetError`) when no such process runs."""
    try:
        spec = check_nsenter_target(spec)
    except ValueError as exc:
        raise NsenterTargetError(str(exc)) from None
    if spec.isdigit():
        return int(spec)
    name = spec[5:]
    if cached is not None and _comm(cached, proc) == name:
        return cached
    best: tuple[float, int] | None = None
    for entry in proc.iterdir():
        if not entry.name.isdigit() or _comm(int(entry.name), proc) != name:
            continue
        try:
            start = _start_time(int(entry.name), proc)
        except (OSError, IndexError, ValueError):
            continue
        if best is None or start < best[0]:
            best = (start, int(entry.name))
    if best is None:
        raise NsenterTargetError(f"nsenter target {spec!r}: no process named {name!r} runs "
                                 "(host commands cannot run; is the pod in the host PID namespace?)")
    return best[1]


class CommandError(RuntimeError):
    def __init__(self, result: CommandResult, message: str | None = None):
        self.result = result
        super().__init__(message or result.describe())


@dataclass
class HostRunner:
    """Runs argv lists on the host, directly or through nsenter into the namespaces of PID 1 (or
    of ``nsenter_target``, see :func:`resolve_nsenter_target`)."""

    use_nsenter: bool = False
    nsenter_target: str = DEFAULT_NSENTER_TARGET
    default_timeout: float = DEFAULT_TIMEOUT
    max_output_bytes: int = DEFAULT_MAX_OUTPUT
    env: Mapping[str, str] | None = None
    observers: list[Callable[[CommandResult], None]] = field(default_factory=list)
    calls: Counter[str] = field(default_factory=Counter)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    _target_pid: int | None = field(default=None, repr=False)

    def full_argv(self, argv: Sequence[str]) -> list[str]:
        """The argv as run: behind the nsenter prefix when ``use_nsenter`` (raises
        :class:`NsenterTargetError` when the target names no running process)."""
        if isinstance(argv, str):  # a shell string is a bug, not a convenience
            raise TypeError("host commands are argv lists, never strings")
        argv = [str(a) for a in argv]
        if not argv:
            raise ValueError("empty argv")
        if not self.use_nsenter:
            return argv
        self._target_pid = resolve_nsenter_target(self.nsenter_target, cached=self._target_pid)
        return ["nsenter", "-t", str(self._target_pid), *NSENTER_PREFIX[3:], *argv]

    def run(self, argv: Sequence[str], *, timeout: float | None = None, input: str | bytes | None = None,
            check: bool = False, env: Mapping[str, str] | None = None,
            max_output_bytes: int | None = None) -> CommandResult:
        """Run one command until it exits or the deadline (then kill its process group)."""
        try:
            full = self.full_argv(argv)
        except NsenterTargetError as exc:
            result = CommandResult(tuple(str(a) for a in argv), 127, "", str(exc), str(exc), 0.0)
            self._observe(argv, result)
            if check:
                raise CommandError(result) from exc
            return result
        limit = self.default_timeout if timeout is None else timeout
        cap = self.max_output_bytes if max_output_bytes is None else max_output_bytes
        run_env = dict(os.environ)
        run_env.update(self.env or {})
        run_env.update(env or {})
        run_env.setdefault("LC_ALL", "C")
        data = input.encode() if isinstance(input, str) else input
        start = time.monotonic()
        try:
            proc = subprocess.Popen(  # noqa: S603 - argv list, no shell
                full, stdin=subprocess.PIPE if data is not None else subprocess.DEVNULL,
                stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=run_env, start_new_session=True)
        except (FileNotFoundError, PermissionError) as exc:
            result = CommandResult(tuple(full), 127, "", str(exc), str(exc), time.monotonic() - start)
            self._observe(argv, result)
            if check:
                raise CommandError(result) from exc
            return result
        out, err = _CappedBuffer(cap), _CappedBuffer(cap)
        try:
            timed_out = _pump(proc, data, out, err, start + limit)
        except BaseException:
            _kill_group(proc)
            _close_pipes(proc)
            proc.wait()
            raise
        raw_err = err.text()
        result = CommandResult(
            argv=tuple(full), returncode=proc.returncode if not timed_out else -signal.SIGKILL,
            stdout=out.text(), stderr=filter_stderr(raw_err), raw_stderr=raw_err,
            duration=time.monotonic() - start, timed_out=timed_out,
            truncated=out.dropped > 0 or err.dropped > 0)
        self._observe(argv, result)
        if check and not result.ok:
            raise CommandError(result)
        return result

    async def arun(self, argv: Sequence[str], **kwargs: object) -> CommandResult:
        """``run`` off the event loop (the timeout still bounds it)."""
        return await asyncio.to_thread(self.run, argv, **kwargs)  # type: ignore[arg-type]

    def record(self, argv: Sequence[str], result: CommandResult) -> None:
        """Count and observe a command run by other means (the agent's lvm shell) like one of ours."""
        self._observe(argv, result)

    def _observe(self, argv: Sequence[str], result: CommandResult) -> None:
        with self._lock:
            self.calls[os.path.basename(str(argv[0]))] += 1
        for obs in self.observers:
            try:
                obs(result)
            except Exception:  # noqa: BLE001 - an observer must never break a host command
                pass


class _CappedBuffer:
    """Keeps the first and the last ``cap // 2`` bytes of a stream and counts what fell between."""

    def __init__(self, cap: int):
        self.head_cap = max(cap, 0) // 2
        self.tail_cap = max(cap, 0) - self.head_cap
        self.head = bytearray()
        self.tail = bytearray()
        self.dropped = 0

    def add(self, chunk: bytes) -> None:
        room = self.head_cap - len(self.head)
        if room > 0:
            self.head += chunk[:room]
            chunk = chunk[room:]
        if not chunk:
            return
        self.tail += chunk
        excess = len(self.tail) - self.tail_cap
        if excess > 0:
            del self.tail[:excess]
            self.dropped += excess

    def text(self) -> str:
        if not self.dropped:
            return (bytes(self.head) + bytes(self.tail)).decode(errors="replace")
        note = f"\n[... {self.dropped} bytes of output cut by disklet (kept first and last) ...]\n"
        return bytes(self.head).decode(errors="replace") + note + bytes(self.tail).decode(errors="replace")


def _pump(proc: subprocess.Popen[bytes], data: bytes | None, out: _CappedBuffer, err: _CappedBuffer,
          deadline: float) -> bool:
    """Feed stdin and read both pipes until the command exits or the deadline; True on timeout.

    Never blocks past the deadline: a descendant outside the process group that keeps a pipe
    open is not waited for.
    """
    sel = selectors.DefaultSelector()
    sinks = {}
    for pipe, buf in ((proc.stdout, out), (proc.stderr, err)):
        assert pipe is not None
        os.set_blocking(pipe.fileno(), False)
        sel.register(pipe, selectors.EVENT_READ)
        sinks[pipe.fileno()] = buf
    view = memoryview(data or b"")
    if proc.stdin is not None:
        if view:
            os.set_blocking(proc.stdin.fileno(), False)
            sel.register(proc.stdin, selectors.EVENT_WRITE)
        else:
            _close_quietly(proc.stdin)
    timed_out = False
    drain_until: float | None = None  # set once the command has exited (or was killed)
    try:
        while sel.get_map():
            now = time.monotonic()
            if drain_until is None and proc.poll() is not None:
                drain_until = now + EXIT_DRAIN_SECONDS
            if drain_until is None and now >= deadline:
                timed_out = True
                _kill_group(proc)
                drain_until = now + KILL_DRAIN_SECONDS
            if drain_until is not None and now >= drain_until:
                break
            wait = (drain_until if drain_until is not None else deadline) - now
            # Wake up now and then to notice the command's exit while a descendant holds the pipes.
            for key, _ in sel.select(timeout=min(max(wait, 0.0), 0.05)):
                fd = key.fd
                if key.fileobj is proc.stdin:
                    try:
                        written = os.write(fd, view[:_CHUNK])
                        view = view[written:]
                    except BlockingIOError:
                        continue
                    except OSError:  # the command closed its stdin: the rest is not wanted
                        view = view[:0]
                    if not view:
                        sel.unregister(key.fileobj)
                        _close_quietly(proc.stdin)
                    continue
                try:
                    chunk = os.read(fd, _CHUNK)
                except BlockingIOError:
                    continue
                if not chunk:
                    sel.unregister(key.fileobj)
                    continue
                sinks[fd].add(chunk)
                if drain_until is not None:  # still flowing: keep reading within the bounds
                    drain_until = min(max(drain_until, time.monotonic() + EXIT_DRAIN_SECONDS),
                                      deadline + KILL_DRAIN_SECONDS if not timed_out else drain_until)
    finally:
        sel.close()
        _close_pipes(proc)
    if not timed_out:
        try:
            proc.wait(timeout=max(deadline - time.monotonic(), 0.0))
        except subprocess.TimeoutExpired:  # pipes closed but still running
            timed_out = True
            _kill_group(proc)
    if timed_out:
        proc.wait()
    return timed_out


def _close_quietly(pipe: object) -> None:
    try:
        pipe.close()  # type: ignore[attr-defined]
    except OSError:
        pass


def _close_pipes(proc: subprocess.Popen[bytes]) -> None:
    for pipe in (proc.stdin, proc.stdout, proc.stderr):
        if pipe is not None:
            _close_quietly(pipe)


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
