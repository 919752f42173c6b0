"""The agent's Kopf settings and log lines (node-scoped watches, own bookkeeping, JSON logs)."""

from __future__ import annotations

import json
import logging

import kopf
import pytest
from disklet_agent.config import AgentConfig
from disklet_agent.daemon import (
    WATCH_INACTIVITY_MARGIN_SECONDS,
    configure_logging,
    configure_settings,
    watch_server_timeout,
)


def test_settings_scope_the_agent_to_its_node():
    s = kopf.OperatorSettings()
    configure_settings(s, AgentConfig(node_name="n7"))
    for plural in ("disklayouts", "lvmvolumegroups", "blockdevices"):
        assert s.watching.label_selectors["disklet.io", plural] == "disklet.io/node=n7"
    assert s.persistence.finalizer == "disklet.io/agent"
    assert isinstance(s.persistence.progress_storage, kopf.AnnotationsProgressStorage)
    assert s.persistence.progress_storage.prefix == "agent.disklet.io"
    assert s.persistence.diffbase_storage.prefix == "agent.disklet.io"
    assert s.posting.enabled and s.peering.standalone


def test_watches_end_server_side_and_the_crd_scan_is_off():
    """docs/agent.md, "API requests at idle": no CRD watch, each watch request bounded server-side
    (an int: Kopf sends it as ``timeoutSeconds``), Kopf's dead-stream guard just above it."""
    s = kopf.OperatorSettings()
    configure_settings(s, AgentConfig(node_name="n7"))
    assert s.scanning.disabled is True
    assert s.watching.server_timeout == watch_server_timeout("n7")
    assert isinstance(s.watching.server_timeout, int) and 540 <= s.watching.server_timeout <= 660
    assert s.watching.inactivity_timeout == s.watching.server_timeout + WATCH_INACTIVITY_MARGIN_SECONDS
    assert s.watching.client_timeout is None  # a stream is never cut client-side while events flow


def test_watch_timeouts_are_fixed_per_node_and_spread_over_nodes():
    timeouts = [watch_server_timeout(f"node-{i}") for i in range(1000)]
    assert timeouts == [watch_server_timeout(f"node-{i}") for i in range(1000)]  # deterministic
    assert min(timeouts) >= 540 and max(timeouts) <= 660
    assert len(set(timeouts)) > 100  # 1000 agents started together do not re-watch at one instant


def test_json_log_lines_carry_only_allowed_extras(capsys):
    configure_logging("INFO", "json")
    try:
        logging.getLogger("disklet.agent.test").info("synced", extra={"node": "n1", "bd_created": 2,
                                                                       "settings": "not wanted"})
        line = capsys.readouterr().err.strip().splitlines()[-1]
    finally:
        logging.getLogger().handlers.clear()
    rec = json.loads(line)
    assert rec["event"] == "synced" and rec["node"] == "n1" and rec["bd_created"] == 2
    assert "settings" not in rec and rec["level"] == "info"


def test_run_refuses_to_start_without_its_crds(monkeypatch):
    """No CRD scanning: ``disklet-agent run`` exits 1 before Kopf starts when a CRD is not served."""
    from disklet_agent import daemon

    async def missing() -> list[str]:
        return ["blockdevices.disklet.io"]

    def no_kopf(*_a, **_k):  # the operator must not start
        raise AssertionError("Kopf started without its CRDs")

    monkeypatch.setattr(daemon, "_unserved_at_start", missing)
    monkeypatch.setattr(daemon.kopf, "operator", no_kopf)
    monkeypatch.setattr(daemon, "start_metrics", lambda deps: None)
    monkeypatch.setattr(daemon.AgentDeps, "from_config", staticmethod(lambda cfg: None))
    try:
        with pytest.raises(SystemExit) as exc:
            daemon.run_agent(AgentConfig(node_name="n7"))
    finally:
        logging.getLogger().handlers.clear()
    assert exc.value.code == 1
