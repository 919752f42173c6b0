"""Every kctl command with every ``-o`` value (and ``--no-headers``), on the real API server.

One flag set for all commands (kubectl's): each cell of the table runs the command on freshly
seeded objects (the server's own: defaults, managedFields) and checks the output parses as the
format promises and names the objects it should.
Exec-based commands (``node disks --live``, ``node apply-disk``) run against a small exec server
that answers ``-o json`` with JSON, as the agent does.
"""

from __future__ import annotations

import io
import json
import re
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
import yaml
from aiohttp import web
from kctl_fixtures import BD, DL, LVG, SEED_STYLE, block_device, disk_layout, fake_exec_api, kctl, lvg

from devkit.realkube import RealKube
from disklet.cli.main import run

LVGSET = "disklet.io/v1alpha1/lvmvolumegroupsets"


@pytest.fixture(scope="module")
def seeded(disklet_cluster: Any) -> Iterator[RealKube]:
    """The objects of ``_seed`` on the real server once for the module (seeding and cleaning them
    per cell made the table cost a minute); each test puts back what it deleted or created."""
    kube = RealKube(disklet_cluster.kubeconfig)
    keep = kube.snapshot()
    try:
        yield kube
    finally:
        try:
            kube.clean(keep)
        finally:
            kube.close()


@pytest.fixture()
def kube(seeded: RealKube) -> Iterator[RealKube]:
    _seed(seeded)
    yield seeded
    if seeded.read(DL, "prod-data-pool") is not None:  # made by `apply` or the watch test
        seeded.delete(DL, "prod-data-pool")

APPLIED = {"phase": "applied", "targetDevices": ["/dev/nvme1n1"], "targetDevicesText": "/dev/nvme1n1",
           "layoutGeneration": 1, "appliedLayoutGeneration": 1}

OUTPUTS = [None, "wide", "json", "yaml", "name", "jsonpath={..metadata.name}",
           "custom-columns=NAME:.metadata.name,KIND:.kind", "NOHEADERS"]


def _seed(kube: Any) -> None:
    """The five objects the commands act on (those a ``delete`` removed, again)."""
    def seed(key: str, obj: dict[str, Any]) -> None:
        if kube.read(key, obj["metadata"]["name"]) is None:
            kube.seed(key, obj)
    seed(DL, disk_layout("node-a-data", "node-a", status=APPLIED))
    seed(LVG, lvg("vg-data-a", "node-a", "vg_data", {"phase": "Ready", "vgSize": "20Gi"}))
    seed(LVGSET, {"apiVersion": "disklet.io/v1alpha1", "kind": "LVMVolumeGroupSet",
                       "metadata": {"name": "fleet"},
                       "spec": {"nodeSelector": {"matchLabels": {"storage": "true"}},
                                "lvmVolumeGroupTemplate": {"actualVGNameOnTheNode": "vg_data", "fileDevices": [
                                    {"name": "a", "directory": "/var/lib/disklet/file-devices", "size": "1Gi"}]}},
                       "status": {"phase": "Created", "currentLVMVolumeGroupsCount": 1}})
    seed(BD, block_device("node-a", "/dev/sdb", "100Gi"))


# command -> (argv, expected names in machine output; "" = the command prints no objects)
COMMANDS: dict[str, tuple[list[str], list[str]]] = {
    "get dl": (["get", "dl"], ["node-a-data"]),
    "get dl NAME": (["get", "dl", "node-a-data"], ["node-a-data"]),
    "get lvg": (["get", "lvg"], ["vg-data-a"]),
    "get lvgset": (["get", "lvgset"], ["fleet"]),
    "get bd": (["get", "bd", "-l", "disklet.io/node=node-a"], ["dev-node-a-sdb"]),
    "describe dl": (["describe", "dl", "node-a-data"], ["node-a-data"]),
    "describe lvg": (["describe", "lvg", "vg-data-a"], ["vg-data-a"]),
    "describe lvgset": (["describe", "lvgset", "fleet"], ["fleet"]),
    "describe bd": (["describe", "bd", "dev-node-a-sdb"], ["dev-node-a-sdb"]),
    "describe node": (["describe", "node", "node-a"], ["node-a-data", "vg-data-a", "dev-node-a-sdb"]),
    "delete dl": (["delete", "dl", "node-a-data"], ["node-a-data"]),
    "delete lvg": (["delete", "lvg", "vg-data-a"], ["vg-data-a"]),
    "delete lvgset": (["delete", "lvgset", "fleet"], ["fleet"]),
    "delete bd": (["delete", "bd", "dev-node-a-sdb"], ["dev-node-a-sdb"]),
    "apply": (["apply", "-f", "MANIFEST"], ["prod-data-pool"]),
    "diff": (["diff", "-f", "MANIFEST"], ["prod-data-pool"]),
    "node disks": (["node", "disks", "node-a"], ["dev-node-a-sdb"]),
}
EXPECTED_CODE = {"diff": 1}  # kubectl diff: 1 = there are differences


def _argv(argv: list[str], output: str | None, manifest: Path) -> list[str]:
    out = [str(manifest) if a == "MANIFEST" else a for a in argv]
    if output == "NOHEADERS":
        return [*out, "--no-headers"]
    return [*out, "-o", output] if output else out


def check(output: str | None, text: str, names: list[str]) -> None:
    """The output is what the format promises and mentions every expected object."""
    if output == "json":
        data = json.loads(text)
        items = data["items"] if data.get("kind") == "List" else [data]
        assert {i["metadata"]["name"] for i in items} >= set(names)
    elif output == "yaml":
        data = yaml.safe_load(text)
        items = data["items"] if data.get("kind") == "List" else [data]
        assert {i["metadata"]["name"] for i in items} >= set(names)
    elif output == "name":
        lines = text.splitlines()
        assert lines and all(re.fullmatch(r"[a-z]+(\.[a-z0-9.]+)?/[a-z0-9.-]+", ln) for ln in lines), text
        assert {ln.split("/", 1)[1] for ln in lines} >= set(names)
    elif output and output.startswith("jsonpath="):
        assert set(text.split()) >= set(names), text
    elif output and output.startswith("custom-columns="):
        lines = text.splitlines()
        assert lines[0].split() == ["NAME", "KIND"]
        assert {ln.split()[0] for ln in lines[1:]} >= set(names)
    else:
        assert text.strip(), "the human report is not empty"
        if output == "NOHEADERS":
            assert not re.search(r"^NAME\s", text, re.M), text


@pytest.mark.parametrize("output", OUTPUTS, ids=lambda o: str(o))
@pytest.mark.parametrize("command", list(COMMANDS))
async def test_every_command_with_every_output(kube, tmp_path: Path, command: str, output: str | None):
    _seed(kube)
    manifest = tmp_path / "day2.yaml"
    manifest.write_text(SEED_STYLE)
    argv, names = COMMANDS[command]
    r = await kctl(kube, *_argv(argv, output, manifest))
    assert r.code == EXPECTED_CODE.get(command, 0), (r.code, r.out, r.err)
    check(output, r.out, names)


# ---------------------------------------------------------------------------- exec-based commands
class JsonExecServer:
    """Pods list + ``pods/exec`` (v5): answers ``-o json`` with JSON, else a table, exit 0."""

    def __init__(self) -> None:
        self.argvs: list[list[str]] = []

    async def pods(self, request: web.Request) -> web.Response:
        return web.json_response({"kind": "PodList", "apiVersion": "v1", "items": [{
            "metadata": {"name": "disklet-agent-x", "namespace": "disklet-system",
                         "creationTimestamp": "2024-05-01T10:00:00Z"},
            "spec": {"nodeName": "node-a", "containers": [{"name": "agent"}]}, "status": {"phase": "Running"}}]})

    async def exec(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(protocols=("v5.channel.k8s.io",))
        await ws.prepare(request)
        argv = request.query.getall("command")
        self.argvs.append(argv)
        if request.query.get("stdin", "").lower() == "true":
            async for msg in ws:
                if msg.data == bytes([255, 0]):
                    break
        if "json" in argv:
            body = json.dumps({"blockdevices": [{"name": "sdb", "path": "/dev/sdb"}], "appliedTargets": []})
        else:
            body = "PATH      SIZE\n/dev/sdb  100G\n"
        await ws.send_bytes(b"\x01" + body.encode())
        await ws.send_bytes(b"\x03" + json.dumps({"metadata": {}, "status": "Success"}).encode())
        await ws.close()
        return ws


@pytest_asyncio.fixture()
async def agent(tmp_path: Path) -> AsyncIterator[tuple[JsonExecServer, Path]]:
    server = JsonExecServer()
    async with fake_exec_api(server.pods, server.exec, tmp_path / "kubeconfig") as kubeconfig:
        yield server, kubeconfig


EXEC_COMMANDS = {"node disks --live": ["node", "disks", "node-a", "--live"],
                 "node apply-disk": ["node", "apply-disk", "node-a", "-f", "NIX"]}


@pytest.mark.parametrize("output", OUTPUTS, ids=lambda o: str(o))
@pytest.mark.parametrize("command", list(EXEC_COMMANDS))
async def test_exec_commands_with_every_output(agent, tmp_path: Path, command: str, output: str | None):
    server, kubeconfig = agent
    nix = tmp_path / "d.nix"
    nix.write_text("{ disko.devices = { }; }\n")
    argv = [str(nix) if a == "NIX" else a for a in EXEC_COMMANDS[command]]
    out, err = io.StringIO(), io.StringIO()
    code = await run([*_argv(argv, output, nix), "--kubeconfig", str(kubeconfig)], out, err)
    assert code == 0, err.getvalue()
    asked_json = "json" in server.argvs[-1]
    assert asked_json == (output not in (None, "wide", "NOHEADERS")), server.argvs[-1]
    check(output, out.getvalue(), ["node-a"])


# ---------------------------------------------------------------------------- watch, version, completion
async def test_get_watch_prints_existing_then_each_change(kube, tmp_path: Path):
    import asyncio

    _seed(kube)
    out, err = io.StringIO(), io.StringIO()
    task = asyncio.create_task(run(["get", "dl", "-w", "--kubeconfig", str(kube.kubeconfig)], out, err))

    async def until(pred: Any) -> None:
        for _ in range(500):
            if pred():
                return
            await asyncio.sleep(0.01)
        raise AssertionError(f"not seen: {out.getvalue()!r} {err.getvalue()!r}")
    try:
        await until(lambda: "node-a-data" in out.getvalue())
        assert out.getvalue().splitlines()[0].split()[:3] == ["NAME", "NODE", "PHASE"]
        (tmp_path / "day2.yaml").write_text(SEED_STYLE)
        assert (await kctl(kube, "apply", "-f", str(tmp_path / "day2.yaml"))).code == 0  # an API write
        await until(lambda: "prod-data-pool" in out.getvalue())
        line = next(ln for ln in out.getvalue().splitlines() if ln.startswith("prod-data-pool"))
        assert line.split()[:2] == ["prod-data-pool", "kvm-node-1"] and "pending" not in line
        assert out.getvalue().count("NAME") == 1, "one header, then rows"
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task


def test_version_and_completion(capsys: pytest.CaptureFixture[str]):
    from disklet import __version__
    from disklet.cli.main import main, prog_name

    assert main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"kctl {__version__}"
    for shell, marker in (("bash", "complete"), ("zsh", "#compdef"), ("fish", "complete ")):
        assert main(["completion", shell]) == 0
        script = capsys.readouterr().out
        assert marker in script and "describe" in script and "no-headers" in script, shell
    assert prog_name("/usr/local/bin/kubectl-disklet") == "kubectl disklet" and prog_name("kctl") == "kctl"
