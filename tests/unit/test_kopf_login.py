"""In a pod, Kopf's watches and disklet's own client log in to the same address:
``https://$KUBERNETES_SERVICE_HOST:$KUBERNETES_SERVICE_PORT`` (as client-go), never the DNS name
``kubernetes.default.svc`` that Kopf's service-account login names (unresolvable without cluster DNS)."""

from __future__ import annotations

import logging
from typing import Any

import kopf
import pytest

from disklet.kube.login import add_kopf_login, kopf_login, login_source, registry_login

pytestmark = pytest.mark.unit

KOPF_SERVICE_ACCOUNT = kopf.ConnectionInfo(server="https://kubernetes.default.svc", token="pod-token",
                                           insecure=True, default_namespace="disklet-system")


@pytest.fixture()
def in_pod(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    """A pod: the service env set, Kopf's service-account login answering as it does in one."""
    calls: list[dict[str, Any]] = []

    def service_account(**kwargs: Any) -> kopf.ConnectionInfo:
        calls.append(kwargs)
        return KOPF_SERVICE_ACCOUNT

    monkeypatch.setattr(kopf, "login_with_service_account", service_account)
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "10.96.0.1")
    monkeypatch.setenv("KUBERNETES_SERVICE_PORT", "6443")
    return calls


def test_kopf_login_in_a_pod_uses_the_service_env_address(in_pod):
    info = kopf_login(settings=kopf.OperatorSettings(), logger=logging.getLogger("t"))
    assert info is not None
    assert info.server == "https://10.96.0.1:6443"
    # Everything else is Kopf's service-account login, unchanged.
    assert (info.token, info.insecure, info.default_namespace) == ("pod-token", True, "disklet-system")
    assert len(in_pod) == 1


def test_kopf_watches_and_disklet_client_share_the_address(in_pod):
    registry = kopf.OperatorRegistry()
    add_kopf_login(registry)
    source = login_source(registry)
    assert source is not None
    kopf_info = source(settings=kopf.OperatorSettings(), logger=logging.getLogger("t"))
    assert kopf_info is not None
    endpoint = registry_login(registry)()
    assert kopf_info.server == endpoint.server == "https://10.96.0.1:6443"
    assert endpoint.headers == {"Authorization": "Bearer pod-token"}


def test_no_service_account_token_is_no_login(in_pod, monkeypatch):
    monkeypatch.setattr(kopf, "login_with_service_account", lambda **_: None)
    assert kopf_login(settings=kopf.OperatorSettings(), logger=logging.getLogger("t")) is None
