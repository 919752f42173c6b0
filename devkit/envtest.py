"""A real Kubernetes control plane for tests: etcd + kube-apiserver + kube-controller-manager.

Follows controller-runtime's *envtest* convention: the ``kube-apiserver`` and
``kube-controller-manager`` binaries are found in the folder named by ``KUBEBUILDER_ASSETS``
(default: ``../shared/envtest`` beside the repository, when it exists); ``etcd`` comes from that
folder too when present, else from ``PATH`` (Debian's ``etcd-server``).

:class:`ControlPlane` starts all three on free loopback ports in a throw-away directory with a
``system:masters`` token, RBAC, a service-account signing key and a kubeconfig, and
:meth:`ControlPlane.stop` tears them down (controller-manager, apiserver: SIGTERM, a few seconds,
SIGKILL; then etcd), deletes the directory and raises if anything it started is still running.
There is no scheduler and no kubelet: Pods are stored but never run, so helpers bind them to a
Node with ``spec.nodeName`` and force-delete them.

:class:`Cluster` holds the helpers (kubectl, apply, ServiceAccount tokens, Nodes, Pods) and works
on any kubeconfig with admin rights, so the same tests can run against ``E2E_KUBECONFIG``.

Manual use: ``python -m devkit.envtest`` starts a control plane, prints the kubeconfig path
and stops everything on Ctrl-C (docs/testing.md).
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import json
import os
import secrets
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[1]
TOOLS = REPO / ".tools" / "bin"
ASSETS_ENV = "KUBEBUILDER_ASSETS"
ENABLE_HINT = (f"real API server tier skipped: set {ASSETS_ENV}=<dir with kube-apiserver and "
               "kube-controller-manager> (etcd on PATH) or E2E_KUBECONFIG=<kubeconfig>; see docs/testing.md")
NODE_NAME_CLAIM = "authentication.kubernetes.io/node-name"
CONTROLLERS = "*,-nodeipam,-nodelifecycle,-service,-route,-cloud-node-lifecycle,-persistentvolume-binder,-attachdetach"


class EnvtestError(RuntimeError):
    """The control plane could not be started, or could not be stopped cleanly."""


# ------------------------------------------------------------------------------------------ assets
def default_assets_dir() -> Path:
    """``../shared/envtest`` beside the repository (the CI layout); only a computed default."""
    return REPO.parent / "shared" / "envtest"


def assets_dir() -> Path | None:
    """Where kube-apiserver and kube-controller-manager are, or None (``KUBEBUILDER_ASSETS`` first)."""
    named = os.environ.get(ASSETS_ENV)
    candidates = [Path(named)] if named else [default_assets_dir()]
    for d in candidates:
        if all(os.access(d / b, os.X_OK) for b in ("kube-apiserver", "kube-controller-manager")):
            return d
    return None


def etcd_binary(assets: Path) -> str | None:
    own = assets / "etcd"
    if os.access(own, os.X_OK):
        return str(own)
    return shutil.which("etcd")


def unavailable_reason() -> str | None:
    """None when a control plane can be started here, else the one line saying how to enable it."""
    assets = assets_dir()
    if assets is None:
        return ENABLE_HINT
    if etcd_binary(assets) is None:
        return f"real API server tier skipped: etcd not on PATH (apt-get install etcd-server; {ENABLE_HINT})"
    if shutil.which("openssl") is None:
        return "real API server tier skipped: openssl missing (scripts/bootstrap.sh installs it)"
    return None


def tool(name: str) -> str:
    """kubectl/helm from .tools/bin (scripts/bootstrap.sh), else from PATH."""
    local = TOOLS / name
    if local.exists():
        return str(local)
    found = shutil.which(name)
    if not found:
        raise FileNotFoundError(f"{name} not found in {TOOLS} or PATH (run scripts/bootstrap.sh)")
    return found


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


def run(argv: Sequence[str], *, timeout: float = 60, input: str | None = None, check: bool = True,
        env: dict[str, str] | None = None, error: type[Exception] = EnvtestError,
        cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """Run a test helper's own host command (argv list, bounded, output captured); ``check``: raise
    ``error`` saying what exited how when it fails (the e2e harness raises AssertionError)."""
    res = subprocess.run(list(argv), capture_output=True, text=True, timeout=timeout, input=input, env=env,
                         check=False, cwd=cwd)
    if check and res.returncode != 0:
        raise error(f"{' '.join(argv)} exited {res.returncode}: {(res.stderr.strip() or res.stdout.strip())}")
    return res


def wait_until(predicate: Callable[[], Any], *, timeout: float, what: str, interval: float = 0.25,
               describe: Callable[[], str] | None = None) -> Any:
    """Poll until ``predicate()`` is truthy (an outcome, never a fixed sleep); fail saying what was
    awaited and what was seen last (``describe()``, else the predicate's last value)."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = predicate()
        if last:
            return last
        time.sleep(interval)
    seen = describe() if describe else repr(last)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}\n  last seen: {seen}")


# ------------------------------------------------------------------------------------------ client
class Cluster:
    """Helpers on one cluster reached through an admin kubeconfig (envtest or ``E2E_KUBECONFIG``)."""

    def __init__(self, kubeconfig: str | Path):
        self.kubeconfig = str(kubeconfig)

    # kubectl ---------------------------------------------------------------------------------
    def kubectl(self, *args: str, input: str | None = None, timeout: float = 60, check: bool = True,
                kubeconfig: str | Path | None = None) -> subprocess.CompletedProcess[str]:
        argv = [tool("kubectl"), "--kubeconfig", str(kubeconfig or self.kubeconfig), *args]
        return run(argv, timeout=timeout, input=input, check=check)

    def get(self, *args: str) -> dict[str, Any] | None:
        """``kubectl get ARGS -o json``; None when not found."""
        res = self.kubectl("get", *args, "-o", "json", check=False)
        if res.returncode != 0:
            if "NotFound" in res.stderr or "not found" in res.stderr:
                return None
            raise EnvtestError(f"kubectl get {' '.join(args)}: {res.stderr.strip()}")
        return json.loads(res.stdout)  # type: ignore[no-any-return]

    def apply(self, objs: dict[str, Any] | Sequence[dict[str, Any]] | str | Path, *,
              server_side: bool = True, namespace: str | None = None) -> str:
        """Apply objects (dicts), YAML text, or a file/directory path; returns kubectl's output."""
        args = ["apply", "--server-side", "--force-conflicts"] if server_side else ["apply"]
        if namespace:
            args += ["-n", namespace]
        if isinstance(objs, Path) or (isinstance(objs, str) and "\n" not in objs and Path(objs).exists()):
            return self.kubectl(*args, "-f", str(objs)).stdout
        text = objs if isinstance(objs, str) else yaml.safe_dump_all(
            [objs] if isinstance(objs, dict) else list(objs), sort_keys=False)
        return self.kubectl(*args, "-f", "-", input=text).stdout

    def delete(self, *args: str, wait: bool = True) -> None:
        self.kubectl("delete", "--ignore-not-found", f"--wait={str(wait).lower()}", *args, timeout=120)

    def wait_for(self, predicate: Callable[[], Any], *, timeout: float = 60, what: str = "a condition",
                 interval: float = 0.2) -> Any:
        """Poll ``predicate`` until truthy (an outcome on the server, never a fixed sleep)."""
        return wait_until(predicate, timeout=timeout, what=what, interval=interval)

    # namespaces, nodes, pods -------------------------------------------------------------------
    def namespace(self, name: str) -> str:
        """Create a namespace (idempotent) and wait for its ``default`` ServiceAccount."""
        self.apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}})
        return name

    def service_account(self, name: str, namespace: str) -> None:
        self.apply({"apiVersion": "v1", "kind": "ServiceAccount",
                    "metadata": {"name": name, "namespace": namespace}})

    def create_node(self, name: str, labels: dict[str, str] | None = None, ready: bool = True) -> dict[str, Any]:
        """A Node object (no kubelet behind it); Ready unless ``ready=False``."""
        labels = {"kubernetes.io/hostname": name, **(labels or {})}
        self.apply({"apiVersion": "v1", "kind": "Node", "metadata": {"name": name, "labels": labels}})
        if ready:
            now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
            patch = {"status": {"conditions": [{"type": "Ready", "status": "True", "reason": "Envtest",
                                                "message": "registered by devkit.envtest",
                                                "lastHeartbeatTime": now, "lastTransitionTime": now}]}}
            self.kubectl("patch", "node", name, "--subresource=status", "--type=merge", "-p", json.dumps(patch))
        node = self.get("node", name)
        assert node is not None
        return node

    def create_pod(self, name: str, namespace: str, node: str, service_account: str = "default",
                   labels: dict[str, str] | None = None) -> dict[str, Any]:
        """A Pod bound to ``node`` (``spec.nodeName``); it never runs (there is no kubelet)."""
        self._wait_service_account(service_account, namespace)
        self.apply({"apiVersion": "v1", "kind": "Pod",
                    "metadata": {"name": name, "namespace": namespace, "labels": labels or {}},
                    "spec": {"nodeName": node, "serviceAccountName": service_account,
                             "automountServiceAccountToken": False,
                             "containers": [{"name": "c", "image": "registry.invalid/none:0"}]}})
        pod = self.get("pod", name, "-n", namespace)
        assert pod is not None
        return pod

    def force_delete_pod(self, name: str, namespace: str) -> None:
        """Pods never finish terminating without a kubelet: delete with grace period 0."""
        self.kubectl("delete", "pod", name, "-n", namespace, "--ignore-not-found", "--grace-period=0",
                     "--force", "--wait=false")

    def _wait_service_account(self, name: str, namespace: str) -> None:
        self.wait_for(lambda: self.get("serviceaccount", name, "-n", namespace), timeout=60,
                      what=f"ServiceAccount {namespace}/{name}")

    # identities ------------------------------------------------------------------------------
    def token_for(self, service_account: str, namespace: str, bound_pod: str | None = None,
                  duration: str = "1h") -> str:
        """A TokenRequest token for the ServiceAccount; bound to ``bound_pod`` (same namespace)
        when given, so it carries the Pod's node in ``authentication.kubernetes.io/node-name``."""
        args = ["create", "token", service_account, "-n", namespace, f"--duration={duration}"]
        if bound_pod:
            args += ["--bound-object-kind", "Pod", "--bound-object-name", bound_pod]
        return self.kubectl(*args).stdout.strip()

    def kubeconfig_for_token(self, token: str, path: str | Path, namespace: str | None = None) -> Path:
        """A copy of the admin kubeconfig whose user is ``token`` (for a process running as an SA);
        ``namespace``: the context's namespace, as a pod's own namespace is in-cluster (Kopf, for
        one, posts Events about cluster-scoped objects there)."""
        cfg = yaml.safe_load(Path(self.kubeconfig).read_text())
        ctx_name = cfg.get("current-context")
        ctx = next(c for c in cfg["contexts"] if c["name"] == ctx_name)["context"]
        cluster = next(c for c in cfg["clusters"] if c["name"] == ctx["cluster"])
        out = {"apiVersion": "v1", "kind": "Config", "clusters": [cluster],
               "users": [{"name": "sa", "user": {"token": token}}],
               "contexts": [{"name": "sa", "context": {"cluster": ctx["cluster"], "user": "sa",
                                                       **({"namespace": namespace} if namespace else {})}}],
               "current-context": "sa"}
        path = Path(path)
        path.write_text(yaml.safe_dump(out))
        path.chmod(0o600)
        return path

    def apply_chart_rbac(self, chart: str | Path, release: str, namespace: str,
                         values: dict[str, Any] | None = None) -> list[dict[str, Any]]:
        """Render ``chart`` with ``helm template`` and apply only its identities and permissions
        (ServiceAccounts, Roles, RoleBindings, ClusterRoles, ClusterRoleBindings) in ``namespace``;
        returns the applied objects. Workloads are not applied (there is no kubelet). Cluster-scoped
        names come from ``release``: give each user of one control plane its own release name, or
        one installation's bindings replace another's."""
        argv = [tool("helm"), "template", release, str(chart), "--namespace", namespace, "-f", "-"]
        text = run(argv, timeout=120, input=yaml.safe_dump(values or {})).stdout
        kinds = {"ServiceAccount", "Role", "RoleBinding", "ClusterRole", "ClusterRoleBinding"}
        docs = [d for d in yaml.safe_load_all(text) if isinstance(d, dict) and d.get("kind") in kinds]
        for d in docs:
            if d["kind"] in ("ServiceAccount", "Role", "RoleBinding"):
                d["metadata"].setdefault("namespace", namespace)
        self.namespace(namespace)
        if docs:
            self.apply(docs)
        return docs

    def service_account_kubeconfig(self, service_account: str, namespace: str, path: str | Path,
                                   bound_pod: str | None = None) -> Path:
        """A kubeconfig that authenticates as the ServiceAccount (a TokenRequest token), with the
        ServiceAccount's namespace as the default namespace, like in-cluster credentials."""
        return self.kubeconfig_for_token(self.token_for(service_account, namespace, bound_pod), path, namespace)

    def whoami(self, kubeconfig: str | Path | None = None) -> dict[str, Any]:
        """``kubectl auth whoami`` (SelfSubjectReview) for a kubeconfig: the user the server sees."""
        return json.loads(self.kubectl("auth", "whoami", "-o", "json", kubeconfig=kubeconfig).stdout)  # type: ignore[no-any-return]

    def can_i(self, verb: str, resource: str, *, as_sa: tuple[str, str] | None = None,
              namespace: str | None = None, subresource: str | None = None) -> bool:
        """``kubectl auth can-i`` (optionally impersonating ``system:serviceaccount:NS:NAME``)."""
        args = ["auth", "can-i", verb, resource]
        if subresource:
            args += ["--subresource", subresource]
        if namespace:
            args += ["-n", namespace]
        if as_sa:
            args += ["--as", f"system:serviceaccount:{as_sa[1]}:{as_sa[0]}"]
        res = self.kubectl(*args, check=False)
        return res.stdout.strip() == "yes"


# ------------------------------------------------------------------------------------------ processes
@dataclass
class _Proc:
    name: str
    popen: subprocess.Popen[bytes]
    log: Path

    @classmethod
    def spawn(cls, name: str, argv: list[str], workdir: Path) -> _Proc:
        """Start ``argv`` in its own session in ``workdir``, output to ``workdir/<name>.log``."""
        log = workdir / f"{name}.log"
        with log.open("ab") as fh:
            popen = subprocess.Popen(argv, stdout=fh, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                     start_new_session=True, cwd=str(workdir))
        return cls(name, popen, log)

    def tail(self, lines: int = 25) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "<no log>"

    def stop(self, grace: float) -> None:
        """SIGTERM this process's own group, SIGKILL after ``grace`` seconds, reap it."""
        if self.popen.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.popen.pid, signal.SIGTERM)
            try:
                self.popen.wait(grace)
            except subprocess.TimeoutExpired:
                pass
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.popen.pid, signal.SIGKILL)  # stragglers in the group too
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.popen.wait(10)

    def leftovers(self) -> list[str]:
        """This process if it still runs, and its process group if it still has members."""
        out = []
        if self.popen.poll() is None:
            out.append(f"{self.name} (pid {self.popen.pid}) still running")
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.popen.pid, 0)
            out.append(f"process group {self.popen.pid} ({self.name}) still has members")
        return out


def wait_while_running(procs: Sequence[_Proc], ok: Callable[[], Any], deadline: float, what: str) -> None:
    """Poll ``ok`` until it is true; raise :class:`EnvtestError` with the logs' tails when one of
    ``procs`` exits first or ``deadline`` (monotonic) passes. ``ok`` failing with OSError, ValueError
    or EnvtestError counts as not yet."""
    while time.monotonic() < deadline:
        for p in procs:
            if p.popen.poll() is not None:
                raise EnvtestError(f"{p.name} exited {p.popen.returncode} while waiting for {what}:\n{p.tail()}")
        with contextlib.suppress(OSError, ValueError, EnvtestError):
            if ok():
                return
        time.sleep(0.2)
    logs = "\n".join(f"---- {p.name}\n{p.tail()}" for p in procs)
    raise EnvtestError(f"timed out waiting for {what}\n{logs}")


def ports_in_use(ports: dict[str, int]) -> list[str]:
    """One line per named port that still accepts connections (a teardown's leftovers)."""
    return [f"{name} port {port} still accepts connections" for name, port in ports.items() if _port_open(port)]


@dataclass
class ControlPlane(Cluster):
    """etcd + kube-apiserver + kube-controller-manager, started by :meth:`start`."""

    assets: Path
    workdir: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="disklet-envtest-")))
    controller_manager: bool = True
    admin_token: str = field(default_factory=lambda: secrets.token_urlsafe(24))
    procs: list[_Proc] = field(default_factory=list)
    ports: dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        Cluster.__init__(self, self.workdir / "kubeconfig")

    @property
    def server(self) -> str:
        return f"https://127.0.0.1:{self.ports['apiserver']}"

    @property
    def ca_file(self) -> Path:
        return self.workdir / "pki" / "apiserver.crt"

    # start -----------------------------------------------------------------------------------
    def start(self, timeout: float = 90) -> ControlPlane:
        """Start everything and wait until the API is ready and the controllers run."""
        atexit.register(self._stop_quietly)
        try:
            self._start(timeout)
        except BaseException:
            self._stop_quietly()
            raise
        return self

    def _start(self, timeout: float) -> None:
        w = self.workdir
        etcd = etcd_binary(self.assets)
        if etcd is None:
            raise EnvtestError("etcd not found in KUBEBUILDER_ASSETS or PATH (apt-get install etcd-server)")
        self.ports = {"etcd": free_port(), "etcd-peer": free_port(), "apiserver": free_port()}
        ep, pp = self.ports["etcd"], self.ports["etcd-peer"]
        self._spawn("etcd", [
            etcd, "--data-dir", str(w / "etcd"), "--name", "default",
            "--listen-client-urls", f"http://127.0.0.1:{ep}", "--advertise-client-urls", f"http://127.0.0.1:{ep}",
            "--listen-peer-urls", f"http://127.0.0.1:{pp}", "--initial-advertise-peer-urls", f"http://127.0.0.1:{pp}",
            "--initial-cluster", f"default=http://127.0.0.1:{pp}", "--unsafe-no-fsync"])
        run(["openssl", "genrsa", "-out", str(w / "sa.key"), "2048"], timeout=60)
        run(["openssl", "rsa", "-in", str(w / "sa.key"), "-pubout", "-out", str(w / "sa.pub")], timeout=60)
        tokens = w / "tokens.csv"
        tokens.write_text(f'{self.admin_token},admin,admin-uid,"system:masters"\n')
        tokens.chmod(0o600)
        self._spawn("kube-apiserver", [
            str(self.assets / "kube-apiserver"), f"--etcd-servers=http://127.0.0.1:{ep}",
            f"--cert-dir={w / 'pki'}", f"--secure-port={self.ports['apiserver']}", "--bind-address=127.0.0.1",
            "--advertise-address=127.0.0.1", "--service-account-issuer=https://kubernetes.default.svc",
            f"--service-account-key-file={w / 'sa.pub'}", f"--service-account-signing-key-file={w / 'sa.key'}",
            f"--token-auth-file={tokens}", "--authorization-mode=RBAC",
            "--service-cluster-ip-range=10.96.0.0/24", "--endpoint-reconciler-type=none",
            "--allow-privileged=true"])
        self._write_kubeconfig()
        deadline = time.monotonic() + timeout
        self._wait(lambda: self._readyz(), deadline, "kube-apiserver /readyz")
        if self.controller_manager:
            self._spawn("kube-controller-manager", [
                str(self.assets / "kube-controller-manager"), f"--kubeconfig={self.kubeconfig}",
                f"--authentication-kubeconfig={self.kubeconfig}", f"--authorization-kubeconfig={self.kubeconfig}",
                f"--service-account-private-key-file={w / 'sa.key'}", f"--root-ca-file={self.ca_file}",
                "--leader-elect=false", "--secure-port=0", f"--controllers={CONTROLLERS}"])
            # The ServiceAccount controller creating default/default proves the controllers run.
            self._wait(lambda: self._http("GET", "/api/v1/namespaces/default/serviceaccounts/default")[0] == 200,
                       deadline, "kube-controller-manager (default ServiceAccount)")

    def _spawn(self, name: str, argv: list[str]) -> None:
        self.procs.append(_Proc.spawn(name, argv, self.workdir))

    def _wait(self, ok: Callable[[], bool], deadline: float, what: str) -> None:
        wait_while_running(self.procs, ok, deadline, what)

    def _write_kubeconfig(self) -> None:
        cfg = {"apiVersion": "v1", "kind": "Config",
               "clusters": [{"name": "envtest", "cluster": {"server": self.server,
                                                             "certificate-authority": str(self.ca_file)}}],
               "users": [{"name": "admin", "user": {"token": self.admin_token}}],
               "contexts": [{"name": "envtest", "context": {"cluster": "envtest", "user": "admin"}}],
               "current-context": "envtest"}
        Path(self.kubeconfig).write_text(yaml.safe_dump(cfg, sort_keys=False))
        Path(self.kubeconfig).chmod(0o600)

    def _http(self, method: str, path: str) -> tuple[int, bytes]:
        ctx = ssl.create_default_context(cafile=str(self.ca_file))
        req = urllib.request.Request(self.server + path, method=method,
                                     headers={"Authorization": f"Bearer {self.admin_token}"})
        try:
            with urllib.request.urlopen(req, context=ctx, timeout=5) as resp:  # noqa: S310 - our own loopback URL
                return int(resp.status), resp.read()
        except urllib.error.HTTPError as exc:
            return int(exc.code), exc.read()

    def _readyz(self) -> bool:
        return self.ca_file.exists() and self._http("GET", "/readyz")[0] == 200

    # stop ------------------------------------------------------------------------------------
    def stop(self, grace: float = 5) -> None:
        """Stop controller-manager and apiserver (SIGTERM, ``grace`` s, SIGKILL), then etcd; delete
        the directory; raise :class:`EnvtestError` if any process or port is left."""
        with contextlib.suppress(ValueError):
            atexit.unregister(self._stop_quietly)
        order = {"kube-controller-manager": 0, "kube-apiserver": 1, "etcd": 2}
        for p in sorted(self.procs, key=lambda p: order.get(p.name, 0)):
            p.stop(grace)
        problems = self.leftovers()
        shutil.rmtree(self.workdir, ignore_errors=True)
        if self.workdir.exists():
            problems.append(f"directory {self.workdir} still exists")
        self.procs = []
        if problems:
            raise EnvtestError("envtest teardown left things behind: " + "; ".join(problems))

    def leftovers(self) -> list[str]:
        """Processes this control plane started that still run, and its ports still listening."""
        return [line for p in self.procs for line in p.leftovers()] + ports_in_use(self.ports)

    def _stop_quietly(self) -> None:
        with contextlib.suppress(Exception):
            self.stop()


@contextlib.contextmanager
def control_plane(assets: Path | None = None, *, controller_manager: bool = True) -> Iterator[ControlPlane]:
    """Start a :class:`ControlPlane` (assets found as documented above) and stop it afterwards."""
    assets = assets or assets_dir()
    if assets is None:
        raise EnvtestError(ENABLE_HINT)
    cp = ControlPlane(assets=assets, controller_manager=controller_manager).start()
    try:
        yield cp
    finally:
        cp.stop()


# ------------------------------------------------------------------------------------------ CLI
def serve_until_signalled(reason: str | None, session: Callable[[], contextlib.AbstractContextManager[Sequence[str]]],
                          stopped: str) -> int:
    """The ``python -m devkit.envtest`` / ``python -m devkit.node`` loop: print ``reason`` and return 2
    when the session cannot start; else open ``session`` (it yields the lines to print once it is up),
    wait for SIGINT or SIGTERM, close it (its teardown proves nothing is left) and print ``stopped``."""
    if reason:
        print(reason, file=sys.stderr)
        return 2
    stop = {"now": False}

    def on_signal(signum: int, frame: Any) -> None:
        stop["now"] = True

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    with session() as lines:
        for line in lines:
            print(line, flush=True)
        print("Ctrl-C to stop", flush=True)
        while not stop["now"]:
            time.sleep(0.5)
    print(stopped, flush=True)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m devkit.envtest",
        description="Start etcd + kube-apiserver + kube-controller-manager on loopback, print the "
                    "kubeconfig path, stop everything on Ctrl-C (or SIGTERM). Assets from "
                    f"${ASSETS_ENV} (default {default_assets_dir()}); etcd from there or PATH.")
    parser.add_argument("--kubeconfig-out", metavar="FILE",
                        help="also copy the admin kubeconfig to FILE (removed again on exit)")
    parser.add_argument("--no-controller-manager", action="store_true",
                        help="run only etcd and kube-apiserver (no garbage collector, no namespace deletion)")
    args = parser.parse_args(argv)

    @contextlib.contextmanager
    def session() -> Iterator[list[str]]:
        t0 = time.monotonic()
        with control_plane(controller_manager=not args.no_controller_manager) as cp:
            copy = Path(args.kubeconfig_out) if args.kubeconfig_out else None
            if copy:
                shutil.copyfile(cp.kubeconfig, copy)
                copy.chmod(0o600)
            try:
                yield [f"envtest ready in {time.monotonic() - t0:.1f}s: {cp.server}",
                       f"export KUBECONFIG={copy or cp.kubeconfig}"]
            finally:
                if copy:
                    copy.unlink(missing_ok=True)

    return serve_until_signalled(unavailable_reason(), session, "envtest stopped; nothing left running")


if __name__ == "__main__":
    sys.exit(main())
