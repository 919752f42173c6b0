"""The one runner for host commands (docs/design/product.md#host-commands, docs/design/lvm.md rule 7), shared by agent, operator and kctl.

Every command is an argv list with a bounded timeout, never a shell string. In a pod the agent
runs commands in the host's namespaces through ``nsenter -t 1 -m -u -i -n -p --``; in tests and
local use they run directly. Each command starts its own process group so a timeout kills the
whole group (hung ``lvm`` children otherwise pile up). Benign LVM noise is filtered from stderr.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

NSENTER_PREFIX: tuple[str, ...] = ("nsenter", "-t", "1", "-m", "-u", "-i", "-n", "-p", "--")
DEFAULT_TIMEOUT = 60.0

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


class CommandError(RuntimeError):
    def __init__(self, result: CommandResult, message: str | None = None):
        self.result = result
        super().__init__(message or result.describe())


@dataclass
class HostRunner:
    """Runs argv lists on the host, directly or through nsenter into PID 1's namespaces."""

    use_nsenter: bool = False
    default_timeout: float = DEFAULT_TIMEOUT
    env: Mapping[str, str] | None = None
    observers: list[Callable[[CommandResult], None]] = field(default_factory=list)
    calls: Counter[str] = field(default_factory=Counter)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def full_argv(self, argv: Sequence[str]) -> list[str]:
        if isinstance(argv, str):  # a shell string is a bug, not a convenience
            raise TypeError("host commands are argv lists, never strings")
        argv = [str(a) for a in argv]
        if not argv:
            raise ValueError("empty argv")
        return [*NSENTER_PREFIX, *argv] if self.use_nsenter else argv

    def run(self, argv: Sequence[str], *, timeout: float | None = None, input: str | bytes | None = None,
            check: bool = False, env: Mapping[str, str] | None = None) -> CommandResult:
        """Run one command to completion (or kill its process group at the timeout)."""
        full = self.full_argv(argv)
        limit = self.default_timeout if timeout is None else timeout
        run_env = dict(os.environ)
        run_env.update(self.env or {})
        run_env.update(env or {})
        run_env.setdefault("LC_ALL", "C")
        data = input.encode() if isinstance(input, str) else input
        start = time.monotonic()
        timed_out = False
        try:
            proc = subprocess.Popen(  # noqa: S603 - argv list, no shell
                full, stdin=subprocess.PIPE if data is not None else subprocess.DEVNULL,
                stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=run_env, start_new_session=True)
        except FileNotFoundError as exc:
            result = CommandResult(tuple(full), 127, "", str(exc), str(exc), time.monotonic() - start)
            self._observe(argv, result)
            if check:
                raise CommandError(result) from exc
            return result
        try:
            out, err = proc.communicate(input=data, timeout=limit)
        except subprocess.TimeoutExpired:
            timed_out = True
            _kill_group(proc)
            out, err = proc.communicate()
        except BaseException:
            _kill_group(proc)
            proc.communicate()
            raise
        raw_err = err.decode(errors="replace")
        result = CommandResult(
            argv=tuple(full), returncode=proc.returncode if not timed_out else -signal.SIGKILL,
            stdout=out.decode(errors="replace"), stderr=filter_stderr(raw_err), raw_stderr=raw_err,
            duration=time.monotonic() - start, timed_out=timed_out)
        self._observe(argv, result)
        if check and not result.ok:
            raise CommandError(result)
        return result

    async def arun(self, argv: Sequence[str], **kwargs: object) -> CommandResult:
        """``run`` off the event loop (the timeout still bounds it)."""
        return await asyncio.to_thread(self.run, argv, **kwargs)  # type: ignore[arg-type]

    def _observe(self, argv: Sequence[str], result: CommandResult) -> None:
        with self._lock:
            self.calls[os.path.basename(str(argv[0]))] += 1
        for obs in self.observers:
            try:
                obs(result)
            except Exception:  # noqa: BLE001 - an observer must never break a host command
                pass


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
