"""Kopf's watches in a pod reach the API server without cluster DNS: with the pod's service env
pointing at the real API server and Kopf's own service-account login answering as in a pod (server
``https://kubernetes.default.svc``, which does not resolve here), the registry's login handler
(disklet.kube.login.add_kopf_login) sends the watches to ``KUBERNETES_SERVICE_HOST:PORT``."""

from __future__ import annotations

import dataclasses
from typing import Any
from urllib.parse import urlsplit

import kopf
import pytest

from devkit.kopfrun import kopf_running, wait_for
from disklet.kube.login import add_kopf_login

pytestmark = pytest.mark.api


async def test_kopf_watches_log_in_to_the_service_env_address(real_kube, monkeypatch):
    pod_login = dataclasses.replace(real_kube.connection_info(), server="https://kubernetes.default.svc")
    monkeypatch.setattr(kopf, "login_with_service_account", lambda **_: pod_login)
    url = urlsplit(real_kube.server_url)
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", str(url.hostname))
    monkeypatch.setenv("KUBERNETES_SERVICE_PORT", str(url.port))

    registry = kopf.OperatorRegistry()
    add_kopf_login(registry)  # the operator's and the agent's login (no test override)
    seen: list[str] = []

    @kopf.on.event("", "v1", "namespaces", registry=registry)
    def _seen(name: str, **_: Any) -> None:
        seen.append(name)

    async with kopf_running(registry):
        await wait_for(lambda: "default" in seen, timeout=30)
