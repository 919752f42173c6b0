"""LVM adapter: device filter, stderr judgement (rule 7), report parsing, thin-pool argv (recording runner)."""

from __future__ import annotations

import pytest
from disklet_agent.config import AgentConfig
from disklet_agent.host.losetup import parse_j_output, parse_list_json
from disklet_agent.host.lvm import LV, VG, LvmError, device_filter_config, judge, parse_pvs, parse_vgs
from disklet_agent.lvm.engine import HostLvgEngine
from disklet_agent.lvm.outcomes import ReconcileState
from disklet_agent.lvm.reads import overlapped
from disklet_agent.lvm.reconcile import ProvisionedFiles
from disklet_agent.lvm.snapshot import LvmSnapshot

from devkit.fakehost import FakeRunner, result
from disklet.api.lvm import LocalSpec, LVMVolumeGroupSpec, ThinPool
from disklet.hostcmd import CommandResult, HostRunner

MI = 1024**2
GI = 1024**3
LEAK = "File descriptor 7 (/dev/null) leaked on lvextend invocation. Parent PID 1: agent"


def test_filter_accepts_exactly_our_loops_and_rejects_other_loop_like_devices() -> None:
    cfg = device_filter_config(["/dev/loop7", "/dev/loop12"], "global{activation=0}")
    assert cfg.index('"a|^/dev/loop12$|"') < cfg.index('"r|^/dev/loop|"') < cfg.index('"a|.*|"')
    assert '"a|^/dev/loop7$|"' in cfg
    for dev in ("rbd", "drbd", "nbd"):
        assert f'"r|^/dev/{dev}|"' in cfg
    assert "use_devicesfile = 0" in cfg and "obtain_device_list_from_udev = 0" in cfg
    assert cfg.endswith("global{activation=0}")
    with pytest.raises(ValueError):
        device_filter_config(["/dev/loop1$|\", \"a|.*"])


def test_benign_fd_leak_alone_is_success_for_every_command() -> None:
    assert judge(result(["pvcreate", "/dev/loop1"], 0, stderr=LEAK)).ok
    # Non-zero exit with nothing but benign noise is still a failure for pvcreate (verified from pvs later).
    assert not judge(result(["pvcreate", "/dev/loop1"], 5, stderr=LEAK)).ok


def test_nonzero_with_empty_stderr_fails_except_lvextend() -> None:
    m = judge(result(["vgcreate", "vg"], 5, stderr=""))
    assert not m.ok and "exit code 5" in m.message
    assert judge(result(["lvextend", "vg/tp"], 5, stderr=""), lvextend=True).ok


@pytest.mark.parametrize("line", ["  No size change.", "  New size (255 extents) matches existing size (255 extents)."])
def test_lvextend_noop_wordings_are_success(line: str) -> None:
    assert judge(result(["lvextend"], 5, stderr=f"{LEAK}\n{line}\n"), lvextend=True).ok
    assert not judge(result(["lvcreate"], 5, stderr=line)).ok  # only for lvextend


def test_real_error_is_reported() -> None:
    m = judge(result(["lvextend"], 5, stderr="  Insufficient free space: 10 extents needed, but only 2 available"),
              lvextend=True)
    assert not m.ok and "Insufficient free space" in m.message


def test_timeout_is_failure() -> None:
    r = CommandResult(("lvextend",), -9, "", "", "", 60.0, timed_out=True)
    assert not judge(r, lvextend=True).ok


def test_report_parsing_and_failure_is_never_not_found() -> None:
    pvs = parse_pvs('{"report":[{"pv":[{"pv_name":"/dev/loop3","pv_uuid":"u","pv_size":"1069547520",'
                    '"dev_size":"1073741824","pe_start":"1048576","vg_name":"","vg_uuid":"","pv_missing":""}]}]}')
    assert pvs[0].size == 1069547520 and pvs[0].vg_uuid == ""
    vgs = parse_vgs('{"report":[{"vg":[{"vg_name":"v","vg_uuid":"x","vg_size":"8","vg_free":"4",'
                    '"vg_extent_size":"4","vg_tags":"disklet.io/enabled=true,disklet.io/lvmVolumeGroupName=l",'
                    '"pv_count":"1","lv_count":"0","vg_missing_pv_count":"0"}]}]}')
    assert vgs[0].owner == "l" and vgs[0].managed
    with pytest.raises(LvmError):
        parse_pvs("  Volume group not found\n")


def test_losetup_parsing_detects_deleted() -> None:
    loops = parse_list_json('{"loopdevices":[{"name":"/dev/loop0","back-file":"/b/x.img (deleted)","maj:min":"  7:0 "}]}')
    assert loops[0].back_file == "/b/x.img" and loops[0].deleted and loops[0].maj_min == "7:0"
    j = parse_j_output("/dev/loop0: [65024]:2147713 (/b/x.img)\n/dev/loop4: []: (/b/x.img)\n")
    assert [x.name for x in j] == ["/dev/loop0", "/dev/loop4"]


def test_losetup_list_reads_the_direct_io_column_in_both_spellings() -> None:
    loops = parse_list_json('{"loopdevices":[{"name":"/dev/loop0","dio":true},{"name":"/dev/loop1","dio":false},'
                            '{"name":"/dev/loop2","dio":"0"},{"name":"/dev/loop3"}]}')
    assert [lp.direct_io for lp in loops] == [True, False, False, None]


def test_a_loop_attached_with_direct_io_that_runs_buffered_is_a_warning() -> None:
    eng = _engine(FakeRunner())
    entries = ProvisionedFiles(loops={"a": "/dev/loop0", "b": "/dev/loop1", "c": "/dev/loop2"}, direct_io={"a", "b"})
    live = LvmSnapshot(loops=parse_list_json(
        '{"loopdevices":[{"name":"/dev/loop0","dio":false},{"name":"/dev/loop1","dio":true},'
        '{"name":"/dev/loop2","dio":false}]}'))
    rnd = ReconcileState(latest=live)
    eng.reconciler.check_direct_io(entries, rnd)
    # Only "a": "b" runs with direct I/O, "c" was not attached with it by this call (its refusal was reported).
    assert [(t, r, m.split(":")[0]) for t, r, m in rnd.events] == [("Warning", "DirectIONotEnabled", "fileDevices[a]")]
    assert "/dev/loop0" in rnd.events[0][2] and not rnd.failures


def test_overlapped_reads_both_complete_and_failures_surface() -> None:
    order: list[str] = []
    assert overlapped(lambda: order.append("a") or 1, lambda: order.append("b") or 2, False) == (1, 2)
    assert order == ["a", "b"]  # sequential: first, then second
    assert overlapped(lambda: 1, lambda: 2, True) == (1, 2)

    def boom() -> int:
        raise RuntimeError("second failed")

    with pytest.raises(RuntimeError, match="second failed"):
        overlapped(lambda: 1, boom, True)


def _engine(runner: HostRunner) -> HostLvgEngine:
    return HostLvgEngine(runner, AgentConfig(node_name="n", lvm_extra_config="global{activation=0}", lvm_shell=False))


def _spec(*pools: tuple[str, str]) -> LVMVolumeGroupSpec:
    return LVMVolumeGroupSpec(local=LocalSpec(node_name="n"), actual_vg_name_on_the_node="vg0",
                              file_devices=None, block_device_selector={"matchLabels": {"a": "b"}},
                              thin_pools=[ThinPool(name=n, size=s) for n, s in pools])


def _vg(size: int, free: int) -> VG:
    return VG("vg0", "uuid", size, free, 4 * MI, ("disklet.io/enabled=true", "disklet.io/lvmVolumeGroupName=l"),
              1, 0)


def test_thin_pool_create_argv() -> None:
    runner = FakeRunner()
    eng = _engine(runner)
    rnd = ReconcileState()
    eng.reconciler.thin_pools(_spec(("tp", "100%"), ("abs", "1Gi")), LvmSnapshot(), _vg(10 * GI, 10 * GI), rnd)
    creates = [a for a in runner.argvs if a[0] == "lvcreate"]
    assert creates[0][0:2] == ["lvcreate", "--config"] and "global{activation=0}" in creates[0][2]
    assert creates[0][3:] == ["--yes", "--type", "thin-pool", "--extents", "100%FREE", "--name", "tp", "--", "vg0"]
    # The 100% pool took the whole VG: the second pool cannot fit and the condition says why, with numbers.
    assert len(creates) == 1
    assert rnd.failures and "thinPools[abs]" in rnd.failures[0][1] and "0 bytes free" in rnd.failures[0][1]


def test_thin_pool_absolute_create_and_extend_argv() -> None:
    runner = FakeRunner()
    eng = _engine(runner)
    snap = LvmSnapshot(lvs=[LV("grow", "u1", "vg0", "uuid", GI, "thin-pool", "", 0.0, "twi---tz--"),
                            LV("full", "u2", "vg0", "uuid", 2 * GI, "thin-pool", "", 0.0, "twi---tz--")])
    rnd = ReconcileState()
    eng.reconciler.thin_pools(_spec(("new", "1Gi"), ("grow", "2Gi"), ("full", "100%")), snap, _vg(20 * GI, 10 * GI), rnd)
    cmds = [a[3:] for a in runner.argvs]
    assert ["--yes", "--type", "thin-pool", "--extents", "256", "--name", "new", "--", "vg0"] in cmds
    assert ["--extents", "512", "--", "vg0/grow"] in cmds
    assert ["--extents", "+100%FREE", "--", "vg0/full"] in cmds
    assert not rnd.failures


def test_thin_pool_noop_extend_reported_by_lvm_is_success() -> None:
    runner = FakeRunner({"lvextend": result(["lvextend"], 5, stderr="  New size (10 extents) matches existing size "
                                                                  "(10 extents).")})
    eng = _engine(runner)
    snap = LvmSnapshot(lvs=[LV("full", "u2", "vg0", "uuid", 2 * GI, "thin-pool", "", 0.0, "twi---tz--")])
    rnd = ReconcileState()
    eng.reconciler.thin_pools(_spec(("full", "100%")), snap, _vg(3 * GI, GI), rnd)
    assert runner.calls["lvextend"] == 1 and not rnd.failures


def test_thin_pool_real_failure_sets_reason() -> None:
    runner = FakeRunner({"lvcreate": result(["lvcreate"], 5, stderr="  device-mapper: reload ioctl failed")})
    eng = _engine(runner)
    rnd = ReconcileState()
    eng.reconciler.thin_pools(_spec(("tp", "50%")), LvmSnapshot(), _vg(10 * GI, 10 * GI), rnd)
    assert rnd.failures and rnd.failures[0][0] == "ThinPoolReconcileFailed"
    assert "reload ioctl failed" in rnd.failures[0][1]
