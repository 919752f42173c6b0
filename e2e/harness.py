"""The e2e harness: a cluster (real or the mock server), local disklet processes, host helpers.

Everything here is plain synchronous code so scenarios read top to bottom. The Kubernetes client
is disklet's own (``disklet.kube``: kubeconfig auth with certificates, tokens, exec plugins) on a
private event loop; scenarios never need the loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from devkit.envtest import run, tool, wait_until
from disklet.api.resources import DISK_LAYOUT, LVM_VOLUME_GROUP, LVM_VOLUME_GROUP_SET, Resource
from disklet.kube import login
from disklet.kube.client import ApiError, Kind, KubeClient

T = TypeVar("T")

REPO = Path(__file__).resolve().parents[1]
TOOLS = REPO / ".tools" / "bin"
PYTHONPATH = os.pathsep.join(str(REPO / p) for p in ("", "operator", "agent"))
RUN_LABEL = "disklet.io/e2e-run"
"""Every object a scenario creates carries this label with the run id (the leak check keys on it)."""


def run_id() -> str:
    return secrets.token_hex(3)


def sh(argv: list[str], *, timeout: float = 60, check: bool = True, env: dict[str, str] | None = None,
       input: str | None = None) -> subprocess.CompletedProcess[str]:
    """Run a host command of the harness itself (argv list, bounded, output captured)."""
    return run(argv, timeout=timeout, check=check, env=env, input=input, error=AssertionError)


# ---------------------------------------------------------------------------------------- API
def kind_of(res: Resource) -> Kind:
    return Kind.of(res)


DL, LVG, LVGSET = kind_of(DISK_LAYOUT), kind_of(LVM_VOLUME_GROUP), kind_of(LVM_VOLUME_GROUP_SET)
NODE = Kind("", "v1", "nodes", "Node")
NAMESPACE = Kind("", "v1", "namespaces", "Namespace")
CRD = Kind("apiextensions.k8s.io", "v1", "customresourcedefinitions", "CustomResourceDefinition")


class Kube:
    """A small synchronous face of disklet's one client (:class:`disklet.kube.client.KubeClient`)
    for one cluster (the mock or a real one), logged in from a kubeconfig."""

    def __init__(self, kubeconfig: str):
        self.kubeconfig = kubeconfig
        self._loop = asyncio.new_event_loop()
        endpoint = login.kubeconfig(kubeconfig)
        self._client = KubeClient(endpoint, login=lambda: login.kubeconfig(kubeconfig), field_manager="disklet-e2e")
        self.server = endpoint.server

    def _run(self, call: Awaitable[T]) -> T:
        return self._loop.run_until_complete(asyncio.wait_for(call, timeout=30))

    def close(self) -> None:
        self._loop.run_until_complete(self._client.close())
        self._loop.close()

    def request(self, method: str, path: str, body: Any = None, *, query: list[tuple[str, str]] | None = None,
                content_type: str = "application/json") -> Any:
        return self._run(self._client.request(method, path, body=body, query=query or [], content_type=content_type))

    def get(self, kind: Kind, name: str) -> dict[str, Any] | None:
        return self._run(self._client.get(kind, name))

    def list(self, kind: Kind, label_selector: str | None = None) -> list[dict[str, Any]]:
        return self._run(self._client.list(kind, label_selector=label_selector))

    def create(self, kind: Kind, obj: dict[str, Any]) -> dict[str, Any]:
        return self._run(self._client.create(kind, obj))

    def patch(self, kind: Kind, name: str, patch: dict[str, Any], *, status: bool = False) -> dict[str, Any]:
        return self._run(self._client.patch(kind, name, patch, subresource="status" if status else None))

    def delete(self, kind: Kind, name: str) -> None:
        self._run(self._client.delete(kind, name, missing_ok=True))

    def remove_finalizers(self, kind: Kind, name: str) -> None:
        with contextlib.suppress(ApiError):
            self.patch(kind, name, {"metadata": {"finalizers": None}})

    def kubectl(self, *args: str, timeout: float = 60, check: bool = True) -> subprocess.CompletedProcess[str]:
        return sh([tool("kubectl"), "--kubeconfig", self.kubeconfig, *args], timeout=timeout, check=check)


def condition(obj: dict[str, Any] | None, type_: str) -> dict[str, Any] | None:
    for c in ((obj or {}).get("status") or {}).get("conditions") or []:
        if c.get("type") == type_:
            return c  # type: ignore[no-any-return]
    return None


def brief(obj: dict[str, Any] | None) -> str:
    """The parts of an object a failure message needs (status and generation), as one JSON line."""
    if obj is None:
        return "<absent>"
    meta = obj.get("metadata") or {}
    return json.dumps({"generation": meta.get("generation"), "labels": meta.get("labels"),
                       "finalizers": meta.get("finalizers"), "status": obj.get("status")}, sort_keys=True)


# ---------------------------------------------------------------------------------------- processes
@dataclass
class Proc:
    """A local process with its output in a log file (shown when a scenario fails)."""

    name: str
    argv: list[str]
    env: dict[str, str]
    log: Path
    popen: subprocess.Popen[bytes] | None = None

    def start(self) -> Proc:
        fh = self.log.open("ab")
        fh.write(f"\n==== start {time.strftime('%H:%M:%S')} {' '.join(self.argv)}\n".encode())
        fh.flush()
        self.popen = subprocess.Popen(self.argv, env=self.env, stdout=fh, stderr=subprocess.STDOUT,
                                      start_new_session=True, cwd=str(REPO))
        fh.close()
        return self

    @property
    def pid(self) -> int:
        assert self.popen is not None
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def stop(self, timeout: float = 15) -> None:
        """SIGTERM the process group, SIGKILL after ``timeout``; only this process's own group."""
        if self.popen is None or self.popen.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.popen.pid, signal.SIGTERM)
        try:
            self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.popen.pid, signal.SIGKILL)
            self.popen.wait(5)

    def tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "<no log>"


class MockServer:
    """``python -m devkit.kubeapi`` as a server process; parses the URL it prints."""

    def __init__(self, workdir: Path, validate: bool = True):
        self.kubeconfig = workdir / "mock-kubeconfig"
        argv = [sys.executable, "-m", "devkit.kubeapi", "--port", "0", "--kubeconfig", str(self.kubeconfig)]
        if validate:
            argv.append("--validate")
        self.proc = Proc("kubeapi-mock", argv, child_env({}), workdir / "kubeapi-mock.log")
        self.url = ""

    def start(self, timeout: float = 20) -> MockServer:
        self.proc.start()

        def url() -> str:
            for line in self.proc.log.read_text(errors="replace").splitlines():
                if "serving on " in line:
                    return line.split("serving on ", 1)[1].split()[0]
            if not self.proc.alive():
                raise AssertionError(f"the mock API server exited:\n{self.proc.tail()}")
            return ""

        self.url = wait_until(url, timeout=timeout, what="the mock API server to print its URL",
                              describe=self.proc.tail)
        return self

    def stop(self) -> None:
        self.proc.stop()


def child_env(extra: dict[str, str]) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = PYTHONPATH + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env["PYTHONUNBUFFERED"] = "1"
    env["PATH"] = f"{TOOLS}{os.pathsep}{env.get('PATH', '')}"
    env.update(extra)
    return env


def operator_argv(metrics_port: int, namespace: str | None = None) -> list[str]:
    """The operator as a local process; ``namespace``: as the chart runs it (``--namespace``)."""
    return [sys.executable, "-c", "import sys; from disklet_operator.main import main; sys.exit(main())",
            "--standalone", "--metrics-port", str(metrics_port), "--log-format", "text",
            *(["--namespace", namespace] if namespace else [])]


def agent_argv() -> list[str]:
    return [sys.executable, "-m", "disklet_agent.cli", "run"]


# ---------------------------------------------------------------------------------------- host
def node_name() -> str:
    return os.environ.get("E2E_NODE_NAME") or socket.gethostname().lower()


def needs_no_activation() -> bool:
    """Device-mapper activation needs /dev/mapper/control and udev; without either, LVM must not try."""
    return not Path("/dev/mapper/control").exists() or not Path("/run/udev/control").exists()


@dataclass
class HostLedger:
    """What the harness itself attached on the host, so teardown detaches exactly that."""

    sandbox: Path
    loops: list[str] = field(default_factory=list)

    def loop(self, name: str, size_mib: int = 64, partscan: bool = True) -> str:
        img = self.sandbox / "disks" / f"{name}.img"
        img.parent.mkdir(parents=True, exist_ok=True)
        with img.open("wb") as fh:
            fh.truncate(size_mib << 20)
        argv = ["losetup", "--find", "--show", *(["--partscan"] if partscan else []), str(img)]
        dev = sh(argv).stdout.strip()
        self.loops.append(dev)
        return dev

    def close(self, start: int = 0) -> list[str]:
        """Detach the loops attached since index ``start`` (all by default)."""
        problems = []
        mine, self.loops[start:] = self.loops[start:], []
        for dev in reversed(mine):
            res = sh(["losetup", "-d", dev], check=False)
            if res.returncode != 0 and "No such device" not in res.stderr:
                problems.append(f"losetup -d {dev}: {res.stderr.strip()}")
        return problems


def loops_under(base: Path) -> list[tuple[str, str]]:
    """(loop device, backing file) for every loop whose backing file lies under ``base``."""
    res = sh(["losetup", "--list", "--json", "--output", "NAME,BACK-FILE"], check=False)
    if res.returncode != 0 or not res.stdout.strip():
        return []
    out = []
    root = str(base.resolve())
    for d in json.loads(res.stdout).get("loopdevices", []):
        back = (d.get("back-file") or "").replace(" (deleted)", "")
        if back == root or back.startswith(root + "/"):
            out.append((d["name"], back))
    return out


def vgs_named(prefix: str) -> list[str]:
    res = sh(["vgs", "--noheadings", "-o", "vg_name", "--config", "devices{filter=[\"a|.*|\"]}"], check=False)
    return [v.strip() for v in res.stdout.split() if v.strip().startswith(prefix)]


@contextlib.contextmanager
def scoped(cleanups: list[Callable[[], None]]) -> Iterator[None]:
    """Run every cleanup in reverse even when one fails; re-raise the first failure after all ran."""
    try:
        yield
    finally:
        first: BaseException | None = None
        for fn in reversed(cleanups):
            try:
                fn()
            except BaseException as exc:  # noqa: BLE001 - keep cleaning up, report the first
                first = first or exc
        if first is not None:
            raise first
