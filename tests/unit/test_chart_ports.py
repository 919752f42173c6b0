"""The operator and the agent never share a port: with hostNetwork both pods may run on one node's
network, where the second could not bind it (both once served health on 8080)."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlsplit

import pytest
import yaml

from tests.unit.test_chart_support import CHART, one, render, template

pytestmark = pytest.mark.unit


def _ports(doc: dict, container: str) -> dict[str, int]:
    c = next(c for c in doc["spec"]["template"]["spec"]["containers"] if c["name"] == container)
    return {p["name"]: p["containerPort"] for p in c["ports"]}


def _env(doc: dict, container: str) -> dict[str, str]:
    c = next(c for c in doc["spec"]["template"]["spec"]["containers"] if c["name"] == container)
    return {e["name"]: e.get("value", "") for e in c.get("env", [])}


def test_default_ports_of_operator_and_agent_all_differ():
    docs = render()
    operator = _ports(one(docs, "Deployment"), "operator")
    agent = _ports(one(docs, "DaemonSet"), "agent")
    assert operator == {"health": 8080, "metrics": 9090}
    assert agent == {"health": 9092, "metrics": 9091}
    assert len({*operator.values(), *agent.values()}) == 4
    env = _env(one(docs, "DaemonSet"), "agent")
    assert urlsplit(env["DISKLET_LIVENESS_ENDPOINT"]).port == agent["health"]
    assert env["DISKLET_METRICS_PORT"] == str(agent["metrics"])


def test_agent_defaults_outside_the_chart_match_the_chart():
    """`disklet-agent run` without the chart's env listens where the chart's probes look."""
    from disklet_agent.daemon import DEFAULT_LIVENESS_ENDPOINT, DEFAULT_METRICS_PORT

    values = yaml.safe_load((Path(CHART) / "values.yaml").read_text())
    assert urlsplit(DEFAULT_LIVENESS_ENDPOINT).port == values["agent"]["healthPort"]
    assert DEFAULT_METRICS_PORT == values["agent"]["metricsPort"]


@pytest.mark.parametrize("sets", [
    ("agent.healthPort=8080",),
    ("operator.metricsPort=9091",),
    ("agent.metricsPort=9092",),
])
def test_a_shared_port_is_refused(sets):
    proc = template(*sets, check=False)
    assert proc.returncode != 0
    assert "the operator's and the agent's ports must differ" in proc.stderr


def test_moved_ports_render():
    docs = render("agent.healthPort=18081", "operator.healthPort=18080")
    assert _ports(one(docs, "DaemonSet"), "agent")["health"] == 18081
    assert _ports(one(docs, "Deployment"), "operator")["health"] == 18080
