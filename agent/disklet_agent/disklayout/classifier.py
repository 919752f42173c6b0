"""The node-side safety gate: is each target device of a layout free of live state? (PURE)

Input is a topology snapshot (``disklet_agent.host.lsblk``), the targets as written in the layout,
and how the adapter resolved them (``realpath -e``: by-id/by-path → kernel name). Each target and
*all* its descendants are walked; the first finding in :data:`SEVERITY` order gives the code and
every finding is listed in the detail. Unknown facts refuse (fail closed). There is no override.
"""

from __future__ import annotations

import fnmatch
import posixpath
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from disklet.api.disklayout import RefusalCode
from disklet_agent.logic.topology import BlockNode, BlockTopology

# When several findings apply, the most specific/severe one is reported as the code.
SEVERITY: tuple[RefusalCode, ...] = (
    RefusalCode.NOT_FOUND,
    RefusalCode.DUPLICATE_TARGET,
    RefusalCode.ACTIVE_SYSTEM_MOUNT,
    RefusalCode.ACTIVE_KCORE_VOLUME,
    RefusalCode.ACTIVE_MOUNT,
    RefusalCode.ACTIVE_SWAP,
    RefusalCode.ACTIVE_LVM_PV,
    RefusalCode.ACTIVE_ZPOOL_MEMBER,
    RefusalCode.RAID_MEMBER,
    RefusalCode.OPEN_CRYPT_MAPPING,
    RefusalCode.HAS_HOLDERS,
    RefusalCode.STATE_UNKNOWN,
    RefusalCode.NOT_BLANK,
)

RAID_FSTYPES = {"linux_raid_member", "isw_raid_member", "ddf_raid_member", "adaptec_raid_member",
                "promise_fasttrack_raid_member", "nvidia_raid_member", "via_raid_member",
                "silicon_medley_raid_member", "jmicron_raid_member", "lsi_mega_raid_member",
                "hpt45x_raid_member", "hpt37x_raid_member"}
SWAP_MARKER = "[SWAP]"


@dataclass(frozen=True)
class Finding:
    code: RefusalCode
    detail: str


@dataclass(frozen=True)
class Verdict:
    target: str
    """The target as written in the layout."""
    resolved_path: str | None
    """Kernel device path after ``realpath -e`` (None when it does not exist)."""
    safe: bool
    code: RefusalCode | None
    detail: str
    findings: tuple[Finding, ...] = field(default=(), compare=False)


@dataclass(frozen=True)
class LayoutVerdict:
    safe: bool
    code: RefusalCode | None
    message: str
    verdicts: tuple[Verdict, ...] = ()

    @property
    def refused(self) -> list[Verdict]:
        return [v for v in self.verdicts if not v.safe]


def _norm(path: str) -> str:
    p = posixpath.normpath(path)
    return "/" if p in ("/", "//") else p


def is_system_mount(mountpoint: str, system_mounts: Iterable[str]) -> bool:
    mp = _norm(mountpoint)
    return any(mp == _norm(s) for s in system_mounts)


def is_volume_mount(mountpoint: str, volume_mounts: Iterable[str]) -> bool:
    """Matches a volume glob, or lies under a directory a glob matches."""
    mp = _norm(mountpoint)
    for pattern in volume_mounts:
        pat = _norm(pattern)
        if fnmatch.fnmatchcase(mp, pat) or fnmatch.fnmatchcase(mp, pat.rstrip("/") + "/*"):
            return True
    return False


def _node_findings(node: BlockNode, *, system_mounts: Sequence[str], volume_mounts: Sequence[str],
                   swaps: set[str]) -> list[Finding]:
    out: list[Finding] = []
    where = node.path
    for mp in node.mountpoints:
        if mp == SWAP_MARKER:
            out.append(Finding(RefusalCode.ACTIVE_SWAP, f"{where} is an active swap area"))
        elif is_system_mount(mp, system_mounts):
            out.append(Finding(RefusalCode.ACTIVE_SYSTEM_MOUNT, f"{where} is mounted at system path {mp}"))
        elif is_volume_mount(mp, volume_mounts):
            out.append(Finding(RefusalCode.ACTIVE_KCORE_VOLUME,
                               f"{where} is mounted at workload volume/image path {mp}"))
        else:
            out.append(Finding(RefusalCode.ACTIVE_MOUNT, f"{where} is mounted at {mp}"))
    if (node.path in swaps or node.kname in swaps) and not any(
            f.code is RefusalCode.ACTIVE_SWAP for f in out):
        out.append(Finding(RefusalCode.ACTIVE_SWAP, f"{where} is an active swap area (/proc/swaps)"))
    fstype = node.fstype or ""
    if fstype == "LVM2_member":
        out.append(Finding(RefusalCode.ACTIVE_LVM_PV, f"{where} is an LVM physical volume (LVM2_member)"))
    if fstype == "zfs_member":
        out.append(Finding(RefusalCode.ACTIVE_ZPOOL_MEMBER, f"{where} is a ZFS pool member (zfs_member)"))
    md_holders = [h for h in node.holders if posixpath.basename(h).startswith("md")]
    if fstype in RAID_FSTYPES or node.type.startswith("raid") or md_holders:
        what = f"{fstype} signature" if fstype in RAID_FSTYPES else (
            f"RAID device {node.type}" if node.type.startswith("raid") else f"held by {', '.join(md_holders)}")
        out.append(Finding(RefusalCode.RAID_MEMBER, f"{where} is part of a software RAID ({what})"))
    crypt_children = [c.path for c in node.children if c.type == "crypt"]
    if node.type == "crypt":
        out.append(Finding(RefusalCode.OPEN_CRYPT_MAPPING, f"{where} is an open dm-crypt mapping"))
    elif fstype == "crypto_LUKS" and (node.holders or crypt_children):
        opened = ", ".join(crypt_children or node.holders)
        out.append(Finding(RefusalCode.OPEN_CRYPT_MAPPING, f"{where} is a LUKS device opened as {opened}"))
    other_holders = [h for h in node.holders if h not in md_holders]
    if other_holders and not any(f.code in (RefusalCode.OPEN_CRYPT_MAPPING, RefusalCode.RAID_MEMBER) for f in out):
        out.append(Finding(RefusalCode.HAS_HOLDERS,
                           f"{where} is held by {', '.join(other_holders)} (device-mapper, LVM or md stacked on it)"))
    for fact in node.unknown_facts:
        out.append(Finding(RefusalCode.STATE_UNKNOWN, f"unknown: {fact}"))
    return out


def _descendant_paths(node: BlockNode) -> set[str]:
    return {n.path for n in node.walk()} | {n.kname for n in node.walk()}


def classify_targets(targets: Sequence[str], topology: BlockTopology, *,
                     resolved: Mapping[str, str | None], system_mounts: Sequence[str],
                     volume_mounts: Sequence[str], applied_targets: Iterable[str] = ()) -> list[Verdict]:
    """One verdict per target (in order). ``applied_targets`` (targets of current.nix, as written
    and/or resolved) are exempt from the blank-disk rule only; every live-state rule still applies."""
    applied = set(applied_targets)
    swaps = set(topology.swaps)
    nodes: dict[str, BlockNode | None] = {}
    for t in targets:
        rp = resolved.get(t)
        nodes[t] = topology.find(rp) if rp else None

    verdicts: list[Verdict] = []
    for i, target in enumerate(targets):
        rp = resolved.get(target)
        findings: list[Finding] = []
        node = nodes[target]
        if rp is None:
            findings.append(Finding(RefusalCode.NOT_FOUND,
                                    f"{target} does not exist on this node (realpath -e could not resolve it)"))
        elif node is None:
            findings.append(Finding(RefusalCode.NOT_FOUND,
                                    f"{target} resolves to {rp}, which lsblk does not list as a block device"))
        else:
            mine = _descendant_paths(node)
            for j, other in enumerate(targets):
                if j == i:
                    continue
                orp, onode = resolved.get(other), nodes[other]
                if orp is None:
                    continue
                if orp == rp or other == target:
                    findings.append(Finding(RefusalCode.DUPLICATE_TARGET,
                                            f"{target} and {other} are the same device ({rp})"))
                elif orp in mine:
                    findings.append(Finding(RefusalCode.DUPLICATE_TARGET,
                                            f"{other} ({orp}) lies inside {target} ({rp})"))
                elif onode is not None and rp in _descendant_paths(onode):
                    findings.append(Finding(RefusalCode.DUPLICATE_TARGET,
                                            f"{target} ({rp}) lies inside {other} ({orp})"))
            for n in node.walk():
                findings.extend(_node_findings(n, system_mounts=system_mounts, volume_mounts=volume_mounts,
                                               swaps=swaps))
            if topology.swaps_error:
                findings.append(Finding(RefusalCode.STATE_UNKNOWN,
                                        f"unknown: active swaps ({topology.swaps_error})"))
            is_applied = target in applied or rp in applied
            if not is_applied and not node.blank and not node.unknown_facts:
                what = []
                if node.pttype:
                    what.append(f"a {node.pttype} partition table")
                if node.fstype:
                    what.append(f"a {node.fstype} signature")
                if node.children:
                    what.append("children " + ", ".join(c.path for c in node.children))
                if node.holders:
                    what.append("holders " + ", ".join(node.holders))
                if node.mountpoints:
                    what.append("mounts")
                findings.append(Finding(
                    RefusalCode.NOT_BLANK,
                    f"{target} ({rp}) is not in the applied layout (current.nix) and is not blank: it has "
                    + " and ".join(what) + "; disko would adopt it instead of formatting. Wipe it deliberately "
                    "(wipefs -a) after checking it holds nothing you need"))
        verdicts.append(_verdict(target, rp, findings))
    return verdicts


def _verdict(target: str, rp: str | None, findings: list[Finding]) -> Verdict:
    if not findings:
        return Verdict(target, rp, True, None, f"{target} ({rp}) is safe to format")
    code = min((f.code for f in findings), key=SEVERITY.index)
    seen: list[str] = []
    for f in sorted(findings, key=lambda f: SEVERITY.index(f.code)):
        if f.detail not in seen:
            seen.append(f.detail)
    return Verdict(target, rp, False, code, "; ".join(seen), tuple(findings))


def layout_verdict(verdicts: Sequence[Verdict]) -> LayoutVerdict:
    """The whole layout: the first refusal's code, and a message naming every refused target."""
    if not verdicts:
        return LayoutVerdict(False, RefusalCode.NO_TARGET_DEVICES,
                             "the layout names no /dev/* target devices", ())
    refused = [v for v in verdicts if not v.safe]
    if not refused:
        return LayoutVerdict(True, None, "all targets are safe to format: "
                             + ", ".join(f"{v.target} ({v.resolved_path})" for v in verdicts), tuple(verdicts))
    code = refused[0].code
    parts = [f"{v.target}: {v.code} ({v.detail})" for v in refused]
    return LayoutVerdict(False, code, f"refused {len(refused)} of {len(verdicts)} target(s): " + "; ".join(parts),
                         tuple(verdicts))


def describe_node(node: BlockNode, topology: BlockTopology, *, system_mounts: Sequence[str],
                  volume_mounts: Sequence[str], applied_targets: Iterable[str] = ()) -> Verdict:
    """The classifier's view of one device as a target (for ``disklet-agent disks``)."""
    return classify_targets([node.path], topology, resolved={node.path: node.path}, system_mounts=system_mounts,
                            volume_mounts=volume_mounts, applied_targets=applied_targets)[0]
