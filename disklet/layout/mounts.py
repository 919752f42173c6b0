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
        if len(mountpoint) > MAX_MOUNTPOINT or not MOUNTPOINT_RE.match(mountpoint):
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

    def shadows(self, mountpoint: str, live: str) -> bool:
        """Would mounting at ``mountpoint`` land on or above the live mount ``live``?"""
        return _under(posixpath.normpath(live), mountpoint)
