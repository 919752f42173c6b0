"""Completion for ``kubectl disklet <TAB>``: kubectl (>= 1.26) runs ``kubectl_complete-disklet __complete
ARGS... PARTIAL`` and reads one candidate per line, then ``:<directive>`` (cobra's protocol).

``kctl completion bash|zsh|fish`` (shtab) covers kctl itself and calls ``kctl __complete`` (this module) for
resource types and object names; the plugin name uses this module directly. Names come from the cluster
(a LIST per kind, 5 s at most or ``KCTL_COMPLETION_TIMEOUT`` seconds; nothing on any error).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Callable, Sequence
from typing import TextIO

NO_FILE_COMPLETION = 4
"""cobra.ShellCompDirectiveNoFileComp"""


def _subparsers(p: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    return dict(getattr(p, "subcommands", {}))


Names = Callable[[str], list[str]]
"""plural → the names of that kind's objects in the cluster (for completing NAME operands)."""


def candidates(parser: argparse.ArgumentParser, words: Sequence[str], names: Names | None = None) -> list[str]:
    """What may follow ``words`` (the last one is the partial word being completed). ``names`` lists
    objects for NAME operands (kctl asks the cluster; without it only commands, flags and types)."""
    from .commands import ALIASES, resolve_type
    from .rollout import ACTIONS
    from .rollout import TYPES as ROLLOUT_TYPES

    *done, partial = list(words) or [""]
    p = parser
    positionals: list[str] = []
    skip = False
    for w in done:
        subs = _subparsers(p)
        if skip:
            skip = False
        elif w in subs:
            p, positionals = subs[w], []
        elif w.startswith("-"):
            skip = "=" not in w and w in VALUE_FLAGS
        else:
            positionals.append(w)
    if partial.startswith("-"):
        opts = sorted({o for o in getattr(p, "option_names", []) if o.startswith("--")} | {"--help"})
        return [o for o in opts if o.startswith(partial)]
    subs = _subparsers(p)
    if subs:
        return [s for s in sorted(subs) if s.startswith(partial)]
    command = p.prog.split()[-1]

    def object_names(plural: str, prefix: str = "") -> list[str]:
        return [prefix + n for n in sorted((names or (lambda _: []))(plural)) if (prefix + n).startswith(partial)]

    if command in ("get", "describe", "delete"):
        if not positionals:
            if "/" in partial:  # TYPE/NAME
                view = resolve_type(partial.split("/", 1)[0])
                return object_names(view.resource.plural, partial.split("/", 1)[0] + "/") if view else []
            types = sorted(set(ALIASES) | ({"node"} if command == "describe" else set()))
            return [t for t in types if t.startswith(partial)]
        if positionals[0].lower() in ("node", "nodes", "no"):
            return object_names("nodes")
        view = resolve_type(positionals[0].split(",")[0])
        return [n for n in object_names(view.resource.plural) if n not in positionals] if view else []
    if command == "rollout":
        if not positionals:
            return [a for a in ACTIONS if a.startswith(partial)]
        if len(positionals) == 1:
            if "/" in partial:
                return object_names("lvmvolumegroupsets", partial.split("/", 1)[0] + "/")
            return [t for t in ("lvgset",) if t.startswith(partial)]
        if len(positionals) == 2 and positionals[1] in ROLLOUT_TYPES:
            return object_names("lvmvolumegroupsets")
    if command == "disks" or command.startswith("apply-disk"):
        return object_names("nodes") if not positionals else []
    return []


VALUE_FLAGS = frozenset({"--kubeconfig", "--context", "-n", "--namespace", "-o", "--output", "-l", "--selector",
                         "--node", "-L", "--label-columns", "--sort-by", "--request-timeout", "-f", "--filename",
                         "--timeout", "--interval", "--tarball", "--tail", "--timeout-seconds", "--dry-run",
                         "--file-devices-dir"})
"""Flags whose next word is their value, not an operand."""


def cluster_names(words: Sequence[str], timeout: float | None = None) -> Names:
    """Object names from the cluster the words point at (``--kubeconfig``/``--context``), asked once per kind;
    any failure (no kubeconfig, unreachable server, no RBAC) completes nothing rather than erroring."""
    if timeout is None:
        try:
            timeout = float(os.environ.get("KCTL_COMPLETION_TIMEOUT", "") or 5.0)
        except ValueError:
            timeout = 5.0
    kubeconfig = _flag(words, "--kubeconfig")
    context = _flag(words, "--context")

    def names(plural: str) -> list[str]:
        import contextlib
        import io

        with contextlib.redirect_stdout(io.StringIO()):  # a library's print must not become a candidate
            try:
                from .commands import VIEWS, kind_of
                from .kube import NODES, Kube

                kind = NODES if plural == "nodes" else kind_of(VIEWS[plural].resource)

                async def ask() -> list[str]:
                    async with await Kube.connect(kubeconfig, context) as kube:
                        return [str((o.get("metadata") or {}).get("name")) for o in await kube.list_objects(kind)]
                return asyncio.run(asyncio.wait_for(ask(), timeout))
            except Exception:  # noqa: BLE001 - completion never fails the shell
                return []
    return names


def _flag(words: Sequence[str], name: str) -> str | None:
    for i, w in enumerate(words):
        if w == name and i + 1 < len(words):
            return words[i + 1]
        if w.startswith(name + "="):
            return w.split("=", 1)[1]
    return None


def kubectl_complete(argv: Sequence[str] | None = None, out: TextIO | None = None) -> int:
    """Entry point of the ``kubectl_complete-disklet`` console script (and of ``kctl __complete``)."""
    from .main import build_parser

    args = list(sys.argv[1:] if argv is None else argv)
    if args and args[0] in ("__complete", "__completeNoDesc"):
        args = args[1:]
    stream = out or sys.stdout
    for c in candidates(build_parser("kubectl disklet"), args, cluster_names(args)):
        stream.write(c + "\n")
    stream.write(f":{NO_FILE_COMPLETION}\n")
    return 0
