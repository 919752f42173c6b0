"""Live block-device topology of the node: ``lsblk`` + ``blkid -p`` + ``/proc/swaps`` + sysfs holders.

Shared by the DiskLayout classifier and BlockDevice discovery. Built to fail closed:

- ``lsblk`` failing or printing unreadable JSON raises :class:`ProbeFailed` (the classifier turns
  it into ``lsblk_probe_failed``).
- Without udev (containers, this CI) lsblk has no FSTYPE, so each node whose FSTYPE is missing is
  probed with ``blkid -p`` (low level, reads the device itself). ``blkid`` exits 2 both for
  "nothing found" *and* for some errors (EPERM, a vanished device), so exit 2 only counts as
  blank when stderr is empty **and** ``wipefs --no-act`` confirms there is no signature. Anything
  else is recorded on the node as ``probe_error``: its state is *unknown* and the classifier
  refuses it.
- Holders come from ``/sys/class/block/<kname>/holders`` (sysfs is not namespaced for block
  devices, so the agent reads it directly); an unreadable holders directory is recorded too.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from disklet.hostcmd import CommandResult, HostRunner

from ..logic.topology import BlockNode, BlockTopology

LSBLK_COLUMNS = ("NAME,PATH,KNAME,FSTYPE,MOUNTPOINTS,PKNAME,TYPE,SIZE,RO,RM,HOTPLUG,ROTA,"
                 "SERIAL,WWN,MODEL,PARTUUID,PTTYPE,MAJ:MIN,PTUUID,PARTLABEL,VENDOR,TRAN,LOG-SEC,PHY-SEC,LABEL")
LSBLK_ARGV = ("lsblk", "-J", "-b", "-p", "-o", LSBLK_COLUMNS)
PROBE_TIMEOUT = 30.0


class ProbeFailed(RuntimeError):
    """The live disk state could not be read at all (lsblk failed or its output is unreadable)."""


# --- parsing (pure) ---------------------------------------------------------------------------

def _as_bool(v: Any) -> bool:
    if isinstance(v, bool):
        return v
    if isinstance(v, str):
        return v.strip() in ("1", "true")
    return bool(v)


def _as_int(v: Any) -> int:
    if v is None or v == "":
        return 0
    return int(v)


def _sector(v: Any) -> int:
    try:
        return _as_int(v)
    except (TypeError, ValueError):
        return 0


def _opt_str(v: Any) -> str | None:
    if v is None:
        return None
    s = str(v).strip()
    return s or None


def _node_from_json(obj: Mapping[str, Any]) -> BlockNode:
    if not isinstance(obj, Mapping):
        raise ProbeFailed(f"lsblk JSON: expected an object per device, got {type(obj).__name__}")
    path = _opt_str(obj.get("path")) or _opt_str(obj.get("name"))
    if not path:
        raise ProbeFailed(f"lsblk JSON: device without PATH/NAME: {dict(obj)!r}")
    mps = obj.get("mountpoints")
    if mps is None and "mountpoint" in obj:
        mps = [obj.get("mountpoint")]
    if not isinstance(mps, list | type(None)):
        raise ProbeFailed(f"lsblk JSON: MOUNTPOINTS of {path} is not a list")
    children = obj.get("children") or []
    if not isinstance(children, list):
        raise ProbeFailed(f"lsblk JSON: children of {path} is not a list")
    try:
        size = _as_int(obj.get("size"))
    except (TypeError, ValueError) as exc:
        raise ProbeFailed(f"lsblk JSON: SIZE of {path} is not a byte count (run with -b): {exc}") from exc
    return BlockNode(
        path=path, kname=_opt_str(obj.get("kname")) or path, name=_opt_str(obj.get("name")) or path,
        type=_opt_str(obj.get("type")) or "", fstype=_opt_str(obj.get("fstype")),
        pttype=_opt_str(obj.get("pttype")),
        mountpoints=[str(m) for m in (mps or []) if m],
        pkname=_opt_str(obj.get("pkname")), size=size, ro=_as_bool(obj.get("ro")),
        rm=_as_bool(obj.get("rm")), hotplug=_as_bool(obj.get("hotplug")), rota=_as_bool(obj.get("rota")),
        serial=_opt_str(obj.get("serial")), wwn=_opt_str(obj.get("wwn")), model=_opt_str(obj.get("model")),
        partuuid=_opt_str(obj.get("partuuid")), maj_min=_opt_str(obj.get("maj:min")),
        ptuuid=_opt_str(obj.get("ptuuid")), partlabel=_opt_str(obj.get("partlabel")),
        vendor=_opt_str(obj.get("vendor")), tran=_opt_str(obj.get("tran")), log_sec=_sector(obj.get("log-sec")),
        phy_sec=_sector(obj.get("phy-sec")), label=_opt_str(obj.get("label")),
        children=[_node_from_json(c) for c in children],
    )


def parse_lsblk_json(text: str) -> list[BlockNode]:
    """Parse ``lsblk -J -b -p`` output into root nodes; :class:`ProbeFailed` if it is not that."""
    try:
        data = json.loads(text)
    except (ValueError, TypeError) as exc:
        raise ProbeFailed(f"lsblk printed unreadable JSON: {exc}") from exc
    if not isinstance(data, dict) or not isinstance(data.get("blockdevices"), list):
        raise ProbeFailed("lsblk JSON has no blockdevices list")
    return [_node_from_json(d) for d in data["blockdevices"]]


def parse_blkid_export(text: str) -> dict[str, str]:
    """``blkid -o export`` → {KEY: value} (values may be shell-escaped; only TYPE/PTTYPE matter)."""
    out: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if sep and key.strip():
            out[key.strip()] = value.strip().replace("\\ ", " ")
    return out


def parse_proc_swaps(text: str) -> list[str]:
    """``/proc/swaps`` → the active swap areas' file names (octal escapes such as ``\\040`` decoded)."""
    swaps = []
    for i, line in enumerate(text.splitlines()):
        fields = line.split()
        if not fields or (i == 0 and fields[0] == "Filename"):
            continue
        name = fields[0]
        try:
            name = name.encode().decode("unicode_escape") if "\\" in name else name
        except UnicodeDecodeError:
            pass
        swaps.append(name)
    return swaps


# --- probing (I/O through the runner) -------------------------------------------------------

@dataclass(frozen=True)
class SignatureProbe:
    fstype: str | None = None
    pttype: str | None = None
    source: str = "blkid"
    error: str | None = None
    ptuuid: str | None = None
    partlabel: str | None = None


def probe_signatures(runner: HostRunner, device: str) -> SignatureProbe:
    """What ``blkid -p`` (confirmed by ``wipefs -n`` when it finds nothing) sees on ``device``."""
    res = runner.run(["blkid", "-p", "-o", "export", "--", device], timeout=PROBE_TIMEOUT)
    if res.returncode == 0 and not res.timed_out:
        tags = parse_blkid_export(res.stdout)
        return SignatureProbe(fstype=tags.get("TYPE") or None, pttype=tags.get("PTTYPE") or None,
                              ptuuid=tags.get("PTUUID") or None, partlabel=tags.get("PART_ENTRY_NAME") or None)
    if res.returncode == 2 and not res.timed_out and not res.stderr.strip():
        # "Nothing found" — but blkid also exits 2 silently for a device that vanished; confirm.
        return _confirm_with_wipefs(runner, device)
    return SignatureProbe(source="blkid", error=_failure(res))


def _confirm_with_wipefs(runner: HostRunner, device: str) -> SignatureProbe:
    res = runner.run(["wipefs", "--no-act", "--json", "--", device], timeout=PROBE_TIMEOUT)
    if not res.ok:
        return SignatureProbe(source="wipefs", error=_failure(res))
    text = res.stdout.strip()
    if not text:
        return SignatureProbe(source="wipefs")  # some wipefs versions print nothing when clean
    try:
        sigs = json.loads(text).get("signatures")
        if not isinstance(sigs, list):
            raise ValueError("no signatures list")
    except (ValueError, AttributeError) as exc:
        return SignatureProbe(source="wipefs", error=f"unreadable wipefs JSON: {exc}")
    types = [str(s.get("type")) for s in sigs if isinstance(s, dict) and s.get("type")]
    if not types:
        return SignatureProbe(source="wipefs")
    pt = {"gpt", "dos", "PMBR", "mbr", "atari", "bsd", "sun", "sgi", "mac"}
    pttype = next((t for t in types if t in pt), None)
    fstype = next((t for t in types if t not in pt), None)
    return SignatureProbe(fstype=fstype, pttype=pttype, source="wipefs")


def _failure(res: CommandResult) -> str:
    if res.timed_out:
        return f"{res.argv[0] if res.argv else 'probe'} timed out"
    detail = res.stderr.strip() or res.stdout.strip() or "no output"
    return f"`{' '.join(res.argv)}` exited {res.returncode}: {detail.splitlines()[-1]}"


def read_holders(kname: str, sys_root: Path = Path("/sys")) -> tuple[list[str], str | None]:
    """Holders of ``kname`` from sysfs as ``/dev/<name>`` paths, or an error text."""
    base = os.path.basename(kname)
    holders_dir = sys_root / "class" / "block" / base / "holders"
    try:
        names = sorted(os.listdir(holders_dir))
    except OSError as exc:
        return [], f"cannot read {holders_dir}: {exc.strerror or exc}"
    return [f"/dev/{n}" for n in names], None


def read_backing_file(kname: str, sys_root: Path = Path("/sys")) -> str | None:
    """The backing file of loop device ``kname`` (None when not a bound loop device)."""
    path = sys_root / "class" / "block" / os.path.basename(kname) / "loop" / "backing_file"
    try:
        return path.read_text(encoding="utf-8", errors="replace").strip() or None
    except OSError:
        return None


BY_ID_DIR = "/dev/disk/by-id"
BY_ID_ARGV = ("find", "--", BY_ID_DIR, "-mindepth", "1", "-maxdepth", "1", "-type", "l", "-printf", "%f\t%l\n")


def parse_by_id_listing(text: str) -> dict[str, list[str]]:
    """``find -printf '%f\\t%l\\n'`` of /dev/disk/by-id → {``/dev/<kernel name>``: sorted link names}."""
    out: dict[str, list[str]] = {}
    for line in text.splitlines():
        name, sep, target = line.partition("\t")
        if not sep or not name or "/" in name or not target:
            continue
        out.setdefault(f"/dev/{os.path.basename(target)}", []).append(name)
    return {k: sorted(v) for k, v in out.items()}


def read_by_id_links(runner: HostRunner, timeout: float = PROBE_TIMEOUT) -> dict[str, list[str]]:
    """The node's /dev/disk/by-id links per device. Informative only (never a safety fact): without
    udev (containers) or on any failure the answer is empty."""
    res = runner.run(list(BY_ID_ARGV), timeout=timeout)
    return parse_by_id_listing(res.stdout) if res.ok else {}


def read_swaps(runner: HostRunner) -> tuple[list[str], str | None]:
    res = runner.run(["cat", "/proc/swaps"], timeout=PROBE_TIMEOUT)
    if not res.ok:
        return [], _failure(res)
    return parse_proc_swaps(res.stdout), None


def read_block_topology(runner: HostRunner, *, sys_root: Path = Path("/sys"), probe_all: bool = False,
                        timeout: float = PROBE_TIMEOUT) -> BlockTopology:
    """Snapshot the node's block devices (see module docstring for the fail-closed rules).

    ``probe_all`` re-probes nodes that lsblk already typed (udev data can be stale); by default
    only nodes without FSTYPE are probed.
    """
    res = runner.run(list(LSBLK_ARGV), timeout=timeout)
    if not res.ok:
        raise ProbeFailed(f"lsblk failed: {res.describe()}")
    roots = parse_lsblk_json(res.stdout)
    by_id = read_by_id_links(runner, timeout)
    probed: dict[str, SignatureProbe] = {}
    holders: dict[str, tuple[list[str], str | None]] = {}
    for root in roots:
        for node in root.walk():
            if node.kname not in holders:
                holders[node.kname] = read_holders(node.kname, sys_root)
            node.holders, node.holders_error = holders[node.kname]
            node.by_id = list(by_id.get(node.kname, []))
            if node.type == "loop":
                node.backing_file = read_backing_file(node.kname, sys_root)
            if node.fstype and not probe_all and (node.ptuuid or not node.pttype):
                continue
            if node.size == 0 and not node.children:
                node.fstype_source = "size0"  # an empty device (detached loop, zram) holds nothing
                continue
            if node.kname not in probed:
                probed[node.kname] = probe_signatures(runner, node.path)
            p = probed[node.kname]
            node.fstype = p.fstype or node.fstype
            node.pttype = p.pttype or node.pttype
            node.ptuuid = node.ptuuid or p.ptuuid
            node.partlabel = node.partlabel or p.partlabel
            node.fstype_source = p.source
            node.probe_error = p.error
    swaps, swaps_error = read_swaps(runner)
    return BlockTopology(roots=roots, swaps=swaps, swaps_error=swaps_error)
