"""Where a :class:`~disklet.kube.client.KubeClient` gets its credentials.

- In the operator and the agent: :func:`pod_or_kubeconfig` — Kopf's public login functions, the
  service account in a pod (``KUBERNETES_SERVICE_HOST`` set), else the current context of
  ``KUBECONFIG`` / ``~/.kube/config``. :func:`add_kopf_login` registers the same sources as the
  registry's ``@kopf.on.login`` handler, so Kopf's watches and our writes use one identity and one
  address: in a pod ``https://$KUBERNETES_SERVICE_HOST:$KUBERNETES_SERVICE_PORT``, as client-go,
  never the DNS name ``kubernetes.default.svc`` (no cluster DNS needed: hostNetwork pods, a DNS
  outage, a cluster whose DNS waits for storage).
- In kctl, the devkit and the e2e harness: :func:`kubeconfig` — a full kubeconfig (merged
  ``KUBECONFIG`` lists, ``--context``, exec credential plugins, auth providers) through
  kubernetes-asyncio's loader, imported only here and only when called: neither the agent nor the
  operator ever imports it (docs/architecture.md, "The Kubernetes client").
"""

from __future__ import annotations

import dataclasses
import logging
import os
import ssl
import weakref
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .client import ApiError, Endpoint

__all__ = ["Endpoint", "add_kopf_login", "endpoint_from", "in_cluster_server", "kopf_login", "kubeconfig",
           "login_source", "pod_or_kubeconfig", "registry_login"]

if TYPE_CHECKING:
    import kopf


def in_cluster_server() -> str | None:
    """``https://$KUBERNETES_SERVICE_HOST:$KUBERNETES_SERVICE_PORT`` (what client-go uses in a pod).

    Kopf's service-account login names ``kubernetes.default.svc``, which a hostNetwork pod without
    cluster DNS cannot resolve; the service IP is in the API server certificate as well.
    """
    host = os.environ.get("KUBERNETES_SERVICE_HOST")
    if not host:
        return None
    port = os.environ.get("KUBERNETES_SERVICE_PORT") or "443"
    return f"https://[{host}]:{port}" if ":" in host else f"https://{host}:{port}"


def endpoint_from(info: kopf.ConnectionInfo, server: str | None = None) -> Endpoint:
    """Kopf's connection info as an endpoint: CA / client certificate / insecure into an SSL context
    (https only), the bearer token or basic auth into an ``Authorization`` header."""
    import kopf

    url = (server or info.server or "").rstrip("/")
    if not url:
        raise kopf.LoginError("the Kubernetes login gave no server address")
    context = info.as_ssl_context() if url.startswith("https:") else None
    return Endpoint(server=url, headers=dict(info.as_http_headers()), ssl_context=context,
                    proxy=info.proxy_url, trust_env=bool(info.trust_env))


def kopf_login(**kwargs: Any) -> kopf.ConnectionInfo | None:
    """The ``@kopf.on.login`` handler of the operator and the agent (public Kopf functions only).

    In a pod: Kopf's service-account login (token, CA, namespace), but addressed to
    :func:`in_cluster_server` instead of Kopf's ``https://kubernetes.default.svc``."""
    import kopf

    server = in_cluster_server()
    if server:
        info = kopf.login_with_service_account(**kwargs)
        return None if info is None else dataclasses.replace(info, server=server)
    return kopf.login_with_kubeconfig(**kwargs)


LoginSource = Callable[..., "kopf.ConnectionInfo | None"]
"""A Kopf login handler: keyword arguments (``settings``, ``logger``, ...) → connection info or None."""
_SOURCES: weakref.WeakKeyDictionary[Any, LoginSource] = weakref.WeakKeyDictionary()


def add_kopf_login(registry: kopf.OperatorRegistry, source: LoginSource | None = None) -> None:
    """Give ``registry`` its one login handler (a plain ``kopf.OperatorRegistry`` has none, and
    Kopf's registry that has them is not public API). ``source`` defaults to :func:`kopf_login`;
    calling again replaces the source (tests point an operator at a mock) without a second handler.
    :func:`registry_login` hands the same source to our own client."""
    import kopf

    first = registry not in _SOURCES
    _SOURCES[registry] = source or kopf_login
    if first:
        def disklet_login(**kwargs: Any) -> kopf.ConnectionInfo | None:
            return _SOURCES[registry](**kwargs)

        kopf.on.login(registry=registry, id="disklet_login")(disklet_login)


def login_source(registry: kopf.OperatorRegistry) -> LoginSource | None:
    """The source :func:`add_kopf_login` gave ``registry``, if any."""
    return _SOURCES.get(registry)


def _endpoint(source: LoginSource) -> Endpoint:
    import kopf

    info = source(settings=kopf.OperatorSettings(), logger=logging.getLogger("disklet.kube"))
    if info is None:
        raise kopf.LoginError("no Kubernetes credentials: no service account token and no KUBECONFIG "
                              "or ~/.kube/config")
    return endpoint_from(info)


def pod_or_kubeconfig() -> Endpoint:
    """Service account in a pod, the kubeconfig's current context elsewhere (blocking: reads files)."""
    return _endpoint(kopf_login)


def registry_login(registry: kopf.OperatorRegistry) -> Callable[[], Endpoint]:
    """A :class:`~disklet.kube.client.KubeClient` login using the registry's Kopf login source, so the
    operator's own writes and Kopf's watches always share one identity."""
    return lambda: _endpoint(_SOURCES.get(registry) or kopf_login)


def default_kubeconfig() -> str:
    """``$KUBECONFIG`` (a ``:``-separated list is merged) or ``~/.kube/config``, read at call time."""
    return os.environ.get("KUBECONFIG") or str(Path.home() / ".kube" / "config")


def kubeconfig(path: str | None = None, context: str | None = None) -> Endpoint:
    """Credentials of a kubeconfig context (exec plugins run here). Blocking; :class:`ApiError` when unusable."""
    import asyncio

    from kubernetes_asyncio import client, config  # kctl/devkit/e2e only: ~60 MiB, see module docstring
    from kubernetes_asyncio.config.config_exception import ConfigException

    path = path or default_kubeconfig()
    cfg = client.Configuration()
    try:
        asyncio.run(config.load_kube_config(config_file=path, context=context, client_configuration=cfg,
                                            persist_config=False))
    except (ConfigException, OSError, TypeError, ValueError) as exc:
        raise ApiError(f"cannot load kubeconfig {path}{' context ' + context if context else ''}: {exc}") from None
    headers: dict[str, str] = {}
    token = (cfg.api_key or {}).get("BearerToken") or (cfg.api_key or {}).get("authorization")
    if token:
        headers["Authorization"] = token if " " in token else f"Bearer {token}"
    elif cfg.username or cfg.password:
        headers["Authorization"] = cfg.get_basic_auth_token()
    server = str(cfg.host).rstrip("/")
    context_ssl: ssl.SSLContext | None = None
    if server.startswith("https:"):
        context_ssl = ssl.create_default_context(cafile=cfg.ssl_ca_cert) if cfg.ssl_ca_cert else \
            ssl.create_default_context()
        if not cfg.verify_ssl:
            context_ssl.check_hostname = False
            context_ssl.verify_mode = ssl.CERT_NONE
        if cfg.cert_file:
            context_ssl.load_cert_chain(cfg.cert_file, cfg.key_file)
    return Endpoint(server=server, headers=headers, ssl_context=context_ssl, proxy=cfg.proxy or None)
