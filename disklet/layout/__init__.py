"""The pure DiskLayout library (docs/design/disklayout.md): validate, render, evaluate, extract, hash, pre-flight.

Everything here is pure except ``evaluate_nix`` (runs ``nix-instantiate`` through the HostRunner)
and ``read_layout_nix_file``. The operator, the node agent and kctl all call these functions, so
the same body always yields the same targets and the same hash everywhere. See docs/layouts.md.
"""

from __future__ import annotations

from .appendonly import check_append_only
from .errors import LayoutError, MalformedLayout, NixUnavailable
from .evaluate import EVAL_ARGV, evaluate_nix, nix_available
from .extract import Extraction, devices_value_of, extract_targets, walk_targets
from .hashing import canonical_json, layout_hash
from .nixliteral import nix_attr_name, nix_string
from .render import devices_value, render_disko_nix
from .resolve import (
    PreflightResult,
    ResolvedLayout,
    preflight,
    read_layout_nix_file,
    resolve_body,
    resolve_layout,
)
from .static import REFUSE_HINT, static_evaluate
from .validate import gpt_label, layout_problems, validate_structured_layout

__all__ = [
    "EVAL_ARGV",
    "REFUSE_HINT",
    "Extraction",
    "LayoutError",
    "MalformedLayout",
    "NixUnavailable",
    "PreflightResult",
    "ResolvedLayout",
    "canonical_json",
    "check_append_only",
    "devices_value",
    "devices_value_of",
    "evaluate_nix",
    "extract_targets",
    "gpt_label",
    "layout_hash",
    "layout_problems",
    "nix_attr_name",
    "nix_available",
    "nix_string",
    "preflight",
    "read_layout_nix_file",
    "render_disko_nix",
    "resolve_body",
    "resolve_layout",
    "static_evaluate",
    "validate_structured_layout",
    "walk_targets",
]
