"""A failing disk under one PV: the kernel returns I/O errors for every request to it.

Two LVMVolumeGroups, each on its own disk. The SCSI disk under the second VG is then failed for
real (its SCSI device state set to ``offline``: every read and write fails with an I/O error, as a
dead disk's do). The agent's engine must report the failure on that LVMVolumeGroup, keep the
other one exactly as it was, and never run a destructive or creating LVM step against the failing
VG (no pvcreate, vgcreate, vgextend, lvcreate, lvextend, removal or wipe) — on the first pass and on
the retry.
"""

from __future__ import annotations

from pathlib import Path

from disklet_agent.lvm.engine import HostLvgEngine

from devkit.vm import Disk
from disklet.api.common import get_condition
from disklet.api.lvm import LocalSpec, LVMVolumeGroupSpec, ThinPool
from disklet.hostcmd import CommandResult, HostRunner
from tests.vm.conftest import NODE, RUNNER, agent_config, block_device_names, disk, lvm_report, sh

VM_DISKS = (
    Disk("nvme", size="2Gi", serial="FDNVME01"),
    Disk("scsi", size="2Gi", serial="FDSCSI01", wwn="0x5000c500ee000001"),
)
WRITES = {"pvcreate", "vgcreate", "vgextend", "lvcreate", "lvextend", "pvremove", "vgremove", "lvremove",
          "vgreduce", "pvresize", "wipefs", "pvmove", "vgchange"}


class Recording(HostRunner):
    """The real runner, recording every argv (the engine then runs LVM without its shell)."""

    def __init__(self) -> None:
        super().__init__(default_timeout=120)
        self.recorded: list[list[str]] = []

    def run(self, argv, **kwargs) -> CommandResult:  # type: ignore[override]
        self.recorded.append(list(argv))
        return super().run(argv, **kwargs)

    def writes(self) -> list[list[str]]:
        """Commands that change something (``wipefs --no-act`` only reads: the topology probe)."""
        return [a for a in self.recorded if a and Path(a[0]).name in WRITES
                and not (Path(a[0]).name == "wipefs" and ("--no-act" in a or "-n" in a))]


def spec(vg: str) -> LVMVolumeGroupSpec:
    return LVMVolumeGroupSpec(local=LocalSpec(node_name=NODE), actual_vg_name_on_the_node=vg,
                              block_device_selector={"matchLabels": {"disklet.io/test": vg}},
                              thin_pools=[ThinPool(name="tp", size="50%")])


def set_state(dev: str, state: str) -> None:
    Path(f"/sys/block/{Path(dev).name}/device/state").write_text(state + "\n")


def test_the_failing_disk_is_reported_on_its_vg_only_and_nothing_is_retried_blindly(tmp_path, wipe):
    nvme, scsi = disk("FDNVME01"), disk("FDSCSI01")
    wipe.extend([nvme, scsi])
    names = block_device_names()
    ok_devs, bad_devs = [(names[nvme], nvme)], [(names[scsi], scsi)]
    engine = HostLvgEngine(RUNNER, agent_config(tmp_path))
    try:
        st_ok = engine.reconcile("lvg-ok", spec("vgok"), None, ok_devs).status
        st_bad = engine.reconcile("lvg-bad", spec("vgbad"), None, bad_devs).status
    finally:
        engine.close()
    assert get_condition(st_ok.conditions, "VGReady").status == "True", st_ok.conditions
    assert get_condition(st_bad.conditions, "VGReady").status == "True", st_bad.conditions
    sh("lvcreate", "--yes", "-q", "--type", "thin", "--virtualsize", "64M", "--thinpool", "tp", "--name", "vol",
       "--", "vgok")
    sh("mkfs.ext4", "-q", "/dev/vgok/vol")
    ok_before = lvm_report("lvs", "vgok", columns="lv_name,lv_size,lv_attr")

    set_state(scsi, "offline")
    try:
        rec = Recording()
        failing = HostLvgEngine(rec, agent_config(tmp_path))
        bad1 = failing.reconcile("lvg-bad", spec("vgbad"), st_bad, bad_devs)
        writes_first = rec.writes()
        good = failing.reconcile("lvg-ok", spec("vgok"), st_ok, ok_devs)
        bad2 = failing.reconcile("lvg-bad", spec("vgbad"), bad1.status, bad_devs)
        failing.close()
        # 1. the failure is reported on the failing VG's object, with the reason
        ready = get_condition(bad1.status.conditions, "VGReady")
        assert ready is not None and ready.status != "True", bad1.status.conditions
        assert bad1.status.phase != "Ready", bad1.status
        text = " ".join(c.message or "" for c in bad1.status.conditions or [])
        assert text.strip(), bad1.status.conditions
        # 2. the other VG stays correct: Ready, same LVs, its thin pool still reported
        assert get_condition(good.status.conditions, "VGReady").status == "True", good.status.conditions
        assert not good.host_changed
        assert lvm_report("lvs", "vgok", columns="lv_name,lv_size,lv_attr") == ok_before
        [tp] = good.status.thin_pools or []
        assert tp.ready and tp.data_percent is not None
        sh("fsck.ext4", "-n", "/dev/vgok/vol")
        # 3. nothing destructive or creating was run against the failing disk, first pass or retry
        assert writes_first == [], writes_first
        assert rec.writes() == [], rec.writes()
        assert get_condition(bad2.status.conditions, "VGReady").status != "True"
    finally:
        set_state(scsi, "running")
