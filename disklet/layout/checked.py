"""From any layout text to the one artifact that runs (docs/layouts.md, "The artifact").

``check_layout`` is the only way a body becomes something disko may see:

1. evaluate the text in the sandbox (or, without nix, read it literally) → a JSON value;
2. close ZFS's implicit mounts (every pool root gets ``mountpoint=none``, :mod:`.mountpaths`), then
   walk ``disko.devices`` against the allowlist and the mountpoint policy (:mod:`.schema`), which
   judges every path the layout mounts, explicit or derived;
3. print the value as literal Nix (:func:`.artifact.render_artifact`);
4. read *that literal* back with the literal-only reader (:func:`.static.static_evaluate`, which
   refuses any expression: ``let``, ``if``, builtins, interpolation, paths) and require exactly the
   same value, and take the target devices from it. (In-process: no second nix run; the property
   tests evaluate artifacts with an unrestricted ``nix-instantiate`` and compare.)

Step 4 is what makes "what is checked is what runs" hold by construction: the artifact contains no
expression whose value could differ between the sandbox and the root evaluation disko does, and
the targets the classifier judges are read from the very bytes handed to disko.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from disklet.hostcmd import HostRunner

from .artifact import artifact_hash, render_artifact
from .errors import MalformedLayout
from .extract import devices_value_of, extract_targets, walk_targets
from .hashing import canonical_json
from .mountpaths import close_pool_roots
from .mounts import MountPolicy
from .schema import check_schema
from .static import static_evaluate


@dataclass(frozen=True)
class CheckedLayout:
    artifact: str
    """Literal Nix: the only text disko runs and current.nix holds."""
    devices_value: dict[str, Any]
    targets: list[str]
    method: Literal["eval", "static"]
    layout_hash: str
    """sha256 of ``artifact``."""


def check_layout(body: str, runner: HostRunner | None = None, *, policy: MountPolicy | None = None,
                 static_fallback: bool = True, timeout: float = 30,
                 evaluate: Callable[..., Any] | None = None) -> CheckedLayout:
    """Raise MalformedLayout / LayoutError / SchemaViolation (with ``code``) / NixUnavailable."""
    extraction = extract_targets(body, runner, static_fallback=static_fallback, timeout=timeout, evaluate=evaluate)
    closed = close_pool_roots(extraction.devices_value)
    check_schema(closed, policy)
    artifact = render_artifact(closed)
    value = devices_value_of(static_evaluate(artifact))
    if canonical_json(value) != canonical_json(closed):
        raise MalformedLayout("the rendered artifact does not read back as the checked value (internal error; "
                              "nothing was applied)")
    return CheckedLayout(artifact=artifact, devices_value=value, targets=walk_targets(value),
                         method=extraction.method, layout_hash=artifact_hash(artifact))
