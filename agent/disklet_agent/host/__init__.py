"""Host command layer: one runner for every command the agent runs on the node, and adapters on top."""

from .runner import BENIGN_STDERR_PATTERNS, CommandError, CommandResult, HostRunner, filter_stderr

__all__ = ["BENIGN_STDERR_PATTERNS", "CommandError", "CommandResult", "HostRunner", "filter_stderr"]
