"""Reaching the disklet agent on a node: find its pod, build the ``disklet-agent`` argv to exec.

Pure (pod choice, argv); the exec itself is :meth:`disklet.cli.kube.Kube.exec`. The file is sent on
the exec's stdin and the agent reads it with ``-f -`` (the agent CLI must accept ``-f -``).
"""

from __future__ import annotations

from typing import Any

from .output import field

DEFAULT_NAMESPACE = "disklet-system"
AGENT_SELECTOR = "app.kubernetes.io/component=agent"
AGENT_CONTAINER = "agent"
AGENT_COMMAND = "disklet-agent"
DEFAULT_TIMEOUT_SECONDS = 300
MAX_TIMEOUT_SECONDS = 3600


class AgentPodError(Exception):
    """No usable agent pod on the node; the message says where we looked and what to check."""


def pod_field_selector(node: str) -> str:
    return f"spec.nodeName={node}"


def pick_agent_pod(pods: list[dict[str, Any]], node: str, namespace: str) -> tuple[str, str | None]:
    """(pod name, container) of the running agent pod on ``node``; AgentPodError when there is none.

    Re-checks the node client-side (a server that ignored the field selector must not make us exec
    on another node), skips terminating pods and prefers the newest running one.
    """
    on_node = [p for p in pods if field(p, "spec.nodeName") == node]
    running = [p for p in on_node if field(p, "status.phase") == "Running"
               and not field(p, "metadata.deletionTimestamp")]
    if not running:
        seen = ", ".join(f"{field(p, 'metadata.name')} ({field(p, 'status.phase', 'unknown')})" for p in on_node)
        raise AgentPodError(
            f"no running disklet agent pod on node {node!r} in namespace {namespace!r}"
            + (f" (found: {seen})" if seen else "")
            + f"\n  hint: kubectl -n {namespace} get pods -l {AGENT_SELECTOR} -o wide; "
              "is the DaemonSet scheduled on that node, or is the agent in another --namespace?")
    pod = max(running, key=lambda p: str(field(p, "metadata.creationTimestamp", "")))
    names = [c.get("name") for c in field(pod, "spec.containers", [])]
    container = AGENT_CONTAINER if AGENT_CONTAINER in names else (names[0] if names else None)
    return str(field(pod, "metadata.name")), container


def apply_disk_argv(*, apply: bool, rebuild: bool, timeout_seconds: int,
                    allow_destructive_changes: bool = False) -> list[str]:
    """``disklet-agent apply-disk -f - ...``: the command run in the agent pod (the file comes on stdin)."""
    argv = [AGENT_COMMAND, "apply-disk", "-f", "-", "--timeout-seconds", str(timeout_seconds)]
    if apply:
        argv.append("--apply")
    if not rebuild:
        argv.append("--no-rebuild")
    if allow_destructive_changes:
        argv.append("--allow-destructive-changes")
    return argv


def disks_argv(output: str = "json") -> list[str]:
    """``disklet-agent disks -o json|table``: the live topology and the classifier's verdict per device."""
    return [AGENT_COMMAND, "disks", "-o", output]


def lvm_report_argv() -> list[str]:
    """``disklet-agent lvm-report``: read-only pvs/vgs/lvs JSON reports as the agent sees LVM."""
    return [AGENT_COMMAND, "lvm-report"]
