"""Crash soak of the LVM engine on real loop devices (host tier; needs root, lvm2, util-linux).

The engine runs in a child process (as in the agent: one reconcile or delete per call). For every
step of create → append → grow → delete cycles of file-backed LVMVolumeGroups, the child is first
killed with SIGKILL — together with every LVM/losetup command it started, as a container kill
would — at a random point, then the step is run again to completion (the "restart"), with the
status the API would still hold (the last one a completed call returned). After every completed
step and at the end the host is checked: one loop per backing file, no duplicate PVs or VG names,
no stray files or loops; every object Ready or gone.

Used by tests/host/test_lvm_crash_soak.py (marked slow) and bench/lvm_crash_soak.py.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ACTIVATION_OFF = "global{activation=0}"
REPO = Path(__file__).resolve().parent.parent
STEPS: list[tuple[str, list[tuple[str, str]]]] = [
    ("create", [("a", "1Gi")]),
    ("append", [("a", "1Gi"), ("b", "1Gi")]),
    ("grow", [("a", "2Gi"), ("b", "1Gi")]),
    ("delete", [("a", "2Gi"), ("b", "1Gi")]),
]


@dataclass
class SoakReport:
    cycles: int = 0
    kills: int = 0
    killed_mid_command: int = 0
    completed_steps: int = 0
    retries_after_kill: int = 0
    leaked_loops: int = 0
    duplicate_pvs: int = 0
    duplicate_vg_names: int = 0
    stray_files: int = 0
    not_ready: int = 0
    not_gone: int = 0
    seconds: float = 0.0
    problems: list[str] = field(default_factory=list)

    @property
    def clean(self) -> bool:
        return not (self.leaked_loops or self.duplicate_pvs or self.duplicate_vg_names or self.stray_files
                    or self.not_ready or self.not_gone or self.problems)

    def figures(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if k != "problems"} | {"problems": self.problems[:20]}


# ------------------------------------------------------------------------------ the child


def _spec(node: str, vg: str, base: str, entries: list[tuple[str, str]]) -> Any:
    from disklet.api.lvm import FileDevice, LocalSpec, LVMVolumeGroupSpec
    return LVMVolumeGroupSpec(local=LocalSpec(node_name=node), actual_vg_name_on_the_node=vg,
                              file_devices=[FileDevice(name=n, directory=base, size=s) for n, s in entries])


def worker(job: dict[str, Any]) -> dict[str, Any]:
    from disklet_agent.config import AgentConfig
    from disklet_agent.lvm.engine import HostLvgEngine

    from disklet.api.lvm import LVMVolumeGroupStatus
    from disklet.hostcmd import HostRunner

    cfg = AgentConfig(node_name="soak-node", file_devices_dir=job["base"], lvm_extra_config=ACTIVATION_OFF,
                      command_timeout_seconds=120)
    engine = HostLvgEngine(HostRunner(default_timeout=120), cfg)
    spec = _spec("soak-node", job["vg"], job["base"], [tuple(e) for e in job["entries"]])
    status = LVMVolumeGroupStatus.model_validate(job["status"]) if job.get("status") else None
    print("go", flush=True)
    if job["op"] == "delete":
        out = engine.delete(job["lvg"], spec, status)
        return {"done": out.done, "status": out.status.to_wire()}
    res = engine.reconcile(job["lvg"], spec, status, [], 1)
    return {"done": True, "status": res.status.to_wire()}


# ------------------------------------------------------------------------------ process control


def _children() -> dict[int, list[int]]:
    kids: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        kids.setdefault(ppid, []).append(int(entry))
    return kids


def kill_tree(pid: int) -> int:
    """SIGSTOP the process and every descendant (so none spawns more), then SIGKILL them all, as a
    container kill does. Returns how many descendants (host commands in flight) were killed."""
    seen: list[int] = []
    todo = [pid]
    for _ in range(3):  # stop top-down; re-scan to catch a child spawned meanwhile
        while todo:
            p = todo.pop()
            if p in seen:
                continue
            try:
                os.kill(p, signal.SIGSTOP)
            except ProcessLookupError:
                continue
            seen.append(p)
            todo.extend(_children().get(p, []))
        todo = [c for p in seen for c in _children().get(p, []) if c not in seen]
    for p in seen:
        try:
            os.kill(p, signal.SIGKILL)
        except ProcessLookupError:
            pass
    return len(seen) - 1


def run_job(job: dict[str, Any], kill_after: float | None, timeout: float = 600) -> tuple[dict[str, Any] | None, int]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), str(REPO / "operator"), str(REPO / "agent"),
                                         env.get("PYTHONPATH", "")])
    proc = subprocess.Popen([sys.executable, "-m", "devkit.lvmsoak", "--worker", json.dumps(job)],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env, cwd=REPO)
    try:
        assert proc.stdout is not None
        proc.stdout.readline()  # "go": imports done, the engine call starts now
        if kill_after is not None:
            time.sleep(kill_after)
            in_flight = kill_tree(proc.pid)
            proc.wait(timeout=60)
            return None, in_flight
        out, _ = proc.communicate(timeout=timeout)
        lines = [ln for ln in out.splitlines() if ln.strip()]
        return (json.loads(lines[-1]) if lines else None), 0
    finally:
        if proc.poll() is None:
            kill_tree(proc.pid)
            proc.wait()


# ------------------------------------------------------------------------------ host checks


def _loops() -> list[tuple[str, str]]:
    out = subprocess.run(["losetup", "-J", "-l", "-O", "NAME,BACK-FILE"], capture_output=True, text=True,
                         check=True).stdout
    rows = json.loads(out or '{"loopdevices": []}').get("loopdevices", [])
    return [(r["name"], (r.get("back-file") or "").removesuffix(" (deleted)")) for r in rows]


def _lvm_all(columns: str, loops: list[str]) -> list[dict[str, str]]:
    accepts = "".join(f'"a|^{lp}$|", ' for lp in loops)
    cfg = (f'devices {{ global_filter = [ {accepts}"r|.*|" ] use_devicesfile = 0 obtain_device_list_from_udev = 0 }}'
           f" {ACTIVATION_OFF}")
    res = subprocess.run(["pvs", "--config", cfg, "--reportformat", "json", "-o", columns], capture_output=True,
                         text=True, timeout=120)
    if res.returncode != 0:
        raise RuntimeError(res.stderr)
    return [r for s in json.loads(res.stdout)["report"] for r in s.get("pv", [])]


def check_host(root: Path, base: Path, vg_names: list[str], report: SoakReport, *, expect_files: set[str],
               where: str) -> None:
    real_root = os.path.realpath(root)
    ours = [(lp, back) for lp, back in _loops() if back.startswith(real_root + "/")]
    per_file = Counter(back for _, back in ours)
    for back, n in per_file.items():
        if n > 1:
            report.leaked_loops += n - 1
            report.problems.append(f"{where}: {back} attached {n} times")
    for lp, back in ours:
        if not os.path.exists(back):
            report.leaked_loops += 1
            report.problems.append(f"{where}: {lp} backed by a missing file {back}")
    stray = {p.name for p in base.glob("*")} - expect_files if base.exists() else set()
    present_expected = {p.name for p in base.glob("*")} & expect_files if base.exists() else set()
    if stray:
        report.stray_files += len(stray)
        report.problems.append(f"{where}: stray files {sorted(stray)}")
    loops = [lp for lp, _ in ours]
    if loops:
        rows = _lvm_all("pv_name,pv_uuid,vg_name,vg_uuid", loops)
        uuids = Counter(r["pv_uuid"] for r in rows)
        dup = sum(n - 1 for n in uuids.values() if n > 1)
        report.duplicate_pvs += dup
        names = Counter((r["vg_name"], r["vg_uuid"]) for r in rows if r["vg_name"])
        by_name = Counter(name for name, _ in names)
        dup_names = sum(n - 1 for n in by_name.values() if n > 1)
        report.duplicate_vg_names += dup_names
        if dup or dup_names:
            report.problems.append(f"{where}: duplicate PVs {dup}, duplicate VG names {dup_names}")
        if not expect_files:
            report.leaked_loops += len(loops)
            report.problems.append(f"{where}: loops left {loops}")
    elif expect_files and present_expected != expect_files:
        report.problems.append(f"{where}: expected files {sorted(expect_files)}, found {sorted(present_expected)}")


# ------------------------------------------------------------------------------ the soak


def soak(root: Path, *, cycles: int = 3, lvgs: int = 2, seed: int | None = None, max_kill_delay: float = 1.5,
         budget_seconds: float = 240.0, log: Any = None) -> SoakReport:
    """Run the soak under ``root`` (created; the caller removes it). Bounded by ``budget_seconds``:
    no new cycle starts after it (the running one finishes and is checked)."""
    rng = random.Random(seed)
    report = SoakReport()
    started = time.monotonic()
    base = root / "file-devices"
    suffix = uuid.uuid4().hex[:6]
    names = [(f"soak-{suffix}-{i}", f"dktsoak{suffix}{i}") for i in range(lvgs)]
    say = log or (lambda _msg: None)
    for cycle in range(cycles):
        if time.monotonic() - started > budget_seconds:
            break
        report.cycles += 1
        statuses: dict[str, Any] = {lvg: None for lvg, _ in names}
        for step, entries in STEPS:
            for lvg, vg in names:
                job = {"op": "delete" if step == "delete" else "reconcile", "lvg": lvg, "vg": vg,
                       "base": str(base), "entries": entries, "status": statuses[lvg]}
                _, in_flight = run_job(job, kill_after=rng.uniform(0, max_kill_delay))
                report.kills += 1
                report.killed_mid_command += in_flight > 0
                for attempt in range(6):
                    job["status"] = statuses[lvg]
                    out, _ = run_job(job, kill_after=None)
                    if out is None:
                        continue
                    statuses[lvg] = out["status"]
                    st = out["status"]
                    applied = st.get("configurationApplied") and st.get("phase") == "Ready"
                    if (step == "delete" and out["done"]) or (step != "delete" and applied):
                        report.completed_steps += 1
                        report.retries_after_kill += attempt
                        break
                else:
                    if step == "delete":
                        report.not_gone += 1
                    else:
                        report.not_ready += 1
                    report.problems.append(f"cycle {cycle} {step} {lvg}: not converged: "
                                           f"{json.dumps(statuses[lvg])[:600]}")
                    return _finish(report, started)
            expect = set() if step == "delete" else {f"disklet-{lvg}.{n}.img" for lvg, _ in names for n, _ in entries}
            check_host(root, base, [vg for _, vg in names], report, expect_files=expect, where=f"cycle {cycle} {step}")
            say(f"cycle {cycle} {step}: kills={report.kills} problems={len(report.problems)}")
            if report.problems:
                return _finish(report, started)
    return _finish(report, started)


def _finish(report: SoakReport, started: float) -> SoakReport:
    report.seconds = round(time.monotonic() - started, 1)
    return report


def cleanup(root: Path) -> None:
    """Remove every loop/PV/VG under ``root`` (after a failed soak) and the tree."""
    import shutil
    real = os.path.realpath(root)
    loops = [lp for lp, back in _loops() if back.startswith(real + "/")]
    if loops:
        accepts = "".join(f'"a|^{lp}$|", ' for lp in loops)
        cfg = (f'devices {{ global_filter = [ {accepts}"r|.*|" ] use_devicesfile = 0 '
               f"obtain_device_list_from_udev = 0 }} {ACTIVATION_OFF}")
        try:
            for r in _lvm_all("vg_uuid", loops):
                if r.get("vg_uuid"):
                    subprocess.run(["vgremove", "--config", cfg, "-f", "-y", "--select", f"vg_uuid={r['vg_uuid']}"],
                                   capture_output=True, timeout=120)
        except RuntimeError:
            pass
        for lp in loops:
            subprocess.run(["pvremove", "--config", cfg, "-ff", "-y", "--", lp], capture_output=True, timeout=120)
            subprocess.run(["losetup", f"--detach={lp}"], capture_output=True)
    shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__" and len(sys.argv) > 2 and sys.argv[1] == "--worker":
    print(json.dumps(worker(json.loads(sys.argv[2]))), flush=True)
