"""API tier: Kopf handlers end to end against disklet's Kubernetes API mock (kmock-based).

Fixtures:
- ``kube``: a running :class:`disklet.testing.kubeapi.KubeAPI` served on 127.0.0.1, with
  ``kube.server_url`` (str) and a kubeconfig at ``kube.kubeconfig`` (Path).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import kmock
import pytest_asyncio

from disklet.testing.kubeapi import KubeAPI, write_kubeconfig


@pytest_asyncio.fixture()
async def kube(tmp_path: Path) -> AsyncIterator[KubeAPI]:
    async with KubeAPI() as api, kmock.Server(api) as server:
        api.server_url = str(server.url).rstrip("/")
        api.kubeconfig = write_kubeconfig(tmp_path / "kubeconfig", api.server_url)
        yield api
