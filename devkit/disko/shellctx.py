"""Where does a string land in a bash script, and is it inert there? (PURE, test support)

A small lexer for the scripts disko generates: each character of the script is in a comment, in
single quotes, in double quotes or bare (unquoted). A user value is *inert* at an occurrence when
bash cannot give any of its characters a meaning: inside a comment or single quotes (and the value
has no ``'``), inside double quotes with none of ``$ ` " \\ !``, or bare with only
``[A-Za-z0-9_./:=,+%@-]`` (no blanks, globs, braces, tildes, expansions, redirections or
separators). Heredocs and ``$'...'`` are not modelled: disko's types do not emit them for the
contents disklet renders (a value found in one is reported as not inert).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

COMMENT, SINGLE, DOUBLE, BARE = "comment", "single", "double", "bare"
BARE_SAFE = re.compile(r"^[A-Za-z0-9_./:=,+%@-]+$")
DOUBLE_UNSAFE = set('$`"\\!')
_WORD_START = set(" \t\n;&|()")


def contexts(script: str) -> list[str]:
    """The lexical context of every character of ``script``."""
    out = [BARE] * len(script)
    i, n = 0, len(script)
    word_start = True  # a "#" starts a comment only where a new word starts
    while i < n:
        c = script[i]
        if c == "\\" and i + 1 < n:
            out[i] = out[i + 1] = BARE
            i += 2
            word_start = False
        elif c == "'":
            j = script.find("'", i + 1)
            j = n - 1 if j < 0 else j
            for k in range(i, j + 1):
                out[k] = SINGLE
            i = j + 1
            word_start = False
        elif c == '"':
            j = i + 1
            while j < n and script[j] != '"':
                j += 2 if script[j] == "\\" else 1
            j = min(j, n - 1)
            for k in range(i, j + 1):
                out[k] = DOUBLE
            i = j + 1
            word_start = False
        elif c == "#" and word_start:
            j = script.find("\n", i)
            j = n if j < 0 else j
            for k in range(i, j):
                out[k] = COMMENT
            i = j
        else:
            word_start = c in _WORD_START
            i += 1
    return out


def inert_in(value: str, context: str) -> bool:
    if context == COMMENT:
        return "\n" not in value
    if context == SINGLE:
        return "'" not in value
    if context == DOUBLE:
        return not (set(value) & DOUBLE_UNSAFE)
    return bool(BARE_SAFE.match(value))


@dataclass(frozen=True)
class Occurrence:
    offset: int
    contexts: tuple[str, ...]
    inert: bool
    line: str


def occurrences(script: str, value: str, ctx: list[str] | None = None) -> list[Occurrence]:
    """Every occurrence of ``value`` in ``script`` with its context(s) and whether it is inert."""
    ctx = contexts(script) if ctx is None else ctx
    found: list[Occurrence] = []
    start = script.find(value)
    while value and start >= 0:
        kinds = tuple(dict.fromkeys(ctx[start:start + len(value)]))
        inert = len(kinds) == 1 and inert_in(value, kinds[0])
        line_start = script.rfind("\n", 0, start) + 1
        line_end = script.find("\n", start)
        found.append(Occurrence(start, kinds, inert, script[line_start:line_end if line_end >= 0 else None].strip()))
        start = script.find(value, start + 1)
    return found
