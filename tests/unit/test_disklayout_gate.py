"""The agent's gate on a fake node: device types, identity,
multipath, partition labels, existing VGs, live mounts, append-only. Pure: fake runner and topology."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
from disklet_agent.config import AgentConfig
from disklet_agent.disklayout.gate import plan_apply
from disklet_agent.disklayout.identity import DiskIdentity, identities_text
from disklet_agent.host.lsblk import parse_lsblk_json
from disklet_agent.logic.topology import BlockTopology

from devkit.fakehost import FakeRunner
from disklet.api.disklayout import RefusalCode
from disklet.hostcmd import CommandResult
from disklet.layout import extract as extract_module
from disklet.layout.checked import check_layout


@pytest.fixture(autouse=True)
def _offline(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(extract_module, "nix_available", lambda: False)


def _no_process(argv: tuple[str, ...]) -> CommandResult:
    """The gate runs no command through the runner on these fixtures (nix is unavailable)."""
    raise AssertionError(f"unexpected command {argv}")


class FakeReader:
    """The gate's node reads from fixed answers; ``realpath -e`` through a map."""

    def __init__(self, topology: BlockTopology, links: dict[str, str] | None = None,
                 mounts: list[tuple[str, str]] | None = None, vgs: set[str] | None = None,
                 pools: set[str] | None = None):
        self._topology, self.links = topology, links or {}
        self._mounts, self._vgs, self._pools = list(mounts or []), set(vgs or ()), set(pools or ())

    def topology(self) -> BlockTopology:
        return self._topology

    def resolve(self, targets: Sequence[str]) -> dict[str, str | None]:
        out: dict[str, str | None] = {}
        for t in targets:
            path = self.links.get(t, t)
            out[t] = path if path.startswith("/dev/") and "missing" not in path else None
        return out

    def mounts(self) -> list[tuple[str, str]]:
        return self._mounts

    def volume_groups(self) -> set[str]:
        return self._vgs

    def pv_members(self) -> list[tuple[str, str]]:
        return []

    def zpools(self) -> set[str]:
        return self._pools

    def imported_zpools(self) -> set[str] | None:
        return self._pools

    def real_paths(self, paths: Sequence[str]) -> dict[str, str]:
        """Mountpoints resolved through the same map (identity when not in it)."""
        if self.links.get("real_paths") == "broken":
            from disklet_agent.host.lsblk import ProbeFailed
            raise ProbeFailed("realpath exited 1")
        return {p: self.links.get(p, p) for p in paths}


def dev(path: str, type_: str = "disk", *, wwn: str | None = None, serial: str | None = None,
        fstype: str | None = None, ptuuid: str | None = None, partlabel: str | None = None, ro: bool = False,
        rm: bool = False, children: list[dict[str, Any]] | None = None, size: int = 10 << 30) -> dict[str, Any]:
    d: dict[str, Any] = {"name": path, "path": path, "kname": path, "fstype": fstype, "pttype": "gpt" if ptuuid else None,
                         "mountpoints": [None], "type": type_, "size": size, "ro": ro, "rm": rm, "serial": serial,
                         "wwn": wwn, "model": "M", "ptuuid": ptuuid, "partlabel": partlabel, "maj:min": "8:0"}
    if children:
        d["children"] = children
    return d


def topo(*devices: dict[str, Any]) -> BlockTopology:
    return BlockTopology(roots=parse_lsblk_json(json.dumps({"blockdevices": list(devices)})))


def body(*disks: tuple[str, str], mountpoint: str = "/srv/data", extra: str = "") -> str:
    parts = " ".join(
        f'{name} = {{ type = "disk"; device = "{device}"; content = {{ type = "gpt"; partitions.p = {{ size = "100%"; '
        f'content = {{ type = "filesystem"; format = "ext4"; mountpoint = "{mountpoint}/{name}"; }}; }}; }}; }};'
        for name, device in disks)
    return "{ disko.devices = { disk = { " + parts + " }; " + extra + " }; }"


def plan(text: str, topology: BlockTopology, tmp_path: Path, *, links: dict[str, str] | None = None,
         mounts: list[tuple[str, str]] | None = None, vgs: set[str] | None = None, **kw: Any):  # type: ignore[no-untyped-def]
    pools = set(kw.pop("pools", ()))
    cfg = AgentConfig(host_root=tmp_path, system_mounts=["/"], volume_mounts=[],
                      allow_loop_targets=kw.pop("allow_loop", False))
    (tmp_path / "etc" / "disklet" / "disk").mkdir(parents=True, exist_ok=True)
    return plan_apply(text, runner=FakeRunner(default=_no_process), config=cfg,
                      reader=FakeReader(topology, links, mounts, vgs, pools), **kw)


def applied(tmp_path: Path, text: str, identities: dict[str, DiskIdentity] | None) -> None:
    d = tmp_path / "etc" / "disklet" / "disk"
    d.mkdir(parents=True, exist_ok=True)
    (d / "current.nix").write_text(check_layout(text).artifact)
    if identities is not None:
        (d / "identity.json").write_text(identities_text(identities))


def test_blank_whole_disk_is_fine(tmp_path: Path) -> None:
    p = plan(body(("a", "/dev/sdb")), topo(dev("/dev/sdb", wwn="0x1")), tmp_path)
    assert p.ok, p.message
    assert "builtins" not in p.artifact and p.layout_hash


@pytest.mark.parametrize("node", [
    dev("/dev/loop7", "loop"), dev("/dev/dm-3", "lvm"), dev("/dev/rbd0"), dev("/dev/nbd1"), dev("/dev/drbd0"),
    dev("/dev/zram0"), dev("/dev/md0", "raid1"), dev("/dev/sr0", "rom"), dev("/dev/sdb", ro=True),
    dev("/dev/sdb", rm=True),
], ids=lambda n: f"{n['path']}-{n['type']}-ro{n['ro']}-rm{n['rm']}")
def test_only_writable_fixed_whole_disks_are_targets(node: dict[str, Any], tmp_path: Path) -> None:
    p = plan(body(("a", node["path"])), topo(node), tmp_path)
    assert not p.ok and p.code is RefusalCode.NOT_WHOLE_DISK, p.message


def test_partitions_and_tenant_block_volumes_are_not_targets(tmp_path: Path) -> None:
    t = topo(dev("/dev/sdc", children=[dev("/dev/sdc1", "part")]))
    p = plan(body(("a", "/dev/sdc1")), t, tmp_path)
    assert p.code is RefusalCode.NOT_WHOLE_DISK and "not a whole disk" in p.message


def test_loop_devices_need_the_explicit_switch(tmp_path: Path) -> None:
    t = topo(dev("/dev/loop7", "loop"))
    assert plan(body(("a", "/dev/loop7")), t, tmp_path).code is RefusalCode.NOT_WHOLE_DISK
    assert plan(body(("a", "/dev/loop7")), t, tmp_path, allow_loop=True).ok


def test_applied_disk_must_match_its_recorded_identity(tmp_path: Path) -> None:
    layout = body(("a", "/dev/sdb"))
    applied(tmp_path, layout, {"/dev/sdb": DiskIdentity(wwn="0xAAA", serial="S1", model="M", size=10 << 30,
                                                         ptuuid="1111")})
    # Kernel names shifted: /dev/sdb is now another disk with an unmounted filesystem on it.
    other = dev("/dev/sdb", wwn="0xBBB", serial="S2", ptuuid="2222",
                children=[dev("/dev/sdb1", "part", fstype="ext4", partlabel="disk-x-y")])
    p = plan(layout, topo(other), tmp_path)
    assert not p.ok and p.code is RefusalCode.IDENTITY_CHANGED, p.message
    assert "WWN was '0xAAA'" in p.message
    same = dev("/dev/sdb", wwn="0xAAA", serial="S1", ptuuid="1111",
               children=[dev("/dev/sdb1", "part", fstype="ext4", partlabel="disk-a-p")])
    assert plan(layout, topo(same), tmp_path).ok


def test_missing_identity_entry_refuses(tmp_path: Path) -> None:
    layout = body(("a", "/dev/sdb"))
    applied(tmp_path, layout, {})
    p = plan(layout, topo(dev("/dev/sdb", wwn="0x1", ptuuid="1", children=[dev("/dev/sdb1", "part", fstype="ext4")])),
             tmp_path)
    assert p.code is RefusalCode.IDENTITY_CHANGED and "no identity was recorded" in p.message


def test_multipath_two_paths_one_disk(tmp_path: Path) -> None:
    t = topo(dev("/dev/sda", wwn="0x5000c500af8b2a14"), dev("/dev/sdc", wwn="0x5000c500af8b2a14"))
    p = plan(body(("a", "/dev/sda"), ("b", "/dev/sdc")), t, tmp_path)
    assert not p.ok and p.code is RefusalCode.DUPLICATE_TARGET and "same disk" in p.message


def test_partition_label_collision_with_the_os_disk(tmp_path: Path) -> None:
    os_disk = dev("/dev/sda", wwn="0x1", children=[dev("/dev/sda2", "part", partlabel="disk-main-root")])
    p = plan(body(("main", "/dev/sdb")).replace("partitions.p", "partitions.root"),
             topo(os_disk, dev("/dev/sdb", wwn="0x2")), tmp_path)
    assert not p.ok and p.code is RefusalCode.PARTITION_LABEL_COLLISION and "/dev/sda2" in p.message


def test_existing_volume_group_is_refused(tmp_path: Path) -> None:
    text = ('{ disko.devices = { disk.a = { type = "disk"; device = "/dev/sdb"; content = { type = "gpt"; '
            'partitions.f = { size = "1G"; content = { type = "filesystem"; format = "ext4"; mountpoint = "/srv/f"; }; }; '
            'partitions.p = { size = "100%"; content = { type = "lvm_pv"; vg = "vg0"; }; }; }; }; '
            'lvm_vg.vg0 = { type = "lvm_vg"; lvs = { }; }; }; }')
    p = plan(text, topo(dev("/dev/sdb", wwn="0x2")), tmp_path, vgs={"vg0"})
    assert not p.ok and p.code is RefusalCode.VOLUME_GROUP_EXISTS
    assert plan(text, topo(dev("/dev/sdb", wwn="0x2")), tmp_path, vgs={"other"}).ok


def test_never_over_a_live_mount(tmp_path: Path) -> None:
    t = topo(dev("/dev/sdb", wwn="0x2"))
    p = plan(body(("a", "/dev/sdb")), t, tmp_path, mounts=[("/srv/data/a/nfs", "server:/x")])
    assert not p.ok and p.code is RefusalCode.MOUNTPOINT_OVER_LIVE_MOUNT and "/srv/data/a" in p.message
    p = plan(body(("a", "/dev/sdb")), t, tmp_path, mounts=[("/srv/data/a", "tmpfs")])
    assert p.code is RefusalCode.MOUNTPOINT_OVER_LIVE_MOUNT
    assert plan(body(("a", "/dev/sdb")), t, tmp_path, mounts=[("/srv", "/dev/sda3")]).ok


def test_removing_an_applied_disk_needs_the_explicit_field(tmp_path: Path) -> None:
    ids = {"/dev/sdb": DiskIdentity(wwn="0x2", ptuuid="2"), "/dev/sdc": DiskIdentity(wwn="0x3", ptuuid="3")}
    applied(tmp_path, body(("a", "/dev/sdb"), ("b", "/dev/sdc")), ids)
    t = topo(dev("/dev/sdb", wwn="0x2", ptuuid="2", children=[dev("/dev/sdb1", "part", fstype="ext4")]),
             dev("/dev/sdc", wwn="0x3", ptuuid="3", children=[dev("/dev/sdc1", "part", fstype="ext4")]))
    p = plan(body(("a", "/dev/sdb")), t, tmp_path)
    assert not p.ok and p.code is RefusalCode.APPLIED_DISK_REMOVED and "'b'" in p.message
    assert plan(body(("a", "/dev/sdb")), t, tmp_path, allow_destructive=True).ok


def test_moving_an_applied_mountpoint_needs_the_explicit_field(tmp_path: Path) -> None:
    applied(tmp_path, body(("a", "/dev/sdb")), {"/dev/sdb": DiskIdentity(wwn="0x2", ptuuid="2")})
    t = topo(dev("/dev/sdb", wwn="0x2", ptuuid="2", children=[dev("/dev/sdb1", "part", fstype="ext4")]))
    moved = body(("a", "/dev/sdb"), mountpoint="/srv/elsewhere")
    p = plan(moved, t, tmp_path)
    assert not p.ok and p.code is RefusalCode.PARTITIONS_NOT_APPEND_ONLY and "mountpoint" in p.message
    assert plan(moved, t, tmp_path, allow_destructive=True).ok
    reformatted = body(("a", "/dev/sdb")).replace('"ext4"', '"xfs"')
    p = plan(reformatted, t, tmp_path, allow_destructive=True)
    assert not p.ok and p.code is RefusalCode.PARTITIONS_NOT_APPEND_ONLY  # formats never change


def test_forbidden_content_is_refused_by_the_agent_too(tmp_path: Path) -> None:
    text = body(("a", "/dev/sdb")).replace('format = "ext4";', 'format = "ext4"; postMountHook = "reboot";')
    p = plan(text, topo(dev("/dev/sdb", wwn="0x2")), tmp_path)
    assert not p.ok and not p.failed and p.code is RefusalCode.LAYOUT_FORBIDDEN_OPTION


def test_existing_or_importable_zpool_is_refused(tmp_path: Path) -> None:
    text = ('{ disko.devices = { disk.a = { type = "disk"; device = "/dev/sdb"; content = { type = "gpt"; '
            'partitions.p = { size = "100%"; content = { type = "zfs"; pool = "tank"; }; }; }; }; '
            'zpool.tank = { type = "zpool"; mountpoint = "/srv/tank"; datasets = { }; }; }; }')
    p = plan(text, topo(dev("/dev/sdb", wwn="0x2")), tmp_path, pools={"tank"})
    assert not p.ok and p.code is RefusalCode.ZPOOL_EXISTS and "force-import" in p.message
    assert plan(text, topo(dev("/dev/sdb", wwn="0x2")), tmp_path, pools={"other"}).ok


def test_zpool_reader_parses_list_and_import() -> None:
    from disklet_agent.host.layout_reads import read_zpools

    runner = FakeRunner({("zpool", "list"): (0, "rpool\n", ""),
                         ("zpool", "import"): (0, "   pool: tank\n     id: 123\n  state: ONLINE\n", "")}, strict=True)
    assert read_zpools(runner) == {"rpool", "tank"}


# ------------------------------------------------------------------ mountpoints resolved on the node
@pytest.mark.parametrize(("links", "says"), [
    ({"/srv/data/a": "/etc"}, "resolves on the node to '/etc' through a symbolic link, outside its allowed root /srv"),
    ({"/srv/data/a": "/var/lib/kubelet/pods/x"}, "outside its allowed root /srv"),
    ({"/srv/data/a": "/data/a"}, "outside its allowed root /srv"),  # another allowed root: still refused
    ({"/srv/data/a": "/srv/kubernetes/pki"}, "is a system path"),  # same root, but denied
])
def test_a_symlinked_mountpoint_that_leaves_its_root_is_refused(links: dict[str, str], says: str,
                                                               tmp_path: Path) -> None:
    p = plan(body(("a", "/dev/sdb")), topo(dev("/dev/sdb", wwn="0x1")), tmp_path, links=links)
    assert not p.ok and not p.failed and p.code is RefusalCode.MOUNTPOINT_RESOLVES_ELSEWHERE, p.message
    assert says in p.message and "/srv/data/a" in p.message


def test_a_symlink_inside_the_same_root_is_judged_at_its_target(tmp_path: Path) -> None:
    p = plan(body(("a", "/dev/sdb")), topo(dev("/dev/sdb", wwn="0x1")), tmp_path, links={"/srv/data/a": "/srv/b/a"})
    assert p.ok, p.message
    # the live-mount check looks at the resolved path as well
    p = plan(body(("a", "/dev/sdb")), topo(dev("/dev/sdb", wwn="0x1")), tmp_path,
             links={"/srv/data/a": "/srv/b/a"}, mounts=[("/srv/b/a/inner", "/dev/sdz1")])
    assert p.code is RefusalCode.MOUNTPOINT_OVER_LIVE_MOUNT and "it resolves to /srv/b/a" in p.message


def test_a_root_that_is_itself_a_link_keeps_its_mounts_inside_what_it_resolves_to(tmp_path: Path) -> None:
    links = {"/srv": "/mnt/big", "/srv/data/a": "/mnt/big/data/a"}
    p = plan(body(("a", "/dev/sdb")), topo(dev("/dev/sdb", wwn="0x1")), tmp_path, links=links)
    assert p.ok, p.message


def test_mountpoints_that_cannot_be_resolved_refuse(tmp_path: Path) -> None:
    p = plan(body(("a", "/dev/sdb")), topo(dev("/dev/sdb", wwn="0x1")), tmp_path, links={"real_paths": "broken"})
    assert p.code is RefusalCode.STATE_UNKNOWN and "realpath exited 1" in p.message
