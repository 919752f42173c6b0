"""Import Kopf without kubernetes-asyncio's generated models.

Importing Kopf imports ``kubernetes_asyncio.client`` whenever that package is installed (kctl's
kubeconfig loader needs it), only to recognise its model objects — which neither the operator nor
the agent ever hands to Kopf. That import alone is ~36–60 MiB of RSS. A ``None`` in
``sys.modules`` makes Kopf's optional import fail as "not installed" (an ImportError, which Kopf
catches). It is hidden only for the duration of Kopf's own import and only when neither is loaded
yet, so a process that also uses kubernetes-asyncio (kctl, tests, tools) can still import it
afterwards. docs/performance.md (agent_rss, operator_rss) has the figures.
"""

from __future__ import annotations

import importlib
import sys


def import_kopf_without_kubernetes_asyncio() -> None:
    """Call before the first ``import kopf`` of a process (module level of the entry module)."""
    if "kopf" in sys.modules or "kubernetes_asyncio" in sys.modules:
        return
    sys.modules["kubernetes_asyncio"] = None  # type: ignore[assignment]
    try:
        importlib.import_module("kopf")
    finally:
        if "kubernetes_asyncio" in sys.modules and sys.modules["kubernetes_asyncio"] is None:
            del sys.modules["kubernetes_asyncio"]
