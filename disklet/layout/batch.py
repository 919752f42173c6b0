"""Many bodies, one sandboxed evaluator run (docs/layouts.md, "Batch pre-flight").

``nix-instantiate --eval -E E1 E2 …`` parses and evaluates each expression on its own, in order,
and prints their JSON values one after another. So a batch of bodies costs one evaluator start
instead of one per body, and each body is *parsed separately*: no text is spliced, so no body can
close a bracket, open a comment or a string, or otherwise reach into another body's expression.
The sandbox is the single path's: the same ``prlimit`` limits, options and environment (no
configuration file can be read) (:mod:`.evaluate`); only the transport differs (argv instead of stdin).

Isolation of failures. Nix stops at the first body that fails (syntax error, ``throw``,
``abort``, type error, function at the top, resource limit). Everything printed before it is a
complete value of an earlier body; the failing body is then evaluated *alone*, through
:func:`.evaluate.evaluate_nix`, and the batch continues after it. When the run was killed
(timeout, signal) the buffered output may be lost, so the unconfirmed bodies are split in two
and each half is evaluated again. Either way every failure is the single path's own exception,
and every success is the value of the same bytes under the same sandbox.

Bodies never reach the evaluator's option parser: Nix 2.8 ignores ``--`` and treats any argument
that starts with ``-`` as an option (``--option pure-eval false`` spread over three bodies would
turn the sandbox off), so such bodies — and empty ones, and those too long for one argument — are
evaluated alone through stdin. A top-level number cannot be told apart from the next value in the
concatenated output (``1`` ``2`` prints ``12``), so a number also sends its body to the single path.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from disklet.api.disklayout import MAX_NIX_BODY, DiskLayoutSpec
from disklet.hostcmd import HostRunner

from .errors import LayoutError, MalformedLayout, NixUnavailable, check_depth
from .evaluate import EVAL_ARGV, EVAL_ENV, MEMORY_LIMIT_BYTES, evaluate_nix, nix_available
from .mounts import MountPolicy
from .resolve import PreflightResult, preflight, resolve_body

MAX_ARG_BYTES = 128 * 1024 - 1
"""Linux's limit on one argv string (MAX_ARG_STRLEN, with its NUL)."""
MAX_BATCH_BYTES = 1 << 20
"""Body bytes per evaluator run; argv and environment together must stay under ARG_MAX (2 MiB)."""
MAX_BATCH_BODIES = 1000


@dataclass(frozen=True)
class Outcome:
    """One body's result: ``value`` or ``error`` (exactly what :func:`evaluate_nix` returns or raises)."""

    value: Any = None
    error: Exception | None = None

    def unwrap(self) -> Any:
        if self.error is not None:
            raise self.error
        return self.value


def batch_argv(bodies: Sequence[str], memory_bytes: int, cpu_seconds: int) -> list[str]:
    """The single path's argv with ``-E`` and the bodies in place of stdin's ``-``."""
    assert EVAL_ARGV[-1] == "-"
    for body in bodies:
        if not batchable(body):
            raise ValueError("body cannot travel in argv")
    return ["prlimit", f"--as={int(memory_bytes)}", f"--cpu={int(cpu_seconds)}", "--",
            *EVAL_ARGV[:-1], "-E", *bodies]


def batchable(body: str) -> bool:
    """Safe as one argv expression: non-empty, not an option, no NUL, short enough."""
    return (bool(body) and not body.startswith("-") and "\x00" not in body
            and len(body.encode()) <= MAX_ARG_BYTES)


def _decode_values(stdout: str, limit: int) -> list[Any]:
    """The complete, self-delimiting values at the start of ``stdout`` (at most ``limit``)."""
    decoder = json.JSONDecoder()
    values: list[Any] = []
    pos = 0
    while len(values) < limit:
        while pos < len(stdout) and stdout[pos] in " \t\r\n":
            pos += 1
        if pos >= len(stdout):
            break
        try:
            value, end = decoder.raw_decode(stdout, pos)
        except json.JSONDecodeError:
            break  # the partial value of the body that failed
        except RecursionError:
            break  # nested too deep to decode: the single path refuses this body alone
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            break  # may have merged with the next number: let the single path decide
        values.append(value)
        pos = end
    return values


class BatchEvaluator:
    """Evaluate bodies in as few sandboxed runs as isolation allows.

    ``single`` is the one-body path (default :func:`evaluate_nix`); tests count its calls.
    """

    def __init__(self, runner: HostRunner | None = None, *, timeout: float = 30,
                 memory_bytes: int = MEMORY_LIMIT_BYTES,
                 single: Callable[..., Any] | None = None) -> None:
        self.runner = runner or HostRunner()
        self.timeout = timeout
        self.memory_bytes = memory_bytes
        self.single = single or evaluate_nix
        self.runs = 0
        """Batch runs (each one evaluator process); single-path runs are not counted here."""

    def _one(self, body: str) -> Outcome:
        try:
            return Outcome(value=self.single(body, self.runner, timeout=self.timeout,
                                             memory_bytes=self.memory_bytes))
        except (MalformedLayout, NixUnavailable) as exc:
            return Outcome(error=exc)

    def evaluate(self, bodies: Sequence[str]) -> list[Outcome]:
        outcomes: dict[int, Outcome] = {}
        queue: list[int] = []
        for i, body in enumerate(bodies):
            if len(body.encode()) > MAX_NIX_BODY or not batchable(body):
                outcomes[i] = self._one(body)  # the single path also owns the size/NUL refusals
            else:
                queue.append(i)
        for chunk in _chunks(queue, bodies):
            self._resolve(chunk, bodies, outcomes)
        return [outcomes[i] for i in range(len(bodies))]

    def _resolve(self, pending: list[int], bodies: Sequence[str], outcomes: dict[int, Outcome]) -> None:
        while pending:
            if len(pending) == 1:
                outcomes[pending[0]] = self._one(bodies[pending[0]])
                return
            try:
                ok, values, killed = self._run([bodies[i] for i in pending])
            except NixUnavailable:  # each body gets the single path's own NixUnavailable
                for i in pending:
                    outcomes[i] = self._one(bodies[i])
                return
            for i, value in zip(pending, values, strict=False):
                try:
                    check_depth(value)
                    outcomes[i] = Outcome(value=value)
                except MalformedLayout as exc:  # this body alone, as the single path would say
                    outcomes[i] = Outcome(error=exc)
            if ok and len(values) == len(pending):
                return
            rest = pending[len(values):]
            if killed:
                # output may be lost in the killed process's buffer: halve what is unconfirmed
                half = (len(rest) + 1) // 2
                self._resolve(rest[:half], bodies, outcomes)
                pending = rest[half:]
                continue
            # nix stopped at rest[0] (or its value was a bare number): the single path decides it
            outcomes[rest[0]] = self._one(bodies[rest[0]])
            pending = rest[1:]

    def _run(self, bodies: list[str]) -> tuple[bool, list[Any], bool]:
        """(exit ok, leading complete values, killed)."""
        self.runs += 1
        cpu = max(1, int(self.timeout) + 1)  # as the single path: CPU seconds just above the wall clock
        result = self.runner.run(batch_argv(bodies, self.memory_bytes, cpu), timeout=self.timeout,
                                 env=dict(EVAL_ENV))
        if result.returncode == 127 and not result.stdout and not result.timed_out:
            raise NixUnavailable(result.stderr.strip())
        values = _decode_values(result.stdout, len(bodies))
        killed = result.timed_out or result.returncode < 0
        return result.returncode == 0 and not killed, values, killed


def _chunks(indices: list[int], bodies: Sequence[str]) -> list[list[int]]:
    chunks: list[list[int]] = []
    current: list[int] = []
    size = 0
    for i in indices:
        n = len(bodies[i].encode()) + 1
        if current and (size + n > MAX_BATCH_BYTES or len(current) >= MAX_BATCH_BODIES):
            chunks.append(current)
            current, size = [], 0
        current.append(i)
        size += n
    if current:
        chunks.append(current)
    return chunks


def evaluate_nix_many(bodies: Sequence[str], runner: HostRunner | None = None, timeout: float = 30, *,
                      memory_bytes: int = MEMORY_LIMIT_BYTES) -> list[Outcome]:
    """Per body: the value :func:`evaluate_nix` would return, or the exception it would raise."""
    return BatchEvaluator(runner, timeout=timeout, memory_bytes=memory_bytes).evaluate(bodies)


def lookup_evaluator(bodies: Sequence[str], runner: HostRunner | None = None, *,
                     timeout: float = 30) -> Callable[..., Any]:
    """An ``evaluate`` stand-in answering from one batch over ``bodies`` (identical bodies once).

    A body outside the batch (e.g. a ``layoutNixFile`` that changed between two reads) falls
    through to :func:`evaluate_nix`, so the answer is always the single path's.
    """
    unique = list(dict.fromkeys(bodies))
    table: dict[str, Outcome] = {}
    if unique and nix_available():
        table = dict(zip(unique, evaluate_nix_many(unique, runner, timeout=timeout), strict=True))

    def evaluate(body: str, runner: HostRunner | None = None, timeout: float = 30, **kwargs: Any) -> Any:
        outcome = table.get(body)
        if outcome is None:
            return evaluate_nix(body, runner, timeout=timeout, **kwargs)
        return outcome.unwrap()

    return evaluate


def preflight_many(items: Sequence[tuple[DiskLayoutSpec, Path | None]], runner: HostRunner | None = None,
                   policy: MountPolicy | None = None) -> list[PreflightResult]:
    """``[preflight(spec, base_dir, runner, policy) for …]``, with one evaluator run for the lot."""
    bodies: list[str] = []
    for spec, base_dir in items:
        try:
            bodies.append(resolve_body(spec, base_dir)[0])
        except LayoutError:
            continue  # preflight reports it the same way
    evaluate = lookup_evaluator(bodies, runner)
    return [preflight(spec, base_dir, runner, policy, evaluate=evaluate) for spec, base_dir in items]
