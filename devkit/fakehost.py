"""The one fake of the host runner for tests: records every argv and answers from a table.

Production code reaches the host only through the runner (``disklet.hostcmd.HostRunner``, called
from ``disklet_agent.host``), so a test hands the real adapters (``Lvm``, ``Losetup``,
``HostFiles``, the lsblk and layout readers, the engine) a :class:`FakeRunner` and asserts on the
argv they built and on what they made of the answers. Answers are looked up by the longest
matching argv prefix (``("zpool", "list")`` before ``("zpool",)``); a callable answer computes the
result from the argv. A command with no answer gets ``default`` (by default exit 0, no output), or
exit 127 "unexpected command" with ``strict=True``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from disklet.hostcmd import CommandResult, HostRunner, filter_stderr

Answer = CommandResult | tuple[int, str, str] | Callable[[tuple[str, ...]], CommandResult]
"""A full result, ``(returncode, stdout, stderr)``, or a function of the argv."""


def result(argv: Sequence[str], rc: int = 0, stdout: str = "", stderr: str = "",
           duration: float = 0.01) -> CommandResult:
    """A CommandResult as the runner builds it (stderr filtered of benign noise)."""
    return CommandResult(tuple(argv), rc, stdout, filter_stderr(stderr), stderr, duration)


class FakeRunner(HostRunner):
    """Records argv (``argvs``, ``calls`` per command) and answers from ``answers``."""

    def __init__(self, answers: Mapping[str | tuple[str, ...], Answer] | None = None, *,
                 default: Answer | None = None, strict: bool = False):
        super().__init__()
        self.argvs: list[list[str]] = []
        self.answers: dict[tuple[str, ...], Answer] = {
            (k,) if isinstance(k, str) else tuple(k): v for k, v in (answers or {}).items()}
        self.default = default
        self.strict = strict

    @property
    def seen(self) -> list[tuple[str, ...]]:
        """Every argv so far, as tuples."""
        return [tuple(a) for a in self.argvs]

    def answer(self, key: str | tuple[str, ...], value: Answer) -> FakeRunner:
        self.answers[(key,) if isinstance(key, str) else tuple(key)] = value
        return self

    def run(self, argv: Sequence[str], **_: Any) -> CommandResult:  # type: ignore[override]
        args = tuple(argv)
        self.argvs.append(list(args))
        if args:
            self.calls[args[0]] += 1
        for n in range(len(args), 0, -1):
            if args[:n] in self.answers:
                return self._resolve(self.answers[args[:n]], args)
        if self.default is not None:
            return self._resolve(self.default, args)
        if self.strict:
            return result(args, 127, "", f"unexpected command {args}")
        return result(args)

    @staticmethod
    def _resolve(value: Answer, args: tuple[str, ...]) -> CommandResult:
        if isinstance(value, CommandResult):
            return value
        if callable(value):
            return value(args)
        rc, out, err = value
        return result(args, rc, out, err)
