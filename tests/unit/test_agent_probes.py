"""The agent's liveness probe (its metrics server) is up before any host work and needs no event loop,
so a slow LVM scan or a stuck host command never makes the kubelet restart the agent."""

from __future__ import annotations

import threading
import urllib.request
from typing import Any

import disklet_agent.daemon as daemon
import pytest

from devkit.fakehost import FakeRunner
from disklet.metrics import start_metrics_server


class _Stop(Exception):
    pass


def test_metrics_server_starts_before_the_handlers_and_any_host_command(monkeypatch: pytest.MonkeyPatch):
    calls: list[str] = []

    def no_host_command(argv: tuple[str, ...]) -> Any:
        calls.append("host-command")
        raise AssertionError("no host command before the probes are served")

    deps = type("Deps", (), {"runner": FakeRunner(default=no_host_command), "config": None})()
    monkeypatch.setattr(daemon, "configure_logging", lambda: None)
    monkeypatch.setattr(daemon.AgentDeps, "from_config", staticmethod(lambda cfg: deps))
    monkeypatch.setattr(daemon, "start_metrics_server", lambda port: calls.append(f"metrics:{port}"))

    async def crds_served() -> list[str]:
        calls.append("crd-check")
        return []
    monkeypatch.setattr(daemon, "_unserved_at_start", crds_served)

    def build_registry(*a: Any, **k: Any) -> Any:
        calls.append("handlers")
        raise _Stop
    monkeypatch.setattr(daemon, "build_registry", build_registry)
    monkeypatch.setenv("DISKLET_METRICS_PORT", "9091")
    with pytest.raises(_Stop):
        daemon.run_agent(daemon.AgentConfig(node_name="node-a"))
    assert calls == ["metrics:9091", "crd-check", "handlers"]


def test_the_liveness_path_answers_while_the_main_thread_is_busy():
    server = start_metrics_server(0, addr="127.0.0.1")
    busy, answered = threading.Event(), []
    try:
        def probe() -> None:
            busy.wait(timeout=30)
            with urllib.request.urlopen(f"http://127.0.0.1:{server.server_port}/metrics", timeout=30) as resp:  # noqa: S310
                answered.append(resp.status)
            busy.clear()  # releases the "host work" below
        t = threading.Thread(target=probe)
        t.start()
        busy.set()
        while busy.is_set():  # the main thread is stuck here, like a long host command
            t.join(timeout=0.01)
        t.join(timeout=30)
        assert answered == [200]
    finally:
        server.shutdown()
        server.server_close()
