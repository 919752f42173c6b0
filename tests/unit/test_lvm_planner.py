"""Pure planners: validation messages, PV plans with alias resolution, scoped rollback, discovery."""

from __future__ import annotations

from disklet_agent.host.losetup import LoopDevice
from disklet_agent.host.lvm import PV, VG
from disklet_agent.lvm.discovery import discover_status, find_vg
from disklet_agent.lvm.planner import Step, canonical_device, plan_pvs, plan_rollback
from disklet_agent.lvm.snapshot import LvmSnapshot

from disklet.api.lvm import FileDevice, LocalSpec, LVMVolumeGroupSpec
from disklet.lvm.validation import inside_base, validate_lvg

BASE = "/var/lib/disklet/file-devices"
TAGS = ("disklet.io/enabled=true", "disklet.io/lvmVolumeGroupName=lvg1")


def _spec(*entries: tuple[str, str, str]) -> LVMVolumeGroupSpec:
    fds = [FileDevice.model_construct(name=n, directory=d, size=s) for n, d, s in entries]
    return LVMVolumeGroupSpec.model_construct(type="Local", local=LocalSpec(node_name="n"),
                                              actual_vg_name_on_the_node="vg1", block_device_selector=None,
                                              file_devices=fds, thin_pools=None)


def test_inside_base() -> None:
    assert inside_base(BASE, BASE) and inside_base(BASE + "/a/b", BASE) and inside_base(BASE + "/", BASE)
    assert not inside_base(BASE + "-other", BASE) and not inside_base("/var/lib", BASE)
    assert not inside_base("/anything", "/")


def test_validation_messages_are_actionable() -> None:
    errs = validate_lvg("lvg1", _spec(("a", "/srv", "1Gi"), ("b", BASE, "1G"), ("c", BASE, "512Mi"),
                                      ("a", BASE + "/x", "1Gi")), BASE)
    text = "\n".join(errs)
    assert "fileDevices[a]: directory '/srv' is outside" in text and BASE in text
    assert "did you mean 1Gi" in text
    assert "below the 1Gi minimum" in text
    assert "duplicate entry name 'a'" in text


def test_validation_accepts_a_clean_spec() -> None:
    assert validate_lvg("lvg1", _spec(("a", BASE, "1Gi"), ("b", BASE + "/ssd", "2Gi")), BASE) == []


def test_canonical_device_resolves_aliases() -> None:
    assert canonical_device("/dev/block/7:3", {"7:3": "/dev/loop3"}, {}) == "/dev/loop3"
    assert canonical_device("/dev/disk/by-id/lvm-pv-uuid-x", {}, {"/dev/disk/by-id/lvm-pv-uuid-x": "/dev/loop4"}) \
        == "/dev/loop4"
    assert canonical_device("/dev/disk/by-id/unknown", {}, {}) is None
    assert canonical_device("/dev/sdb", {}, {}) == "/dev/sdb"


def _pv(name: str, vg_uuid: str = "", vg: str = "") -> PV:
    return PV(name, "pvu-" + name, 1, 1, 1, vg, vg_uuid)


def test_plan_pvs_orphan_joins_without_pvcreate_and_foreign_pv_is_an_error() -> None:
    live = {"/dev/loop1": _pv("/dev/loop1"), "/dev/loop2": _pv("/dev/loop2", "ours"),
            "/dev/loop3": _pv("/dev/loop3", "theirs", "othervg")}
    plan = plan_pvs(["/dev/loop0", "/dev/loop1", "/dev/loop2", "/dev/loop3"], live, "ours")
    assert plan.pvcreate == ("/dev/loop0",)
    assert plan.join == ("/dev/loop0", "/dev/loop1")
    assert plan.members == ("/dev/loop2",)
    assert plan.errors[0][0] == "/dev/loop3" and "othervg" in plan.errors[0][1]


def test_plan_pvs_fails_closed_on_unresolved_alias() -> None:
    plan = plan_pvs(["/dev/loop0"], {}, None, ["/dev/disk/by-id/x"])
    assert plan.pvcreate == () and plan.errors


def test_rollback_reverse_and_scoped() -> None:
    steps = [Step("file", "/b/f1", "/b/f1"), Step("loop", "/dev/loop1", "/b/f1"), Step("pv", "/dev/loop1", "/b/f1"),
             Step("file", "/b/f2", "/b/f2"), Step("loop", "/dev/loop2", "/b/f2"), Step("pv", "/dev/loop2", "/b/f2")]
    # loop1's PV is orphan (ours to remove); loop2 already joined a VG: it and its file stay.
    live = {"/dev/loop1": _pv("/dev/loop1"), "/dev/loop2": _pv("/dev/loop2", "vg")}
    plan = plan_rollback(steps, live)
    assert [(s.kind, s.target) for s in plan] == [("pv", "/dev/loop1"), ("loop", "/dev/loop1"), ("file", "/b/f1")]


def test_rollback_tears_nothing_down_when_pvs_cannot_be_listed() -> None:
    assert plan_rollback([Step("file", "/b/f", "/b/f"), Step("loop", "/dev/loop1", "/b/f")], None) == []


def test_rollback_never_removes_a_file_it_did_not_create() -> None:
    plan = plan_rollback([Step("loop", "/dev/loop1", "/b/f")], {})
    assert [(s.kind, s.target) for s in plan] == [("loop", "/dev/loop1")]


def _snap(vgs: list[VG], pvs: list[PV], loops: list[LoopDevice]) -> LvmSnapshot:
    return LvmSnapshot(loops=loops, pvs=pvs, vgs=vgs, base_dirs=(BASE,))


def test_discovery_reports_only_marked_files_canonically_and_sorted() -> None:
    vg = VG("vg1", "vgu", 2, 1, 1, TAGS, 3, 0)
    loops = [LoopDevice("/dev/loop5", f"{BASE}/disklet-lvg1.b.img", maj_min="7:5"),
             LoopDevice("/dev/loop2", f"{BASE}/disklet-lvg1.a.img", maj_min="7:2"),
             LoopDevice("/dev/loop9", "/home/vm/guest.img", maj_min="7:9")]
    pvs = [_pv("/dev/loop5", "vgu", "vg1"), _pv("/dev/block/7:2", "vgu", "vg1"), _pv("/dev/loop9", "vgu", "vg1")]
    st = discover_status("lvg1", _spec(), _snap([vg], pvs, loops), "node-a", vg)
    assert st is not None
    fds = st.nodes[0].file_devices
    assert [(f.name, f.loop_device) for f in fds] == [("a", "/dev/loop2"), ("b", "/dev/loop5")]


def test_discovery_skips_a_vg_whose_backing_file_cannot_be_read() -> None:
    vg = VG("vg1", "vgu", 2, 1, 1, TAGS, 1, 0)
    st = discover_status("lvg1", _spec(), _snap([vg], [_pv("/dev/loop5", "vgu", "vg1")], []), "n", vg)
    assert st is None


def test_find_vg_identity_and_foreign_names() -> None:
    ours = VG("vg1", "u1", 1, 1, 1, TAGS, 1, 0)
    other = VG("vg1", "u2", 1, 1, 1, ("disklet.io/enabled=true", "disklet.io/lvmVolumeGroupName=x"), 1, 0)
    snap = _snap([ours], [], [])
    assert find_vg(snap, "lvg1", "vg1", None).vg == ours
    assert find_vg(snap, "lvg1", "renamed", "u1").vg == ours  # identity is the UUID
    lookup = find_vg(_snap([other], [], []), "lvg1", "vg1", None)
    assert lookup.vg is None and "owned by LVMVolumeGroup x" in (lookup.error or "")


def test_find_vg_never_trusts_a_status_uuid_without_our_owner_tag():
    """A forged status.vgUUID pointing at a foreign VG must not make it ours (delete would vgremove it)."""
    from disklet_agent.lvm.discovery import find_vg
    from disklet_agent.lvm.snapshot import LvmSnapshot

    foreign = _vg_for_ownership_test("data", "UUID-FOREIGN", tags=[])
    mine = _vg_for_ownership_test("vg0", "UUID-MINE", tags=["disklet.io/enabled=true", "disklet.io/lvmVolumeGroupName=lvg1"])
    snap = LvmSnapshot(vgs=[foreign, mine])
    assert find_vg(snap, "lvg1", "vg0", "UUID-FOREIGN").vg is None
    assert "owner tag" in (find_vg(snap, "lvg1", "vg0", "UUID-FOREIGN").error or "")
    assert find_vg(snap, "lvg1", "vg0", "UUID-MINE").vg is mine
    assert find_vg(snap, "lvg1", "vg0", None).vg is mine


def _vg_for_ownership_test(name: str, uuid: str, tags: list[str]):
    from disklet_agent.host.lvm import VG

    return VG(name=name, uuid=uuid, size=2 << 30, free=2 << 30, extent_size=4 << 20, tags=tuple(tags),
              pv_count=1, lv_count=0)
