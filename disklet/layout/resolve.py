"""From a DiskLayout spec to a body, its targets and its hash; the operator's pre-flight (docs/design/disklayout.md)."""

from __future__ import annotations

import os
import stat
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from disklet.api.disklayout import MAX_NIX_BODY, DiskLayoutSpec, Phase, RefusalCode
from disklet.hostcmd import HostRunner

from .checked import CheckedLayout, check_layout
from .errors import LayoutError, MalformedLayout, NixUnavailable
from .extract import Extraction
from .mounts import MountPolicy
from .render import render_disko_nix
from .schema import SchemaViolation

Source = Literal["diskLayout", "layoutNix", "layoutNixFile"]


@dataclass
class ResolvedLayout:
    body: str
    """The text as given (or rendered from diskLayout); only ever evaluated in the sandbox."""
    source: Source
    extraction: Extraction
    layout_hash: str
    artifact: str
    """The literal Nix that runs (see :mod:`disklet.layout.checked`)."""


def read_layout_nix_file(path: str, base_dir: Path | None, *, allow_outside: bool = False) -> str:
    """The text of ``layoutNixFile``, relative to the manifest's directory (kctl inlines it).

    Symlinks are resolved first; the resolved file must lie inside the manifest's (resolved)
    directory unless ``allow_outside`` (kctl: ``DISKLET_LAYOUT_FILE_ANYWHERE=1``), so an untrusted
    manifest cannot inline ``~/.kube/config`` or ``/etc/shadow`` into a spec. Only regular files of
    at most the layout size limit are read, opened without following a last-moment symlink and
    without blocking (a FIFO is refused at once instead of waiting for a writer).
    """
    if base_dir is None:
        raise LayoutError(f"layoutNixFile {path!r} can only be resolved next to a manifest file "
                          "(use kctl apply -f MANIFEST, which inlines it as layoutNix)")
    base = Path(base_dir).resolve()
    candidate = Path(path)
    joined = candidate if candidate.is_absolute() else base / candidate
    try:
        full = joined.resolve(strict=True)
    except FileNotFoundError:
        raise LayoutError(f"layoutNixFile {path!r} not found (looked for {joined})") from None
    except (OSError, RuntimeError) as exc:
        raise LayoutError(f"layoutNixFile {path!r} cannot be resolved: {exc}") from None
    if not allow_outside and not full.is_relative_to(base):
        raise LayoutError(f"layoutNixFile {path!r} resolves to {full}, outside the manifest's directory {base}; "
                          "keep layout files next to the manifest (or set DISKLET_LAYOUT_FILE_ANYWHERE=1 "
                          "for a manifest you trust)")
    try:
        # O_NONBLOCK: opening a FIFO (or a device) must not wait for a writer; only regular files are read
        fd = os.open(full, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK)
    except OSError as exc:
        raise LayoutError(f"layoutNixFile {path!r} cannot be read: {exc.strerror or exc}") from None
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            kind = "a FIFO" if stat.S_ISFIFO(mode) else "a directory" if stat.S_ISDIR(mode) else "a device or socket"
            raise LayoutError(f"layoutNixFile {path!r} is {kind}, not a regular file")
        with os.fdopen(fd, "rb", closefd=False) as fh:
            data = fh.read(MAX_NIX_BODY + 1)
    finally:
        os.close(fd)
    if len(data) > MAX_NIX_BODY:
        raise LayoutError(f"layoutNixFile {path!r} is larger than {MAX_NIX_BODY} bytes")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise LayoutError(f"layoutNixFile {path!r} cannot be read: {exc}") from None


def resolve_body(spec: DiskLayoutSpec, base_dir: Path | None = None) -> tuple[str, Source]:
    sources = [s for s, v in (("diskLayout", spec.disk_layout), ("layoutNix", spec.layout_nix),
                              ("layoutNixFile", spec.layout_nix_file)) if v is not None]
    if len(sources) != 1:
        raise LayoutError("set exactly one layout source: diskLayout, layoutNix or layoutNixFile"
                          + (f" (found {', '.join(sources)})" if sources else ""))
    if spec.disk_layout is not None:
        return render_disko_nix(spec.disk_layout), "diskLayout"
    if spec.layout_nix is not None:
        return spec.layout_nix, "layoutNix"
    assert spec.layout_nix_file is not None
    return read_layout_nix_file(spec.layout_nix_file, base_dir), "layoutNixFile"


def resolve_layout(spec: DiskLayoutSpec, base_dir: Path | None = None, runner: HostRunner | None = None,
                   *, static_fallback: bool = True, policy: MountPolicy | None = None,
                   evaluate: Callable[..., Any] | None = None) -> ResolvedLayout:
    """Body, artifact, targets and hash; LayoutError (SchemaViolation) / MalformedLayout when wrong."""
    body, source = resolve_body(spec, base_dir)
    checked: CheckedLayout = check_layout(body, runner, policy=policy, static_fallback=static_fallback,
                                          evaluate=evaluate)
    extraction = Extraction(devices=checked.targets, devices_value=checked.devices_value, method=checked.method)
    return ResolvedLayout(body=body, source=source, extraction=extraction, layout_hash=checked.layout_hash,
                          artifact=checked.artifact)


@dataclass
class PreflightResult:
    phase: Phase
    refusal_reason: RefusalCode | None
    message: str
    body: str | None
    layout_hash: str | None
    target_devices: list[str]
    artifact: str | None = None


def preflight(spec: DiskLayoutSpec, base_dir: Path | None = None, runner: HostRunner | None = None,
              policy: MountPolicy | None = None, *, evaluate: Callable[..., Any] | None = None) -> PreflightResult:
    """Operator pre-flight: failed (bad layout), refused (no targets, forbidden content) or pending.
    Never raises on bad input. ``evaluate``: see :func:`.extract.extract_targets` (batch pre-flight)."""
    try:
        resolved = resolve_layout(spec, base_dir, runner, policy=policy, evaluate=evaluate)
    except SchemaViolation as exc:
        return PreflightResult(Phase.REFUSED, exc.code, f"{exc.code}: {exc}", None, None, [])
    except (LayoutError, MalformedLayout) as exc:
        return PreflightResult(Phase.FAILED, None, f"invalid layout: {exc}", None, None, [])
    except NixUnavailable as exc:
        return PreflightResult(Phase.FAILED, None, f"cannot evaluate the layout here: {exc}", None, None, [])
    devices = resolved.extraction.devices
    if not devices:
        return PreflightResult(Phase.REFUSED, RefusalCode.NO_TARGET_DEVICES,
                               "the layout names no target devices (no disko.devices.disk.<name>.device "
                               "and no zpool topology members)", resolved.body, resolved.layout_hash, [],
                               resolved.artifact)
    return PreflightResult(Phase.PENDING, None,
                           f"layout resolved from {resolved.source} ({resolved.extraction.method}); "
                           f"targets: {', '.join(devices)}",
                           resolved.body, resolved.layout_hash, list(devices), resolved.artifact)
