"""Every path a layout makes the node mount, explicit or implicit, the way disko does it.

A layout names some mountpoints (a ``filesystem``'s ``mountpoint``, a ZFS dataset's
``mountpoint``). disko mounts more than that. Read from disko's own module types (``zpool``,
``zfs_fs``):

- ``zpool create -f NAME -R <root>`` is run without ``-m`` unless the pool's ``rootFsOptions``
  say ``canmount = off``: ZFS then mounts the pool's root dataset at ``/NAME`` at once (disko
  unmounts it right after), and again at every import (``zpool import -R <root> NAME`` in disko's
  mount step, ``boot.zfs.extraPools`` on NixOS). A pool named ``etc`` or ``nix`` mounts over
  ``/etc`` or ``/nix``.
- a ``zfs_fs`` dataset without a ``mountpoint`` inherits ``<pool root>/<dataset>`` and is mounted
  there on import.

No other type disklet allows mounts anything implicitly (``filesystem`` with no mountpoint is
not mounted; ``lvm_pv``, ``lvm_vg`` and ``gpt`` mount nothing of their own).

disklet closes the ZFS paths (:func:`close_pool_roots`): every pool's root dataset is created with
its checked ``mountpoint``, or ``mountpoint=none`` when it has none (disko passes ``rootFsOptions``
as ``-O mountpoint=...`` to ``zpool create``), so ZFS never mounts it at ``/NAME``; datasets
without a mountpoint inherit ``none`` (not mounted) or ``<pool mountpoint>/<dataset>``, which
:func:`mount_paths` lists and the policy judges like any other mountpoint. :func:`mount_paths` still models the implicit paths, so
a value that was not closed (an older ``current.nix``, a future key) is judged by the same
mountpoint policy and live-mount check instead of passing unseen.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any


def root_fs_options(pool: dict[str, Any]) -> dict[str, str]:
    """The only ``rootFsOptions`` a pool may carry (disklet adds them to every pool): the pool's own
    ``mountpoint`` when it has one (``zpool create -O mountpoint=M``: mounted there and nowhere else),
    else ``none``."""
    mp = pool.get("mountpoint")
    return {"mountpoint": mp if isinstance(mp, str) and mp else "none"}


@dataclass(frozen=True)
class MountPath:
    path: str
    where: str
    """The key path of the value that makes the mount (e.g. ``disko.devices.zpool.tank``)."""
    implicit: bool = False
    """True when no key names the path: ZFS derives it from the pool (and dataset) name."""

    def describe(self) -> str:
        if not self.implicit:
            return f"{self.where}.mountpoint = {self.path!r}"
        return (f"{self.where} is mounted by ZFS at {self.path!r} (implicit: derived from the pool/dataset name, "
                "no mountpoint is set)")


def close_pool_roots(devices: Any) -> Any:
    """A copy of ``disko.devices`` whose pools all carry ``rootFsOptions = { mountpoint = "none"; }``.

    Entries that are not attribute sets are left for the schema walk to report."""
    if not isinstance(devices, dict) or not isinstance(devices.get("zpool"), dict):
        return devices
    out = dict(devices)
    pools: dict[str, Any] = {}
    for name, pool in devices["zpool"].items():
        if isinstance(pool, dict) and "rootFsOptions" not in pool:
            pool = {**copy.deepcopy(pool), "rootFsOptions": root_fs_options(pool)}
        pools[name] = pool
    out["zpool"] = pools
    return out


def _pool_roots(name: str, pool: dict[str, Any]) -> tuple[str | None, str | None]:
    """(where ``zpool create`` mounts the root dataset when no ``-O mountpoint``/``-m none`` is given,
    where it is mounted afterwards and on import), None for never; as disko creates the pool."""
    options = _attrs(pool.get("rootFsOptions"))
    if options.get("canmount") == "off":
        return None, None  # disko passes -m none
    at_create = options.get("mountpoint")
    at_create = at_create if isinstance(at_create, str) and at_create else "/" + name
    final = pool.get("mountpoint")
    final = final if isinstance(final, str) and final else at_create
    if options.get("mountpoint") in ("none", "legacy"):
        return None, None  # a user value cannot override rootFsOptions (disko merges it last)
    return (None if at_create == final else at_create), final


def _attrs(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _items(value: Any) -> list[tuple[str, Any]]:
    return sorted(_attrs(value).items())


def mount_paths(devices: Any) -> list[MountPath]:
    """Every path the layout mounts: explicit mountpoints (partitions, LVs, datasets) and the ZFS
    paths derived from pool and dataset names; in walk order (sorted keys)."""
    out: list[MountPath] = []
    if not isinstance(devices, dict):
        return out

    def content(value: Any, where: str) -> None:
        if isinstance(value, dict) and value.get("type") == "filesystem" and isinstance(value.get("mountpoint"), str):
            out.append(MountPath(value["mountpoint"], where))

    for dname, disk in _items(devices.get("disk")):
        for pname, part in _items(_attrs(_attrs(disk).get("content")).get("partitions")):
            content(_attrs(part).get("content"), f"disko.devices.disk.{dname}.content.partitions.{pname}.content")
    for vname, vg in _items(devices.get("lvm_vg")):
        for lname, lv in _items(_attrs(vg).get("lvs")):
            content(_attrs(lv).get("content"), f"disko.devices.lvm_vg.{vname}.lvs.{lname}.content")
    for pname, pool in _items(devices.get("zpool")):
        if not isinstance(pool, dict):
            continue
        where = f"disko.devices.zpool.{pname}"
        transient, root = _pool_roots(pname, pool)
        if transient is not None:
            out.append(MountPath(transient, where, implicit=True))
        if root is not None:
            named = isinstance(pool.get("mountpoint"), str) or isinstance(
                _attrs(pool.get("rootFsOptions")).get("mountpoint"), str)
            out.append(MountPath(root, where, implicit=not named))
        for dsname, ds in _items(pool.get("datasets")):
            if not isinstance(ds, dict):
                continue
            dwhere = f"{where}.datasets.{dsname}"
            options = _attrs(ds.get("options"))
            if options.get("canmount") == "off" or options.get("mountpoint") in ("none", "legacy"):
                continue
            mp = ds.get("mountpoint")
            if isinstance(mp, str):
                out.append(MountPath(mp, dwhere))
            elif root is not None:
                out.append(MountPath(root.rstrip("/") + "/" + dsname, dwhere, implicit=True))
    return out
