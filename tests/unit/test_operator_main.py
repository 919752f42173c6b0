"""The operator's entry point: --help, the registry it builds, Kopf settings and structlog output."""

from __future__ import annotations

import io
import json
import logging
import re
from pathlib import Path

import kopf
import pytest
from disklet_operator.main import (
    FINALIZER,
    PROGRESS_PREFIX,
    build_registry,
    configure_settings,
    main,
    parse_args,
)

from disklet.kube.login import kopf_login, login_source
from disklet.logs import configure_logging


def test_every_documented_flag_is_accepted_and_help_exits_0():
    """docs/operator.md's flag table and the parser agree (the docs are the contract, not --help text)."""
    doc = (Path(__file__).resolve().parents[2] / "docs" / "operator.md").read_text()
    rows = re.findall(r"^\| `(--[a-z-]+)(?: ([A-Z]+))?`", doc, re.M)
    assert {flag for flag, _ in rows} >= {"--peering", "--standalone", "--namespace", "--metrics-port"}
    values = {"NAME": "x", "NS": "ops", "URL": "http://0.0.0.0:8080/healthz", "PORT": "0"}
    for flag, meta in rows:
        value = values.get(meta) if meta else {"--log-format": "text", "--log-level": "debug"}.get(flag)
        parse_args([flag] + ([value] if value else []))
    with pytest.raises(SystemExit) as exc:
        main(["--help"])
    assert exc.value.code == 0


def test_flags_and_defaults(monkeypatch):
    monkeypatch.delenv("DISKLET_METRICS_PORT", raising=False)
    monkeypatch.delenv("DISKLET_LOG_FORMAT", raising=False)
    args = parse_args([])
    assert (args.peering, args.standalone, args.namespace, args.metrics_port, args.log_format) == \
        ("disklet", False, None, 9090, "json")
    monkeypatch.setenv("DISKLET_LOG_FORMAT", "text")
    monkeypatch.setenv("DISKLET_METRICS_PORT", "9999")
    args = parse_args(["--standalone", "--namespace", "ops"])
    assert (args.standalone, args.namespace, args.metrics_port, args.log_format) == (True, "ops", 9999, "text")
    with pytest.raises(SystemExit):
        parse_args(["--standalone", "--peering", "x"])
    with pytest.raises(SystemExit):
        parse_args(["--log-format", "xml"])


def test_build_registry_logs_in_with_the_public_kopf_functions():
    """The production registry has disklet's one login source (its behaviour against an API server:
    tests/api/test_registries.py)."""
    assert login_source(build_registry()) is kopf_login


def test_configure_settings_keeps_kopf_out_of_status():
    s = configure_settings(kopf.OperatorSettings(), namespace="ops")
    assert isinstance(s.persistence.progress_storage, kopf.AnnotationsProgressStorage)
    assert isinstance(s.persistence.diffbase_storage, kopf.AnnotationsDiffBaseStorage)
    assert s.persistence.progress_storage.prefix == PROGRESS_PREFIX == "operator.disklet.io"
    assert s.persistence.finalizer == FINALIZER
    assert s.posting.enabled
    assert list(s.watching.field_selectors.values()) == ["metadata.namespace=ops"]


def test_json_logs_keep_only_allowed_extras():
    stream = io.StringIO()
    handler = configure_logging("json", "INFO", stream=stream)
    try:
        logging.getLogger("disklet.test.kopf_like").info(
            "Handler succeeded", extra={"k8s_ref": {"kind": "DiskLayout", "name": "d1", "uid": "u-1"},
                                        "settings": kopf.OperatorSettings(), "k8s_skip": False})
        line = json.loads(stream.getvalue().strip().splitlines()[-1])
    finally:
        logging.getLogger().removeHandler(handler)
    assert line["event"] == "Handler succeeded" and line["object"] == "DiskLayout/d1" and line["uid"] == "u-1"
    assert line["level"] == "info" and "timestamp" in line
    assert "settings" not in line and "k8s_skip" not in line
