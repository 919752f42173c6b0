"""The chart's DEFAULT ports on one node's host network: the operator and the agent both run with
``hostNetwork`` and the health/metrics ports of ``charts/disklet/values.yaml`` (the rest of the tier
uses free ports, since this machine's network is shared). Two pods of one node then share one
network namespace: if any two defaults were equal (the operator's and the agent's health port once
were), a pod could not bind its port and the kubelet would never judge it ready or alive.

The defaults must be free on the machine for this to mean anything. On a fresh CI machine they
are; here, another program may hold one: the scenario then fails under ``CI=true`` (saying which
port and who holds it) and is skipped otherwise."""

from __future__ import annotations

import contextlib
import os
import re
import socket
import ssl
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import yaml

from devkit.envtest import run
from tests.node.release import CHART, COMPONENTS, Release

PORT_KEYS = ("healthPort", "metricsPort")
PORT_NAMES = {"healthPort": "health", "metricsPort": "metrics"}


def chart_default_ports() -> dict[tuple[str, str], int]:
    """(component, value key) → the chart's default port."""
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    return {(c, k): int(values[c][k]) for c in COMPONENTS for k in PORT_KEYS}


def port_free(port: int) -> bool:
    """True when a server could listen on 0.0.0.0:``port`` now (SO_REUSEADDR, as servers bind)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("0.0.0.0", port))
        except OSError:
            return False
    return True


def listening_inodes(port: int) -> set[str]:
    """Socket inodes LISTENing on TCP ``port`` in this (the host's) network namespace."""
    out = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError):
            for line in Path(table).read_text().splitlines()[1:]:
                f = line.split()
                if len(f) > 9 and f[3] == "0A" and int(f[1].rsplit(":", 1)[1], 16) == port:
                    out.add(f[9])
    return out


def sockets_of(pids: list[int]) -> set[str]:
    """Socket inodes open in any of ``pids``."""
    out = set()
    for pid in pids:
        with contextlib.suppress(OSError):
            for fd in Path(f"/proc/{pid}/fd").iterdir():
                with contextlib.suppress(OSError):
                    m = re.fullmatch(r"socket:\[(\d+)\]", os.readlink(fd))
                    if m:
                        out.add(m.group(1))
    return out


def kubelet_probe_results(release: Release, pod: dict[str, Any]) -> dict[tuple[str, str], float]:
    """(probe type, result) → count, from the kubelet's own ``/metrics/probes`` for ``pod``."""
    ctx = ssl.create_default_context()
    ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE  # the kubelet's self-signed serving cert
    url = f"https://127.0.0.1:{release.node.ports['kubelet']}/metrics/probes"
    with urllib.request.urlopen(url, context=ctx, timeout=10) as resp:  # noqa: S310 (loopback, test only)
        text = resp.read().decode()
    uid = pod["metadata"]["uid"]
    out: dict[tuple[str, str], float] = {}
    for line in text.splitlines():
        if line.startswith("prober_probe_total{") and f'pod_uid="{uid}"' in line:
            labels = dict(re.findall(r'(\w+)="([^"]*)"', line.split("}", 1)[0]))
            key = (labels["probe_type"], labels["result"])
            out[key] = out.get(key, 0.0) + float(line.rsplit(None, 1)[1])
    return out


def http_status(port: int, path: str) -> int:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as resp:  # noqa: S310
        return int(resp.status)


def test_default_ports_with_host_network_on_both(release: Release) -> None:
    defaults = chart_default_ports()
    assert len(set(defaults.values())) == len(defaults), f"the chart's default ports collide: {defaults}"
    taken = {f"{c}.{k}": p for (c, k), p in defaults.items() if not port_free(p)}
    if taken:
        holders = run(["ss", "-ltnp"], timeout=30, check=False).stdout
        msg = (f"the chart's default ports {taken} are in use on this machine, so the chart's defaults "
               f"cannot be tried on its host network (free them, or run on a fresh machine):\n{holders}")
        if os.environ.get("CI") == "true":
            pytest.fail(msg)
        pytest.skip(msg)
    for component in COMPONENTS:
        for key in PORT_KEYS:
            release.values[component].pop(key, None)  # the chart's defaults
        assert release.values[component]["hostNetwork"] is True
    release.upgrade()

    pods = {c: release.pod(c) for c in COMPONENTS}
    for component, pod in pods.items():
        assert pod["spec"].get("hostNetwork") is True, component
        container = pod["spec"]["containers"][0]
        ports = {p["name"]: p["containerPort"] for p in container["ports"]}
        assert ports == {PORT_NAMES[k]: defaults[(component, k)] for k in PORT_KEYS}, (component, ports)
        status = pod["status"]["containerStatuses"][0]
        assert status["ready"] and status["started"] and status["restartCount"] == 0, (component, status)
        # Each default port is this pod's own listening socket in the shared (host) network namespace.
        mine = sockets_of(release.container_pids(component))
        for key in PORT_KEYS:
            port = defaults[(component, key)]
            assert listening_inodes(port) & mine, f"{component} does not listen on its default {key} {port}"
        assert http_status(defaults[(component, "metricsPort")], "/metrics") == 200, component
        assert http_status(defaults[(component, "healthPort")], "/healthz") == 200, component

    # The kubelet judged every probe of both pods on those ports: each has succeeded (its own
    # counters; a readiness probe may fail before the handlers run, which is what it is for).
    probes = {c: [t for t, k in (("Liveness", "livenessProbe"), ("Readiness", "readinessProbe"))
                  if k in pods[c]["spec"]["containers"][0]] for c in COMPONENTS}
    assert probes["operator"] and probes["agent"] == ["Liveness", "Readiness"], probes

    def judged() -> bool:
        return all(kubelet_probe_results(release, pods[c]).get((t, "successful"), 0) >= 1
                   for c in COMPONENTS for t in probes[c])

    release.wait(judged, timeout=120, what="the kubelet's probes of both pods on the default ports to succeed",
                 describe=lambda: str({c: kubelet_probe_results(release, pods[c]) for c in COMPONENTS}))
    for component in COMPONENTS:
        now = release.pod(component)
        assert now["metadata"]["uid"] == pods[component]["metadata"]["uid"], component
        status = now["status"]["containerStatuses"][0]
        assert status["ready"] and status["restartCount"] == 0, (component, status)
