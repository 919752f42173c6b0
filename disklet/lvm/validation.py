"""Pure validation of an LVMVolumeGroup for this node: messages a human can act on (docs/design/lvm.md rules 1, 2)."""

from __future__ import annotations

import posixpath
import re

from disklet.api.lvm import NAME_MAX, LVMVolumeGroupSpec, backing_file_name
from disklet.units import (
    GIB,
    PERCENT_RE,
    WHOLE_BINARY_SIZE_RE,
    QuantityError,
    decimal_unit_hint,
    quantity_bytes,
)


def inside_base(directory: str, base: str) -> bool:
    """True when the normalised ``directory`` is ``base`` or lies below it (``/`` is never a base)."""
    base = posixpath.normpath(base)
    if base in ("/", "//") or not base.startswith("/"):
        return False
    d = posixpath.normpath(directory)
    return d == base or d.startswith(base.rstrip("/") + "/")


CONTROL_CHARS = re.compile(r"[\x00-\x1f\x7f]")


def has_control_chars(text: str) -> bool:
    return CONTROL_CHARS.search(text) is not None


def component_prefixes(directory: str, base: str) -> list[str]:
    """``base``, then each deeper prefix of ``directory`` (lexically inside ``base``) down to itself."""
    base = posixpath.normpath(base)
    rest = posixpath.normpath(directory)[len(base):].strip("/")
    out = [base]
    for part in rest.split("/") if rest else []:
        out.append(posixpath.join(out[-1], part))
    return out


def escape_through_symlink(directory: str, base: str, resolved: dict[str, str]) -> str | None:
    """Why ``directory`` leaves the base once symlinks are resolved (``resolved``: realpath of every
    prefix from :func:`component_prefixes`), naming the first component that leads out; None if it stays."""
    prefixes = component_prefixes(directory, base)
    real_base = resolved[prefixes[0]]
    for prefix in prefixes[1:]:
        if not inside_base(resolved[prefix], real_base):
            return (f"directory {directory} resolves outside the base directory {base} through a symlink at "
                    f"{prefix} (it leads to {resolved[prefix]}); nothing was created")
    return None


def validate_directory(directory: str, base: str) -> str | None:
    if has_control_chars(directory):
        return f"directory {directory!r} contains control characters (a newline, tab, ...): not allowed"
    if not directory.startswith("/"):
        return f"directory {directory!r} must be an absolute path below {base}"
    if any(seg in (".", "..") for seg in directory.split("/")):
        return f"directory {directory!r} must not contain '.' or '..' segments; write the path below {base} plainly"
    if not inside_base(directory, base):
        return (f"directory {directory!r} is outside the file devices base directory {base}: use {base} or a "
                "subdirectory (the base is the Helm value fileDevicesDirectory)")
    return None


def validate_size(size: str) -> str | None:
    if not isinstance(size, str) or not WHOLE_BINARY_SIZE_RE.fullmatch(size):
        return f"size {size!r} must be a whole number of Mi, Gi, Ti or Pi{decimal_unit_hint(str(size))}"
    if quantity_bytes(size) < GIB:
        return f"size {size} is below the 1Gi minimum (note: 1G is 10^9 bytes, below 1Gi; write 1Gi)"
    return None


def validate_lvg(lvg_name: str, spec: LVMVolumeGroupSpec, base_dir: str) -> list[str]:
    """Every problem with the spec as seen from this node; empty when it may be provisioned."""
    errors: list[str] = []
    if spec.block_device_selector is None and not spec.file_devices:
        errors.append("set blockDeviceSelector, a non-empty fileDevices, or both")
    seen_names: set[str] = set()
    seen_files: set[str] = set()
    for fd in spec.file_devices or []:
        where = f"fileDevices[{fd.name}]"
        if fd.name in seen_names:
            errors.append(f"{where}: duplicate entry name {fd.name!r}; names must be unique")
        seen_names.add(fd.name)
        if (msg := validate_directory(fd.directory, base_dir)) is not None:
            errors.append(f"{where}: {msg}")
        if (msg := validate_size(fd.size)) is not None:
            errors.append(f"{where}: {msg}")
        basename = backing_file_name(lvg_name, fd.name)
        if len(basename.encode()) > NAME_MAX:
            errors.append(f"{where}: backing file name {basename[:40]}... is {len(basename.encode())} bytes, over "
                          f"NAME_MAX ({NAME_MAX}); shorten the LVMVolumeGroup or entry name")
        path = posixpath.join(posixpath.normpath(fd.directory), basename)
        if path in seen_files:
            errors.append(f"{where}: backing file {path} is already used by another entry")
        seen_files.add(path)
    pool_names: set[str] = set()
    for tp in spec.thin_pools or []:
        if tp.name in pool_names:
            errors.append(f"thinPools[{tp.name}]: duplicate thin pool name")
        pool_names.add(tp.name)
        if not PERCENT_RE.fullmatch(tp.size):
            try:
                if quantity_bytes(tp.size) <= 0:
                    errors.append(f"thinPools[{tp.name}]: size {tp.size} must be positive")
            except QuantityError as exc:
                errors.append(f"thinPools[{tp.name}]: {exc}")
    return errors
