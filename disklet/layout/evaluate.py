"""Evaluate an untrusted disko body with ``nix-instantiate`` in a sandbox (docs/design/disklayout.md#extraction).

Invocation (checked with Debian's nix-bin 2.8, as root and as ``nobody`` with no HOME, no daemon
and no writable ``/nix``)::

    nix-instantiate --eval --strict --json \\
        --option restrict-eval true --option pure-eval true \\
        --option nix-path "" --option allowed-uris "" --store dummy:// -

with the body on stdin. ``--store dummy://`` needs no store, daemon or state directory, so no
``NIX_STATE_DIR``/``HOME`` tweaks are needed. ``restrict-eval`` blocks ``readFile``/``import`` of
absolute paths and fetches. Two additions beyond the minimal form: restrict-eval still allows
paths on the *search path*, so ``NIX_PATH=p=/etc`` would let ``<p/passwd>`` be read – the search
path is emptied (option and environment); ``pure-eval`` removes ``builtins.currentTime`` and
friends so the same body always evaluates to the same value (and the same hash). The exit code is
checked before stdout is read: nix prints partial JSON on error.
"""

from __future__ import annotations

import json
import shutil
from typing import Any

from disklet.api.disklayout import MAX_NIX_BODY
from disklet.hostcmd import HostRunner

from .errors import MalformedLayout, NixUnavailable

NIX_INSTANTIATE = "nix-instantiate"
EVAL_ARGV: tuple[str, ...] = (
    NIX_INSTANTIATE, "--eval", "--strict", "--json",
    "--option", "restrict-eval", "true",
    "--option", "pure-eval", "true",
    "--option", "nix-path", "",
    "--option", "allowed-uris", "",
    "--store", "dummy://",
    "-",
)
EVAL_ENV = {"NIX_PATH": "", "NIX_CONFIG": ""}


def nix_available() -> bool:
    return shutil.which(NIX_INSTANTIATE) is not None


def _nix_message(stderr: str) -> str:
    lines = [ln for ln in stderr.strip().splitlines() if "--show-trace" not in ln]
    return "\n".join(lines).strip() or "nix-instantiate failed without a message"


def evaluate_nix(body: str, runner: HostRunner | None = None, timeout: float = 30) -> Any:
    """Evaluate ``body`` strictly to a JSON value; MalformedLayout when it does not evaluate."""
    if len(body.encode()) > MAX_NIX_BODY:
        raise MalformedLayout(f"layout body is {len(body.encode())} bytes; the limit is {MAX_NIX_BODY}")
    if "\x00" in body:
        raise MalformedLayout("layout body contains a NUL byte")
    runner = runner or HostRunner()
    result = runner.run(list(EVAL_ARGV), timeout=timeout, input=body, env=EVAL_ENV)
    if result.returncode == 127 and not result.stdout and not result.timed_out:
        raise NixUnavailable(f"{NIX_INSTANTIATE} is not installed: {result.stderr.strip()}")
    if result.timed_out:
        raise MalformedLayout(f"evaluating the layout body timed out after {timeout:g}s")
    if result.returncode != 0:
        message = _nix_message(result.stderr)
        if "cannot convert a function to JSON" in message:
            raise MalformedLayout("layout body is a function; it must be a plain attribute set "
                                  "{ disko.devices = { ... }; } (" + message.splitlines()[0] + ")")
        raise MalformedLayout(message)
    try:
        return json.loads(result.stdout)
    except json.JSONDecodeError as exc:
        raise MalformedLayout(f"nix-instantiate printed invalid JSON: {exc}") from exc
