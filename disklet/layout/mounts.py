"""Mountpoint policy: where a layout may mount filesystems (docs/layouts.md, "Mountpoints").

Two lists, checked on the evaluated value of every layout (structured or raw):

- a hard **denylist** of system paths. Some are denied with everything under them (``/etc``,
  ``/proc``, ``/sys``, ``/dev``, ``/run``, ``/usr``, ``/boot``, ``/nix``, ``/var/lib/kubelet``, the
  agent's own directories, ...), some only as themselves (``/``, ``/var``, ``/var/lib``: mounting
  there would hide the whole OS tree below them). No configuration can lift it.
- a configurable **allowlist of roots** (``DISKLET_MOUNT_ROOTS``, comma separated): a mountpoint
  must be one of the roots or lie under one. The defaults fit the usual data-disk paths.

The character set is deliberately small (letters, digits, ``. _ + - @``, segments separated by
``/``, no segment starting with ``.``) because disko interpolates mountpoints into shell lines.
"""

from __future__ import annotations

import posixpath
import re
from collections.abc import Iterable
from dataclasses import dataclass

from disklet.api.disklayout import DEFAULT_MOUNT_ROOTS, DENIED_EXACT, DENIED_TREES, MOUNTPOINT_PATTERN

MOUNTPOINT_RE = re.compile(MOUNTPOINT_PATTERN)
MAX_MOUNTPOINT = 1024


def _under(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip("/") + "/")


def parse_roots(text: str | None) -> tuple[str, ...]:
    """``DISKLET_MOUNT_ROOTS`` → roots (empty or unset → the defaults)."""
    roots = tuple(r.strip() for r in (text or "").split(",") if r.strip())
    return roots or DEFAULT_MOUNT_ROOTS


@dataclass(frozen=True)
class MountPolicy:
    roots: tuple[str, ...] = DEFAULT_MOUNT_ROOTS
    extra_denied: tuple[str, ...] = ()
    """More denied trees (the agent adds its own directories, e.g. the file-device directory)."""

    @classmethod
    def of(cls, roots: Iterable[str] | None = None, extra_denied: Iterable[str] = ()) -> MountPolicy:
        return cls(tuple(roots) if roots else DEFAULT_MOUNT_ROOTS,
                   tuple(posixpath.normpath(d) for d in extra_denied if d and d.startswith("/")))

    def problem(self, mountpoint: object) -> str | None:
        """Why ``mountpoint`` may not be used, or None."""
        if not isinstance(mountpoint, str):
            return f"mountpoint must be a string, not {type(mountpoint).__name__}"
        if len(mountpoint) > MAX_MOUNTPOINT or not MOUNTPOINT_RE.fullmatch(mountpoint):
            return (f"mountpoint {mountpoint!r} must be an absolute path of letters, digits and . _ + - @ "
                    f"(pattern {MOUNTPOINT_PATTERN}; no spaces, quotes, $ or other shell characters, no . or .. "
                    "segments)")
        denied = next((d for d in (*DENIED_TREES, *self.extra_denied) if _under(mountpoint, d)), None)
        if denied is not None or mountpoint in DENIED_EXACT:
            return (f"mountpoint {mountpoint!r} is a system path ({denied or mountpoint} is on the hard denylist "
                    "of docs/layouts.md)")
        if not any(_under(mountpoint, r) for r in self.roots):
            return (f"mountpoint {mountpoint!r} is not under an allowed root ({', '.join(self.roots)}; the agent "
                    "and operator setting DISKLET_MOUNT_ROOTS changes the roots)")
        return None

    def root_of(self, path: str) -> str | None:
        """The most specific allowed root ``path`` lies in (None: none)."""
        roots = [r for r in self.roots if _under(path, r)]
        return max(roots, key=len) if roots else None

    def resolved_problem(self, path: str, resolved: str, resolved_roots: dict[str, str]) -> str | None:
        """Why ``path``, which the node resolves to ``resolved``, may not be mounted (None: fine).

        Equal text: nothing new to judge. Otherwise a component is a symbolic link: the resolved
        path must stay inside the same allowed root as the text (or inside what that root itself
        resolves to), and pass the whole policy (character set, denylist, allowed roots)."""
        if resolved == path:
            return None
        root = self.root_of(path)
        real_root = resolved_roots.get(root, root) if root else None
        inside = root is not None and (_under(resolved, root) or (real_root is not None and _under(resolved, real_root)))
        if not inside:
            return (f"mountpoint {path!r} resolves on the node to {resolved!r} through a symbolic link, outside its "
                    f"allowed root {root or '(none)'}; mount would follow the link")
        why = self.problem(resolved)
        if why:
            return f"mountpoint {path!r} resolves on the node to {resolved!r} through a symbolic link: {why}"
        return None

    def shadows(self, mountpoint: str, live: str) -> bool:
        """Would mounting at ``mountpoint`` land on or above the live mount ``live``?"""
        return _under(posixpath.normpath(live), mountpoint)
