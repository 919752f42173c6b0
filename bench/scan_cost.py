"""LVM invocations and wall time of one discovery cycle with 1, 8 and 32 managed loop PVs.

Goal: the number of LVM/losetup invocations per cycle is constant (realpath of the base directory,
one losetup list and one pvs report with VG columns; lvs only when a VG holds LVs), shared by every
VG of the node, whatever the number of loop PVs. Needs root, lvm2, losetup.
Writes bench/results/scan_cost.json. Every loop/VG/file it creates is removed at the end.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

from disklet_agent.config import AgentConfig
from disklet_agent.host.lvm import Lvm
from disklet_agent.lvm.engine import HostLvgEngine

from disklet.api.lvm import FileDevice, LocalSpec, LVMVolumeGroupSpec, backing_file_name
from disklet.hostcmd import HostRunner

FILE_BYTES = 16 * 1024**2
ROUNDS = 5


def measure(n: int, root: Path) -> dict[str, object]:
    suffix = uuid.uuid4().hex[:8]
    lvg, vg = f"bench-{suffix}", f"dktbench{suffix}"
    base = root / f"base-{n}"
    base.mkdir()
    runner = HostRunner(default_timeout=120)
    lvm = Lvm(runner, extra_config="global{activation=0}")
    loops = []
    for i in range(n):
        f = base / backing_file_name(lvg, f"e{i}")
        subprocess.run(["fallocate", "-l", str(FILE_BYTES), str(f)], check=True)
        loops.append(subprocess.run(["losetup", "--find", "--nooverlap", "--show", str(f)], capture_output=True,
                                    text=True, check=True).stdout.strip())
    lvm.owned_loops = set(loops)
    for lp in loops:
        assert lvm.pvcreate(lp).ok
    assert lvm.vgcreate(vg, loops, lvg).ok
    cfg = AgentConfig(node_name="bench", file_devices_dir=str(base), lvm_extra_config="global{activation=0}")
    engine = HostLvgEngine(runner, cfg)
    # The spec lists 1Gi entries; discovery does not provision, it only reads.
    spec = LVMVolumeGroupSpec(local=LocalSpec(node_name="bench"), actual_vg_name_on_the_node=vg,
                              file_devices=[FileDevice(name=f"e{i}", directory=str(base), size="1Gi")
                                            for i in range(n)])
    times, calls = [], {}
    for _ in range(ROUNDS):
        before = dict(runner.calls)
        t = time.monotonic()
        st = engine.discover([(lvg, spec)])[lvg]
        times.append(time.monotonic() - t)
        calls = {k: v - before.get(k, 0) for k, v in runner.calls.items() if v - before.get(k, 0)}
        assert st is not None and len(st.nodes[0].file_devices or []) == n
    return {"loop_pvs": n, "invocations": calls, "total_invocations": sum(calls.values()),
            "seconds_median": sorted(times)[len(times) // 2], "seconds_max": max(times)}


def cleanup(root: Path) -> None:
    out = json.loads(subprocess.run(["losetup", "-J", "-l", "-O", "NAME,BACK-FILE"], capture_output=True,
                                    text=True).stdout or '{"loopdevices":[]}')
    mine = [r["name"] for r in out["loopdevices"] if (r.get("back-file") or "").startswith(str(root))]
    if mine:
        cfg = ('devices { global_filter = [ ' + ", ".join(f'"a|^{m}$|"' for m in mine)
               + ', "r|.*|" ] use_devicesfile = 0 obtain_device_list_from_udev = 0 } global{activation=0}')
        vgs = subprocess.run(["pvs", "--config", cfg, "--noheadings", "-o", "vg_uuid"], capture_output=True,
                             text=True).stdout.split()
        for u in set(vgs):
            subprocess.run(["vgremove", "--config", cfg, "-f", "-y", "--select", f"vg_uuid={u}"], capture_output=True)
        for m in mine:
            subprocess.run(["pvremove", "--config", cfg, "-ff", "-y", m], capture_output=True)
            subprocess.run(["losetup", "-d", m], capture_output=True)
    subprocess.run(["rm", "-rf", "--", str(root)], check=False)


def main() -> int:
    root = Path(tempfile.mkdtemp(prefix="disklet-scan-cost-"))
    results = []
    try:
        for n in (1, 8, 32):
            r = measure(n, root)
            results.append(r)
            print(f"{n:>3} loop PVs: {r['total_invocations']} invocations {r['invocations']}, "
                  f"median {r['seconds_median'] * 1000:.0f} ms")
    finally:
        cleanup(root)
    out = Path(__file__).resolve().parent / "results" / "scan_cost.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps({"rounds": ROUNDS, "results": results}, indent=2) + "\n")
    constant = len({r["total_invocations"] for r in results}) == 1
    print(f"invocations constant: {constant}; wrote {out}")
    return 0 if constant else 1


if __name__ == "__main__":
    sys.exit(main())
