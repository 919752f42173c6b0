"""One persistent ``lvm`` shell for the agent's LVM commands (docs/agent.md, "The lvm shell").

Starting ``lvm`` costs tens of milliseconds per command; ``lvm`` started without arguments reads
commands from standard input and runs them in one process. With standard input a pipe it prints
no prompt and, on its own, no exit status, so the shell is driven the way lvmdbusd drives it:

- **Framing.** The environment names a report descriptor (``LVM_REPORT_FD``, a pipe we pass to
  the child) and the command profile ``lvmdbusd`` (``LVM_COMMAND_PROFILE``; Debian and Fedora
  ship it with lvm2's D-Bus daemon): reports are JSON, and ``log/report_command_log`` is on. Each
  command then writes exactly ONE JSON object to the report descriptor: its report rows (if it is
  a report) and a ``log`` whose last row is the command's status (``log_type`` ``status``,
  ``log_context`` ``shell``, ``log_object_name`` the command, ``log_ret_code`` 1 for success, else
  LVM's exit code). The object is complete when it parses; nothing may follow it.
- **Status and messages.** The status comes only from that row. On failure, ``lastlog`` (the same
  process) returns the failed command's whole log: its error and warning rows become the stderr
  the callers judge, as with a separate process.
- **Strictness.** Anything else — a second status row, a row of another command, text after the
  object, an object that does not parse, the shell's exit, output beyond the cap — is a protocol
  error: the shell is killed and the command fails with its status unknown (callers re-read the
  host as after a failed process; nothing is guessed). A question (``[y/n]:`` on stderr: LVM asks
  before removing a VG that still holds LVs, or wiping a signature) is never answered: the shell is
  killed before the command does anything, as a closed standard input refuses it.
- **Timeout.** Every command has its own deadline; at the deadline the shell's process group is
  killed, its descriptors closed, and the next command starts a fresh shell.
- **Injection.** The shell splits a line on whitespace and honours quotes and ``#`` itself, so
  every word is checked before it is written: plain words must match :data:`SAFE_WORD` (the LVM
  name grammar plus ``/ = : , % @``); the ``--config`` text may be single-quoted only when it holds
  no ``'``, backslash or control character. A command with any other word is not written to the
  shell; it runs as its own process (an argv list, no tokenising), so it is never reinterpreted.
- **Fallback.** When the node has no ``lvmdbusd`` profile (``lvm`` exits at start with "Failed to
  apply command profile"), the shell is switched off for the life of the agent and every command
  runs as its own process. So does a command issued while another thread uses the shell.
"""

from __future__ import annotations

import json
import os
import re
import selectors
import signal
import subprocess
import threading
import time
import weakref
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from disklet.hostcmd import CommandResult, HostRunner, NsenterTargetError, filter_stderr

PROFILE = "lvmdbusd"
COMMANDS = frozenset({"pvs", "vgs", "lvs", "pvcreate", "pvremove", "pvresize", "vgcreate", "vgextend", "vgremove",
                      "vgchange", "lvcreate", "lvextend", "lvremove"})
SAFE_WORD = re.compile(r"^[A-Za-z0-9+_.:/=,%@-]+$")
"""A word the shell cannot split, unquote or comment out: no whitespace, quotes, backslash, ``#``, ``$``.
Always ``fullmatch``: ``$`` alone also matches before a trailing newline."""
_QUOTABLE = re.compile(r"^[^'\\\x00-\x1f\x7f]*$")
MAX_WORDS = 60  # the shell refuses lines of 64 words or more ("Too many arguments")
MAX_LINE = 16 * 1024
MAX_REPORT = 8 * 1024**2
RECYCLE_AFTER = 500
"""Commands per shell process: a fresh process now and then bounds whatever a long life accumulates."""
_LASTLOG = "lastlog -S log_seq_num>=0"  # every row (a partial selection prints invalid JSON)
_PROMPT = re.compile(r"\[y/n\]:?\s*$")
_PROFILE_MISSING = "Failed to apply command profile"


class ShellUnsafe(ValueError):
    """A word the lvm shell could reinterpret: the command must not be written to the shell."""


class ShellProtocolError(RuntimeError):
    """The shell printed something the protocol does not allow; the shell is killed."""


def shell_line(argv: Sequence[str]) -> str:
    """The line for ``argv`` (``[command, *words]``), or :class:`ShellUnsafe`."""
    if not argv or argv[0] not in COMMANDS:
        raise ShellUnsafe(f"not a shell command: {argv[:1]!r}")
    if len(argv) > MAX_WORDS:
        raise ShellUnsafe(f"{len(argv)} words, over the shell's limit")
    words: list[str] = []
    after_config = False
    for word in argv:
        if after_config and _QUOTABLE.fullmatch(word) and word:
            words.append(f"'{word}'")
        elif SAFE_WORD.fullmatch(word):
            words.append(word)
        else:
            raise ShellUnsafe(f"word {word!r} cannot be written to the lvm shell as it is")
        after_config = word == "--config"
    line = " ".join(words)
    if "\n" in line or "\r" in line:  # one command is one line; the word patterns are full matches too
        raise ShellUnsafe("a line break in a word would end the command and start another")
    if len(line) > MAX_LINE:
        raise ShellUnsafe(f"line of {len(line)} bytes")
    return line


def _rows(obj: Any) -> list[dict[str, str]]:
    if not isinstance(obj, dict) or not set(obj) <= {"report", "log"} or "log" not in obj:
        raise ShellProtocolError(f"unexpected report object with keys {sorted(obj) if isinstance(obj, dict) else obj!r}")
    log = obj["log"]
    if not isinstance(log, list) or not all(isinstance(r, dict) for r in log):
        raise ShellProtocolError("the log section is not a list of rows")
    return log


def command_status(obj: Any, command: str) -> int:
    """LVM's exit code from one command's report object (0 = success); strict."""
    log = _rows(obj)
    status = [r for r in log if r.get("log_type") == "status"]
    if len(status) != 1 or log[-1] is not status[0]:
        raise ShellProtocolError(f"{len(status)} status rows for {command} (exactly one, last, expected)")
    row = status[0]
    if row.get("log_context") != "shell" or row.get("log_object_name") != command:
        raise ShellProtocolError(f"status row of {row.get('log_object_name')!r}, expected {command}")
    try:
        ret = int(row.get("log_ret_code", ""))
    except ValueError as exc:
        raise ShellProtocolError(f"unreadable return code {row.get('log_ret_code')!r}") from exc
    if ret not in (1, 2, 3, 4, 5) or (ret == 1) != (row.get("log_message") == "success"):
        raise ShellProtocolError(f"inconsistent status row: {row!r}")
    return 0 if ret == 1 else ret


def command_messages(obj: Any, command: str) -> tuple[str, str]:
    """(printed, error+warning) messages of ``lastlog``'s object for ``command``."""
    log = _rows(obj)
    if "report" in obj or any(r.get("log_object_name") not in (command, "") for r in log):
        raise ShellProtocolError(f"lastlog answered for another command than {command}")
    printed = [r.get("log_message", "") for r in log if r.get("log_type") == "print"]
    errors = [r.get("log_message", "") for r in log if r.get("log_type") in ("error", "warn")]
    return "\n".join(printed), "\n".join(errors)


@dataclass
class _Proc:
    popen: subprocess.Popen[bytes]
    report: int
    commands: int = 0


def _stop(proc: _Proc) -> None:
    try:
        os.killpg(proc.popen.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    for pipe in (proc.popen.stdin, proc.popen.stdout, proc.popen.stderr):
        if pipe is not None:
            try:
                pipe.close()
            except OSError:
                pass
    try:
        os.close(proc.report)
    except OSError:
        pass
    proc.popen.wait()


class LvmShell:
    """The agent's ``lvm`` shell: :meth:`run` answers a :class:`CommandResult` like a process would,
    or None when the caller must run the command as its own process (unsafe word, shell busy or off)."""

    def __init__(self, runner: HostRunner, *, profile: str = PROFILE, recycle_after: int = RECYCLE_AFTER):
        self.runner = runner
        self.profile = profile
        self.recycle_after = recycle_after
        self.available = True
        """False once the node proved it has no usable profile: every command runs as a process."""
        self.starts = 0
        self.kills = 0
        """Shells killed by a timeout, a protocol error or a question."""
        self.last_error = ""
        self._proc: _Proc | None = None
        self._lock = threading.Lock()
        self._finalizer: weakref.finalize[Any, LvmShell] | None = None

    @property
    def pid(self) -> int | None:
        return self._proc.popen.pid if self._proc is not None else None

    # ----------------------------------------------------------------- process
    def _start(self) -> _Proc:
        read, write = os.pipe()
        env = dict(os.environ)
        env.update(self.runner.env or {})
        env.update({"LC_ALL": "C", "LVM_REPORT_FD": str(write), "LVM_COMMAND_PROFILE": self.profile,
                    "LVM_SUPPRESS_FD_WARNINGS": "1"})
        try:
            popen = subprocess.Popen(  # noqa: S603 - argv list, no shell
                self.runner.full_argv(["lvm"]), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                stderr=subprocess.PIPE, env=env, pass_fds=(write,), start_new_session=True)
        except BaseException:
            os.close(read)
            raise
        finally:
            os.close(write)
        for fd in (read, popen.stdout.fileno(), popen.stderr.fileno()):  # type: ignore[union-attr]
            os.set_blocking(fd, False)
        self.starts += 1
        proc = _Proc(popen, read)
        if self._finalizer is not None:
            self._finalizer.detach()
        self._finalizer = weakref.finalize(self, _stop, proc)
        return proc

    def close(self) -> None:
        """Stop the shell (a later command starts a new one)."""
        with self._lock:
            self._discard()

    def _discard(self) -> None:
        if self._proc is not None:
            proc, self._proc = self._proc, None
            if self._finalizer is not None:
                self._finalizer.detach()
                self._finalizer = None
            _stop(proc)

    # --------------------------------------------------------------------- run
    def run(self, argv: Sequence[str], *, timeout: float) -> CommandResult | None:
        if not self.available:
            return None
        try:
            line = shell_line(argv)
        except ShellUnsafe:
            return None
        if not self._lock.acquire(blocking=False):
            return None  # another thread's command is in the shell: this one runs as a process
        try:
            return self._run_locked(list(argv), line, timeout)
        finally:
            self._lock.release()

    def _run_locked(self, argv: list[str], line: str, timeout: float) -> CommandResult | None:
        start = time.monotonic()
        deadline = start + timeout
        if self._proc is not None and (self._proc.popen.poll() is not None or self._proc.commands >= self.recycle_after):
            self._discard()
        fresh = self._proc is None
        if fresh:
            try:
                self._proc = self._start()
            except NsenterTargetError:
                return None  # nothing ran: as a process, the command fails with the runner's reason
        proc = self._proc
        assert proc is not None
        proc.commands += 1
        err = bytearray()
        try:
            obj = self._exchange(proc, line, deadline, err)
            if obj is None:  # exited before answering
                text = err.decode(errors="replace")
                self._discard()
                if fresh and _PROFILE_MISSING in text:
                    self.available = False
                    self.last_error = text.strip()
                    return None  # nothing ran: the caller runs the command as a process
                raise ShellProtocolError(f"the lvm shell exited: {text.strip() or 'no message'}")
            code = command_status(obj, argv[0])
            stdout = json.dumps({"report": obj["report"]}) if "report" in obj else ""
            stderr = ""
            if code != 0:
                logobj = self._exchange(proc, _LASTLOG, deadline, err)
                if logobj is None:
                    raise ShellProtocolError("the lvm shell exited during lastlog")
                printed, stderr = command_messages(logobj, argv[0])
                stdout = stdout or printed
        except _Question as q:
            self._kill()
            msg = (f"{q.prompt.strip()} — LVM asked a question; disklet never answers one, so the command was "
                   "refused before it changed anything")
            return self._result(argv, 5, "", msg, start)
        except _Timeout:
            self._kill()
            text = err.decode(errors="replace")
            return self._result(argv, -signal.SIGKILL, "", text, start, timed_out=True)
        except ShellProtocolError as exc:
            self._kill()
            self.last_error = str(exc)
            return self._result(argv, 5, "", f"lvm shell protocol error (shell restarted, outcome unknown): {exc}",
                                start)
        extra = err.decode(errors="replace").strip()
        return self._result(argv, code, stdout, "\n".join(x for x in (stderr, extra) if x), start)

    def _kill(self) -> None:
        self.kills += 1
        self._discard()

    def _result(self, argv: Sequence[str], code: int, stdout: str, raw_err: str, start: float,
                timed_out: bool = False) -> CommandResult:
        result = CommandResult(argv=tuple(self.runner.full_argv(argv)), returncode=code, stdout=stdout,
                               stderr=filter_stderr(raw_err), raw_stderr=raw_err, duration=time.monotonic() - start,
                               timed_out=timed_out, via_shell=True)
        self.runner.record(argv, result)
        return result

    def _exchange(self, proc: _Proc, line: str, deadline: float, err: bytearray) -> Any:
        """Write ``line`` and read its one report object; None when the shell exited first."""
        popen = proc.popen
        assert popen.stdin is not None and popen.stdout is not None and popen.stderr is not None
        try:
            popen.stdin.write(line.encode() + b"\n")
            popen.stdin.flush()
        except (BrokenPipeError, ValueError):
            self._drain_err(popen, err, deadline)
            return None
        buf = bytearray()
        decoder = json.JSONDecoder()
        sel = selectors.DefaultSelector()
        try:
            sel.register(proc.report, selectors.EVENT_READ, "report")
            sel.register(popen.stdout.fileno(), selectors.EVENT_READ, "stdout")
            sel.register(popen.stderr.fileno(), selectors.EVENT_READ, "stderr")
            while True:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise _Timeout()
                for key, _ in sel.select(timeout=left):
                    try:
                        chunk = os.read(key.fd, 64 * 1024)
                    except BlockingIOError:
                        continue
                    if key.data == "stderr":
                        if not chunk:
                            sel.unregister(key.fd)
                            continue
                        err += chunk
                        if _PROMPT.search(err.decode(errors="replace")):
                            raise _Question(err.decode(errors="replace"))
                        if len(err) > MAX_REPORT:
                            raise ShellProtocolError("too much output on stderr")
                        continue
                    if key.data == "stdout":
                        if chunk:
                            raise ShellProtocolError(f"unexpected output on stdout: {chunk[:200]!r}")
                        sel.unregister(key.fd)
                        continue
                    if not chunk:  # the report pipe closed: the shell is gone
                        if buf.strip():
                            raise ShellProtocolError(f"the shell exited in the middle of a report: {bytes(buf[:200])!r}")
                        self._drain_err(popen, err, deadline)
                        return None
                    buf += chunk
                    if len(buf) > MAX_REPORT:
                        raise ShellProtocolError("report larger than the cap")
                    text = buf.decode(errors="strict").strip()
                    if not text.startswith("{"):
                        raise ShellProtocolError(f"report does not start with an object: {text[:200]!r}")
                    if not text.endswith("}"):
                        continue
                    try:
                        obj, end = decoder.raw_decode(text)
                    except ValueError:
                        continue  # not complete yet (a row ending in "}" mid-object)
                    if text[end:].strip():
                        raise ShellProtocolError(f"output after the report object: {text[end:end + 200]!r}")
                    return obj
        except UnicodeDecodeError as exc:
            raise ShellProtocolError(f"report is not UTF-8: {exc}") from exc
        finally:
            sel.close()

    @staticmethod
    def _drain_err(popen: subprocess.Popen[bytes], err: bytearray, deadline: float) -> None:
        """The shell is exiting: collect what it said on stderr (bounded by the deadline)."""
        assert popen.stderr is not None
        os.set_blocking(popen.stderr.fileno(), True)
        try:
            popen.wait(timeout=max(min(deadline - time.monotonic(), 5.0), 0.0))
            err += popen.stderr.read(MAX_REPORT) or b""
        except (subprocess.TimeoutExpired, OSError, ValueError):
            pass


class _Timeout(Exception):
    pass


class _Question(Exception):
    def __init__(self, prompt: str):
        super().__init__(prompt)
        self.prompt = prompt
