"""e2e session: pick the target, install CRDs, register this node, run operator and agent locally.

Targets (docs/e2e.md):
- ``E2E_MOCK=1``: the Kubernetes API mock as a server process (``make e2e-mock``);
- ``E2E_KUBECONFIG=FILE``: a real cluster; ``E2E_MODE=local`` (default) runs operator and agent
  here as local processes, ``E2E_MODE=in-cluster`` uses the installed chart;
- else, when the envtest assets are found (``KUBEBUILDER_ASSETS``, devkit/envtest.py): the
  session's real control plane (etcd + kube-apiserver + kube-controller-manager), operator and
  agent as local processes (mode ``envtest``; what ``make test`` runs);
- none of these: the whole suite skips with one line.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from devkit import disko as test_disko
from devkit.envtest import Cluster, unavailable_reason
from e2e import harness as h
from tests.fake_commands import FAKE_NIXOS_REBUILD, FAKE_SYSTEMD_RUN

SKIP_REASON = ("e2e: no target — set KUBEBUILDER_ASSETS=<dir with kube-apiserver, kube-controller-manager> "
               "(a local control plane), E2E_KUBECONFIG=<kubeconfig> (any cluster) or E2E_MOCK=1 "
               "(the API mock; `make e2e-mock`); see docs/e2e.md")
DEFAULT_TIMEOUT = 120
"""Seconds per scenario unless it says otherwise (pytest-timeout); waits inside fail sooner, readably."""
OBJECT_KINDS = (h.LVGSET, h.LVG, h.DL)  # deletion order: sets first (their children follow)


def _mode() -> str | None:
    if os.environ.get("E2E_MOCK", "") not in ("", "0"):
        return "mock"
    if os.environ.get("E2E_KUBECONFIG"):
        mode = os.environ.get("E2E_MODE", "local")
        if mode not in ("local", "in-cluster"):
            raise pytest.UsageError(f"E2E_MODE must be local or in-cluster, not {mode!r}")
        return mode
    if unavailable_reason() is None:
        return "envtest"
    return None


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    here = Path(__file__).parent
    mine = [i for i in items if here in Path(str(i.fspath)).parents]
    if mine and _mode() is None:
        if os.environ.get("CI") == "true":
            raise pytest.UsageError(f"CI=true but {SKIP_REASON}")
        # One skipped placeholder, the rest deselected: one clear line instead of one per scenario.
        mine[0].add_marker(pytest.mark.skip(reason=f"{SKIP_REASON} ({len(mine)} scenarios)"))
        rest = set(mine[1:])
        config.hook.pytest_deselected(items=list(rest))
        items[:] = [i for i in items if i not in rest]
        return
    for item in mine:
        item.add_marker(pytest.mark.e2e)
        if item.get_closest_marker("timeout") is None:
            item.add_marker(pytest.mark.timeout(DEFAULT_TIMEOUT))


FAKE_DISKO = f"""#!{sys.executable}
# Fake disko for e2e: records its argv, then gives every target named in the staged layout one
# partition (an MBR registered with BLKPG; there is no udev here), as a real format would.
import json, os, re, subprocess, sys
sys.path.insert(0, {str(h.REPO)!r})
from tests.host.blockdev_helpers import write_mbr
with open(os.environ["E2E_FAKE_LOG"], "a") as fh:
    fh.write(json.dumps({{"cmd": "disko", "argv": sys.argv[1:]}}) + "\\n")
body = open(sys.argv[-1]).read()
sandbox = os.environ["E2E_SANDBOX"]
devices = sorted(set(re.findall(r'"?device"?[ ]*=[ ]*"(/dev/[^"]+)"', body)))
for dev in devices:  # fail closed: only loop devices the harness attached from its own sandbox
    real = os.path.realpath(dev)
    back = subprocess.run(["losetup", "-n", "-O", "BACK-FILE", real], capture_output=True, text=True).stdout.strip()
    if not real.startswith("/dev/loop") or not back.startswith(sandbox + "/"):
        print(f"fake disko: refusing {{dev}}: not a loop device of the e2e sandbox", file=sys.stderr)
        sys.exit(3)
for dev in devices:
    fd = os.open(dev, os.O_RDONLY)
    size_mib = os.lseek(fd, 0, os.SEEK_END) >> 20
    os.close(fd)
    write_mbr(os.path.realpath(dev), 1, size_mib)
print("fake disko: done")
"""



def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class E2E:
    """The session: where things run and what this run created."""

    mode: str
    kube: h.Kube
    node: str
    run: str
    sandbox: Path
    ledger: h.HostLedger
    operator: h.Proc | None = None
    agent: h.Proc | None = None
    operator_kubeconfig: str | None = None
    """Who the local operator runs as (the chart's ServiceAccount on envtest); None: the admin kubeconfig."""
    agent_kubeconfig: str | None = None
    created: list[tuple[h.Kind, str]] = field(default_factory=list)
    real_disko: bool = False
    """bin/disko is the test disko (disko's own scripts on the harness's loops), not the recording fake."""

    @property
    def disks_dir(self) -> Path:
        """Backing files of the harness's loops: the only devices the test disko may touch."""
        return self.sandbox / "disks"

    @property
    def disko_root(self) -> Path:
        """Where the test disko mounts a layout's mountpoints (instead of the node's /)."""
        return self.disks_dir / "root"

    def undo_disko(self) -> list[str]:
        """Unmount and remove the by-partlabel links disko made on the harness's loops (VGs are left
        to the leak check: a scenario's VG must be gone through the API)."""
        if not self.real_disko:
            return []
        from devkit.disko.udev import cleanup

        return cleanup(self.disks_dir, remove_vgs=False)

    @property
    def local(self) -> bool:
        return self.mode in ("mock", "local", "envtest")

    @property
    def real(self) -> bool:
        return self.mode != "mock"

    @property
    def file_devices(self) -> Path:
        if self.mode == "in-cluster":
            return Path(os.environ.get("E2E_FILE_DEVICES_DIRECTORY", "/var/lib/disklet/file-devices"))
        return self.sandbox / "file-devices"

    @property
    def mode_file(self) -> Path:
        return self.sandbox / "etc" / "disklet" / "disk-management-mode"

    @property
    def fake_log(self) -> Path:
        return self.sandbox / "fake-commands.jsonl"

    @property
    def namespace(self) -> str:
        """Where the local agent keeps its Lease and the operator reads it."""
        return os.environ.get("E2E_NAMESPACE") or f"disklet-e2e-{self.run}"

    def name(self, what: str) -> str:
        return f"e2e-{self.run}-{what}"

    def vg_name(self, what: str) -> str:
        return f"e2e{self.run}{what}"

    def create(self, kind: h.Kind, obj: dict[str, Any]) -> dict[str, Any]:
        """Create an object labelled with this run; the scenario fixture deletes it afterwards."""
        meta = obj.setdefault("metadata", {})
        meta.setdefault("labels", {})[h.RUN_LABEL] = self.run
        self.created.append((kind, meta["name"]))
        return self.kube.create(kind, obj)

    def logs(self) -> str:
        parts = []
        for p in (self.operator, self.agent):
            if p is not None:
                parts.append(f"---- {p.name} (last lines)\n{p.tail(30)}")
        return "\n".join(parts)

    def describe(self, kind: h.Kind, name: str) -> Any:
        return lambda: h.brief(self.kube.get(kind, name)) + "\n" + self.logs()

    def agent_env(self) -> dict[str, str]:
        bin_ = self.sandbox / "bin"
        env = {
            "NODE_NAME": self.node, "KUBECONFIG": self.agent_kubeconfig or self.kube.kubeconfig,
            "DISKLET_HOST_ROOT": str(self.sandbox),
            "FILE_DEVICES_DIRECTORY": str(self.file_devices), "DISKLET_NSENTER": "0",
            "DISKLET_DISKO_COMMAND": str(bin_ / "disko"), "DISKLET_NIXOS_REBUILD_COMMAND": str(bin_ / "nixos-rebuild"),
            "DISKLET_SYSTEMD_RUN_COMMAND": str(bin_ / "systemd-run"), "DISKLET_SCAN_INTERVAL_SECONDS": "2",
            "DISKLET_REFUSED_RETRY_SECONDS": "2", "DISKLET_METRICS_PORT": str(_free_port()),
            "DISKLET_LOG_FORMAT": "console", "DISKLET_LIVENESS_ENDPOINT": "",
            "DISKLET_NAMESPACE": self.namespace, "E2E_FAKE_LOG": str(self.fake_log), "FAKE_LOG": str(self.fake_log),
            "E2E_SANDBOX": str(self.sandbox.resolve()), "DISKLET_ALLOW_LOOP_TARGETS": "1",
        }
        if self.real_disko:
            env.update({"DISKO_TEST_SANDBOX": str(self.disks_dir.resolve()),
                        "DISKO_TEST_ROOT": str(self.disko_root.resolve()), "DISKLET_ALLOW_LOOP_TARGETS": "1"})
        if h.needs_no_activation():
            env["DISKLET_LVM_EXTRA_CONFIG"] = "global{activation=0}"
        return h.child_env(env)

    def start_agent(self) -> h.Proc:
        self.agent = h.Proc("agent", h.agent_argv(), self.agent_env(), self.sandbox / "agent.log").start()
        return self.agent

    def start_operator(self) -> h.Proc:
        env = h.child_env({"KUBECONFIG": self.operator_kubeconfig or self.kube.kubeconfig,
                           "DISKLET_NAMESPACE": self.namespace})
        ns = self.namespace if self.operator_kubeconfig else None  # the chart's identity: the chart's args
        self.operator = h.Proc("operator", h.operator_argv(_free_port(), ns), env, self.sandbox / "operator.log").start()
        return self.operator


def _install_crds(kube: h.Kube, mode: str) -> list[str]:
    """kubectl apply -f crds/; returns the CRD names this run installed (removed at the end)."""
    names = [f"{r}.disklet.io" for r in ("disklayouts", "lvmvolumegroups", "lvmvolumegroupsets", "blockdevices")]
    missing = [n for n in names if kube.get(h.CRD, n) is None]
    if mode == "in-cluster":
        if missing:
            raise AssertionError(f"E2E_MODE=in-cluster but CRDs are missing: {missing} (install the chart first)")
        return []
    args = ["apply", "-f", str(h.REPO / "crds")]
    if mode == "mock":
        args.insert(1, "--validate=false")  # the mock serves no OpenAPI document
    kube.kubectl(*args)
    if mode != "mock":
        kube.kubectl("wait", "--for", "condition=established", "--timeout", "60s", *[f"crd/{n}" for n in names])
    return missing


def _register_node(kube: h.Kube, node: str) -> bool:
    """Create a Node object for this machine unless the cluster has one; returns True if created."""
    if kube.get(h.NODE, node) is not None:
        return False
    kube.create(h.NODE, {"apiVersion": "v1", "kind": "Node",
                         "metadata": {"name": node, "labels": {"kubernetes.io/hostname": node}}})
    now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    with contextlib.suppress(h.ApiError):
        kube.patch(h.NODE, node, {"status": {"conditions": [
            {"type": "Ready", "status": "True", "reason": "E2EHarness", "message": "registered by disklet e2e",
             "lastHeartbeatTime": now, "lastTransitionTime": now}]}}, status=True)
    return True


def _delete_run_objects(e2e: E2E, names: list[tuple[h.Kind, str]] | None = None, timeout: float = 60) -> list[str]:
    """Delete this run's objects (given ones, or every labelled one), wait for the agent to release
    them; force-remove finalizers only as a last resort and report that as a problem."""
    kube = e2e.kube
    if names is None:
        names = [(k, o["metadata"]["name"]) for k in OBJECT_KINDS
                 for o in kube.list(k, f"{h.RUN_LABEL}={e2e.run}")]
    for kind in OBJECT_KINDS:  # children of sets (owner references) too
        for obj in kube.list(kind):
            refs = (obj.get("metadata") or {}).get("ownerReferences") or []
            if any(r.get("name", "").startswith(f"e2e-{e2e.run}-") for r in refs):
                names.append((kind, obj["metadata"]["name"]))
    for kind, name in names:
        kube.delete(kind, name)
    problems = []
    deadline = time.monotonic() + timeout
    for kind, name in names:
        while kube.get(kind, name) is not None and time.monotonic() < deadline:
            time.sleep(0.25)
        if kube.get(kind, name) is not None:
            problems.append(f"{kind.plural}/{name} still present {timeout:.0f}s after delete: "
                            f"{h.brief(kube.get(kind, name))}")
            kube.remove_finalizers(kind, name)
    return problems


@pytest.fixture(scope="session", autouse=True)
def e2e(request: pytest.FixtureRequest) -> Iterator[E2E]:
    mode = _mode()
    if mode is None:
        pytest.skip(SKIP_REASON)
    run = h.run_id()
    sandbox = Path(tempfile.mkdtemp(prefix=f"disklet-e2e-{run}-"))
    (sandbox / "etc" / "disklet").mkdir(parents=True)
    (sandbox / "file-devices").mkdir()
    bin_ = sandbox / "bin"
    bin_.mkdir()
    real_disko = mode != "in-cluster" and os.geteuid() == 0 and not test_disko.missing_tools()
    # bin/disko: the test disko (disko's own scripts) wherever its assets exist; the recording fake
    # stays as bin/fake-disko for fault injection and is bin/disko only where the test disko cannot run.
    disko_text = f'#!/bin/sh\nexec "{test_disko.DISKO_COMMAND}" "$@"\n' if real_disko else FAKE_DISKO
    for name, text in (("disko", disko_text), ("fake-disko", FAKE_DISKO), ("systemd-run", FAKE_SYSTEMD_RUN),
                       ("nixos-rebuild", FAKE_NIXOS_REBUILD)):
        (bin_ / name).write_text(text)
        (bin_ / name).chmod(0o755)
    (sandbox / "disks" / "root").mkdir(parents=True)
    cleanups: list[Any] = []
    problems: list[str] = []
    with h.scoped(cleanups):
        cleanups.append(lambda: shutil.rmtree(sandbox, ignore_errors=True))
        mock: h.MockServer | None = None
        if mode == "mock":
            mock = h.MockServer(sandbox).start()
            cleanups.append(mock.stop)
            kubeconfig = str(mock.kubeconfig)
        elif mode == "envtest":
            kubeconfig = request.getfixturevalue("envtest").kubeconfig
        else:
            kubeconfig = os.environ["E2E_KUBECONFIG"]
        kube = h.Kube(kubeconfig)
        cleanups.append(kube.close)
        installed = _install_crds(kube, mode)
        if installed and mode in ("local", "envtest"):
            cleanups.append(lambda: [kube.delete(h.CRD, n) for n in installed])
        node = h.node_name() if mode != "in-cluster" else os.environ.get("E2E_NODE_NAME", "")
        if not node:
            raise pytest.UsageError("E2E_MODE=in-cluster needs E2E_NODE_NAME (the node this machine is)")
        if mode != "in-cluster" and _register_node(kube, node):
            cleanups.append(lambda: kube.delete(h.NODE, node))
        ledger = h.HostLedger(sandbox)
        session = E2E(mode, kube, node, run, sandbox, ledger, real_disko=real_disko)
        if mode in ("local", "envtest") and kube.get(h.NAMESPACE, session.namespace) is None:  # the mock needs none
            kube.create(h.NAMESPACE, {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": session.namespace}})
            cleanups.append(lambda: kube.delete(h.NAMESPACE, session.namespace))

        if mode == "envtest" or os.environ.get("E2E_CHART_RBAC") == "1":
            _run_as_chart_identities(session, cleanups)

        def teardown() -> None:
            problems.extend(_delete_run_objects(session))
            for p in (session.agent, session.operator):
                if p is not None:
                    p.stop()
            problems.extend(session.undo_disko())
            problems.extend(ledger.close())
            problems.extend(leftovers(session))
            if session.operator_kubeconfig:  # running as the chart's identities: no request may be refused
                problems.extend(forbidden_requests(session))

        cleanups.append(teardown)
        if session.local:
            session.start_operator()
            session.start_agent()
        yield session
    if problems:
        raise AssertionError("e2e left things behind:\n  " + "\n  ".join(problems))


def _run_as_chart_identities(session: E2E, cleanups: list[Any]) -> None:
    """Operator and agent run with the chart's own ServiceAccounts and roles (``helm template``),
    with TokenRequest tokens — the agent's bound to a Pod on this node, as in the DaemonSet — so a
    verb the chart forgot fails a scenario instead of passing as admin."""
    cluster = Cluster(session.kube.kubeconfig)
    release = "disklet" if session.mode == "envtest" else f"disklet-e2e-{session.run}"
    docs = cluster.apply_chart_rbac(h.REPO / "charts" / "disklet", release, session.namespace)
    cleanups.append(lambda: [cluster.delete(d["kind"].lower(), d["metadata"]["name"], wait=False)
                             for d in docs if d["kind"].startswith("Cluster")])
    sas = {d["metadata"]["name"].rsplit("-", 1)[-1]: d["metadata"]["name"] for d in docs if d["kind"] == "ServiceAccount"}
    pod = f"disklet-agent-{session.run}"
    cluster.create_pod(pod, session.namespace, session.node, sas["agent"])
    cleanups.append(lambda: cluster.force_delete_pod(pod, session.namespace))
    session.agent_kubeconfig = str(cluster.service_account_kubeconfig(
        sas["agent"], session.namespace, session.sandbox / "agent.kubeconfig", bound_pod=pod))
    session.operator_kubeconfig = str(cluster.service_account_kubeconfig(
        sas["operator"], session.namespace, session.sandbox / "operator.kubeconfig"))


def forbidden_requests(e2e: E2E) -> list[str]:
    """Lines of the operator's and agent's logs where the API server refused a request (403)."""
    out = []
    for p in (e2e.operator, e2e.agent):
        if p is None:
            continue
        for line in p.log.read_text(errors="replace").splitlines():
            if "forbidden" in line.lower() and ("403" in line or "cannot" in line):
                out.append(f"{p.name}: {line.strip()[:400]}")
    return out[:20]


def leftovers(e2e: E2E) -> list[str]:
    """Loops, backing files, VGs and objects of this run that still exist."""
    out = []
    for kind in OBJECT_KINDS:
        for obj in e2e.kube.list(kind, f"{h.RUN_LABEL}={e2e.run}"):
            out.append(f"object {kind.plural}/{obj['metadata']['name']}")
    for dev, back in h.loops_under(e2e.sandbox):
        out.append(f"loop {dev} -> {back}")
    if e2e.local:
        for f in sorted(e2e.file_devices.glob("*")):
            out.append(f"file {f}")
    for vg in h.vgs_named(f"e2e{e2e.run}"):
        out.append(f"VG {vg}")
    return out


@pytest.fixture
def scenario(e2e: E2E) -> Iterator[E2E]:
    """Per test: whatever the test created is deleted afterwards (also when it failed) and must go."""
    start, loops = len(e2e.created), len(e2e.ledger.loops)
    yield e2e
    mine = e2e.created[start:]
    del e2e.created[start:]
    problems = _delete_run_objects(e2e, sorted(mine, key=lambda kn: OBJECT_KINDS.index(kn[0])))
    problems += e2e.undo_disko()  # deleting a DiskLayout never touches the node: undo what disko made
    problems += e2e.ledger.close(loops)
    if e2e.agent is not None and not e2e.agent.alive():
        e2e.start_agent()  # a scenario that stopped it failed halfway; later ones need it
    assert not problems, "cleanup after the scenario:\n  " + "\n  ".join(problems)


@pytest.fixture
def local_only(e2e: E2E) -> None:
    if not e2e.local:
        pytest.skip("needs operator and agent as local processes (E2E_MODE=local or E2E_MOCK=1)")


@pytest.fixture
def real_only(e2e: E2E) -> None:
    if not e2e.real:
        pytest.skip("needs a real API server (E2E_KUBECONFIG): the mock does not enforce this")


@pytest.fixture
def root_only() -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root (loop devices, LVM)")
