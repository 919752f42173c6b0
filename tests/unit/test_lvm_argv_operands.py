"""Every host command the LVM engine can build puts ``--`` before its operands (devices, VGs, LVs,
paths), or passes them inside one ``--option=value`` argument, so a forged value such as ``-ffy``
can never read as an option; and devices become PVs only as this node's live scan reports them."""

from __future__ import annotations

import inspect

import pytest
from disklet_agent.config import AgentConfig
from disklet_agent.host import lsblk
from disklet_agent.host.files import HostFiles
from disklet_agent.host.losetup import Losetup
from disklet_agent.host.lvm import PV, VG, Lvm
from disklet_agent.lvm.engine import HostLvgEngine
from disklet_agent.lvm.outcomes import LiveDevice
from disklet_agent.lvm.snapshot import LvmSnapshot

from devkit.fakehost import FakeRunner
from disklet.api.lvm import LocalSpec, LVMVolumeGroupSpec

EVIL = "-ffy"


def Recorder() -> FakeRunner:  # noqa: N802 - reads as the runner it makes
    """Every command answers ``/dev/loop3`` (what ``losetup --find --show`` prints)."""
    return FakeRunner(default=(0, "/dev/loop3\n", ""))


def _operand_safe(argv: list[str]) -> bool:
    """Every argument carrying the hostile value sits after ``--`` or inside ``--opt=value``."""
    end = argv.index("--") if "--" in argv else len(argv)
    for i, arg in enumerate(argv):
        if EVIL in arg and i < end and not (arg.startswith("--") and "=" in arg and not arg.startswith(EVIL)):
            return False
    return True


def _calls(lvm: Lvm, losetup: Losetup, files: HostFiles) -> dict[str, object]:
    """One call of every public command-building method, each fed the hostile value as its operand."""
    return {
        "Lvm.pvcreate": lambda: lvm.pvcreate(EVIL, "/dev/loop1"),
        "Lvm.vgcreate": lambda: lvm.vgcreate(EVIL, [EVIL], "lvg"),
        "Lvm.vgextend": lambda: lvm.vgextend(EVIL, [EVIL]),
        "Lvm.add_tags": lambda: lvm.add_tags(EVIL, "lvg"),
        "Lvm.lvcreate_thin_pool": lambda: lvm.lvcreate_thin_pool(EVIL, "tp", 10),
        "Lvm.lvextend": lambda: lvm.lvextend(EVIL, "tp", None),
        "Lvm.lvremove": lambda: lvm.lvremove(EVIL, "tp"),
        "Lvm.vgremove": lambda: lvm.vgremove(EVIL),
        "Lvm.pvremove": lambda: lvm.pvremove(EVIL),
        "Lvm.pvresize": lambda: lvm.pvresize(EVIL),
        "Lvm.vgchange_activate": lambda: lvm.vgchange_activate(EVIL),
        "Losetup.find": lambda: losetup.find(EVIL),
        "Losetup.attach": lambda: losetup.attach(EVIL),
        "Losetup.set_direct_io": lambda: losetup.set_direct_io(EVIL),
        "Losetup.attach_direct": lambda: losetup.attach_direct(EVIL),
        "Losetup.refresh": lambda: losetup.refresh(EVIL),
        "Losetup.detach": lambda: losetup.detach(EVIL),
        "HostFiles.probe": lambda: files.probe(EVIL),
        "HostFiles.fs_space": lambda: files.fs_space(EVIL),
        "HostFiles.mkdir_p": lambda: files.mkdir_p(EVIL),
        "HostFiles.fallocate": lambda: files.fallocate(EVIL, 1),
        "HostFiles.rm_f": lambda: files.rm_f(EVIL),
        "HostFiles.realpath": lambda: files.realpath(EVIL),
        "HostFiles.realpaths": lambda: files.realpaths([EVIL]),
        # blkid -p (and, when it finds nothing, wipefs -n to confirm: the runner answers so)
        "lsblk.probe_signatures": lambda: lsblk.probe_signatures(files.runner, EVIL),
    }


def test_every_command_puts_operands_after_double_dash() -> None:
    # blkid exits 2 without a word ("nothing found"): the probe confirms it with wipefs, so both run.
    runner = Recorder().answer("blkid", (2, "", ""))
    lvm, losetup, files = Lvm(runner), Losetup(runner), HostFiles(runner)
    calls = _calls(lvm, losetup, files)
    # Every public method that takes an operand is exercised (a new one must be added above).
    readers = {"Lvm.pvs", "Lvm.pvs_vgs", "Lvm.vgs", "Lvm.lvs", "Lvm.node_vg_names", "Lvm.node_pv_rows",
               "Lvm.raw_report", "Lvm.config", "Lvm.argv",
               "Lvm.run",
               "Losetup.list_all"}
    for cls in (Lvm, Losetup, HostFiles):
        for name, _fn in inspect.getmembers(cls, inspect.isfunction):
            if not name.startswith("_"):
                assert f"{cls.__name__}.{name}" in calls or f"{cls.__name__}.{name}" in readers, name
    bad = []
    for what, call in calls.items():
        before = len(runner.argvs)
        try:
            call()  # type: ignore[operator]
        except Exception:  # noqa: BLE001, S110 - parse failures of the canned answer do not matter here
            pass
        assert len(runner.argvs) > before, what
        bad.extend((what, a) for a in runner.argvs[before:] if not _operand_safe(a))
    assert not bad, bad
    assert runner.calls["blkid"] == 1 and runner.calls["wipefs"] == 1, runner.calls
    # The readers take no operands at all (nothing after a final --).
    for read in (lvm.pvs, lvm.vgs, lvm.lvs, losetup.list_all):
        before = len(runner.argvs)
        try:
            read()
        except Exception:  # noqa: BLE001, S110
            pass
        assert all(a[-1] == "--" or EVIL not in " ".join(a) for a in runner.argvs[before:])


def test_losetup_options_with_a_required_argument_take_it_inline() -> None:
    runner = Recorder()
    losetup = Losetup(runner)
    losetup.detach("/dev/loop3")
    losetup.refresh("/dev/loop3")
    with pytest.raises(Exception):  # noqa: B017 - the canned answer is not -j output
        losetup.find("/x/disklet-a.b.img")
    assert runner.argvs == [["losetup", "--detach=/dev/loop3"], ["losetup", "--set-capacity=/dev/loop3"],
                            ["losetup", "--associated=/x/disklet-a.b.img"]]


def _engine(scan: dict[str, LiveDevice]) -> HostLvgEngine:
    cfg = AgentConfig(node_name="n1", file_devices_dir="/var/lib/disklet/file-devices", lvm_shell=False)
    return HostLvgEngine(Recorder(), cfg, block_scan=lambda _snap: scan)


@pytest.mark.parametrize(("scan", "expect_ok", "expect_msg"), [
    ({}, [], "not on this node now"),
    ({"dev-a": LiveDevice("/dev/sdb", False, "mounted at /mnt")}, [], "not consumable now: mounted at /mnt"),
    ({"dev-a": LiveDevice("/dev/sdc", True)}, [("dev-a", "/dev/sdc")], None),
])
def test_selected_block_devices_are_taken_from_the_live_scan(scan, expect_ok, expect_msg) -> None:
    eng = _engine(scan)
    # The API says /dev/sdb; only the live scan's answer (by stable name) is used.
    ok, errors = eng.reconciler.node_devices([("dev-a", "/dev/sdb")], LvmSnapshot(), None)
    assert ok == expect_ok
    assert (expect_msg is None and not errors) or (errors and expect_msg in errors[0])


def test_a_member_of_our_vg_stays_usable_although_not_consumable() -> None:
    eng = _engine({"dev-a": LiveDevice("/dev/sdb", False, "LVM PV of volume group vg0")})
    vg = VG("vg0", "U", 1, 1, 1, (), 1, 0)
    snap = LvmSnapshot(pvs=[PV("/dev/sdb", "p", 1, 1, 1, "vg0", "U")], vgs=[vg])
    assert eng.reconciler.node_devices([("dev-a", "/dev/sdb")], snap, vg) == ([("dev-a", "/dev/sdb")], [])
    other = VG("vg1", "V", 1, 1, 1, (), 1, 0)
    assert eng.reconciler.node_devices([("dev-a", "/dev/sdb")], snap, other)[0] == []


def test_block_device_status_path_must_be_under_dev() -> None:
    from pydantic import ValidationError

    from disklet.api.blockdevice import BlockDeviceStatus
    with pytest.raises(ValidationError):
        BlockDeviceStatus(node_name="n1", path="-ffy", size="1Gi", type="disk")
    BlockDeviceStatus(node_name="n1", path="/dev/sdb", size="1Gi", type="disk")


def test_spec_with_hostile_block_device_never_reaches_pvcreate() -> None:
    """End to end through the engine's reconcile: the forged path from the API is never used."""
    eng = _engine({})
    spec = LVMVolumeGroupSpec(local=LocalSpec(node_name="n1"), actual_vg_name_on_the_node="vg0",
                              block_device_selector={"matchLabels": {"a": "b"}})
    runner = eng.runner
    assert isinstance(runner, FakeRunner)
    eng.reconcile("lvg", spec, None, [("dev-x", EVIL)], 1)
    assert not [a for a in runner.argvs if a[0] in ("pvcreate", "vgcreate")]
