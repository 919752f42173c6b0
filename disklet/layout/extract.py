"""Target devices of any disko body: evaluate (or read literally), then walk (docs/design/disklayout.md#extraction)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from disklet.hostcmd import HostRunner

from .errors import MalformedLayout, NixUnavailable, check_depth
from .evaluate import evaluate_nix, nix_available
from .static import static_evaluate

ZPOOL_VDEV_LISTS = ("vdev", "log", "dedup", "special")
ZPOOL_DEVICE_LISTS = ("spare", "cache")


@dataclass
class Extraction:
    devices: list[str]
    """Target block devices, deduplicated, in walk order (disks by name, then zpool members)."""
    devices_value: dict[str, Any] = field(default_factory=dict)
    """The evaluated ``disko.devices`` value."""
    method: Literal["eval", "static"] = "eval"


def devices_value_of(value: Any) -> dict[str, Any]:
    """``value.disko.devices`` as a dict, or MalformedLayout."""
    if not isinstance(value, dict):
        raise MalformedLayout(f"layout body evaluates to {_kind(value)}, not an attribute set with disko.devices")
    disko = value.get("disko")
    if not isinstance(disko, dict) or "devices" not in disko:
        raise MalformedLayout("layout body does not define disko.devices")
    devices = disko["devices"]
    if not isinstance(devices, dict):
        raise MalformedLayout(f"disko.devices is {_kind(devices)}, not an attribute set")
    return devices


def _kind(value: Any) -> str:
    if isinstance(value, dict):
        return "an attribute set"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, str):
        return "a string"
    if value is None:
        return "null"
    return type(value).__name__


def _add(out: list[str], device: str) -> None:
    if device not in out:
        out.append(device)


def _redirects(value: Any, path: str, allowed: set[str]) -> list[str]:
    """Paths of string ``device`` keys anywhere under ``value`` except the allowed ones."""
    found: list[str] = []
    if isinstance(value, dict):
        for key in sorted(value):
            here = f"{path}.{key}"
            item = value[key]
            if key == "device" and isinstance(item, str) and here not in allowed:
                found.append(f"{here} = {item!r}")
            found.extend(_redirects(item, here, allowed))
    elif isinstance(value, list):
        for i, item in enumerate(value):
            found.extend(_redirects(item, f"{path}[{i}]", allowed))
    return found


def walk_targets(devices: dict[str, Any]) -> list[str]:
    """Collect disk devices and zpool topology members; reject any other string ``device`` key."""
    targets: list[str] = []
    allowed: set[str] = set()
    disks = devices.get("disk", {})
    if not isinstance(disks, dict):
        raise MalformedLayout(f"disko.devices.disk is {_kind(disks)}, not an attribute set")
    for name in sorted(disks):
        disk = disks[name]
        if not isinstance(disk, dict):
            raise MalformedLayout(f"disko.devices.disk.{name} is {_kind(disk)}, not an attribute set")
        device = disk.get("device")
        if not isinstance(device, str) or not device:
            raise MalformedLayout(f"disko.devices.disk.{name} has no device string")
        allowed.add(f"disko.devices.disk.{name}.device")
        _add(targets, device)
    pools = devices.get("zpool", {})
    if not isinstance(pools, dict):
        raise MalformedLayout(f"disko.devices.zpool is {_kind(pools)}, not an attribute set")
    for name in sorted(pools):
        pool = pools[name]
        mode = pool.get("mode") if isinstance(pool, dict) else None
        topology = mode.get("topology") if isinstance(mode, dict) else None
        if not isinstance(topology, dict):
            continue
        for key in ZPOOL_VDEV_LISTS:
            for vdev in _list(topology.get(key), f"zpool.{name}.mode.topology.{key}"):
                members = vdev.get("members") if isinstance(vdev, dict) else None
                for member in _list(members, f"zpool.{name}.mode.topology.{key}[].members"):
                    if isinstance(member, str):
                        _add(targets, member)
        for key in ZPOOL_DEVICE_LISTS:
            for member in _list(topology.get(key), f"zpool.{name}.mode.topology.{key}"):
                if isinstance(member, str):
                    _add(targets, member)
    redirects = _redirects(devices, "disko.devices", allowed)
    if redirects:
        raise MalformedLayout("layout redirects formatting to another device (only disko.devices.disk.<name>.device "
                              "and zpool topology members may name devices): " + "; ".join(redirects))
    return targets


def _list(value: Any, where: str) -> list[Any]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise MalformedLayout(f"{where} is {_kind(value)}, not a list")
    return value


def extract_targets(body: str, runner: HostRunner | None = None, *, static_fallback: bool = True,
                    force_static: bool = False, timeout: float = 30,
                    evaluate: Callable[..., Any] | None = None) -> Extraction:
    """Evaluate ``body`` with nix (or, without nix, read it literally) and walk it for targets.

    ``evaluate`` stands in for :func:`evaluate_nix` (same signature, same results): the batch
    pre-flight passes a lookup into values it already evaluated (:mod:`.batch`)."""
    method: Literal["eval", "static"] = "eval"
    if force_static or not nix_available():
        if not (static_fallback or force_static):
            raise NixUnavailable("nix-instantiate is not installed and the static fallback is disabled")
        method = "static"
        value = static_evaluate(body)
    else:
        try:
            value = (evaluate or evaluate_nix)(body, runner, timeout=timeout)
        except NixUnavailable:
            if not static_fallback:
                raise
            method = "static"
            value = static_evaluate(body)
    check_depth(value)  # whichever evaluator answered (a batch lookup too): bounded before any walk
    devices_value = devices_value_of(value)
    return Extraction(devices=walk_targets(devices_value), devices_value=devices_value, method=method)
