"""What disko may do: an allowlist per disko type, applied to the *evaluated* ``disko.devices``.

One walk for structured and raw layouts alike (docs/layouts.md, "What a layout may contain").
disko turns the value into shell scripts and interpolates many strings unquoted or in double
quotes (device paths, names, formats, mountpoints, GPT labels, sizes, typecodes) and runs every
``*Hook`` as shell. So:

- only the types ``disk`` → ``gpt`` → partitions holding ``filesystem``/``lvm_pv``/``zfs``, plus
  ``lvm_vg`` (with plain LVs) and ``zpool`` (with an optional topology and ``zfs_fs`` datasets) are
  allowed; every other type (``nodev``/tmpfs, ``mdadm``, ``luks``, ``btrfs``, ``swap``, ...) and
  every key not listed here is refused with ``layout_uses_forbidden_option`` naming its key path;
  hooks, ``extraArgs``, pool ``options``/``rootFsOptions``, explicit ``label``/``uuid``/``start``/
  ``end``/``device`` redirects are never allowed;
- every string that can reach a shell must match a small character set (see the ``*_PATTERN``
  constants) and mountpoints follow :class:`disklet.layout.mounts.MountPolicy`; a value outside
  the set is refused with ``layout_value_not_allowed`` (``mountpoint_not_allowed`` for the
  mountpoint policy).
"""

from __future__ import annotations

import re
from collections import Counter
from typing import Any

from disklet.api.disklayout import FILESYSTEM_FORMATS, RefusalCode

from ..units import disko_unit_hint
from .errors import LayoutError
from .mountpaths import mount_paths, root_fs_options
from .mounts import MountPolicy
from .validate import DEVICE_RE, MAX_GPT_LABEL, MOUNT_OPTION_RE, NAME_RE, POOL_RE, SIZE_RE

LV_SIZE_PATTERN = r"^([1-9][0-9]*[KMGTP]?|[1-9][0-9]?%|100%)$"
LV_SIZE_RE = re.compile(LV_SIZE_PATTERN)
TYPECODE_PATTERN = r"^(8300|8[Ee]00|[Bb][Ff]0[01])$"
"""Linux filesystem, Linux LVM, Solaris/ZFS: never EF00/EF02 (EF02 makes NixOS install GRUB on the disk)."""
TYPECODE_RE = re.compile(TYPECODE_PATTERN)
ZPOOL_MODES = ("", "mirror", "raidz", "raidz1", "raidz2", "raidz3")
ZFS_RESERVED = ("mirror", "raidz", "draid", "spare", "log", "cache", "special", "dedup")
MAX_PRIORITY = 1_000_000
TOP_LEVEL = ("disk", "lvm_vg", "zpool")
PARTITION_CONTENT_TYPES = ("filesystem", "lvm_pv", "zfs")


def no_content(path: str) -> str:
    """Why a disk without ``content`` is refused and what to add (docs/layouts.md#checked-against-disko-itself)."""
    return (f"{path} has no content: disko cannot evaluate a disk without one (its create step reads the content) "
            'and refuses the layout; add content = { type = "gpt"; partitions.<name> = { size = "100%"; '
            'content = ...; }; }, each partition holding a filesystem (with a mountpoint), an lvm_pv or a zfs '
            "vdev, or leave the disk out of the layout")


NOTHING_MOUNTED = (
    "disko.devices mounts no file system (its partitions are all lvm_pv or zfs, and no pool or dataset has a "
    "mountpoint): disko cannot build its mount script without one and refuses the layout; add a filesystem with a "
    "mountpoint (as a partition's or an LV's content), or a mountpoint on a zpool or one of its datasets")


class SchemaViolation(LayoutError):
    """The evaluated layout uses something disklet does not allow; ``code`` is the refusal code."""

    def __init__(self, code: RefusalCode, problems: list[str]):
        self.code = code
        super().__init__(problems)


class _Walk:
    def __init__(self, policy: MountPolicy):
        self.policy = policy
        self.forbidden: list[str] = []
        self.values: list[str] = []
        self.mounts: list[str] = []
        self.mountpoints: list[tuple[str, str]] = []
        self.contents = 0  # disks with content (something disko creates)
        self.pv_vgs: dict[str, list[str]] = {}  # VG name -> the lvm_pv contents that join it
        self.zfs_pools: dict[str, list[str]] = {}  # pool name -> the zfs contents that join it

    # -- helpers ---------------------------------------------------------------------------
    def keys(self, value: Any, path: str, allowed: tuple[str, ...], required: tuple[str, ...] = ()) -> bool:
        if not isinstance(value, dict):
            self.values.append(f"{path} must be an attribute set, not {_kind(value)}")
            return False
        for key in sorted(value):
            if key not in allowed:
                why = "hooks run shell as root" if key.endswith("Hook") else (
                    "free-form arguments reach a shell" if key in ("extraArgs", "options", "rootFsOptions")
                    else f"allowed here: {', '.join(allowed)}")
                self.forbidden.append(f"{path}.{key} is not allowed ({why})")
        for key in required:
            if key not in value:
                self.values.append(f"{path}.{key} is required")
        return True

    def string(self, value: Any, path: str, regex: re.Pattern[str], what: str) -> None:
        if not isinstance(value, str) or not regex.fullmatch(value):
            hint = disko_unit_hint(value) if isinstance(value, str) and regex in (SIZE_RE, LV_SIZE_RE) else ""
            self.values.append(f"{path} = {value!r} is not allowed: {what} must match {regex.pattern}{hint}")

    def typed(self, value: dict[str, Any], path: str, expected: str) -> None:
        if value.get("type") != expected:
            self.values.append(f"{path}.type must be {expected!r}, not {value.get('type')!r}")

    def name(self, key: str, path: str, regex: re.Pattern[str] = NAME_RE) -> None:
        if not regex.fullmatch(key):
            self.values.append(f"{path}: name {key!r} must match {regex.pattern}")

    # -- types -----------------------------------------------------------------------------
    def devices(self, value: dict[str, Any]) -> None:
        path = "disko.devices"
        self.keys(value, path, TOP_LEVEL)
        for key, check in (("disk", self.disk), ("lvm_vg", self.lvm_vg), ("zpool", self.zpool)):
            group = value.get(key, {})
            if not isinstance(group, dict):
                self.values.append(f"{path}.{key} must be an attribute set, not {_kind(group)}")
                continue
            for name in sorted(group):
                check(name, group[name], f"{path}.{key}.{name}")
        self.references(value)

    def references(self, value: dict[str, Any]) -> None:
        """What disko's types do not check but its scripts need: every lvm_pv joins a defined VG and
        every VG has a PV (vgcreate needs devices), every zfs vdev joins a defined pool, and at least one
        file system is mounted (without one disko cannot build its mount script and refuses the layout)."""
        vgs: dict[str, Any] = value.get("lvm_vg") or {}
        pools: dict[str, Any] = value.get("zpool") or {}
        if not isinstance(vgs, dict) or not isinstance(pools, dict):
            return  # already reported: must be an attribute set
        for vg, users in sorted(self.pv_vgs.items()):
            if vg not in vgs:
                self.values.append(f"{users[0]}.vg = {vg!r} names a VG that disko.devices.lvm_vg does not define: "
                                   f'add lvm_vg.{vg} = {{ type = "lvm_vg"; }} (or fix the name)')
        for vg in sorted(vgs):
            if vg not in self.pv_vgs:
                self.values.append(f"disko.devices.lvm_vg.{vg} has no lvm_pv member, so vgcreate would get no "
                                   f'device: add a partition with content = {{ type = "lvm_pv"; vg = "{vg}"; }}')
        for pool, users in sorted(self.zfs_pools.items()):
            if pool not in pools:
                self.values.append(f"{users[0]}.pool = {pool!r} names a pool that disko.devices.zpool does not "
                                   f'define: add zpool.{pool} = {{ type = "zpool"; }} (or fix the name)')
        if self.contents and not mount_paths(value):
            self.values.append(NOTHING_MOUNTED)

    def disk(self, name: str, disk: Any, path: str) -> None:
        self.name(name, path)
        if not self.keys(disk, path, ("type", "device", "content"), ("device",)):
            return
        self.typed(disk, path, "disk")
        self.string(disk.get("device"), f"{path}.device", DEVICE_RE, "a device")
        if isinstance(disk.get("device"), str) and ".." in disk["device"]:
            self.values.append(f"{path}.device must not contain ..")
        content = disk.get("content")
        if content is None:
            # a bare disk: disko itself cannot evaluate one (its _create reads content._create)
            self.values.append(no_content(path))
            return
        self.contents += 1
        if not isinstance(content, dict) or content.get("type") != "gpt":
            ctype = content.get("type") if isinstance(content, dict) else _kind(content)
            self.forbidden.append(f"{path}.content.type = {ctype!r} is not allowed (a disk holds a gpt table)")
            return
        self.gpt(name, content, f"{path}.content")

    def gpt(self, disk: str, gpt: dict[str, Any], path: str) -> None:
        self.keys(gpt, path, ("type", "partitions"), ("partitions",))
        parts = gpt.get("partitions")
        if not isinstance(parts, dict) or not parts:
            # disko would write an empty table over the disk (it evaluates): nothing a layout wants
            self.values.append(f"{path}.partitions must be a non-empty attribute set: add at least one "
                               'partition, e.g. partitions.<name> = { size = "100%"; content = ...; }')
            return
        for pname in sorted(parts):
            ppath = f"{path}.partitions.{pname}"
            self.name(pname, ppath)
            if len(f"disk-{disk}-{pname}") > MAX_GPT_LABEL:
                self.values.append(f"{ppath}: GPT label 'disk-{disk}-{pname}' is longer than {MAX_GPT_LABEL} "
                                   "characters (disko would replace it with a hash)")
            part = parts[pname]
            if not self.keys(part, ppath, ("size", "priority", "type", "content"), ("size", "content")):
                continue
            self.string(part.get("size"), f"{ppath}.size", SIZE_RE, "a partition size")
            if "priority" in part and not _int_in(part["priority"], 1, MAX_PRIORITY):
                self.values.append(f"{ppath}.priority must be an integer 1..{MAX_PRIORITY}")
            if "type" in part:
                self.string(part["type"], f"{ppath}.type", TYPECODE_RE, "a GPT typecode")
            self.content(part.get("content"), f"{ppath}.content", PARTITION_CONTENT_TYPES)

    def content(self, content: Any, path: str, allowed_types: tuple[str, ...]) -> None:
        ctype = content.get("type") if isinstance(content, dict) else None
        if ctype not in allowed_types:
            self.forbidden.append(f"{path}.type = {ctype!r} is not allowed here "
                                  f"(allowed: {', '.join(allowed_types)})")
            return
        assert isinstance(content, dict)
        if ctype == "filesystem":
            self.keys(content, path, ("type", "format", "mountpoint", "mountOptions"), ("format",))
            fmt = content.get("format")
            if fmt not in FILESYSTEM_FORMATS:
                self.values.append(f"{path}.format = {fmt!r} is not one of {', '.join(FILESYSTEM_FORMATS)}")
            self.mountpoint(content.get("mountpoint"), f"{path}.mountpoint")
            options = content.get("mountOptions", [])
            if not isinstance(options, list):
                self.values.append(f"{path}.mountOptions must be a list")
            else:
                for i, opt in enumerate(options):
                    self.string(opt, f"{path}.mountOptions[{i}]", MOUNT_OPTION_RE, "a mount option")
        elif ctype == "lvm_pv":
            self.keys(content, path, ("type", "vg"), ("vg",))
            self.string(content.get("vg"), f"{path}.vg", NAME_RE, "a VG name")
            if isinstance(content.get("vg"), str):
                self.pv_vgs.setdefault(content["vg"], []).append(path)
        else:
            self.keys(content, path, ("type", "pool"), ("pool",))
            self.pool_name(content.get("pool"), f"{path}.pool")
            if isinstance(content.get("pool"), str):
                self.zfs_pools.setdefault(content["pool"], []).append(path)

    def mountpoint(self, mp: Any, path: str) -> None:
        if mp is None:
            return
        why = self.policy.problem(mp)
        if why:
            self.mounts.append(f"{path}: {why}")
        else:
            self.mountpoints.append((mp, path))

    def pool_name(self, value: Any, path: str) -> None:
        self.string(value, path, POOL_RE, "a pool name")
        if isinstance(value, str) and value.lower().startswith(ZFS_RESERVED):
            self.values.append(f"{path} = {value!r} is a ZFS vdev keyword")

    def lvm_vg(self, name: str, vg: Any, path: str) -> None:
        self.name(name, path)
        if not self.keys(vg, path, ("type", "lvs")):
            return
        self.typed(vg, path, "lvm_vg")
        lvs = vg.get("lvs", {})
        if not isinstance(lvs, dict):
            self.values.append(f"{path}.lvs must be an attribute set")
            return
        for lv_name in sorted(lvs):
            lpath = f"{path}.lvs.{lv_name}"
            self.name(lv_name, lpath)
            lv = lvs[lv_name]
            if not self.keys(lv, lpath, ("size", "priority", "content"), ("size",)):
                continue
            self.string(lv.get("size"), f"{lpath}.size", LV_SIZE_RE, "an LV size")
            if "priority" in lv and not _int_in(lv["priority"], 1, MAX_PRIORITY):
                self.values.append(f"{lpath}.priority must be an integer 1..{MAX_PRIORITY}")
            if lv.get("content") is not None:
                self.content(lv["content"], f"{lpath}.content", ("filesystem",))

    def zpool(self, name: str, pool: Any, path: str) -> None:
        self.pool_name(name, path + " (name)")
        if not self.keys(pool, path, ("type", "mode", "datasets", "mountpoint", "rootFsOptions")):
            return
        self.typed(pool, path, "zpool")
        self.mountpoint(pool.get("mountpoint"), f"{path}.mountpoint")
        expected = root_fs_options(pool)
        if "rootFsOptions" in pool and pool["rootFsOptions"] != expected:
            self.forbidden.append(f"{path}.rootFsOptions = {pool['rootFsOptions']!r} is not allowed (free-form "
                                  f"arguments reach a shell; only {expected!r}, which disklet sets itself so that "
                                  "ZFS mounts the pool's root only at its checked mountpoint, or nowhere)")
        mode = pool.get("mode", "")
        if isinstance(mode, str):
            if mode not in ZPOOL_MODES:
                self.values.append(f"{path}.mode = {mode!r} is not one of {', '.join(repr(m) for m in ZPOOL_MODES)}")
        elif isinstance(mode, dict):
            self.keys(mode, f"{path}.mode", ("topology",), ("topology",))
            topo = mode.get("topology")
            tpath = f"{path}.mode.topology"
            if self.keys(topo, tpath, ("type", "vdev", "log", "dedup", "special", "spare", "cache")):
                assert isinstance(topo, dict)
                if "type" in topo:
                    self.typed(topo, tpath, "topology")
                for key in ("vdev", "log", "dedup", "special"):
                    vdevs = topo.get(key, [])
                    for i, vdev in enumerate(vdevs if isinstance(vdevs, list) else [None]):
                        vpath = f"{tpath}.{key}[{i}]"
                        if not self.keys(vdev, vpath, ("mode", "members"), ("members",)):
                            continue
                        if vdev.get("mode", "") not in ZPOOL_MODES:
                            self.values.append(f"{vpath}.mode = {vdev.get('mode')!r} is not a vdev mode")
                        self.members(vdev.get("members"), f"{vpath}.members")
                for key in ("spare", "cache"):
                    self.members(topo.get(key, []), f"{tpath}.{key}")
        else:
            self.values.append(f"{path}.mode must be a string or {{ topology = ...; }}")
        datasets = pool.get("datasets", {})
        if not isinstance(datasets, dict):
            self.values.append(f"{path}.datasets must be an attribute set")
            return
        for ds_name in sorted(datasets):
            dpath = f"{path}.datasets.{ds_name}"
            self.name(ds_name, dpath)
            ds = datasets[ds_name]
            if not self.keys(ds, dpath, ("type", "mountpoint"), ("type",)):
                continue
            if ds.get("type") != "zfs_fs":
                self.forbidden.append(f"{dpath}.type = {ds.get('type')!r} is not allowed (allowed: zfs_fs)")
            self.mountpoint(ds.get("mountpoint"), f"{dpath}.mountpoint")

    def members(self, members: Any, path: str) -> None:
        if not isinstance(members, list):
            self.values.append(f"{path} must be a list of device paths")
            return
        for i, m in enumerate(members):
            self.string(m, f"{path}[{i}]", DEVICE_RE, "a zpool member device")


def _int_in(value: Any, low: int, high: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and low <= value <= high


def _kind(value: Any) -> str:
    return "null" if value is None else type(value).__name__


def schema_violation(devices_value: dict[str, Any], policy: MountPolicy | None = None) -> SchemaViolation | None:
    """The first class of violation found (forbidden option, then bad value, then mountpoint), or None."""
    walk = _Walk(policy or MountPolicy())
    if not isinstance(devices_value, dict):
        return SchemaViolation(RefusalCode.LAYOUT_VALUE_NOT_ALLOWED, ["disko.devices must be an attribute set"])
    walk.devices(devices_value)
    for implicit in (m for m in mount_paths(devices_value) if m.implicit):
        why = walk.policy.problem(implicit.path)
        if why:
            walk.mounts.append(f"{implicit.describe()}: {why}")
        else:
            walk.mountpoints.append((implicit.path, implicit.where))
    for mp, n in Counter(mp for mp, _ in walk.mountpoints).items():
        if n > 1:
            walk.values.append(f"mountpoint {mp!r} is used more than once")
    if walk.forbidden:
        return SchemaViolation(RefusalCode.LAYOUT_FORBIDDEN_OPTION, walk.forbidden + walk.values + walk.mounts)
    if walk.values:
        return SchemaViolation(RefusalCode.LAYOUT_VALUE_NOT_ALLOWED, walk.values + walk.mounts)
    if walk.mounts:
        return SchemaViolation(RefusalCode.MOUNTPOINT_NOT_ALLOWED, walk.mounts)
    return None


def check_schema(devices_value: dict[str, Any], policy: MountPolicy | None = None) -> None:
    """Raise :class:`SchemaViolation` when the evaluated layout breaks the allowlist."""
    violation = schema_violation(devices_value, policy)
    if violation is not None:
        raise violation


def mountpoints_of(devices_value: dict[str, Any]) -> list[str]:
    """Every path the (validated) layout mounts: the mountpoints it declares and the ones ZFS derives
    from pool and dataset names (:mod:`.mountpaths`)."""
    return list(dict.fromkeys(m.path for m in mount_paths(devices_value)))
