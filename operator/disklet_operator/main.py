"""``disklet-operator``: the operator Deployment (DiskLayout pre-flight, LVG bookkeeping, LVG sets).

The operator never touches a node: it reads specs, evaluates Nix in a sandbox and writes status.
Several replicas elect a leader with Kopf peering (``--peering``, the default); ``--standalone``
runs without it (one replica only).
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import importlib.util
import logging
import os
import sys
from collections.abc import Sequence
from typing import Any

from disklet import version_line
from disklet.kopf_lean import import_kopf_without_kubernetes_asyncio

import_kopf_without_kubernetes_asyncio()  # ~36-60 MiB less RSS (disklet/kopf_lean.py)

import kopf  # noqa: E402

from disklet.kube.events import OPERATOR  # noqa: E402
from disklet.kube.lease import lease_namespace  # noqa: E402
from disklet.kube.login import add_kopf_login  # noqa: E402
from disklet.logs import configure_logging  # noqa: E402
from disklet.observe import start_metrics_server  # noqa: E402

from .peering import peering_problem, replica_priority  # noqa: E402

PROGRESS_PREFIX = "operator.disklet.io"
"""Annotation prefix of the operator's Kopf progress and diff-base (the agent uses agent.disklet.io)."""
FINALIZER = f"{PROGRESS_PREFIX}/finalizer"
"""Kopf adds it only to objects with a running timer: a DiskLayout while it is refused as a duplicate.
(LVMVolumeGroups carried it while readiness ran one timer per object; Kopf now releases it on sight.)"""
HANDLER_MODULES: tuple[str, ...] = (
    "disklet_operator.handlers.disklayout",
    "disklet_operator.handlers.lvg",
    "disklet_operator.handlers.lvgset",
)
"""Modules whose ``register(registry)`` builds the operator; a missing optional one is skipped."""
OPTIONAL_MODULES = frozenset({"disklet_operator.handlers.lvgset"})

log = logging.getLogger("disklet.operator")


def build_registry(modules: Sequence[str] = HANDLER_MODULES) -> kopf.OperatorRegistry:
    """A fresh registry with every handler module registered (no global Kopf registry is used),
    logging in with the service account in a pod, else the kubeconfig (:func:`add_kopf_login`)."""
    registry = kopf.OperatorRegistry()
    add_kopf_login(registry)
    for name in modules:
        if name in OPTIONAL_MODULES and importlib.util.find_spec(name) is None:
            log.info("handler module %s is not present; skipped", name)
            continue
        module = importlib.import_module(name)
        module.register(registry)
    return registry


def configure_settings(settings: kopf.OperatorSettings, *, namespace: str | None = None) -> kopf.OperatorSettings:
    """Kopf settings of the operator (tests call this too, so they run what production runs).

    - progress and diff-base in annotations prefixed ``operator.disklet.io`` (never status.kopf);
    - Kopf's own Events (handler failures) reported as ``disklet-operator``; disklet's Events go
      through :mod:`disklet.kube.events` so that ``kubectl describe`` shows them;
    - a finalizer named after the operator;
    - agent Leases watched only in the agents' namespace (server-side field selector).
    """
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=PROGRESS_PREFIX)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(prefix=PROGRESS_PREFIX)
    settings.persistence.finalizer = FINALIZER
    settings.posting.enabled = True
    settings.posting.level = logging.INFO
    settings.posting.reporting_component = OPERATOR
    settings.watching.field_selectors["coordination.k8s.io", "leases"] = (
        f"metadata.namespace={namespace or lease_namespace()}")
    return settings


def _env_int(name: str, default: int) -> int:
    try:
        return int(os.environ.get(name, default))
    except ValueError:
        return default


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(
        prog="disklet-operator",
        description="disklet operator: pre-flights DiskLayouts (resolve, evaluate, hash, one layout per node), "
                    "keeps the disklet.io/node label and the NodeReady/AgentReady/Ready conditions of "
                    "LVMVolumeGroups, and fans LVMVolumeGroupSets out to nodes. It never touches a node. "
                    "Connects with the in-cluster service account or the current kubeconfig context.",
        epilog="Environment: DISKLET_NAMESPACE (agent Leases and peering, default disklet-system), "
               "DISKLET_METRICS_PORT, DISKLET_LOG_FORMAT, DISKLET_LOG_LEVEL (defaults for the flags above), "
               "POD_ID (Kopf peer identity). See docs/operator.md.")
    ap.add_argument("--version", action="version", version=version_line("disklet-operator"),
                    help="print the version and the commit of the build, then exit")
    peer = ap.add_mutually_exclusive_group()
    peer.add_argument("--peering", metavar="NAME", default="disklet",
                      help="Kopf peering object for leader election between replicas (default: %(default)s). "
                           "A KopfPeering in --namespace when given, else a ClusterKopfPeering; it must exist.")
    peer.add_argument("--standalone", action="store_true",
                      help="no peering: run exactly one replica (e.g. a Recreate Deployment or a local test)")
    ap.add_argument("--namespace", metavar="NS", default=None,
                    help="namespace of the peering object and of the agents' Leases; namespaced resources are "
                         "watched only there (cluster-scoped disklet objects and Nodes are always watched "
                         "cluster-wide). Without it the operator is cluster-wide and the Leases are read from "
                         "DISKLET_NAMESPACE.")
    ap.add_argument("--liveness", metavar="URL", default=None,
                    help="serve Kopf's liveness probe, e.g. http://0.0.0.0:8080/healthz")
    ap.add_argument("--metrics-port", metavar="PORT", type=int, default=_env_int("DISKLET_METRICS_PORT", 9090),
                    help="Prometheus /metrics port; 0 disables (default: DISKLET_METRICS_PORT or %(default)s)")
    ap.add_argument("--log-format", choices=("json", "text", "console"),
                    default=os.environ.get("DISKLET_LOG_FORMAT", "json"),
                    help="structlog output: one JSON object per line, or text (console: the same as text, "
                         "the chart's name for it) (default: %(default)s)")
    ap.add_argument("--log-level", default=os.environ.get("DISKLET_LOG_LEVEL", "info"),
                    choices=("debug", "info", "warning", "error", "DEBUG", "INFO", "WARNING", "ERROR"),
                    help="minimum level logged (default: %(default)s)")
    args = ap.parse_args(argv)
    if args.log_format not in ("json", "text", "console"):
        ap.error(f"--log-format must be json, text or console, not {args.log_format!r}")
    if args.log_format == "console":
        args.log_format = "text"
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    configure_logging(args.log_format, args.log_level)
    namespace = args.namespace or lease_namespace()
    os.environ["DISKLET_NAMESPACE"] = namespace  # lvg.register reads it: Leases are watched only there
    start_metrics_server(args.metrics_port)
    registry = build_registry()
    settings = configure_settings(kopf.OperatorSettings(), namespace=namespace)
    run_kwargs: dict[str, Any] = {
        "registry": registry, "settings": settings, "liveness_endpoint": args.liveness,
        "standalone": bool(args.standalone), "peering_name": None if args.standalone else args.peering,
    }
    if not args.standalone:
        problem = asyncio.run(peering_problem(args.peering, args.namespace))
        if problem:
            log.warning(problem)
            return 2
        run_kwargs["priority"] = replica_priority()  # equal priorities would pause every replica
    if args.namespace:
        run_kwargs["namespaces"] = [args.namespace]
    else:
        run_kwargs["clusterwide"] = True
    log.info("starting disklet operator", extra={"namespace": namespace})
    kopf.run(**run_kwargs)
    return 0


if __name__ == "__main__":
    sys.exit(main())
