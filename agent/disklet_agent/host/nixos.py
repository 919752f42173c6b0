"""The NixOS side of an apply: ``disko`` on the checked artifact and ``nixos-rebuild`` through
``systemd-run`` (so the rebuild survives the agent's own restart). The argv builders are the only
place these commands are spelled."""

from __future__ import annotations

from disklet.hostcmd import CommandResult, HostRunner

from ..config import AgentConfig

REBUILD_UNIT = "disklet-nix-rebuild"


def disko_argv(config: AgentConfig, staged: str) -> list[str]:
    return [*config.disko_command, "--mode", "format,mount", "--root-mountpoint", "/", staged]


def rebuild_argv(config: AgentConfig, action: str) -> list[str]:
    # --pipe: the unit's output comes back to us (for the tail and the failed-units line);
    # --wait: systemd-run exits with the unit's exit status.
    return [*config.systemd_run_command, "--unit", REBUILD_UNIT, "--wait", "--collect", "--quiet", "--pipe",
            "--", *config.nixos_rebuild_command, action]


def run_disko(runner: HostRunner, config: AgentConfig, staged: str, timeout: float) -> CommandResult:
    """disko ``--mode format,mount`` on ``staged`` (the path as the host sees it)."""
    return runner.run(disko_argv(config, staged), timeout=timeout)


def run_rebuild(runner: HostRunner, config: AgentConfig, action: str, timeout: float) -> CommandResult:
    """``nixos-rebuild <action>`` (``test`` or ``switch``) in a transient systemd unit."""
    return runner.run(rebuild_argv(config, action), timeout=timeout)
