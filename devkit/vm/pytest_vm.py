"""pytest plugin for the ``vm`` tier (loaded by the repository's root conftest.py).

A ``vm`` test module declares the guest's disks at module level, either

    VM_DISKS = (Disk("nvme", serial="NVME0001"), Disk("scsi", serial="SCSI0001", wwn="0x5000c500a1b2c3d4"))

— all such modules form ONE group and share one boot, their disks joined (a module may name its
own ``VM_GROUP`` to boot separately) — or, for tests that need the same disks across reboots
(another controller order, another kernel name),

    VM_BOOTS = (Boot(disks=(...)), Boot(disks=(...)))    # tests mark their boot: @pytest.mark.vm_boot(1)

which makes the module a group of its own.

On the host each collected ``vm`` test is replaced by a stand-in item of the same node id. The first
stand-in of a group to run boots the guest once per boot, with the group's selected tests of that
boot as the guest's workload (``python3 -m pytest <node ids>`` inside, ``DISKLET_VM_GUEST=1``); disk
images persist across the boots of a group and are deleted after its last boot. Each stand-in
then reports its own test's guest outcome: the guest's failure text, skip reason (a failure under
``CI=true``) or pass. A group with several boots boots every time, also when a boot has no selected
test (a later boot depends on what an earlier one did): select whole modules of that kind. The
console log, JUnit XML and dmesg of a failed boot are kept under ``$DISKLET_VM_KEEP`` when set.

Inside the guest nothing is replaced: the tests run for real.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from devkit.vm import GUEST_ENV, Boot, Disk, missing

GUEST_TEST_TIMEOUT = int(os.environ.get("DISKLET_VM_TEST_TIMEOUT") or 900)
"""Seconds per guest test (pytest-timeout inside the guest; emulation on a loaded machine is slow)."""
SHARED = "shared"
GROUPS: dict[str, Group] = {}


def in_guest() -> bool:
    return os.environ.get(GUEST_ENV) == "1"


def boot_of(item: pytest.Item) -> int:
    mark = item.get_closest_marker("vm_boot")
    return int(mark.args[0]) if mark and mark.args else 0


def boots_of(module: Any) -> tuple[Boot, ...]:
    boots = getattr(module, "VM_BOOTS", None)
    if boots:
        return tuple(boots)
    disks: Sequence[Disk] = getattr(module, "VM_DISKS", ())
    return (Boot(disks=tuple(disks)),)


def group_key(module: Any, path: str) -> str:
    """Single-boot modules share one boot (their disks joined) unless they name a ``VM_GROUP`` of
    their own; a module with ``VM_BOOTS`` is always its own group."""
    if getattr(module, "VM_BOOTS", None):
        return path
    return str(getattr(module, "VM_GROUP", SHARED))


def merged(boots: Sequence[Boot], more: Sequence[Boot]) -> tuple[Boot, ...]:
    """One boot with the disks of both (a serial declared twice must be the same declaration)."""
    [a], [b] = boots, more
    disks = list(a.disks)
    for d in dict.fromkeys(b.disks):  # a disk declared twice by one module is two paths: keep both
        clash = [x for x in disks if (x.serial == d.serial or x.image == d.image) and x != d]
        if clash:
            raise ValueError(f"vm disk {d.serial} is declared differently by two modules of one group")
        disks.extend([d] * max(0, b.disks.count(d) - disks.count(d)))
    return (Boot(disks=tuple(disks), memory_mib=max(a.memory_mib, b.memory_mib), cpus=max(a.cpus, b.cpus)),)


class Group:
    """One test module's boots and what its tests reported."""

    def __init__(self, module: Any, path: str) -> None:
        self.path = path
        self.boots = boots_of(module)
        self.items: list[GuestItem] = []
        self.results: dict[str, dict[str, Any]] = {}
        self.problems: dict[int, str] = {}
        self.done = False
        self.workdir: Path | None = None
        self.timings: list[str] = []
        self.modules: set[str] = set()

    def job(self, boot: int, nodeids: list[str]) -> dict[str, str | bytes]:
        if not nodeids:  # a boot only for what it does to the disks (none of its tests selected)
            return {"job.sh": "#!/bin/sh\necho '{}' > /run/results/report.json\n"}
        env = {
            GUEST_ENV: "1", "DISKLET_VM_BOOT": str(boot), "DISKLET_VM_REPORT": "/run/results/report.json",
            "PYTHONPATH": "/opt/disklet:/opt/disklet/operator:/opt/disklet/agent:/opt/disklet-site",
            "PYTHONDONTWRITEBYTECODE": "1", "DISKO_EVAL_DIR": "/opt/disklet/disko-eval", "HOME": "/root",
            "CI": os.environ.get("CI", ""), "LANG": "C.UTF-8",
        }
        lines = ["#!/bin/sh", "cd /opt/disklet || exit 2"]
        lines += [f"export {k}={shlex.quote(v)}" for k, v in env.items()]
        argv = ["python3", "-m", "pytest", "-p", "no:cacheprovider", "-p", "devkit.vm.guestreport",
                "--junitxml=/run/results/junit.xml", "-q", "-rs", "--color=no",
                f"--timeout={GUEST_TEST_TIMEOUT}", "-m", "vm", *nodeids]
        lines.append(" ".join(shlex.quote(a) for a in argv))
        return {"job.sh": "\n".join(lines) + "\n"}

    def run(self) -> None:
        if self.done:
            return
        self.done = True
        reason = missing()
        if reason:
            for b in range(len(self.boots)):
                self.problems[b] = "SKIP:" + reason
            return
        from devkit.vm.machine import boot

        many = len(self.boots) > 1
        self.workdir = Path(tempfile.mkdtemp(prefix="disklet-vm-"))
        try:
            for b, spec in enumerate(self.boots):
                mine = [it.nodeid for it in self.items if boot_of(it) == b]
                if not mine and not many:
                    continue
                log = self.workdir / f"build-{b}.log"
                try:
                    out = boot(spec, self.workdir, self.job(b, mine), log=log)
                except Exception as exc:  # noqa: BLE001 - reported on every test of the boot
                    self.problems[b] = f"the guest could not be built or booted: {exc}"
                    continue
                self.timings.append(f"boot {b}: {out.seconds:.1f}s on the host, guest uptime "
                                    f"{out.guest_seconds}s")
                report = out.files.get("report.json")
                if report is None:
                    tail = "\n".join(out.console.splitlines()[-60:])
                    self.problems[b] = (f"the guest reported no results (job exit {out.exit_code}); "
                                        f"console tail:\n{tail}")
                    self._keep(b, out.files, out.console)
                    continue
                self.results.update(json.loads(report))
                if out.exit_code is None:
                    tail = "\n".join(out.console.splitlines()[-40:])
                    self.problems[b] = (f"the guest did not finish (killed after {out.seconds:.0f}s, see "
                                        f"DISKLET_VM_TIMEOUT, or it crashed); console tail:\n{tail}")
                    self._keep(b, out.files, out.console)
                if out.exit_code not in (0, 5) or any(k.startswith("collect::") for k in json.loads(report)):
                    self._keep(b, out.files, out.console)
                    collect = {k: v for k, v in json.loads(report).items() if k.startswith("collect::")}
                    if collect:
                        self.problems[b] = "guest collection failed:\n" + "\n".join(
                            v["longrepr"] for v in collect.values())
        finally:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def _keep(self, boot: int, files: dict[str, bytes], console: str) -> None:
        keep = os.environ.get("DISKLET_VM_KEEP")
        if not keep:
            return
        d = Path(keep) / f"{Path(self.path).stem}-boot{boot}"
        d.mkdir(parents=True, exist_ok=True)
        (d / "console.log").write_text(console, encoding="utf-8")
        for name, data in files.items():
            (d / Path(name).name).write_bytes(data)


class GuestFailure(Exception):
    pass


class GuestItem(pytest.Item):
    """The host's stand-in for one guest test: same node id, reports the guest's outcome."""

    def __init__(self, *, group: Group, boot: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.group = group
        self.boot = boot

    def runtest(self) -> None:
        self.group.run()
        problem = self.group.problems.get(self.boot)
        if problem and problem.startswith("SKIP:"):
            from devkit.vm import skip_or_fail

            skip_or_fail(problem[5:])
        result = self.group.results.get(self.nodeid)
        if result is None:
            raise GuestFailure(problem or "the guest did not report this test")
        outcome = result["outcome"]
        if outcome == "failed":
            raise GuestFailure(f"[in the VM, {result['when']}]\n{result['longrepr']}")
        if outcome == "skipped":
            reason = result["longrepr"] or "skipped in the guest"
            if os.environ.get("CI", "").lower() == "true":
                pytest.fail(f"skipped in the VM under CI: {reason}")
            pytest.skip(f"in the VM: {reason}")

    def repr_failure(self, excinfo: Any, style: Any = None) -> str:  # type: ignore[override]
        if isinstance(excinfo.value, GuestFailure):
            return str(excinfo.value)
        return str(super().repr_failure(excinfo))

    def reportinfo(self) -> tuple[Any, int | None, str]:
        return self.path, None, f"vm: {self.nodeid}"


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(session: pytest.Session, config: pytest.Config, items: list[pytest.Item]) -> None:
    if in_guest():
        return
    for i, item in enumerate(items):
        if not isinstance(item, pytest.Function) or item.get_closest_marker("vm") is None or item.parent is None:
            continue
        module = item.module
        path = item.nodeid.split("::", 1)[0]
        key = group_key(module, path)
        group = GROUPS.get(key)
        if group is None:
            group = GROUPS[key] = Group(module, key)
            group.modules.add(path)
        elif path not in group.modules:
            group.boots = merged(group.boots, boots_of(module))
            group.modules.add(path)
        stand_in = GuestItem.from_parent(item.parent, name=item.name, group=group, boot=boot_of(item))
        stand_in.own_markers.extend(item.own_markers)
        stand_in.keywords.update(item.keywords)
        group.items.append(stand_in)
        items[i] = stand_in


def pytest_terminal_summary(terminalreporter: Any) -> None:
    lines = [f"{path}: {t}" for path, g in GROUPS.items() for t in g.timings]
    if lines:
        terminalreporter.write_sep("-", "vm boots")
        for line in lines:
            terminalreporter.write_line(line)
