"""The node agent process: Kopf registry, settings, JSON logging, and the run loop.

``disklet-agent run`` → :func:`run_agent`. The agent runs Kopf ``--standalone`` (agents are equals:
peering would freeze them), clusterwide, and sees only its node's objects: every watched
resource carries the server-side label selector ``disklet.io/node=<node>``. Its Kopf bookkeeping
(progress, diff-base) lives in ``agent.disklet.io/*`` annotations, apart from the operator's.
See docs/agent.md.
"""

from __future__ import annotations

import asyncio
import hashlib
import importlib
import logging
import os
from typing import Any

from disklet.kopf_lean import import_kopf_without_kubernetes_asyncio

import_kopf_without_kubernetes_asyncio()  # ~36-60 MiB less RSS (disklet/kopf_lean.py)

import kopf  # noqa: E402

from disklet import logs  # noqa: E402
from disklet.api.resources import BLOCK_DEVICE, DISK_LAYOUT, LVM_VOLUME_GROUP, NODE_LABEL  # noqa: E402
from disklet.kube.client import ApiError, KubeClient, NotFound  # noqa: E402
from disklet.kube.events import AGENT  # noqa: E402
from disklet.kube.login import add_kopf_login  # noqa: E402
from disklet.labels import node_label_value  # noqa: E402
from disklet.observe import observe_host_commands, start_metrics_server  # noqa: E402

from .config import AgentConfig  # noqa: E402
from .deps import AgentDeps  # noqa: E402
from .handlers import blockdevices, lease, lvg  # noqa: E402
from .handlers.blockdevices import PvReader, TopologyReader  # noqa: E402
from .kube import AgentKube  # noqa: E402
from .lvm.ports import LvgEngine  # noqa: E402
from .tasks import BackgroundTasks  # noqa: E402

FINALIZER = "disklet.io/agent"
ANNOTATION_PREFIX = "agent.disklet.io"
DEFAULT_LIVENESS_ENDPOINT = "http://0.0.0.0:9092/healthz"
DEFAULT_METRICS_PORT = 9091  # the chart value agent.metricsPort and docs/metrics.md
LOG_EXTRA_KEYS = ("node", "lvg", "reconcile_id", "error", "changed", "status_written", "phase", "lvgs", "problems",
                  "bd_created", "bd_updated", "bd_deleted", "writes")
"""Record extras that reach the JSON log line (Kopf's own extras, e.g. its settings, stay out)."""
AGENT_RESOURCES = (DISK_LAYOUT, LVM_VOLUME_GROUP, BLOCK_DEVICE)
"""What the agent watches (label selector ``disklet.io/node=<node>``); their CRDs must be served at start."""
WATCH_SERVER_TIMEOUT_SECONDS = 600
"""Each watch request ends server-side after about this long and is reopened from its resourceVersion
(client-go's informers: 5-10 min). Spread ±10 % per node, see :func:`watch_server_timeout`."""
WATCH_INACTIVITY_MARGIN_SECONDS = 30
"""A watch silent this much longer than its server-side timeout is taken as dead and reopened."""

log = logging.getLogger("disklet.agent")


def build_registry(deps: AgentDeps, *, engine: LvgEngine | None = None, kube: AgentKube | None = None,
                   topology_reader: TopologyReader | None = None, pv_reader: PvReader | None = None,
                   lease_interval: float | None = None) -> kopf.OperatorRegistry:
    """All agent handlers for ``deps.config.node_name`` in a fresh registry (keywords: test seams)."""
    registry = kopf.OperatorRegistry()
    kube = kube or AgentKube()
    tasks = BackgroundTasks.attach(registry)
    lock = asyncio.Lock()  # one LVM mutator at a time on this node
    if engine is None:
        from .lvm.engine import HostLvgEngine
        engine = HostLvgEngine(deps.runner, deps.config)
    lvg.register(registry, deps, engine=engine, kube=kube, tasks=tasks, lock=lock)
    blockdevices.register(registry, deps, kube=kube, engine=engine, topology_reader=topology_reader,
                          pv_reader=pv_reader, tasks=tasks, lock=lock)
    if lease_interval is None:
        lease.register(registry, deps, kube=kube, tasks=tasks)
    else:
        lease.register(registry, deps, kube=kube, tasks=tasks, interval=lease_interval)
    try:
        disklayout = importlib.import_module("disklet_agent.handlers.disklayout")
    except ImportError as exc:
        log.warning("DiskLayout handlers not available: %s", exc)
    else:
        disklayout.register(registry, deps, kube=kube)

    @kopf.on.cleanup(registry=registry)
    async def disklet_close_client(**_: Any) -> None:
        await tasks.stop()  # first: a loop still running would open a new session after the close
        await kube.close()

    return registry


def watch_server_timeout(node: str) -> int:
    """The ``timeoutSeconds`` of this node's watch requests: 600 s ± 10 %, fixed per node (a hash of
    its name), so that a thousand agents started together do not all reopen their watches at once."""
    share = int.from_bytes(hashlib.sha256(node.encode()).digest()[:4], "big") / 2 ** 32
    return round(WATCH_SERVER_TIMEOUT_SECONDS * (0.9 + 0.2 * share))


def configure_settings(settings: kopf.OperatorSettings, config: AgentConfig) -> None:
    """Node-scoped watching, agent-prefixed bookkeeping, the agent finalizer, Event posting.

    Watches at idle (docs/agent.md, "API requests at idle"): no CRD scanning watch (the agent's
    CRDs are checked once before Kopf starts, :func:`unserved_resources`), and each watch request is
    bounded server-side (:func:`watch_server_timeout`) with Kopf's dead-stream guard just above it,
    instead of Kopf's default of reopening every stream that saw no event for 70 s.
    """
    selector = f"{NODE_LABEL}={node_label_value(config.node_name)}"
    for res in AGENT_RESOURCES:
        settings.watching.label_selectors[res.group, res.plural] = selector  # (group, plural) tuple!
    settings.scanning.disabled = True
    settings.watching.server_timeout = watch_server_timeout(config.node_name)  # an int: "timeoutSeconds=600"
    settings.watching.inactivity_timeout = settings.watching.server_timeout + WATCH_INACTIVITY_MARGIN_SECONDS
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=ANNOTATION_PREFIX)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=ANNOTATION_PREFIX, key="last-handled-configuration")
    settings.persistence.finalizer = FINALIZER
    settings.posting.enabled = True
    settings.posting.level = logging.WARNING  # Kopf's own per-handler INFO lines are not Events
    settings.posting.reporting_component = AGENT  # Kopf's own (handler failures); ours: disklet.kube.events
    settings.peering.standalone = True


async def unserved_resources(kube: KubeClient) -> list[str]:
    """The CRDs of :data:`AGENT_RESOURCES` the API server does not serve (missing or not yet
    established), from its discovery document of ``disklet.io/v1alpha1``. Kopf resolves the watched
    resources once at start (CRD scanning is off), so the agent refuses to start without them
    rather than run with a Lease and no watch."""
    res = AGENT_RESOURCES[0]
    try:
        doc = await kube.request("GET", f"/apis/{res.group}/{res.version}", what="API discovery")
    except NotFound:
        doc = None
    served = {r.get("name") for r in (doc or {}).get("resources") or []}
    return [r.crd_name for r in AGENT_RESOURCES if r.plural not in served]


async def _unserved_at_start() -> list[str]:
    async with AgentKube() as kube:
        return await unserved_resources(kube)


def configure_logging(level: str | None = None, fmt: str | None = None) -> None:
    """JSON lines on stderr for our loggers and Kopf's (``DISKLET_LOG_FORMAT=text`` for humans)."""
    logs.configure_logging(fmt or os.environ.get("DISKLET_LOG_FORMAT") or "json",
                           (level or os.environ.get("DISKLET_LOG_LEVEL") or "INFO").upper(), extras=LOG_EXTRA_KEYS)


def start_metrics(deps: AgentDeps) -> None:
    """Host-command timing and the /metrics server (``DISKLET_METRICS_PORT``; 0 disables it)."""
    observe_host_commands(deps.runner.observers)
    start_metrics_server(int(os.environ.get("DISKLET_METRICS_PORT") or DEFAULT_METRICS_PORT))


def run_agent(config: AgentConfig) -> int:
    """Run the agent until it is stopped (SIGTERM/SIGINT); returns the exit code."""
    configure_logging()
    if not config.node_name:
        log.error("NODE_NAME is not set: the agent must know its node")
        raise SystemExit(2)
    deps = AgentDeps.from_config(config)
    start_metrics(deps)  # first: the liveness probe is served while the agent starts
    try:
        missing = asyncio.run(_unserved_at_start())
    except (ApiError, kopf.LoginError) as exc:
        log.error("cannot read the API server's discovery document: %s", exc, extra={"node": config.node_name})
        raise SystemExit(1) from None
    if missing:
        log.error("the API server does not serve %s: install disklet's CRDs (the Helm chart does) and "
                  "restart the agent", ", ".join(missing), extra={"node": config.node_name})
        raise SystemExit(1)
    registry = build_registry(deps)
    add_kopf_login(registry)
    settings = kopf.OperatorSettings()
    configure_settings(settings, config)
    liveness = os.environ.get("DISKLET_LIVENESS_ENDPOINT", DEFAULT_LIVENESS_ENDPOINT) or None
    log.info("starting disklet agent", extra={"node": config.node_name})
    asyncio.run(kopf.operator(registry=registry, settings=settings, standalone=True, clusterwide=True,
                              liveness_endpoint=liveness))
    return 0
