"""Running kctl against the ``kube`` mock in-process, and seed objects for its API tests.

Set ``KCTL_TRANSCRIPT=FILE`` to append every command and its output to FILE (docs/kctl.md's
examples are pasted from such a run).
"""

from __future__ import annotations

import contextlib
import io
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiohttp import web

from devkit.kubeapi import write_kubeconfig
from disklet.cli.main import run

DL = "disklet.io/v1alpha1/disklayouts"
LVG = "disklet.io/v1alpha1/lvmvolumegroups"
BD = "disklet.io/v1alpha1/blockdevices"


@dataclass
class Result:
    code: int
    out: str
    err: str


async def kctl(kube: Any, *argv: str) -> Result:
    out, err = io.StringIO(), io.StringIO()
    code = await run([*argv, "--kubeconfig", str(kube.kubeconfig)], out, err)
    transcript = os.environ.get("KCTL_TRANSCRIPT")
    if transcript:
        with open(transcript, "a", encoding="utf-8") as fh:
            fh.write(f"$ kctl {' '.join(argv)}\n{out.getvalue()}{err.getvalue()}# exit {code}\n\n")
    return Result(code, out.getvalue(), err.getvalue())


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@contextlib.asynccontextmanager
async def fake_exec_api(pods: Handler, exec_: Handler, kubeconfig: Path) -> AsyncIterator[Path]:
    """A loopback API serving only a namespace's Pod list and Pod exec (what ``kctl exec`` and the
    agent-backed commands use), and a kubeconfig for it at ``kubeconfig``."""
    app = web.Application()
    app.router.add_get("/api/v1/namespaces/{ns}/pods", pods)
    app.router.add_get("/api/v1/namespaces/{ns}/pods/{pod}/exec", exec_)
    runner = web.AppRunner(app)
    await runner.setup()
    try:
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = runner.addresses[0][1]
        yield write_kubeconfig(kubeconfig, f"http://127.0.0.1:{port}")
    finally:
        await runner.cleanup()


def writes(kube: Any) -> list[Any]:
    """Every mutating request the mock has served."""
    return [r for r in kube.request_log if getattr(r.method, "value", r.method) in ("POST", "PATCH", "PUT", "DELETE")]


def disk_layout(name: str, node: str, device: str = "/dev/nvme1n1", status: dict[str, Any] | None = None) -> dict[str, Any]:
    obj: dict[str, Any] = {
        "apiVersion": "disklet.io/v1alpha1", "kind": "DiskLayout",
        "metadata": {"name": name, "labels": {"disklet.io/node": node}},
        "spec": {"nodeName": node, "diskLayout": {"disks": [{
            "name": "data1", "device": device,
            "gpt": {"partitions": [{"name": "kcore0", "size": "100%", "content": {
                "type": "filesystem", "format": "ext4", "mountpoint": "/var/lib/kcore/volumes1"}}]}}]}},
    }
    if status:
        obj["status"] = status
    return obj


def block_device(node: str, path: str, size: str, *, fs_type: str | None = None, consumable: bool = True,
                 vg: str | None = None, lvg: str | None = None, reason: str | None = None) -> dict[str, Any]:
    status: dict[str, Any] = {"nodeName": node, "path": path, "size": size, "type": "disk", "consumable": consumable}
    for k, v in (("fsType", fs_type), ("actualVGNameOnTheNode", vg), ("lvmVolumeGroupName", lvg),
                 ("consumableReason", reason)):
        if v:
            status[k] = v
    name = f"dev-{node}-{path.rsplit('/', 1)[-1]}"
    return {"apiVersion": "disklet.io/v1alpha1", "kind": "BlockDevice",
            "metadata": {"name": name, "labels": {"disklet.io/node": node}}, "status": status}


def lvg(name: str, node: str, vg: str, status: dict[str, Any] | None = None) -> dict[str, Any]:
    obj: dict[str, Any] = {
        "apiVersion": "disklet.io/v1alpha1", "kind": "LVMVolumeGroup",
        "metadata": {"name": name, "labels": {"disklet.io/node": node}},
        "spec": {"type": "Local", "local": {"nodeName": node}, "actualVGNameOnTheNode": vg,
                 "fileDevices": [{"name": "a", "directory": "/var/lib/disklet/file-devices", "size": "10Gi"}],
                 "thinPools": [{"name": "tp0", "size": "50%"}]},
    }
    if status:
        obj["status"] = status
    return obj


SEED_STYLE = """\
# day2-disk-layout.yaml (the seed's style: no apiVersion, nodeId)
kind: DiskLayout
metadata:
  name: prod-data-pool
spec:
  nodeId: kvm-node-1
  diskLayout:
    disks:
      - name: data1
        device: /dev/nvme1n1
        gpt:
          partitions:
            - name: kcore0
              size: "100%"
              content:
                type: filesystem
                format: ext4
                mountpoint: /var/lib/kcore/volumes1
"""

NIX_FRAGMENT = """\
{
  disko.devices.disk.data2 = {
    type = "disk";
    device = "/dev/sdb";
    content = {
      type = "gpt";
      partitions.data = {
        size = "100%";
        content = { type = "filesystem"; format = "xfs"; mountpoint = "/var/lib/kcore/volumes2"; };
      };
    };
  };
}
"""


def table_rows(text: str) -> list[dict[str, str]]:
    """A kubectl-style table as dicts, cut at the header's column offsets (cells may be empty)."""
    import re

    lines = text.splitlines()
    header = lines[0]
    starts = [m.start() for m in re.finditer(r"(?:(?<=^)|(?<=\s{3}))\S", header)]
    names = [header[a:b].strip() for a, b in zip(starts, [*starts[1:], None], strict=True)]
    return [{n: line[a:b].strip() for n, a, b in zip(names, starts, [*starts[1:], None], strict=True)}
            for line in lines[1:]]
