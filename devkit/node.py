"""A real node for the envtest control plane: containerd + runc + CNI bridge, kubelet, kube-scheduler.

:class:`Node` turns a running :class:`devkit.envtest.ControlPlane` into a one-node cluster that
really runs pods (the ``node`` test tier, docs/testing.md "The node tier"):

- **containerd** (Debian's, with its CRI plugin) on a socket in a throw-away directory, its root
  and state there too, ``restrict_oom_score_adj = true`` (a sandbox without ``CAP_SYS_RESOURCE``
  cannot lower an ``oom_score_adj``; without it every pod sandbox fails in runc), Debian's CNI
  plugins: a bridge ``envtest0`` with host-local addresses (the address book kept in the
  directory) for pods that do not use the host network;
- a **pause image** built here, since nothing can be pulled: a root file system holding only the
  host's ``sleep`` and its libraries (:func:`pause_rootfs`), made an image with ``podman import``
  and loaded with ``ctr images import``; the archive is kept in a cache directory
  (``DISKLET_NODE_CACHE``, default ``~/.cache/disklet-node``);
- **kubelet** (from ``KUBEBUILDER_ASSETS``) named ``localhost`` — the API server reaches a
  kubelet (logs, exec) at the node's Hostname address first, and a node IP may not be loopback —
  with a cgroup v1 configuration (``failCgroupV1: false``, cgroupfs, no QoS cgroups, no node
  allocatable enforcement), the kubelet API open to anonymous calls (test only), its ports free
  ones, its root, certificates and pod logs in the directory;
- **kube-scheduler** (same assets), so DaemonSet and Deployment pods are bound;
- once the node is Ready, its ``node.kubernetes.io/not-ready`` taint is removed (this control plane
  runs no node-lifecycle controller that would lift it).

:meth:`Node.stop` tears it down and proves that nothing is left: every pod task killed and
deleted (``ctr``), kubelet, scheduler and containerd stopped, no containerd shim of this node
running, every mount under the directory and every network namespace the node made unmounted and
removed, the bridge deleted, the pods' cgroups removed, the directory gone. It raises :class:`devkit.envtest.EnvtestError`
naming what is left otherwise.

No traffic leaves the machine: pods that talk to the API server use the host network and
``KUBERNETES_SERVICE_HOST=127.0.0.1`` (there is no kube-proxy and no cluster DNS here).

Manual use: ``python -m devkit.node`` starts a control plane with a node, prints the kubeconfig
and stops everything on Ctrl-C.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from devkit.envtest import (
    ControlPlane,
    EnvtestError,
    _Proc,
    assets_dir,
    free_port,
    ports_in_use,
    run,
    serve_until_signalled,
    unavailable_reason,
    wait_while_running,
)

NODE_NAME = "localhost"
BRIDGE = "envtest0"
CNI_NETWORK = "envtest"
POD_SUBNET = "10.244.0.0/24"
PAUSE_IMAGE = "localhost/envtest-pause:1"
NETNS_DIR = Path("/run/netns")
CGROUP_ROOT = Path("/sys/fs/cgroup")
CGROUP_PARENT = "k8s.io"  # where runc puts the pods' cgroups (cgroupfs driver, no QoS cgroups)
CNI_CACHE = Path("/var/lib/cni/results")
PROGRAMS = ("containerd", "runc", "ctr", "podman", "ip", "nsenter", "ldd")
CNI_BIN_DIRS = (Path("/usr/lib/cni"), Path("/opt/cni/bin"))


def cache_dir() -> Path:
    return Path(os.environ.get("DISKLET_NODE_CACHE") or Path.home() / ".cache" / "disklet-node")


def cni_bin_dir() -> Path | None:
    for d in CNI_BIN_DIRS:
        if all(os.access(d / p, os.X_OK) for p in ("bridge", "host-local", "loopback")):
            return d
    return None


def node_unavailable_reason() -> str | None:
    """None when a node can be added here, else one line saying what is missing."""
    reason = unavailable_reason()
    if reason:
        return reason.replace("real API server tier", "node tier")
    assets = assets_dir()
    assert assets is not None
    missing = [b for b in ("kubelet", "kube-scheduler") if not os.access(assets / b, os.X_OK)]
    if missing:
        return f"node tier skipped: {', '.join(missing)} not in {assets} (KUBEBUILDER_ASSETS)"
    if os.geteuid() != 0:
        return "node tier skipped: needs root (containerd, kubelet, loop devices)"
    tools = [p for p in PROGRAMS if shutil.which(p) is None]
    if tools:
        return (f"node tier skipped: {', '.join(tools)} not installed (scripts/bootstrap.sh installs "
                "containerd runc containernetworking-plugins podman iproute2)")
    if cni_bin_dir() is None:
        return "node tier skipped: CNI plugins missing (apt-get install containernetworking-plugins)"
    return None


# ------------------------------------------------------------------------------------------ host state
def _mountinfo() -> list[str]:
    """Mount points of this mount namespace (octal escapes decoded), in mount order."""
    out = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        parts = line.split()
        if len(parts) > 4:
            out.append(parts[4].encode().decode("unicode_escape"))
    return out


def _mounts_under(root: Path) -> list[str]:
    prefix = str(root).rstrip("/") + "/"
    return [m for m in _mountinfo() if m == str(root) or m.startswith(prefix)]


def _processes_mentioning(needle: str) -> list[tuple[int, str]]:
    """(pid, command line) of every process whose command line contains ``needle``."""
    found = []
    for d in Path("/proc").iterdir():
        if not d.name.isdigit() or int(d.name) == os.getpid():
            continue
        try:
            cmd = (d / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
        except OSError:
            continue
        if needle in cmd:
            found.append((int(d.name), cmd))
    return found


def _link_exists(name: str) -> bool:
    return Path("/sys/class/net", name).exists()


def _netns_entries() -> set[str]:
    try:
        return {p.name for p in NETNS_DIR.iterdir()}
    except OSError:
        return set()


def _pod_cgroups() -> set[Path]:
    """The pod cgroup parent in each cgroup v1 hierarchy (or the v2 root), where it exists."""
    try:
        return {d / CGROUP_PARENT for d in [CGROUP_ROOT, *CGROUP_ROOT.iterdir()] if (d / CGROUP_PARENT).is_dir()}
    except OSError:
        return set()


def _remove_cgroup_tree(top: Path) -> None:
    """rmdir ``top`` and its (empty, process-free) child cgroups, deepest first."""
    for dirpath, _dirs, _files in sorted(os.walk(top), key=lambda w: len(w[0]), reverse=True):
        with contextlib.suppress(OSError):
            os.rmdir(dirpath)


def pause_rootfs(out: Path) -> None:
    """A root file system that only sleeps: the host's ``sleep`` and the libraries ``ldd`` names
    for it (a pod sandbox's process does nothing else). Seconds, where a Debian minbase takes
    ~25 s to ``mmdebstrap`` (minutes on a loaded machine)."""
    sleep = shutil.which("sleep")
    if sleep is None:
        raise EnvtestError("no sleep binary on PATH for the pause image")
    files = {"bin/sleep": os.path.realpath(sleep)}
    for line in run(["ldd", "--", sleep], timeout=30).stdout.splitlines():
        for word in line.split():
            if word.startswith("/") and os.path.exists(word):
                files[word.lstrip("/")] = os.path.realpath(word)  # at the path the loader asks for
    dirs = {"tmp", "dev", "proc", "sys", "etc"}
    for arc in files:
        parent = Path(arc).parent
        while str(parent) != ".":
            dirs.add(str(parent))
            parent = parent.parent
    with tarfile.open(out, "w") as tar:
        for d in sorted(dirs):
            info = tarfile.TarInfo(d)
            info.type, info.mode = tarfile.DIRTYPE, 0o755
            tar.addfile(info)
        for arc, src in sorted(files.items()):
            tar.add(src, arcname=arc, recursive=False)


# ------------------------------------------------------------------------------------------ the node
@dataclass
class Node:
    """A kubelet-run node named ``localhost`` (plus a scheduler) for ``control_plane``."""

    control_plane: ControlPlane
    workdir: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="disklet-node-")))
    name: str = NODE_NAME
    procs: list[_Proc] = field(default_factory=list)
    ports: dict[str, int] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)
    _netns_before: set[str] = field(default_factory=set)
    _cni_cache_before: set[str] = field(default_factory=set)
    _cgroups_before: set[Path] = field(default_factory=set)

    @property
    def socket(self) -> Path:
        return self.workdir / "run" / "containerd.sock"

    @property
    def kubeconfig(self) -> str:
        return self.control_plane.kubeconfig

    def pid(self, name: str) -> int:
        """PID of one of this node's processes (``kubelet``, ``containerd``, ``kube-scheduler``)."""
        for p in self.procs:
            if p.name == name and p.popen.poll() is None:
                return p.popen.pid
        raise EnvtestError(f"{name} of this node is not running")

    # start -----------------------------------------------------------------------------------
    def start(self, timeout: float = 180) -> Node:
        reason = node_unavailable_reason()
        if reason:
            raise EnvtestError(reason)
        if _link_exists(BRIDGE) or _processes_mentioning("--hostname-override=" + self.name):
            raise EnvtestError(f"another node seems to run here (bridge {BRIDGE} or a kubelet named "
                               f"{self.name} exists); stop it first")
        self._netns_before = _netns_entries()
        self._cni_cache_before = self._cni_cache()
        self._cgroups_before = _pod_cgroups()
        try:
            self._start(timeout)
        except BaseException:
            with contextlib.suppress(Exception):
                self.stop()
            raise
        return self

    def _start(self, timeout: float) -> None:
        w = self.workdir
        for d in ("cni", "manifests", "kubelet", "run", "pod-logs", "cni-ipam"):
            (w / d).mkdir(parents=True, exist_ok=True)
        deadline = time.monotonic() + timeout
        t0 = time.monotonic()
        self._write_containerd_config()
        self._spawn("containerd", ["containerd", "--config", str(w / "containerd.toml")])
        self._wait(lambda: self.socket.is_socket(), deadline, "containerd socket")
        self.timings["containerd"] = time.monotonic() - t0
        t0 = time.monotonic()
        self.import_image(self._pause_archive(), PAUSE_IMAGE)
        self.timings["pause image"] = time.monotonic() - t0
        t0 = time.monotonic()
        self.ports = {"kubelet": free_port(), "kubelet-healthz": free_port()}
        self._write_kubelet_config()
        self._spawn("kubelet", [
            str(self.control_plane.assets / "kubelet"), f"--config={w / 'kubelet.yaml'}",
            f"--kubeconfig={self.kubeconfig}", f"--hostname-override={self.name}",
            f"--root-dir={w / 'kubelet'}", f"--cert-dir={w / 'kubelet' / 'pki'}"])
        kcfg = self.kubeconfig
        self._spawn("kube-scheduler", [
            str(self.control_plane.assets / "kube-scheduler"), f"--kubeconfig={kcfg}",
            f"--authentication-kubeconfig={kcfg}", f"--authorization-kubeconfig={kcfg}",
            "--leader-elect=false", "--secure-port=0"])
        self._wait(self._ready, deadline, f"node {self.name} Ready")
        self.control_plane.kubectl("taint", "node", self.name, "node.kubernetes.io/not-ready:NoSchedule-",
                                   check=False)
        self._wait(self._schedulable, deadline, f"node {self.name} without taints")
        self.timings["kubelet Ready"] = time.monotonic() - t0

    def _write_containerd_config(self) -> None:
        w = self.workdir
        cni_bin = cni_bin_dir()
        (w / "containerd.toml").write_text(f"""version = 2
root = "{w / 'containerd'}"
state = "{w / 'run' / 'state'}"
[grpc]
  address = "{self.socket}"
[ttrpc]
  address = "{self.socket}.ttrpc"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{PAUSE_IMAGE}"
  restrict_oom_score_adj = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
  [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
    runtime_type = "io.containerd.runc.v2"
  [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
    SystemdCgroup = false
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "{cni_bin}"
    conf_dir = "{w / 'cni'}"
""")
        conflist = {"cniVersion": "1.0.0", "name": CNI_NETWORK, "plugins": [
            {"type": "bridge", "bridge": BRIDGE, "isGateway": True,
             "ipam": {"type": "host-local", "dataDir": str(w / "cni-ipam"),
                      "ranges": [[{"subnet": POD_SUBNET}]]}},
            {"type": "portmap", "capabilities": {"portMappings": True}}]}
        (w / "cni" / "10-bridge.conflist").write_text(json.dumps(conflist))

    def _write_kubelet_config(self) -> None:
        w = self.workdir
        cfg = {
            "apiVersion": "kubelet.config.k8s.io/v1beta1", "kind": "KubeletConfiguration",
            "authentication": {"anonymous": {"enabled": True}, "webhook": {"enabled": False}},
            "authorization": {"mode": "AlwaysAllow"},
            "cgroupDriver": "cgroupfs", "cgroupsPerQOS": False, "enforceNodeAllocatable": [],
            "failSwapOn": False, "failCgroupV1": False,
            "containerRuntimeEndpoint": f"unix://{self.socket}",
            "staticPodPath": str(w / "manifests"), "podLogsDir": str(w / "pod-logs"),
            "address": "127.0.0.1", "port": self.ports["kubelet"], "readOnlyPort": 0,
            "healthzBindAddress": "127.0.0.1", "healthzPort": self.ports["kubelet-healthz"],
            "evictionHard": {}, "imageGCHighThresholdPercent": 100, "imageGCLowThresholdPercent": 99,
            "localStorageCapacityIsolation": False, "resolvConf": "/etc/resolv.conf",
            "serializeImagePulls": False, "syncFrequency": "10s", "fileCheckFrequency": "10s",
        }
        (w / "kubelet.yaml").write_text(json.dumps(cfg, indent=1))

    def _pause_archive(self) -> Path:
        """The pause image as an OCI archive, built once and kept in :func:`cache_dir`."""
        cached = cache_dir() / "envtest-pause.oci"
        if cached.exists():
            return cached
        cached.parent.mkdir(parents=True, exist_ok=True)
        build = Path(tempfile.mkdtemp(prefix="pause-", dir=self.workdir))
        rootfs = build / "rootfs.tar"
        pause_rootfs(rootfs)
        ref = PAUSE_IMAGE
        run(["podman", "import", "--quiet", "--change", 'CMD ["/bin/sleep","infinity"]', str(rootfs), ref],
            timeout=300)
        try:
            tmp = build / "pause.oci"
            run(["podman", "save", "--quiet", "--format", "oci-archive", "-o", str(tmp), ref], timeout=300)
            shutil.move(str(tmp), str(cached.with_suffix(".tmp")))
            os.replace(cached.with_suffix(".tmp"), cached)
        finally:
            run(["podman", "rmi", "--force", ref], timeout=120, check=False)
            shutil.rmtree(build, ignore_errors=True)
        return cached

    def ctr(self, *args: str, timeout: float = 120, check: bool = True) -> subprocess.CompletedProcess[str]:
        return run(["ctr", "--address", str(self.socket), "--namespace", "k8s.io", *args],
                   timeout=timeout, check=check)

    def import_image(self, archive: Path, name: str) -> None:
        """Load an OCI archive into the node's image store as ``name`` (pods use it with
        ``imagePullPolicy: Never``)."""
        res = self.ctr("images", "import", "--index-name", name, str(archive), timeout=600)
        if name not in self.images():
            raise EnvtestError(f"ctr images import of {archive} did not make {name}: {res.stdout} {res.stderr}")

    def images(self) -> set[str]:
        return set(self.ctr("images", "list", "--quiet").stdout.split())

    def _ready(self) -> bool:
        node = self.control_plane.get("node", self.name)
        conds = {c["type"]: c["status"] for c in ((node or {}).get("status") or {}).get("conditions") or []}
        return conds.get("Ready") == "True"

    def _schedulable(self) -> bool:
        node = self.control_plane.get("node", self.name) or {}
        return not (node.get("spec") or {}).get("taints")

    def _spawn(self, name: str, argv: list[str]) -> None:
        self.procs.append(_Proc.spawn(name, argv, self.workdir))

    def _wait(self, ok: Any, deadline: float, what: str) -> None:
        wait_while_running(self.procs, ok, deadline, what)

    def log(self, name: str, lines: int = 40) -> str:
        for p in self.procs:
            if p.name == name:
                return p.tail(lines)
        return "<not started>"

    # stop ------------------------------------------------------------------------------------
    def stop(self, grace: float = 10) -> None:
        """Tear the node down (see the module docstring); raise if anything is left."""
        t0 = time.monotonic()
        running = {p.name for p in self.procs if p.popen.poll() is None}
        by_name = {p.name: p for p in self.procs}
        # The kubelet first, so it restarts nothing; then every container and pod sandbox of the
        # node, while containerd still runs (their shims exit with their last task).
        for name in ("kubelet", "kube-scheduler"):
            if name in by_name:
                by_name[name].stop(grace)
        self.timings["teardown kubelet"] = time.monotonic() - t0
        if "containerd" in running and self.socket.exists():
            self._kill_tasks()
        self.timings["teardown tasks"] = time.monotonic() - t0
        if "containerd" in by_name:
            by_name["containerd"].stop(grace)
        self.timings["teardown containerd"] = time.monotonic() - t0
        self._kill_shims()
        self._cleanup_host()
        self.timings["teardown host"] = time.monotonic() - t0
        problems = self.leftovers()
        if not problems:
            shutil.rmtree(self.workdir, ignore_errors=True)
            if self.workdir.exists():
                problems.append(f"directory {self.workdir} still exists")
        self.timings["teardown"] = time.monotonic() - t0
        if problems:
            raise EnvtestError("node teardown left things behind: " + "; ".join(problems))
        self.procs = []

    def _tasks(self) -> dict[str, str]:
        """Task id → status (RUNNING, STOPPED, ...) of every container and pod sandbox."""
        res = self.ctr("tasks", "list", check=False, timeout=60)
        rows = [line.split() for line in res.stdout.splitlines()[1:]]
        return {r[0]: r[-1] for r in rows if len(r) >= 3}

    def _kill_tasks(self, timeout: float = 30) -> None:
        """SIGKILL every task; containerd's CRI plugin deletes a task once it has exited (a task
        still listed as stopped is deleted here); wait until none is left."""
        for t in self._tasks():
            self.ctr("tasks", "kill", "--all", "--signal", "SIGKILL", t, check=False, timeout=30)
        deadline = time.monotonic() + timeout
        while (tasks := self._tasks()) and time.monotonic() < deadline:
            for t, status in tasks.items():
                if status != "RUNNING":
                    self.ctr("tasks", "delete", t, check=False, timeout=30)
            time.sleep(0.2)
        res = self.ctr("containers", "list", "--quiet", check=False, timeout=60)
        for c in res.stdout.split():
            self.ctr("containers", "delete", c, check=False, timeout=60)

    def _kill_shims(self) -> None:
        """Any containerd shim of this node that outlived its tasks (a shim names its containerd's
        socket on its command line): SIGKILL, then wait for it to be gone."""
        for pid, _cmd in _processes_mentioning(str(self.socket)):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while _processes_mentioning(str(self.socket)) and time.monotonic() < deadline:
            time.sleep(0.1)

    def _cni_cache(self) -> set[str]:
        try:
            return {p.name for p in CNI_CACHE.iterdir() if p.name.startswith(CNI_NETWORK + "-")}
        except OSError:
            return set()

    def _cleanup_host(self) -> None:
        """Unmount what is left under the directory (deepest first), remove the network namespaces
        the node made, the bridge, and the CNI plugins' result cache of its network."""
        for m in sorted(_mounts_under(self.workdir), key=len, reverse=True):
            run(["umount", "--", m], timeout=30, check=False)
            if m in _mounts_under(self.workdir):
                run(["umount", "--lazy", "--", m], timeout=30, check=False)
        for ns in sorted(_netns_entries() - self._netns_before):
            path = NETNS_DIR / ns
            run(["umount", "--", str(path)], timeout=30, check=False)
            with contextlib.suppress(OSError):
                path.unlink()
        if _link_exists(BRIDGE):
            run(["ip", "link", "del", BRIDGE], timeout=30, check=False)
        for cg in _pod_cgroups() - self._cgroups_before:
            _remove_cgroup_tree(cg)
        for name in self._cni_cache() - self._cni_cache_before:
            with contextlib.suppress(OSError):
                (CNI_CACHE / name).unlink()

    def leftovers(self) -> list[str]:
        """What this node started or made that is still there."""
        out = [line for p in self.procs for line in p.leftovers()]
        for pid, cmd in _processes_mentioning(str(self.socket)):
            out.append(f"process {pid} still uses the node's containerd: {cmd[:120]}")
        out += [f"mount {m} still mounted" for m in _mounts_under(self.workdir)]
        out += [f"network namespace {ns} still exists" for ns in sorted(_netns_entries() - self._netns_before)]
        if _link_exists(BRIDGE):
            out.append(f"bridge {BRIDGE} still exists")
        out += [f"cgroup {cg} still exists" for cg in sorted(_pod_cgroups() - self._cgroups_before)]
        return out + ports_in_use(self.ports)


@contextlib.contextmanager
def cluster_with_node() -> Iterator[tuple[ControlPlane, Node]]:
    """A control plane with a node; both stopped (and proven gone) afterwards."""
    reason = node_unavailable_reason()
    if reason:
        raise EnvtestError(reason)
    assets = assets_dir()
    assert assets is not None
    cp = ControlPlane(assets=assets).start()
    try:
        node = Node(cp).start()
        try:
            yield cp, node
        finally:
            node.stop()
    finally:
        cp.stop()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m devkit.node",
        description="Start the envtest control plane plus a real node (containerd, kubelet named "
                    "localhost, kube-scheduler), print the kubeconfig, stop everything on Ctrl-C.")
    parser.add_argument("--import", dest="imports", action="append", default=[], metavar="ARCHIVE=NAME",
                        help="load an OCI archive into the node as image NAME (repeatable)")
    args = parser.parse_args(argv)

    @contextlib.contextmanager
    def session() -> Iterator[list[str]]:
        with cluster_with_node() as (cp, node):
            for spec in args.imports:
                archive, _, name = spec.partition("=")
                node.import_image(Path(archive), name)
            yield [f"node {node.name} Ready ({', '.join(f'{k} {v:.1f}s' for k, v in node.timings.items())})",
                   f"export KUBECONFIG={cp.kubeconfig}",
                   f"containerd: ctr --address {node.socket} -n k8s.io ...; kubelet pid {node.pid('kubelet')}"]

    return serve_until_signalled(node_unavailable_reason(), session,
                                 "node and control plane stopped; nothing left running")

if __name__ == "__main__":
    sys.exit(main())
