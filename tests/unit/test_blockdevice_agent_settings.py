"""The agent's Kopf settings and log lines (node-scoped watches, own bookkeeping, JSON logs)."""

from __future__ import annotations

import json
import logging

import kopf
from disklet_agent.config import AgentConfig
from disklet_agent.daemon import configure_logging, configure_settings


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
