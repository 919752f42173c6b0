"""Helpers of the chart tests (no tests here): find helm, render the chart, pick rendered objects."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "disklet"
NAMESPACE = "disklet-system"
RELEASE = "disklet"


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


def helm_binary() -> str:
    """helm from .tools/bin (scripts/bootstrap.sh) or PATH; skip locally, fail in CI, when absent."""
    local = ROOT / ".tools" / "bin" / "helm"
    found = str(local) if local.is_file() and os.access(local, os.X_OK) else shutil.which("helm")
    if found:
        return found
    message = "helm not found: run `bash scripts/bootstrap.sh` (installs it into .tools/bin)"
    if in_ci():
        pytest.fail(message + " -- chart tests must run in CI")
    pytest.skip(message)


def run_helm(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    """helm with throw-away home directories (nothing outlives the call)."""
    with tempfile.TemporaryDirectory(prefix="disklet-helm-") as home:
        return subprocess.run([helm_binary(), *args], capture_output=True, text=True, timeout=120,  # noqa: S603
                              input=stdin, env={**os.environ, "HELM_CACHE_HOME": f"{home}/cache",
                                                "HELM_CONFIG_HOME": f"{home}/config", "HELM_DATA_HOME": f"{home}/data"})


def template(*sets: str, values: dict[str, Any] | None = None, check: bool = True,
             extra: tuple[str, ...] = ()) -> subprocess.CompletedProcess[str]:
    args = ["template", RELEASE, str(CHART), "--namespace", NAMESPACE, *extra]
    for s in sets:
        args += ["--set", s]
    if values is not None:
        args += ["--values", "-"]
    proc = run_helm(*args, stdin=yaml.safe_dump(values) if values is not None else None)
    if check:
        assert proc.returncode == 0, proc.stderr
    return proc


def render(*sets: str, values: dict[str, Any] | None = None, include_crds: bool = False) -> list[dict[str, Any]]:
    proc = template(*sets, values=values, extra=("--include-crds",) if include_crds else ())
    return [d for d in yaml.safe_load_all(proc.stdout) if d]


def one(docs: list[dict[str, Any]], kind: str, name_suffix: str = "") -> dict[str, Any]:
    found = [d for d in docs if d["kind"] == kind and d["metadata"]["name"].endswith(name_suffix)]
    assert len(found) == 1, f"expected one {kind} *{name_suffix}, got {[d['metadata']['name'] for d in found]}"
    return found[0]


def by_kind(docs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [d for d in docs if d["kind"] == kind]


def env_of(container: dict[str, Any]) -> dict[str, Any]:
    """name -> value, or name -> fieldRef path for downward-API variables."""
    out: dict[str, Any] = {}
    for e in container.get("env", []):
        if "value" in e:
            out[e["name"]] = e["value"]
        else:
            out[e["name"]] = ("fieldRef", e["valueFrom"]["fieldRef"]["fieldPath"])
    return out


ALL_ON = (
    "metrics.serviceMonitor.enabled=true",
    "kubeStateMetrics.customResourceState.enabled=true",
    "kubeStateMetrics.rbac.enabled=true",
    "grafana.dashboards.enabled=true",
    "metrics.prometheusRule.enabled=true",
    "operator.replicaCount=2",
    "operator.peering.enabled=true",
)
