"""kctl node apply-disk / disks --live through the exec API, against a small fake API server.

The kmock-based mock has no exec endpoint, so this serves exactly what kctl uses: the pod list
and ``pods/{name}/exec`` over a websocket speaking ``v5.channel.k8s.io`` (stdin, stdout, stderr,
the error channel with the exit status, and v5's close-stdin frame).
"""

from __future__ import annotations

import io
import json
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest_asyncio
from aiohttp import web
from kctl_fixtures import fake_exec_api

from disklet.cli.main import run


class FakeExecServer:
    def __init__(self, protocols: tuple[str, ...] = ("v5.channel.k8s.io",), exit_code: int = 0):
        self.protocols = protocols
        self.exit_code = exit_code
        self.execs: list[dict[str, Any]] = []
        self.pods = [{"metadata": {"name": "disklet-agent-x7k2p", "namespace": "disklet-system",
                                   "creationTimestamp": "2024-05-01T10:00:00Z"},
                      "spec": {"nodeName": "node-a", "containers": [{"name": "agent"}]}, "status": {"phase": "Running"}}]

    async def pods_list(self, request: web.Request) -> web.Response:
        self.pod_queries = dict(request.query)
        return web.json_response({"kind": "PodList", "apiVersion": "v1", "items": self.pods})

    async def exec(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(protocols=self.protocols)
        await ws.prepare(request)
        record: dict[str, Any] = {"pod": request.match_info["pod"], "query": request.query.getall("command"),
                                  "container": request.query.get("container"), "stdin": b"", "closed": False,
                                  "protocol": ws.ws_protocol}
        self.execs.append(record)
        if request.query.get("stdin", "").lower() == "true" and ws.ws_protocol == "v5.channel.k8s.io":
            async for msg in ws:
                data = msg.data
                if data[0] == 0:
                    record["stdin"] += data[1:]
                elif data == bytes([255, 0]):
                    record["closed"] = True
                    break
        argv = record["query"]
        await ws.send_bytes(b"\x01" + f"validated {len(record['stdin'])} bytes: {' '.join(argv[1:])}\n".encode())
        await ws.send_bytes(b"\x02" + b"classifier: /dev/sdb safe\n")
        if self.exit_code == 0:
            status = {"metadata": {}, "status": "Success"}
        else:
            status = {"metadata": {}, "status": "Failure", "message": f"command terminated with non-zero exit code: "
                      f"error executing command [{' '.join(argv)}], exit code {self.exit_code}",
                      "reason": "NonZeroExitCode", "details": {"causes": [{"reason": "ExitCode",
                                                                           "message": str(self.exit_code)}]}}
        await ws.send_bytes(b"\x03" + json.dumps(status).encode())
        await ws.close()
        return ws


@pytest_asyncio.fixture()
async def fake(tmp_path: Path) -> AsyncIterator[tuple[FakeExecServer, Path]]:
    server = FakeExecServer()
    async with fake_exec_api(server.pods_list, server.exec, tmp_path / "kubeconfig") as kubeconfig:
        yield server, kubeconfig


async def _kctl(kubeconfig: Path, *argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = await run([*argv, "--kubeconfig", str(kubeconfig)], out, err)
    transcript = os.environ.get("KCTL_TRANSCRIPT")
    if transcript:
        with open(transcript, "a", encoding="utf-8") as fh:
            fh.write(f"$ kctl {' '.join(argv)}\n{out.getvalue()}{err.getvalue()}# exit {code}\n\n")
    return code, out.getvalue(), err.getvalue()


async def test_apply_disk_streams_the_file_on_stdin_and_closes_it(fake, tmp_path: Path):
    server, kubeconfig = fake
    body = "{ disko.devices.disk.d = { type = \"disk\"; device = \"/dev/sdb\"; }; }\n" * 2000  # > one 32 KiB frame
    nix = tmp_path / "day2-disk.nix"
    nix.write_text(body)
    code, out, err = await _kctl(kubeconfig, "node", "apply-disk", "node-a", "-f", str(nix), "--apply",
                                 "--no-rebuild", "--timeout-seconds", "600")
    assert code == 0, err
    [call] = server.execs
    assert call["pod"] == "disklet-agent-x7k2p" and call["container"] == "agent"
    assert call["query"] == ["disklet-agent", "apply-disk", "-f", "-", "--timeout-seconds", "600", "--apply",
                             "--no-rebuild"]
    assert call["stdin"] == body.encode() and call["closed"]
    assert server.pod_queries == {"labelSelector": "app.kubernetes.io/component=agent",
                                  "fieldSelector": "spec.nodeName=node-a"}
    assert out == f"validated {len(body)} bytes: apply-disk -f - --timeout-seconds 600 --apply --no-rebuild\n"
    assert "classifier: /dev/sdb safe" in err


async def test_remote_exit_code_is_passed_through(fake, tmp_path: Path):
    server, kubeconfig = fake
    server.exit_code = 3
    nix = tmp_path / "day2-disk.nix"
    nix.write_text("{ }")
    code, _out, err = await _kctl(kubeconfig, "node", "apply-disko", "node-a", "-f", str(nix))
    assert code == 3
    assert "deprecated" in err
    assert server.execs[0]["query"][:4] == ["disklet-agent", "apply-disk", "-f", "-"]


async def test_disks_live_runs_the_agent_disks_command_without_stdin(fake):
    server, kubeconfig = fake
    code, out, _err = await _kctl(kubeconfig, "node", "disks", "node-a", "--live", "-o", "json")
    assert code == 0
    assert server.execs[0]["query"] == ["disklet-agent", "disks", "-o", "json"]
    assert server.execs[0]["stdin"] == b"" and out.startswith("validated 0 bytes")


async def test_old_exec_protocol_is_refused_instead_of_hanging(fake, tmp_path: Path):
    server, kubeconfig = fake
    server.protocols = ("v4.channel.k8s.io",)
    nix = tmp_path / "day2-disk.nix"
    nix.write_text("{ }")
    code, _out, err = await _kctl(kubeconfig, "node", "apply-disk", "node-a", "-f", str(nix))
    assert code == 1 and "Kubernetes >= 1.30" in err


async def test_no_agent_pod_on_the_node(fake, tmp_path: Path):
    server, kubeconfig = fake
    server.pods[0]["status"]["phase"] = "Pending"
    nix = tmp_path / "day2-disk.nix"
    nix.write_text("{ }")
    code, _out, err = await _kctl(kubeconfig, "node", "apply-disk", "node-a", "-f", str(nix))
    assert code == 1 and "disklet-agent-x7k2p (Pending)" in err and server.execs == []
