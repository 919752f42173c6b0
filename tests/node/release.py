"""The node tier's session objects: the host sandbox and the one Helm release the scenarios share."""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import shlex
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from devkit import disko as test_disko
from devkit.envtest import REPO, free_port, run, tool, wait_until
from devkit.node import Node
from tests.fake_commands import FAKE_NIXOS_REBUILD, FAKE_SYSTEMD_RUN

CHART = REPO / "charts" / "disklet"
COMPONENTS = ("operator", "agent")
IMAGES_ENV = "DISKLET_IMAGES_DIR"
README = REPO / "README.md"
RUN_LABEL = "disklet.io/node-tier-run"
ETC_DISKLET = Path("/etc/disklet")
GROUP = "disklet.io"


def images_dir() -> Path:
    """Where ``make images`` leaves the archives (``build/images``), or ``$DISKLET_IMAGES_DIR``."""
    return Path(os.environ.get(IMAGES_ENV) or REPO / "build" / "images")


def image_archives() -> dict[str, Path]:
    return {c: images_dir() / f"disklet-{c}.oci" for c in COMPONENTS}


def images_values() -> Path:
    """``make images``' values file: ``image.registry``/``tag``/``pullPolicy`` of the built images
    (README: ``helm install ... -f build/images/values.yaml``)."""
    return images_dir() / "values.yaml"


def built_images() -> dict[str, str]:
    """Component → image reference, as ``make images`` recorded it in ``images.json``."""
    built = json.loads((images_dir() / "images.json").read_text())["images"]
    return {c: str(built[c]["image"]) for c in COMPONENTS}


def images_missing() -> str | None:
    wanted = [*image_archives().values(), images_values(), images_dir() / "images.json"]
    missing = [str(p) for p in wanted if not p.is_file()]
    if missing:
        return f"node tier skipped: image archives missing ({', '.join(missing)}): run `make images` first"
    return None


def readme_blocks() -> list[list[str]]:
    """README "Try it on a cluster": its ``sh`` blocks, as lists of command lines (comments dropped)."""
    text = README.read_text()
    section = text[text.index("## Try it on a cluster"):]
    section = section[:section.index("\n## ", 1)] if "\n## " in section[1:] else section
    return [[line.strip() for line in block.splitlines() if line.strip() and not line.lstrip().startswith("#")]
            for block in re.findall(r"```sh\n(.*?)```", section, re.S)]


def readme_ctr_imports() -> list[str]:
    """README's containerd lines (``ctr -n k8s.io images import ...``), as written — the node tier
    loads the images with exactly these, so a wrong line fails the tier."""
    lines = [line for block in readme_blocks() for line in block if line.startswith("ctr ")]
    for component in COMPONENTS:
        archive = f"build/images/disklet-{component}.oci"
        assert any(archive in line for line in lines), f"README's ctr lines do not load {archive}: {lines}"
    return lines


def readme_install() -> list[str]:
    """README's install block: ``helm install ...`` and the ``rollout status`` lines after it."""
    blocks = [b for b in readme_blocks() if b and b[0].startswith("helm install ")]
    assert len(blocks) == 1, f"README's 'Try it on a cluster' should have one block starting with helm install: {blocks}"
    return blocks[0]


def readme_release(install_line: str) -> tuple[str, str]:
    """Release name and namespace of README's ``helm install NAME CHART -n NAMESPACE ...``."""
    argv = shlex.split(install_line)
    namespace = next(argv[i + 1] for i, a in enumerate(argv) if a in ("-n", "--namespace"))
    return argv[2], namespace


def readme_workdir(workdir: Path) -> Path:
    """A directory where README's relative paths mean this checkout's chart and the archives'
    directory (``charts/``, ``build/images/``)."""
    (workdir / "build").mkdir(parents=True, exist_ok=True)
    if not (workdir / "build" / "images").exists():
        (workdir / "build" / "images").symlink_to(images_dir().resolve(), target_is_directory=True)
        (workdir / "charts").symlink_to(REPO / "charts", target_is_directory=True)
    return workdir


def run_readme_line(line: str, workdir: Path, env: dict[str, str], timeout: float = 600) -> None:
    res = run(["bash", "-c", line], timeout=timeout, check=False, env=env, cwd=readme_workdir(workdir))
    assert res.returncode == 0, f"README's `{line}` failed ({res.returncode}): {res.stdout}{res.stderr}"


def import_images_as_readme(node: Node, workdir: Path) -> None:
    """Run README's ctr lines as written against the node's containerd (``CONTAINERD_ADDRESS``:
    ctr's own setting for its socket); then every image ``make images`` built must be in the
    kubelet's (``k8s.io``) store."""
    env = dict(os.environ, CONTAINERD_ADDRESS=str(node.socket))
    env.pop("CONTAINERD_NAMESPACE", None)
    for line in readme_ctr_imports():
        run_readme_line(line, workdir, env)
    have = node.images()
    missing = [ref for ref in built_images().values() if ref not in have]
    assert not missing, f"README's ctr lines did not make {missing} in the k8s.io namespace (have {sorted(have)})"


def needs_no_activation() -> bool:
    """Device-mapper activation cannot work without /dev/mapper/control and udev (CI machines)."""
    return not Path("/dev/mapper/control").exists() or not Path("/run/udev/control").exists()


LVM_CONFIG = 'global{activation=0} devices{filter=["a|^/dev/loop|","r|.*|"]}'


# ------------------------------------------------------------------------------------------ host
@dataclass
class Host:
    """The session's sandbox on the host: backing files, loops, the test disko's mounts."""

    sandbox: Path
    run_id: str
    etc_existed: bool
    loops: list[str] = field(default_factory=list)
    etc_made: list[str] = field(default_factory=list)
    """Entries of an existing /etc/disklet that this session's agent makes (removed at the end)."""

    @classmethod
    def create(cls) -> Host:
        run_id = secrets.token_hex(3)
        sandbox = Path(tempfile.mkdtemp(prefix=f"disklet-node-tier-{run_id}-"))
        for d in ("file-devices", "disks/root", "bin"):
            (sandbox / d).mkdir(parents=True)
        disko = f'#!/bin/sh\nexec "{test_disko.DISKO_COMMAND}" "$@"\n'
        for name, text in (("disko", disko), ("systemd-run", FAKE_SYSTEMD_RUN), ("nixos-rebuild", FAKE_NIXOS_REBUILD)):
            (sandbox / "bin" / name).write_text(text)
            (sandbox / "bin" / name).chmod(0o755)
        made = set() if not ETC_DISKLET.exists() else {"disk"} - {p.name for p in ETC_DISKLET.iterdir()}
        return cls(sandbox, run_id, ETC_DISKLET.exists(), etc_made=sorted(made))

    @property
    def file_devices(self) -> Path:
        return self.sandbox / "file-devices"

    @property
    def disks(self) -> Path:
        return self.sandbox / "disks"

    @property
    def disko_root(self) -> Path:
        return self.disks / "root"

    @property
    def bin(self) -> Path:
        return self.sandbox / "bin"

    @property
    def fake_log(self) -> Path:
        return self.sandbox / "fake-commands.jsonl"

    def vg(self, what: str) -> str:
        return f"nt{self.run_id}{what}"

    def name(self, what: str) -> str:
        return f"nt-{self.run_id}-{what}"

    def loop(self, what: str, size_mib: int = 64) -> str:
        """A loop device over a new backing file in the sandbox (what the test disko may touch)."""
        backing = self.disks / f"{what}.img"
        with backing.open("wb") as fh:
            fh.truncate(size_mib << 20)
        dev = run(["losetup", "--find", "--show", "--partscan", "--", str(backing)], timeout=60).stdout.strip()
        self.loops.append(dev)
        return dev

    def vgs(self) -> dict[str, list[str]]:
        """VG name → its PVs, for this session's VGs (read on the host, loop devices only)."""
        res = run(["vgs", "--noheadings", "--reportformat", "json", "-o", "vg_name,pv_name", "--config", LVM_CONFIG],
                  timeout=60, check=False)
        out: dict[str, list[str]] = {}
        with contextlib.suppress(ValueError, KeyError):
            for row in json.loads(res.stdout)["report"][0]["vg"]:
                if row["vg_name"].startswith(f"nt{self.run_id}"):
                    out.setdefault(row["vg_name"], []).append(row["pv_name"])
        return out

    def backing_loops(self) -> dict[str, str]:
        """Loop device → backing file, for loops over files of this sandbox."""
        res = run(["losetup", "--list", "--noheadings", "--output", "NAME,BACK-FILE"], timeout=30, check=False)
        out = {}
        for line in res.stdout.splitlines():
            parts = line.split(None, 1)
            if len(parts) == 2 and parts[1].strip().startswith(str(self.sandbox) + "/"):
                out[parts[0]] = parts[1].strip()
        return out

    def cleanup(self) -> None:
        problems = []
        with contextlib.suppress(Exception):
            test_disko_cleanup = __import__("devkit.disko.udev", fromlist=["cleanup"]).cleanup
            problems += test_disko_cleanup(self.disks, remove_vgs=False)
        for vg in self.vgs():
            run(["vgremove", "--force", "--force", "--yes", "--config", LVM_CONFIG, "--", vg], timeout=60, check=False)
        for dev in list(self.backing_loops()):
            run(["wipefs", "--all", "--quiet", "--", dev], timeout=30, check=False)
            run(["losetup", "--detach", dev], timeout=30, check=False)
        res = run(["findmnt", "--list", "--noheadings", "--output", "TARGET"], timeout=30, check=False)
        for m in sorted((m for m in res.stdout.split() if m.startswith(str(self.sandbox) + "/")), key=len, reverse=True):
            run(["umount", "--lazy", "--", m], timeout=30, check=False)
        shutil.rmtree(self.sandbox, ignore_errors=True)
        if not self.etc_existed:
            shutil.rmtree(ETC_DISKLET, ignore_errors=True)
        else:  # the layout state this session's agent wrote there
            for name in self.etc_made:
                shutil.rmtree(ETC_DISKLET / name, ignore_errors=True)
        left = list(self.backing_loops()) + list(self.vgs())
        if left or problems:
            raise AssertionError(f"node tier host cleanup left {left} {problems}")


# ------------------------------------------------------------------------------------------ release
@dataclass
class Release:
    """``helm install`` of the chart on the session's node, shared by the scenarios."""

    node: Node
    host: Host
    name: str
    namespace: str
    values: dict[str, Any]
    installed: bool = False
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def kubeconfig(self) -> str:
        return self.node.kubeconfig

    chart: Path = CHART

    @property
    def values_file(self) -> Path:
        return self.host.sandbox / "values.yaml"

    # install -----------------------------------------------------------------------------
    @classmethod
    def install(cls, node: Node, host: Host) -> Release:
        """README's way: its ctr lines load the images, its install block installs the chart as
        written — ``helm install ... -f build/images/values.yaml`` with the node tier's own values
        file appended (this node's needs, :meth:`default_values`) — and waits for the rollouts."""
        lines = readme_install()
        name, namespace = readme_release(lines[0])
        r = cls(node, host, name=name, namespace=namespace, values={})
        workdir = host.sandbox / "readme"
        t0 = time.monotonic()
        import_images_as_readme(node, workdir)
        r.timings["image import (README's ctr lines)"] = time.monotonic() - t0
        r.values = r.default_values()
        env = dict(os.environ, KUBECONFIG=r.kubeconfig, PATH=f"{REPO / '.tools' / 'bin'}:{os.environ.get('PATH', '')}")
        t0 = time.monotonic()
        run_readme_line(f"{lines[0]} -f {shlex.quote(str(r.write_values()))}", workdir, env, timeout=300)
        r.installed = True
        for line in lines[1:]:
            run_readme_line(line, workdir, env, timeout=300)
        r.timings["helm install + rollout status (README's lines)"] = time.monotonic() - t0
        return r

    def values_args(self) -> list[str]:
        """``-f build/images/values.yaml`` (the built images, as README installs them), then the
        node tier's own values (written from :attr:`values`)."""
        return ["-f", str(images_values()), "-f", str(self.write_values())]

    def upgrade(self) -> None:
        """``helm upgrade --wait`` with the current :attr:`values`, then both rollouts complete."""
        self.helm("upgrade", self.name, str(self.chart), "--namespace", self.namespace, *self.values_args(),
                  "--wait", "--timeout", "240s", timeout=300)
        self.rolled_out()

    def default_values(self) -> dict[str, Any]:
        """How the node tier installs the chart (over ``make images``' values file, see
        :meth:`values_args`): the host network with the API
        server's loopback address (no kube-proxy, no cluster DNS here), free ports (the host network
        is shared), the kubelet as nsenter target (PID 1 is not the host's init in this sandbox),
        the test disko and recording fakes of nixos-rebuild/systemd-run on the host."""
        api_port = self.kubeconfig_port()
        api_env = [{"name": "KUBERNETES_SERVICE_HOST", "value": "127.0.0.1"},
                   {"name": "KUBERNETES_SERVICE_PORT", "value": str(api_port)}]
        h = self.host
        agent_env = [*api_env,
                     {"name": "DISKLET_ALLOW_LOOP_TARGETS", "value": "1"},
                     {"name": "DISKLET_DISKO_COMMAND", "value": str(h.bin / "disko")},
                     {"name": "DISKLET_NIXOS_REBUILD_COMMAND", "value": str(h.bin / "nixos-rebuild")},
                     {"name": "DISKLET_SYSTEMD_RUN_COMMAND", "value": str(h.bin / "systemd-run")},
                     {"name": "FAKE_LOG", "value": str(h.fake_log)},
                     {"name": test_disko.ENV_SANDBOX, "value": str(h.disks)},
                     {"name": test_disko.ENV_ROOT, "value": str(h.disko_root)}]
        if needs_no_activation():
            agent_env.append({"name": "DISKLET_LVM_EXTRA_CONFIG", "value": "global{activation=0}"})
        return {
            "fileDevicesDirectory": str(h.file_devices),
            "operator": {"hostNetwork": True, "healthPort": free_port(), "metricsPort": free_port(),
                         "extraEnv": api_env},
            "agent": {"hostNetwork": True, "nsenterTarget": str(self.node.pid("kubelet")),
                      "healthPort": free_port(), "metricsPort": free_port(),
                      "scanIntervalSeconds": 2, "refusedRetrySeconds": 2, "extraEnv": agent_env},
        }

    def kubeconfig_port(self) -> int:
        cfg = yaml.safe_load(Path(self.kubeconfig).read_text())
        server = cfg["clusters"][0]["cluster"]["server"]
        return int(server.rsplit(":", 1)[1])

    def write_values(self) -> Path:
        self.values_file.write_text(yaml.safe_dump(self.values, sort_keys=False))
        return self.values_file

    # tools -------------------------------------------------------------------------------
    def helm(self, *args: str, timeout: float = 120, check: bool = True) -> Any:
        return run([tool("helm"), "--kubeconfig", self.kubeconfig, *args], timeout=timeout, check=check,
                   error=AssertionError)

    def kubectl(self, *args: str, timeout: float = 60, check: bool = True, input: str | None = None) -> Any:
        return run([tool("kubectl"), "--kubeconfig", self.kubeconfig, *args], timeout=timeout, check=check,
                   input=input, error=AssertionError)

    def kctl(self, *args: str, timeout: float = 120, check: bool = False) -> Any:
        """``kubectl disklet ...`` (the plugin is kctl) against the session's cluster."""
        env = dict(os.environ, KUBECONFIG=self.kubeconfig, PYTHONPATH=f"{REPO}:{REPO / 'operator'}:{REPO / 'agent'}")
        return run([sys.executable, "-m", "disklet.cli.main", *args], timeout=timeout,
                   check=check, env=env, error=AssertionError)

    def get(self, *args: str) -> dict[str, Any] | None:
        res = self.kubectl("get", *args, "-o", "json", check=False)
        if res.returncode != 0:
            if "NotFound" in res.stderr or "not found" in res.stderr:
                return None
            raise AssertionError(res.stderr)
        return json.loads(res.stdout)  # type: ignore[no-any-return]

    def apply(self, obj: dict[str, Any]) -> None:
        meta = obj.setdefault("metadata", {})
        meta.setdefault("labels", {})[RUN_LABEL] = self.host.run_id
        self.kubectl("apply", "--server-side", "-f", "-", input=json.dumps(obj))

    def pods(self, component: str) -> list[dict[str, Any]]:
        sel = f"app.kubernetes.io/component={component},app.kubernetes.io/instance={self.name}"
        return list((self.get("pods", "-n", self.namespace, "-l", sel) or {}).get("items") or [])

    def pod(self, component: str) -> dict[str, Any]:
        """The one running pod of ``component`` (not one being deleted)."""
        live = [p for p in self.pods(component) if not p["metadata"].get("deletionTimestamp")]
        assert len(live) == 1, f"expected one {component} pod, found {[p['metadata']['name'] for p in live]}"
        return live[0]

    def container_pids(self, component: str) -> list[int]:
        """Host PIDs of the component's container (the processes whose cgroup names it), lowest first."""
        pod = self.pod(component)
        cid = pod["status"]["containerStatuses"][0]["containerID"].split("://", 1)[1]
        pids = []
        for d in Path("/proc").iterdir():
            if not d.name.isdigit():
                continue
            with contextlib.suppress(OSError):
                if cid in (d / "cgroup").read_text():
                    pids.append(int(d.name))
        if not pids:
            raise AssertionError(f"no host process of container {cid} ({component})")
        return sorted(pids)

    def container_pid(self, component: str) -> int:
        """Host PID of the component's main process (the container's first process)."""
        return self.container_pids(component)[0]

    def logs(self, component: str, *, previous: bool = False, tail: int = 200) -> str:
        args = ["logs", "-n", self.namespace, self.pod(component)["metadata"]["name"], f"--tail={tail}"]
        if previous:
            args.append("--previous")
        return str(self.kubectl(*args, check=False).stdout)

    def describe(self, *kind_name: str) -> Callable[[], str]:
        def text() -> str:
            obj = self.get(*kind_name)
            st = json.dumps((obj or {}).get("status"), indent=1)[:3000]
            return f"{'/'.join(kind_name)} status: {st}\n---- agent log\n{self.logs('agent', tail=30)}"
        return text

    def wait(self, predicate: Callable[[], Any], *, timeout: float = 120, what: str,
             describe: Callable[[], str] | None = None) -> Any:
        return wait_until(predicate, timeout=timeout, what=what, interval=0.5, describe=describe)

    def rolled_out(self, timeout: float = 240) -> None:
        for kind in (f"daemonset/{self.name}-agent", f"deployment/{self.name}-operator"):
            self.kubectl("rollout", "status", "-n", self.namespace, kind, f"--timeout={int(timeout)}s",
                         timeout=timeout + 30)

    # teardown ----------------------------------------------------------------------------
    def delete_run_objects(self, timeout: float = 90) -> list[str]:
        """Delete what the scenarios created (while the agent still runs, so it releases its VGs
        and finalizers); finalizers are removed only as a last resort, reported as a problem."""
        problems = []
        for plural in ("lvmvolumegroupsets", "disklayouts", "lvmvolumegroups"):
            self.kubectl("delete", f"{plural}.{GROUP}", "-l", f"{RUN_LABEL}={self.host.run_id}", "--wait=false",
                         check=False)
        deadline = time.monotonic() + timeout
        for plural in ("disklayouts", "lvmvolumegroups"):
            while time.monotonic() < deadline:
                left = (self.get(f"{plural}.{GROUP}", "-l", f"{RUN_LABEL}={self.host.run_id}") or {}).get("items")
                if not left:
                    break
                time.sleep(0.5)
            else:
                for o in (self.get(f"{plural}.{GROUP}", "-l", f"{RUN_LABEL}={self.host.run_id}") or {}).get("items") or []:
                    name = o["metadata"]["name"]
                    problems.append(f"{plural}/{name} still there {timeout:.0f}s after delete")
                    self.kubectl("patch", f"{plural}.{GROUP}", name, "--type=merge", "-p",
                                 '{"metadata":{"finalizers":null}}', check=False)
        return problems

    def release_objects(self) -> None:
        """Without an agent: drop the finalizers of this session's objects and delete them."""
        for plural in ("disklayouts", "lvmvolumegroups"):
            sel = f"{RUN_LABEL}={self.host.run_id}"
            for o in (self.get(f"{plural}.{GROUP}", "-l", sel) or {}).get("items") or []:
                self.kubectl("patch", f"{plural}.{GROUP}", o["metadata"]["name"], "--type=merge", "-p",
                             '{"metadata":{"finalizers":null}}', check=False)
            self.kubectl("delete", f"{plural}.{GROUP}", "-l", sel, "--wait=false", check=False)

    def teardown(self) -> None:
        problems = []
        if self.installed:
            problems = self.delete_run_objects()
            self.helm("uninstall", self.name, "--namespace", self.namespace, "--wait", "--timeout", "120s",
                      timeout=180, check=False)
            self.installed = False
        self.kubectl("delete", "namespace", self.namespace, "--ignore-not-found", "--wait=false", check=False)
        if problems:
            raise AssertionError("node tier teardown: " + "; ".join(problems))
