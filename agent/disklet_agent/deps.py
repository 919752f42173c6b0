"""What every agent handler needs, passed explicitly (no module globals), so tests can run
several agents in one process."""

from __future__ import annotations

from dataclasses import dataclass, field

from disklet.hostcmd import HostRunner

from .config import AgentConfig


@dataclass
class AgentDeps:
    config: AgentConfig
    runner: HostRunner = field(default_factory=HostRunner)

    @classmethod
    def from_config(cls, config: AgentConfig) -> AgentDeps:
        return cls(config=config, runner=HostRunner(use_nsenter=config.use_nsenter, nsenter_target=config.nsenter_target,
                                                    default_timeout=config.command_timeout_seconds))
