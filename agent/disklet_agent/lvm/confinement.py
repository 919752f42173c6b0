"""Symlink confinement of file devices: a directory (or a backing file's directory) counts as
inside the base directory only when it still lies there once every symlink on the way is resolved
(docs/design/lvm.md rule 2). One ``realpath`` command answers for every component at once.

Used before a reconcile (every spec directory), right before each host write under a directory,
and before delete and re-attach touch a backing file (status and spec paths).
"""

from __future__ import annotations

import posixpath
from collections.abc import Iterable

from disklet.lvm.validation import component_prefixes, escape_through_symlink, inside_base

from ..host.files import FileOpError
from .filedevices import FileDeviceError
from .ports import FileCommands


def _escapes(files: FileCommands, base: str, dirs: list[str]) -> tuple[str, dict[str, str | None]]:
    """ONE ``realpath`` of ``base`` and every component of ``dirs`` (each lexically inside it): the
    resolved base, and per directory why it leaves the base (None: it stays). Raises FileOpError."""
    prefixes = list(dict.fromkeys([posixpath.normpath(base),
                                   *(p for d in dirs for p in component_prefixes(d, base))]))
    resolved = files.realpaths(prefixes)
    return resolved[posixpath.normpath(base)], {d: escape_through_symlink(d, base, resolved) for d in dirs}


def resolve_dirs(files: FileCommands, base: str, directories: Iterable[str]) -> tuple[
        tuple[str, ...], dict[str, str | None]]:
    """The base directory as configured and resolved, and per directory (each lexically inside the
    base) why it leaves the base through a symlink (None when it stays inside). Raises FileOpError."""
    real, escapes = _escapes(files, base, list(dict.fromkeys(directories)))
    return tuple(dict.fromkeys((base, real))), escapes


def confine(files: FileCommands, base: str, directory: str) -> None:
    """Right before a host write under ``directory``: it must still resolve inside the base."""
    try:
        _, escapes = resolve_dirs(files, base, [directory])
    except FileOpError as exc:
        raise FileDeviceError(f"cannot resolve {directory} (doing nothing now): {exc}") from exc
    if escapes[directory]:
        raise FileDeviceError(escapes[directory])


def confined_files(files: FileCommands, paths: Iterable[str], base_dirs: tuple[str, ...]) -> dict[str, str | None]:
    """path → None when its directory lies inside a base directory once every symlink is resolved,
    else why not. Paths are checked against the base they lexically lie in (status paths are
    kernel-resolved, so they lie in the resolved base). Raises FileOpError (the caller keeps the
    finalizer / skips the re-attach)."""
    out: dict[str, str | None] = {}
    by_base: dict[str, list[str]] = {}
    for p in paths:
        d = posixpath.dirname(posixpath.normpath(p))
        base = next((b for b in base_dirs if inside_base(d, b)), None)
        if base is None or any(seg in (".", "..") for seg in p.split("/")):
            out[p] = f"{p} is not inside the base directory"
        else:
            by_base.setdefault(base, []).append(p)
    for base, ps in by_base.items():
        dirs = {p: posixpath.dirname(posixpath.normpath(p)) for p in ps}
        _, escapes = _escapes(files, base, list(dict.fromkeys(dirs.values())))
        for p, d in dirs.items():
            out[p] = escapes[d]
    return out
