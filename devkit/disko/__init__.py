"""A test ``disko`` (never shipped): disko's own Nix library evaluates the layout into the exact
``format,mount`` script disko would run, and the script runs with the host's tools on loop devices.

Pieces (docs/testing.md, "The test disko"):

- ``bin/disko`` — the CLI the agent calls (``--mode format,mount --root-mountpoint R FILE``);
  :mod:`devkit.disko.cli`.
- ``bin/udevadm`` — there is no udevd here; on ``trigger``/``settle`` it makes the
  ``/dev/disk/by-partlabel`` links of the test's own loop devices; :mod:`devkit.disko.udev`.
- ``bin/modprobe`` — the device-mapper modules disko loads for LVM are a no-op here.
- ``eval.nix`` — the evaluation, shaped like disko's ``cli.nix``.

Where disko's sources are: ``$DISKO_EVAL_DIR``, else the first ``shared/disko-eval`` directory
beside the repository or one of its parents (it holds ``disko/`` and ``nixpkgs-lib/``). Without
it (or without ``nix-instantiate``) :func:`missing` says why and tests skip with that line.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
BIN = HERE / "bin"
EVAL_NIX = HERE / "eval.nix"
DISKO_COMMAND = str(BIN / "disko")

PINNED_REV = "878ec37"
"""The disko commit the tests evaluate against (nix-community/disko, 2026-03-14)."""
PINNED_DATE = "2026-03-14"
EVAL_TIMEOUT = 120.0

ENV_EVAL_DIR = "DISKO_EVAL_DIR"
ENV_SANDBOX = "DISKO_TEST_SANDBOX"
"""Directory that holds the backing files of the loop devices the test created (required)."""
ENV_ROOT = "DISKO_TEST_ROOT"
"""Where mounts go instead of ``--root-mountpoint`` (must lie inside the sandbox)."""
ENV_TIMEOUT = "DISKO_TEST_TIMEOUT"
ENV_VM_DISKS = "DISKO_TEST_VM_DISKS"
"""Inside disklet's test VM only: real disks a layout may use (devkit/disko/cli.py, ``vm_disks``)."""
ENV_RECORD = "DISKO_TEST_RECORD"
"""Optional: a file each run appends ``{"argv": [...], "file": "<the config's bytes>"}`` to."""


def eval_dir() -> Path | None:
    """disko's sources: ``$DISKO_EVAL_DIR`` or ``shared/disko-eval`` beside the repo or a parent."""
    env = os.environ.get(ENV_EVAL_DIR)
    if env:
        return Path(env)
    for parent in REPO.parents:
        candidate = parent / "shared" / "disko-eval"
        if (candidate / "disko" / "lib").is_dir():
            return candidate
    return None


def missing() -> str:
    """Why the test disko cannot run here ("" when it can)."""
    d = eval_dir()
    if d is None:
        return (f"test disko: disko's sources not found (set {ENV_EVAL_DIR} to a directory with disko/ and "
                "nixpkgs-lib/, see docs/testing.md)")
    if not (d / "disko" / "lib" / "default.nix").is_file() or not (d / "nixpkgs-lib" / "lib").is_dir():
        return f"test disko: {d} does not hold disko/lib and nixpkgs-lib/lib ({ENV_EVAL_DIR})"
    if shutil.which("nix-instantiate") is None:
        return "test disko: needs nix-instantiate (apt-get install nix-bin)"
    return ""


def missing_tools() -> str:
    """Why disko's scripts cannot run here ("" when they can): root and the tools they call."""
    reason = missing()
    if reason:
        return reason
    if os.geteuid() != 0:
        return "test disko: running disko's scripts needs root (loop devices, mounts)"
    for tool in ("bash", "sgdisk", "partprobe", "blkid", "mkfs.ext4", "findmnt", "mount", "losetup", "pvcreate"):
        if shutil.which(tool) is None:
            return f"test disko: needs {tool} (apt-get install gdisk parted e2fsprogs util-linux lvm2)"
    return ""


def skip_or_fail(reason: str) -> None:
    """For pytest fixtures: skip with ``reason`` — or fail under ``CI=true``, where the assets exist
    and these tests must run (like the rest of the host tier)."""
    import pytest

    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"test disko prerequisite missing in CI: {reason}")
    pytest.skip(reason)


class EvalError(RuntimeError):
    """disko's own types rejected the layout (the message is nix's)."""


@dataclass(frozen=True)
class Evaluated:
    format_mount: str
    """The script ``disko --mode format,mount`` runs (disko's ``_formatMount``: create, then mount)."""
    create: str
    mount: str
    summary: dict[str, Any]
    """What the script touches: kinds, disks (with partitions and contents), VGs, pools, hook text."""


def evaluate(layout_file: str | Path, root_mountpoint: str = "/mnt", *, timeout: float = EVAL_TIMEOUT) -> Evaluated:
    """Evaluate ``layout_file`` through disko's own module types (unrestricted, as disko does)."""
    d = eval_dir()
    if d is None or missing():
        raise EvalError(missing())
    argv = ["nix-instantiate", "--eval", "--strict", "--json",
            "--argstr", "evalDir", str(d.resolve()),
            "--argstr", "layoutFile", str(Path(layout_file).resolve()),
            "--argstr", "rootMountPoint", root_mountpoint,
            "--", str(EVAL_NIX)]
    env = {k: v for k, v in os.environ.items() if not k.startswith("NIX_")}
    env["NIX_PATH"] = ""
    try:
        res = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, env=env, check=False)  # noqa: S603
    except subprocess.TimeoutExpired as exc:
        raise EvalError(f"nix-instantiate did not finish within {timeout:.0f}s") from exc
    if res.returncode != 0:
        raise EvalError(res.stderr.strip() or f"nix-instantiate exited {res.returncode}")
    value = json.loads(res.stdout)
    return Evaluated(value["formatMount"], value["create"], value["mount"], value["summary"])


def evaluate_text(body: str, root_mountpoint: str = "/mnt", *, workdir: Path, timeout: float = EVAL_TIMEOUT
                  ) -> Evaluated:
    """:func:`evaluate` for a body (written to a file in ``workdir`` first)."""
    f = workdir / f"layout-{os.getpid()}-{id(body):x}.nix"
    f.write_text(body, encoding="utf-8")
    try:
        return evaluate(f, root_mountpoint, timeout=timeout)
    finally:
        f.unlink(missing_ok=True)
