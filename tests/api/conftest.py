"""API tier: Kopf handlers end to end against disklet's Kubernetes API mock (kmock-based).

Fixtures:
- ``kube``: a running :class:`devkit.kubeapi.KubeAPI` served on 127.0.0.1, with
  ``kube.server_url`` (str) and a kubeconfig at ``kube.kubeconfig`` (Path).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest_asyncio

from devkit.kubeapi import KubeAPI, served


@pytest_asyncio.fixture()
async def kube(tmp_path: Path) -> AsyncIterator[KubeAPI]:
    async with served(tmp_path) as api:
        yield api
