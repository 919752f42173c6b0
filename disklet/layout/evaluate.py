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

Hardening against the host's own Nix configuration (docs/layouts.md, "The evaluator"): every
option that could weaken the sandbox is pinned on the command line
(``allow-unsafe-native-code-during-evaluation false``, ``plugin-files ""``), the configuration
files are out of reach (``NIX_CONF_DIR`` is ``/dev/null``, ``NIX_USER_CONF_FILES`` and
``NIX_CONFIG`` are empty, so no ``nix.conf`` is read), and the process runs under
``prlimit --as=… --cpu=…`` (address space and CPU seconds) as well as the runner's wall-clock
timeout.
"""

from __future__ import annotations

import json
import shutil
from typing import Any

from disklet.api.disklayout import MAX_NIX_BODY
from disklet.hostcmd import HostRunner

from .errors import MAX_VALUE_DEPTH, MalformedLayout, NixUnavailable, check_depth

NIX_INSTANTIATE = "nix-instantiate"
EVAL_ARGV: tuple[str, ...] = (
    NIX_INSTANTIATE, "--eval", "--strict", "--json",
    "--option", "restrict-eval", "true",
    "--option", "pure-eval", "true",
    "--option", "nix-path", "",
    "--option", "allowed-uris", "",
    "--option", "allow-unsafe-native-code-during-evaluation", "false",
    "--option", "plugin-files", "",
    "--store", "dummy://",
    "-",
)
NIX_CONF_DIR = "/dev/null"
"""Where nix looks for ``nix.conf``: a path that is not a directory in *every* mount namespace, so
``/dev/null/nix.conf`` can exist nowhere. The agent runs ``nix-instantiate`` in the host's mount
namespace (nsenter): a directory the agent created in its own container (the former empty temporary
directory) does not exist there, and whoever can write the host's ``/tmp`` could have put a
``nix.conf`` at that name."""
EVAL_ENV = {"NIX_PATH": "", "NIX_CONFIG": "", "NIX_USER_CONF_FILES": "", "NIX_CONF_DIR": NIX_CONF_DIR}
MEMORY_LIMIT_BYTES = 1 << 30
"""Address-space bound of one evaluation (1 GiB); a layout needs a few MiB."""
CPU_LIMIT_SECONDS = 60
"""CPU-time bound of one evaluation, on top of the wall-clock timeout."""


def eval_argv(memory_bytes: int = MEMORY_LIMIT_BYTES, cpu_seconds: int = CPU_LIMIT_SECONDS) -> list[str]:
    """``prlimit`` (util-linux) wraps the evaluator so a hostile body cannot exhaust the node."""
    return ["prlimit", f"--as={int(memory_bytes)}", f"--cpu={int(cpu_seconds)}", "--", *EVAL_ARGV]


def nix_available() -> bool:
    return shutil.which(NIX_INSTANTIATE) is not None


def _nix_message(stderr: str) -> str:
    lines = [ln for ln in stderr.strip().splitlines() if "--show-trace" not in ln]
    return "\n".join(lines).strip() or "nix-instantiate failed without a message"


def evaluate_nix(body: str, runner: HostRunner | None = None, timeout: float = 30, *,
                 memory_bytes: int = MEMORY_LIMIT_BYTES) -> Any:
    """Evaluate ``body`` strictly to a JSON value; MalformedLayout when it does not evaluate."""
    if len(body.encode()) > MAX_NIX_BODY:
        raise MalformedLayout(f"layout body is {len(body.encode())} bytes; the limit is {MAX_NIX_BODY}")
    if "\x00" in body:
        raise MalformedLayout("layout body contains a NUL byte")
    runner = runner or HostRunner()
    result = runner.run(eval_argv(memory_bytes, max(1, int(timeout) + 1)), timeout=timeout, input=body,
                        env=dict(EVAL_ENV))
    if result.returncode == 127 and not result.stdout and not result.timed_out:
        # prlimit execs nix-instantiate and exits 127 when it is missing (or is itself missing)
        raise NixUnavailable(f"{NIX_INSTANTIATE} is not installed: {result.stderr.strip()}")
    if result.timed_out:
        raise MalformedLayout(f"evaluating the layout body timed out after {timeout:g}s")
    if result.returncode != 0:
        message = _nix_message(result.stderr)
        if result.returncode < 0 or "out of memory" in message.lower() or "bad_alloc" in message:
            raise MalformedLayout(f"evaluating the layout body exceeded its resource limits "
                                  f"({memory_bytes >> 20} MiB address space, {int(timeout)}s): {message[:500]}")
        if "cannot convert a function to JSON" in message:
            raise MalformedLayout("layout body is a function; it must be a plain attribute set "
                                  "{ disko.devices = { ... }; } (" + message.splitlines()[0] + ")")
        raise MalformedLayout(message)
    try:
        value = json.loads(result.stdout)
    except json.JSONDecodeError as exc:
        raise MalformedLayout(f"nix-instantiate printed invalid JSON: {exc}") from exc
    except RecursionError:
        raise MalformedLayout(f"layout value is nested deeper than {MAX_VALUE_DEPTH} levels (a disko layout needs "
                              "about 12); refusing it before walking it") from None
    check_depth(value)
    return value
