"""What a layout may contain (the allowlist, the sandbox and the mountpoint policy), offline.

Each raw body here passed pre-flight before the allowlist existed (pending, target /dev/vdb).
"""

from __future__ import annotations

import copy
from typing import Any

import pytest
from pydantic import ValidationError

from disklet.api.disklayout import DiskLayoutSpec, Phase, RefusalCode
from disklet.layout import extract as extract_module
from disklet.layout import preflight
from disklet.layout.checked import check_layout
from disklet.layout.mountpaths import close_pool_roots, mount_paths
from disklet.layout.mounts import MountPolicy
from disklet.layout.render import devices_value
from disklet.layout.samples import EXT4, MIXED, structured
from disklet.layout.schema import SchemaViolation, schema_violation


@pytest.fixture(autouse=True)
def _offline(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(extract_module, "nix_available", lambda: False)


def raw(part: str, extra: str = "") -> str:
    return ('{ disko.devices = { disk.d = { type = "disk"; device = "/dev/vdb"; content = { type = "gpt"; '
            'partitions.p = ' + part + '; }; }; ' + extra + ' }; }')


FS = '{ size = "100%"; content = { type = "filesystem"; format = "ext4"; mountpoint = "/srv/data"; }; }'


def pf(body: str):  # type: ignore[no-untyped-def]
    return preflight(DiskLayoutSpec.model_validate({"nodeName": "n", "layoutNix": body}))


def test_plain_raw_layout_is_pending() -> None:
    result = pf(raw(FS))
    assert result.phase == Phase.PENDING, result.message
    assert result.target_devices == ["/dev/vdb"]


@pytest.mark.parametrize("body,path", [
    (raw('{ size = "100%"; preCreateHook = "dd if=/dev/zero of=/dev/vda bs=1M"; content = { type = "filesystem"; '
         'format = "ext4"; mountpoint = "/srv/x"; }; }'), "disko.devices.disk.d.content.partitions.p.preCreateHook"),
    (raw('{ size = "100%"; content = { type = "filesystem"; format = "ext4"; mountpoint = "/srv/x"; '
         'postMountHook = "reboot"; }; }'), "content.postMountHook"),
    (raw('{ size = "100%"; content = { type = "filesystem"; format = "ext4"; mountpoint = "/srv/x"; '
         'extraArgs = [ "-L" "x" ]; }; }'), "content.extraArgs"),
    (raw(FS, 'nodev."/etc" = { fsType = "tmpfs"; mountpoint = "/etc"; };'), "disko.devices.nodev"),
    (raw(FS, 'lvm_vg.vg_sys = { type = "lvm_vg"; lvs.x = { size = "1G"; extraArgs = [ "--yes" ]; }; };'),
     "lvs.x.extraArgs"),
    (raw(FS, 'zpool.tank = { type = "zpool"; rootFsOptions = { "a;reboot" = "x"; }; datasets = { }; };'),
     "zpool.tank.rootFsOptions"),
    (raw('{ size = "100%"; label = "x\\"; reboot; \\""; content = { type = "filesystem"; format = "ext4"; '
         'mountpoint = "/srv/x"; }; }'), "partitions.p.label"),
    (raw('{ size = "100%"; start = "0;reboot"; content = { type = "lvm_pv"; vg = "v"; }; }'), "partitions.p.start"),
    (raw('{ size = "100%"; hybrid = { mbrPartitionType = "0x83; reboot"; }; content = { type = "lvm_pv"; '
         'vg = "v"; }; }'), "partitions.p.hybrid"),
    (raw('{ size = "100%"; content = { type = "luks"; name = "c"; }; }'), "content.type = 'luks'"),
    ('{ disko.devices.disk.d = { type = "disk"; device = "/dev/vdb"; postCreateHook = "x"; }; }', "d.postCreateHook"),
])
def test_hooks_free_form_args_and_other_types_are_forbidden(body: str, path: str) -> None:
    if "Hook" in body or "extraArgs" in body:  # the model (and CEL) already reject the text itself
        with pytest.raises(ValidationError, match="must not use disko hooks"):
            pf(body)
        # and the walk of the evaluated value refuses it too (a name built at evaluation time hides from text checks)
        with pytest.raises(SchemaViolation) as exc:
            check_layout(body)
        assert exc.value.code is RefusalCode.LAYOUT_FORBIDDEN_OPTION and path in str(exc.value)
        return
    result = pf(body)
    assert result.phase == Phase.REFUSED, result.message
    assert result.refusal_reason is RefusalCode.LAYOUT_FORBIDDEN_OPTION
    assert path in result.message


@pytest.mark.parametrize("mountpoint", ["/etc", "/etc/ssh", "/proc", "/sys", "/dev", "/run", "/usr", "/var",
                                        "/boot", "/boot/efi", "/nix", "/var/lib/kubelet", "/var/lib/kubelet/pods",
                                        "/etc/disklet", "/var/lib/disklet", "/", "/home/x", "/opt"])
def test_system_mountpoints_are_refused_in_raw_layouts(mountpoint: str) -> None:
    result = pf(raw(FS.replace("/srv/data", mountpoint)))
    assert result.phase == Phase.REFUSED, result.message
    assert result.refusal_reason is RefusalCode.MOUNTPOINT_NOT_ALLOWED


@pytest.mark.parametrize("mountpoint", ["/data/$(touch /tmp/pwned)", '/data/x";reboot;"', "/data/`id`",
                                        "/data/a b", "/data/../etc", "/data/./x", "/data//x", "/data/x/",
                                        "/data/x\\ny"])
def test_shell_characters_in_mountpoints_are_refused(mountpoint: str) -> None:
    with pytest.raises(ValidationError):  # structured: the model (and CEL) reject it
        data = copy.deepcopy(EXT4)
        data["disks"][0]["gpt"]["partitions"][0]["content"]["mountpoint"] = mountpoint
        structured(data)
    nix = mountpoint.replace("\\", "\\\\").replace('"', '\\"').replace("$", "\\$")
    result = pf(raw(FS.replace("/srv/data", nix)))  # raw: the walk of the evaluated value
    assert result.phase == Phase.REFUSED, result.message
    assert result.refusal_reason is RefusalCode.MOUNTPOINT_NOT_ALLOWED


@pytest.mark.parametrize("field,value", [
    ("format", "ext4 -E root_owner=0; reboot"), ("mountOptions", ["nofail;reboot"]),
    ("mountOptions", ["a b"]), ("format", "ntfs"), ("type", "EF02"),
])
def test_values_that_reach_a_shell_are_checked(field: str, value: Any) -> None:
    value_nix = ("[ " + " ".join(f'"{v}"' for v in value) + " ]") if isinstance(value, list) else f'"{value}"'
    body = raw('{ size = "100%"; content = { type = "filesystem"; format = "ext4"; mountpoint = "/srv/x"; }; }'
               .replace('format = "ext4";', f"{field} = {value_nix};" if field == "format"
                        else f'format = "ext4"; {field} = {value_nix};'))
    if field == "type":  # a partition key, not a content key
        body = raw(f'{{ size = "100%"; type = {value_nix}; content = {{ type = "filesystem"; format = "ext4"; '
                   'mountpoint = "/srv/x"; }; }')
    result = pf(body)
    assert result.phase == Phase.REFUSED and result.refusal_reason is RefusalCode.LAYOUT_VALUE_NOT_ALLOWED, \
        result.message


@pytest.mark.parametrize("device", ["/dev/vdb; reboot", "/dev/$(x)", "vdb", "/dev/../etc/passwd"])
def test_device_strings_are_checked(device: str) -> None:
    value = devices_value(structured(EXT4))
    value["disk"]["data1"]["device"] = device  # type: ignore[index]
    violation = schema_violation(value)  # type: ignore[arg-type]
    assert violation is not None and violation.code is RefusalCode.LAYOUT_VALUE_NOT_ALLOWED


def test_zpool_topology_members_are_devices() -> None:
    value: dict[str, Any] = {"zpool": {"tank": {"type": "zpool", "datasets": {}, "mode": {"topology": {
        "type": "topology", "vdev": [{"mode": "mirror", "members": ["/dev/sda", "/dev/sdb;reboot"]}]}}}}}
    violation = schema_violation(value)
    assert violation is not None and "members[1]" in str(violation)


def test_structured_samples_pass_and_roots_are_configurable() -> None:
    assert schema_violation(close_pool_roots(devices_value(structured(MIXED)))) is None  # type: ignore[arg-type]
    assert schema_violation(devices_value(structured(EXT4))) is None  # type: ignore[arg-type]
    value = devices_value(structured(EXT4))
    only_srv = MountPolicy.of(["/srv"])
    violation = schema_violation(value, only_srv)  # type: ignore[arg-type]
    assert violation is not None and violation.code is RefusalCode.MOUNTPOINT_NOT_ALLOWED
    assert "not under an allowed root" in str(violation)


def test_denylist_beats_configured_roots() -> None:
    policy = MountPolicy.of(["/", "/etc"])
    assert policy.problem("/etc/x") is not None and policy.problem("/var") is not None
    assert policy.problem("/srv/x") is None


PV = '{ size = "100%"; content = { type = "lvm_pv"; vg = "data"; }; }'


@pytest.mark.parametrize("body,says", [
    (raw(PV, 'lvm_vg.data = { type = "lvm_vg"; };'), "mounts no file system"),
    (raw('{ size = "100%"; content = { type = "zfs"; pool = "tank"; }; }', 'zpool.tank = { type = "zpool"; };'),
     "mounts no file system"),
    (raw('{ size = "100%"; content = { type = "filesystem"; format = "ext4"; }; }'), "mounts no file system"),
    (raw(PV), "names a VG that disko.devices.lvm_vg does not define: add lvm_vg.data"),
    (raw(FS, 'lvm_vg.data = { type = "lvm_vg"; };'), "lvm_vg.data has no lvm_pv member"),
    (raw('{ size = "100%"; content = { type = "zfs"; pool = "tank"; }; }'),
     "names a pool that disko.devices.zpool does not define: add zpool.tank"),
])
def test_what_disko_leaves_to_run_time_is_refused(body: str, says: str) -> None:
    result = pf(body)
    assert result.phase == Phase.REFUSED and result.refusal_reason is RefusalCode.LAYOUT_VALUE_NOT_ALLOWED
    assert says in result.message, result.message


@pytest.mark.parametrize("body", [
    raw(PV, 'lvm_vg.data = { type = "lvm_vg"; lvs.l = { size = "1G"; content = { type = "filesystem"; '
            'format = "ext4"; mountpoint = "/srv/lv"; }; }; };'),
    raw('{ size = "100%"; content = { type = "zfs"; pool = "tank"; }; }',
        'zpool.tank = { type = "zpool"; mountpoint = "/srv/tank"; };'),
    raw('{ size = "100%"; content = { type = "zfs"; pool = "tank"; }; }',
        'zpool.tank = { type = "zpool"; datasets.d = { type = "zfs_fs"; mountpoint = "/srv/d"; }; };'),
])
def test_a_mounted_lv_or_a_pool_is_enough(body: str) -> None:
    result = pf(body)
    assert result.phase == Phase.PENDING, result.message


BARE = 'disk.b = { type = "disk"; device = "/dev/vdc"; };'


@pytest.mark.parametrize("body", [
    '{ disko.devices.disk.b = { type = "disk"; device = "/dev/vdc"; }; }',
    raw(FS, BARE),
    raw(FS, 'disk.b = { type = "disk"; device = "/dev/vdc"; content = null; };'),
    raw('{ size = "100%"; content = { type = "zfs"; pool = "tank"; }; }',
        BARE + ' zpool.tank = { type = "zpool"; mountpoint = "/srv/tank"; };'),
])
def test_a_disk_without_content_is_refused_saying_which_and_what_to_add(body: str) -> None:
    """disko cannot evaluate a disk without content (tests/host/test_disko_agreement.py)."""
    result = pf(body)
    assert result.phase == Phase.REFUSED and result.refusal_reason is RefusalCode.LAYOUT_VALUE_NOT_ALLOWED
    assert "disko.devices.disk.b has no content" in result.message, result.message
    assert 'add content = { type = "gpt"; partitions.<name>' in result.message, result.message
    assert "mounts no file system" not in result.message, result.message  # the one reason, not one it implies


def test_the_walk_names_every_disk_without_content() -> None:
    value = {"disk": {"a": {"type": "disk", "device": "/dev/vda"}, "b": {"type": "disk", "device": "/dev/vdb"}}}
    violation = schema_violation(value)
    assert violation is not None and violation.code is RefusalCode.LAYOUT_VALUE_NOT_ALLOWED
    assert [p.split(" has no content")[0] for p in violation.problems] == ["disko.devices.disk.a", "disko.devices.disk.b"]


def test_an_empty_partition_table_is_refused_saying_what_to_add() -> None:
    result = pf('{ disko.devices.disk.d = { type = "disk"; device = "/dev/vdb"; content = { type = "gpt"; '
                'partitions = { }; }; }; }')
    assert result.phase == Phase.REFUSED, result.message
    assert "disk.d.content.partitions must be a non-empty attribute set: add at least one partition" in result.message


# ------------------------------------------------------------------ ZFS's implicit mounts
def _pool(name: str, extra: str = "") -> str:
    return raw('{ size = "100%"; content = { type = "zfs"; pool = "' + name + '"; }; }',
               f'zpool.{name} = {{ type = "zpool"; {extra} }};')


@pytest.mark.parametrize("name", ["etc", "nix", "usr", "boot"])
def test_a_pool_named_after_a_system_path_mounts_nothing_there(name: str) -> None:
    """disko runs ``zpool create NAME -R /`` without -m: ZFS would mount the root dataset at /NAME
    and datasets without a mountpoint at /NAME/DS. The artifact closes that: the root dataset gets
    mountpoint=none (or its checked mountpoint), so only checked paths are mounted."""
    checked = check_layout(_pool(name, 'datasets.x = { type = "zfs_fs"; }; '
                                       'datasets.y = { type = "zfs_fs"; mountpoint = "/srv/y"; };'))
    pool = checked.devices_value["zpool"][name]
    assert pool["rootFsOptions"] == {"mountpoint": "none"}
    assert [m.path for m in mount_paths(checked.devices_value)] == ["/srv/y"]
    assert '"rootFsOptions" = {\n          "mountpoint" = "none";' in checked.artifact


def test_the_policy_judges_every_implicit_zfs_path_naming_it() -> None:
    """A value whose pools are not closed (an older current.nix, a hand-built value): the implicit
    paths go through the same policy, refused with mountpoint_not_allowed naming the path."""
    value = {"disk": {"a": {"type": "disk", "device": "/dev/vdb", "content": {"type": "gpt", "partitions": {
        "z": {"size": "100%", "content": {"type": "zfs", "pool": "etc"}}}}}},
        "zpool": {"etc": {"type": "zpool", "datasets": {"x": {"type": "zfs_fs"}}}}}
    violation = schema_violation(value)
    assert violation is not None and violation.code is RefusalCode.MOUNTPOINT_NOT_ALLOWED
    text = str(violation)
    assert "disko.devices.zpool.etc is mounted by ZFS at '/etc' (implicit" in text
    assert "disko.devices.zpool.etc.datasets.x is mounted by ZFS at '/etc/x'" in text
    assert schema_violation(close_pool_roots(value)) is not None  # mounts nothing at all: disko refuses that
    value["zpool"]["etc"]["mountpoint"] = "/srv/etc"
    assert schema_violation(close_pool_roots(value)) is None
    assert [m.path for m in mount_paths(close_pool_roots(value))] == ["/srv/etc", "/srv/etc/x"]


def test_a_pool_mountpoint_is_checked_and_inherited_by_its_datasets() -> None:
    result = pf(_pool("tank", 'mountpoint = "/etc/tank";'))
    assert result.refusal_reason is RefusalCode.MOUNTPOINT_NOT_ALLOWED and "/etc/tank" in result.message
    result = pf(_pool("tank", 'mountpoint = "/srv/tank"; datasets.home = { type = "zfs_fs"; };'))
    assert result.phase == Phase.PENDING, result.message
    checked = check_layout(_pool("tank", 'mountpoint = "/srv/tank"; datasets.home = { type = "zfs_fs"; };'))
    assert checked.devices_value["zpool"]["tank"]["rootFsOptions"] == {"mountpoint": "/srv/tank"}
    assert [m.path for m in mount_paths(checked.devices_value)] == ["/srv/tank", "/srv/tank/home"]
    with pytest.raises(SchemaViolation) as err:  # the inherited path is judged too
        check_layout(_pool("tank", 'mountpoint = "/srv/tank"; datasets.kubernetes = { type = "zfs_fs"; };').replace(
            "/srv/tank", "/srv"))
    assert err.value.code is RefusalCode.MOUNTPOINT_NOT_ALLOWED and "'/srv/kubernetes'" in str(err.value)


@pytest.mark.parametrize("options", ['{ mountpoint = "/srv/other"; }', '{ canmount = "on"; }',
                                     '{ mountpoint = "none"; compression = "lz4"; }'])
def test_root_fs_options_other_than_the_closing_one_are_forbidden(options: str) -> None:
    result = pf(_pool("tank", f'mountpoint = "/srv/tank"; rootFsOptions = {options};'))
    assert result.refusal_reason is RefusalCode.LAYOUT_FORBIDDEN_OPTION, result.message
    assert "rootFsOptions" in result.message


@pytest.mark.parametrize("path", ["/srv/kubernetes", "/srv/kubernetes/pki", "/srv/kubernetes/a/b"])
def test_srv_kubernetes_is_denied_as_a_tree(path: str) -> None:
    from disklet.api.disklayout import PartitionContent

    assert MountPolicy().problem(path) is not None and "system path" in str(MountPolicy().problem(path))
    with pytest.raises(ValidationError):
        PartitionContent.model_validate({"type": "filesystem", "format": "ext4", "mountpoint": path})
