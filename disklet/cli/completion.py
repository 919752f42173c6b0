"""Completion for ``kubectl disklet <TAB>``: kubectl (>= 1.26) runs ``kubectl_complete-disklet __complete
ARGS... PARTIAL`` and reads one candidate per line, then ``:<directive>`` (cobra's protocol).

``kctl completion bash|zsh|fish`` (shtab) covers kctl itself; this covers the plugin name.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import TextIO

NO_FILE_COMPLETION = 4
"""cobra.ShellCompDirectiveNoFileComp"""


def _subparsers(p: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    return dict(getattr(p, "subcommands", {}))


def candidates(parser: argparse.ArgumentParser, words: Sequence[str]) -> list[str]:
    """What may follow ``words`` (the last one is the partial word being completed)."""
    from .commands import ALIASES

    *done, partial = list(words) or [""]
    p = parser
    positionals: list[str] = []
    for w in done:
        subs = _subparsers(p)
        if w in subs:
            p, positionals = subs[w], []
        elif not w.startswith("-"):
            positionals.append(w)
    if partial.startswith("-"):
        opts = sorted({o for o in getattr(p, "option_names", []) if o.startswith("--")} | {"--help"})
        return [o for o in opts if o.startswith(partial)]
    subs = _subparsers(p)
    if subs:
        return [s for s in sorted(subs) if s.startswith(partial)]
    if p.prog.split()[-1] in ("get", "describe", "delete") and not positionals:
        types = sorted(set(ALIASES) | ({"node"} if p.prog.endswith("describe") else set()))
        return [t for t in types if t.startswith(partial)]
    return []


def kubectl_complete(argv: Sequence[str] | None = None, out: TextIO | None = None) -> int:
    """Entry point of the ``kubectl_complete-disklet`` console script."""
    from .main import build_parser

    args = list(sys.argv[1:] if argv is None else argv)
    if args and args[0] in ("__complete", "__completeNoDesc"):
        args = args[1:]
    stream = out or sys.stdout
    for c in candidates(build_parser("kubectl disklet"), args):
        stream.write(c + "\n")
    stream.write(f":{NO_FILE_COMPLETION}\n")
    return 0
