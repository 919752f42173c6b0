"""From a DiskLayout spec to a body, its targets and its hash; the operator's pre-flight (docs/design/disklayout.md)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from disklet.api.disklayout import DiskLayoutSpec, Phase, RefusalCode
from disklet.hostcmd import HostRunner

from .errors import LayoutError, MalformedLayout, NixUnavailable
from .extract import Extraction, extract_targets
from .hashing import layout_hash
from .render import render_disko_nix

Source = Literal["diskLayout", "layoutNix", "layoutNixFile"]


@dataclass
class ResolvedLayout:
    body: str
    source: Source
    extraction: Extraction
    layout_hash: str


def read_layout_nix_file(path: str, base_dir: Path | None) -> str:
    """The text of ``layoutNixFile``, relative to the manifest's directory (kctl inlines it)."""
    if base_dir is None:
        raise LayoutError(f"layoutNixFile {path!r} can only be resolved next to a manifest file "
                          "(use kctl apply -f MANIFEST, which inlines it as layoutNix)")
    candidate = Path(path)
    full = candidate if candidate.is_absolute() else Path(base_dir) / candidate
    try:
        return full.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise LayoutError(f"layoutNixFile {path!r} not found (looked for {full})") from None
    except (OSError, UnicodeDecodeError) as exc:
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
                   *, static_fallback: bool = True) -> ResolvedLayout:
    """Body (rendered or given), its targets and its hash; LayoutError / MalformedLayout when wrong."""
    body, source = resolve_body(spec, base_dir)
    extraction = extract_targets(body, runner, static_fallback=static_fallback)
    return ResolvedLayout(body=body, source=source, extraction=extraction,
                          layout_hash=layout_hash(extraction.devices_value))


@dataclass
class PreflightResult:
    phase: Phase
    refusal_reason: RefusalCode | None
    message: str
    body: str | None
    layout_hash: str | None
    target_devices: list[str]


def preflight(spec: DiskLayoutSpec, base_dir: Path | None = None, runner: HostRunner | None = None) -> PreflightResult:
    """Operator pre-flight: failed (bad layout), refused (no targets) or pending. Never raises on bad input."""
    try:
        resolved = resolve_layout(spec, base_dir, runner)
    except (LayoutError, MalformedLayout) as exc:
        return PreflightResult(Phase.FAILED, None, f"invalid layout: {exc}", None, None, [])
    except NixUnavailable as exc:
        return PreflightResult(Phase.FAILED, None, f"cannot evaluate the layout here: {exc}", None, None, [])
    devices = resolved.extraction.devices
    if not devices:
        return PreflightResult(Phase.REFUSED, RefusalCode.NO_TARGET_DEVICES,
                               "the layout names no target devices (no disko.devices.disk.<name>.device "
                               "and no zpool topology members)", resolved.body, resolved.layout_hash, [])
    return PreflightResult(Phase.PENDING, None,
                           f"layout resolved from {resolved.source} ({resolved.extraction.method}); "
                           f"targets: {', '.join(devices)}",
                           resolved.body, resolved.layout_hash, list(devices))
