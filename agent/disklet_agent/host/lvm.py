"""LVM adapter: JSON reports and mutating commands, always run with our per-command device filter.

Every command carries ``--config`` with a ``global_filter`` that accepts exactly the loop devices we
own and rejects every other loop/rbd/drbd/nbd device (docs/design/lvm.md rule 11): guest LVM inside VM images
stays invisible. Reports are parsed from ``--reportformat json``; a failed report raises
:class:`LvmError` and is never read as "not found" (rule 7).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from disklet.hostcmd import CommandResult, HostRunner, filter_stderr
from disklet.lvm.thinpool import LV_HEALTH_COLUMNS, PoolFill, fill_of

from .lvmshell import LvmShell

TAG_ENABLED = "disklet.io/enabled=true"
TAG_OWNER_PREFIX = "disklet.io/lvmVolumeGroupName="
LOOP_RE = re.compile(r"^/dev/loop[0-9]+$")

# Benign for every LVM command when tests disable activation.
_BENIGN_ALL = (re.compile(r"^WARNING: Activation disabled\. No device-mapper interaction will be attempted\.$"),)
# Benign for lvextend only: a no-op resize of a healthy (e.g. 100%) pool (rule 7, rule 12).
LVEXTEND_BENIGN = (
    re.compile(r"^No size change"),
    re.compile(r"^New size \(\d+ extents\) matches existing size \(\d+ extents\)\.?$"),
)

PV_COLUMNS = ("pv_name", "pv_uuid", "pv_size", "dev_size", "pe_start", "vg_name", "vg_uuid", "pv_missing")
VG_COLUMNS = ("vg_name", "vg_uuid", "vg_size", "vg_free", "vg_extent_size", "vg_tags", "pv_count", "lv_count",
              "vg_missing_pv_count")
# One ``pvs`` report with the VG columns added answers both "which devices are PVs of which VG" and
# "which VGs exist" (every VG has at least one PV row, a missing PV shows as ``[unknown]``): one LVM
# command instead of pvs + vgs.
PV_VG_COLUMNS = (*PV_COLUMNS, *(c for c in VG_COLUMNS if c not in PV_COLUMNS))
LV_COLUMNS = ("lv_name", "lv_uuid", "vg_name", "vg_uuid", "lv_size", "segtype", "pool_lv", "data_percent", "lv_attr",
              *LV_HEALTH_COLUMNS)


class LvmError(RuntimeError):
    """An LVM command or report failed; never means "not found"."""

    def __init__(self, message: str, result: CommandResult | None = None):
        self.result = result
        super().__init__(message)


@dataclass(frozen=True)
class PV:
    name: str
    uuid: str
    size: int
    dev_size: int
    pe_start: int
    vg_name: str
    vg_uuid: str
    missing: bool = False


@dataclass(frozen=True)
class VG:
    name: str
    uuid: str
    size: int
    free: int
    extent_size: int
    tags: tuple[str, ...]
    pv_count: int
    lv_count: int
    missing_pv_count: int = 0

    @property
    def owner(self) -> str | None:
        """The LVMVolumeGroup named in the owner tag (a tag alone never proves a loop is ours)."""
        for t in self.tags:
            if t.startswith(TAG_OWNER_PREFIX):
                return t[len(TAG_OWNER_PREFIX):]
        return None

    @property
    def managed(self) -> bool:
        return TAG_ENABLED in self.tags and self.owner is not None


@dataclass(frozen=True)
class LV:
    name: str
    uuid: str
    vg_name: str
    vg_uuid: str
    size: int
    segtype: str
    pool_lv: str
    data_percent: float | None
    attr: str
    fill: PoolFill | None = None
    """Thin pools: data/metadata %, chunk and metadata sizes (disklet.lvm.thinpool)."""

    @property
    def is_thin_pool(self) -> bool:
        return self.segtype == "thin-pool"


def owner_tag(lvg_name: str) -> str:
    return f"{TAG_OWNER_PREFIX}{lvg_name}"


def device_filter_config(owned_loops: Iterable[str], extra: str = "") -> str:
    """The ``--config`` text: accept exactly our loops, reject other loop-like devices, accept the rest.

    ``/dev/disk/`` and ``/dev/block/`` aliases are rejected too: LVM accepts a device when ANY of its
    names hits an ``a`` pattern first, so a udev alias of a foreign loop would slip through ``a|.*|``.
    Real disks stay visible under their kernel names.
    """
    accepts = []
    for loop in sorted(set(owned_loops)):
        if not LOOP_RE.match(loop):
            raise ValueError(f"not a canonical loop device: {loop!r}")
        accepts.append(f'"a|^{loop}$|"')
    rules = [*accepts, '"r|^/dev/loop|"', '"r|^/dev/rbd|"', '"r|^/dev/drbd|"', '"r|^/dev/nbd|"',
             '"r|^/dev/disk/|"', '"r|^/dev/block/|"', '"a|.*|"']
    text = ("devices { global_filter = [ " + ", ".join(rules) + " ] "
            "use_devicesfile = 0 obtain_device_list_from_udev = 0 }")
    return f"{text} {extra}".strip()


def node_wide_config(extra: str = "") -> str:
    """A filter that accepts every device: ONLY for :meth:`Lvm.node_vg_names` (names are node-wide)."""
    return ('devices { global_filter = [ "a|.*|" ] use_devicesfile = 0 obtain_device_list_from_udev = 0 } '
            + extra).strip()


def _int(v: str | None) -> int:
    return int(float(v)) if v not in (None, "") else 0


def parse_report(stdout: str, key: str) -> list[dict[str, str]]:
    """Rows of one ``--reportformat json`` report section (``pv``, ``vg``, ``lv``)."""
    try:
        data = json.loads(stdout)
        rows: list[dict[str, str]] = []
        for section in data["report"]:
            rows.extend(section.get(key, []))
        return rows
    except (ValueError, KeyError, TypeError) as exc:
        raise LvmError(f"unparsable LVM {key} report: {exc}") from exc


def parse_pvs(stdout: str) -> list[PV]:
    return [PV(name=r["pv_name"], uuid=r.get("pv_uuid", ""), size=_int(r.get("pv_size")),
               dev_size=_int(r.get("dev_size")), pe_start=_int(r.get("pe_start")), vg_name=r.get("vg_name", ""),
               vg_uuid=r.get("vg_uuid", ""), missing=r.get("pv_missing", "") not in ("", "0"))
            for r in parse_report(stdout, "pv")]


def _vg(r: dict[str, str]) -> VG:
    return VG(name=r["vg_name"], uuid=r.get("vg_uuid", ""), size=_int(r.get("vg_size")), free=_int(r.get("vg_free")),
              extent_size=_int(r.get("vg_extent_size")),
              tags=tuple(t for t in r.get("vg_tags", "").split(",") if t),
              pv_count=_int(r.get("pv_count")), lv_count=_int(r.get("lv_count")),
              missing_pv_count=_int(r.get("vg_missing_pv_count")))


def parse_vgs(stdout: str) -> list[VG]:
    return [_vg(r) for r in parse_report(stdout, "vg")]


def parse_pvs_vgs(stdout: str) -> tuple[list[PV], list[VG]]:
    """A ``pvs`` report with :data:`PV_VG_COLUMNS`: the PVs, and each VG once (orphan PVs carry no VG)."""
    pvs = parse_pvs(stdout)
    vgs: dict[str, VG] = {}
    for r in parse_report(stdout, "pv"):
        if r.get("vg_uuid") and r["vg_uuid"] not in vgs:
            vgs[r["vg_uuid"]] = _vg(r)
    return pvs, list(vgs.values())


def parse_lvs(stdout: str) -> list[LV]:
    out = []
    for r in parse_report(stdout, "lv"):
        dp = r.get("data_percent", "")
        out.append(LV(name=r["lv_name"], uuid=r.get("lv_uuid", ""), vg_name=r.get("vg_name", ""),
                      vg_uuid=r.get("vg_uuid", ""), size=_int(r.get("lv_size")), segtype=r.get("segtype", ""),
                      pool_lv=r.get("pool_lv", ""), data_percent=float(dp) if dp else None, attr=r.get("lv_attr", ""),
                      fill=fill_of(r) if r.get("segtype") == "thin-pool" else None))
    return out


@dataclass(frozen=True)
class NamedVG:
    """A VG as the node-wide read sees it: a name, its UUID and one device (never used to pick devices)."""

    name: str
    uuid: str
    device: str


def parse_pv_rows(stdout: str) -> list[NamedVG]:
    """One row per PV of a node-wide ``pvs -o pv_name,vg_name,vg_uuid`` report."""
    return [NamedVG(r.get("vg_name", ""), r.get("vg_uuid", ""), r.get("pv_name", ""))
            for r in parse_report(stdout, "pv")]


@dataclass(frozen=True)
class Mutation:
    """Outcome of a mutating LVM command after benign-noise filtering."""

    result: CommandResult
    ok: bool
    message: str


def judge(result: CommandResult, *, lvextend: bool = False) -> Mutation:
    """Rule 7: benign lines are not failure; non-zero exit with empty stderr fails (except lvextend)."""
    extra = (*_BENIGN_ALL, *(LVEXTEND_BENIGN if lvextend else ()))
    stderr = filter_stderr(result.raw_stderr, extra)
    if result.timed_out:
        return Mutation(result, False, result.describe())
    if result.returncode == 0:
        return Mutation(result, True, "")
    if lvextend and not stderr:
        return Mutation(result, True, "")
    detail = stderr or f"exit code {result.returncode} with no error output"
    return Mutation(result, False, f"{result.argv[0] if result.argv else 'lvm'} failed: {detail}")


@dataclass
class Lvm:
    """LVM commands for one agent; ``owned_loops`` is the exact set of loop devices LVM may see."""

    runner: HostRunner
    extra_config: str = ""
    timeout: float = 60.0
    owned_loops: set[str] = field(default_factory=set)
    shell: LvmShell | None = None
    """The agent's persistent lvm shell (host/lvmshell.py); None: one process per command."""

    def run(self, argv: list[str]) -> CommandResult:
        """One LVM command: in the shell when there is one and it takes the command, else a process."""
        if self.shell is not None and (res := self.shell.run(argv, timeout=self.timeout)) is not None:
            return res
        return self.runner.run(argv, timeout=self.timeout)

    def config(self) -> str:
        return device_filter_config(self.owned_loops, self.extra_config)

    def argv(self, cmd: str, *args: str, operands: Sequence[str] = ()) -> list[str]:
        """``cmd --config … ARGS -- OPERANDS``: an operand (device, VG, LV) can never read as an option."""
        return [cmd, "--config", self.config(), *args, "--", *operands]

    # ------------------------------------------------------------------ reports
    def _report(self, cmd: str, columns: Sequence[str], *extra: str) -> str:
        res = self.run(self.argv(cmd, "--reportformat", "json", "--units", "b", "--nosuffix",
                                 "-o", ",".join(columns), *extra))
        if not res.ok:
            raise LvmError(f"{cmd} report failed: {judge(res).message or res.describe()}", res)
        return res.stdout

    def pvs(self) -> list[PV]:
        return parse_pvs(self._report("pvs", PV_COLUMNS))

    def pvs_vgs(self) -> tuple[list[PV], list[VG]]:
        """PVs and VGs from ONE live ``pvs`` invocation (see :data:`PV_VG_COLUMNS`)."""
        return parse_pvs_vgs(self._report("pvs", PV_VG_COLUMNS))

    def vgs(self) -> list[VG]:
        return parse_vgs(self._report("vgs", VG_COLUMNS))

    def node_pv_rows(self) -> list[NamedVG]:
        """Every PV on the node with its VG (name, UUID; empty for an orphan PV), loop-backed ones
        included, read through :func:`node_wide_config`. For names and membership checks only, never
        to choose devices to act on."""
        argv = ["pvs", "--config", node_wide_config(self.extra_config), "--reportformat", "json",
                "-o", "pv_name,vg_name,vg_uuid"]
        res = self.run(argv)
        if not res.ok:
            raise LvmError(f"node-wide pvs failed: {judge(res).message or res.describe()}", res)
        return parse_pv_rows(res.stdout)

    def node_vg_names(self) -> list[NamedVG]:
        """Every VG on the node, loop-backed ones included: VG names are unique per NODE, so a name check
        must not look through the per-command filter. Used for names only, never to choose devices."""
        out: dict[str, NamedVG] = {}
        for row in self.node_pv_rows():
            if row.name and row.uuid and row.uuid not in out:
                out[row.uuid] = row
        return list(out.values())

    def raw_report(self, cmd: str, columns: str) -> CommandResult:
        """One report as LVM prints it (``--reportformat json``, bytes), through the per-command
        filter: ``disklet-agent lvm-report`` shows exactly what the engine sees."""
        return self.run(self.argv(cmd, "--reportformat", "json", "--units", "b", "-o", columns))

    def lvs(self) -> list[LV]:
        return parse_lvs(self._report("lvs", LV_COLUMNS))

    # ---------------------------------------------------------------- mutations
    def _mutate(self, cmd: str, *args: str, operands: Sequence[str], lvextend: bool = False) -> Mutation:
        return judge(self.run(self.argv(cmd, *args, operands=operands)), lvextend=lvextend)

    def pvcreate(self, *devices: str) -> Mutation:
        """One invocation for all ``devices``; on failure the caller decides per device from a live pvs."""
        return self._mutate("pvcreate", operands=devices)

    def vgcreate(self, vg: str, devices: Sequence[str], lvg_name: str) -> Mutation:
        return self._mutate("vgcreate", "--addtag", TAG_ENABLED, "--addtag", owner_tag(lvg_name),
                            operands=(vg, *devices))

    def vgextend(self, vg: str, devices: Sequence[str]) -> Mutation:
        return self._mutate("vgextend", operands=(vg, *devices))

    def add_tags(self, vg: str, lvg_name: str) -> Mutation:
        return self._mutate("vgchange", "--addtag", TAG_ENABLED, "--addtag", owner_tag(lvg_name), operands=(vg,))

    def lvcreate_thin_pool(self, vg: str, pool: str, extents: int | None) -> Mutation:
        """``extents`` None means the whole free space (``100%FREE``)."""
        size = "100%FREE" if extents is None else str(extents)
        return self._mutate("lvcreate", "--yes", "--type", "thin-pool", "--extents", size, "--name", pool,
                            operands=(vg,))

    def lvextend(self, vg: str, lv: str, extents: int | None) -> Mutation:
        """Grow to ``extents`` (absolute) or by all free extents (None); a no-op resize is success."""
        size = "+100%FREE" if extents is None else str(extents)
        return self._mutate("lvextend", "--extents", size, operands=(f"{vg}/{lv}",), lvextend=True)

    def lvremove(self, vg: str, lv: str) -> Mutation:
        return self._mutate("lvremove", "--yes", operands=(f"{vg}/{lv}",))

    def vgremove(self, vg: str) -> Mutation:
        # No --yes/-f: a VG that still holds LVs makes vgremove prompt, and the closed stdin refuses.
        return self._mutate("vgremove", operands=(vg,))

    def pvremove(self, *devices: str) -> Mutation:
        return self._mutate("pvremove", "--yes", operands=devices)

    def pvresize(self, device: str) -> Mutation:
        return self._mutate("pvresize", operands=(device,))

    def vgchange_activate(self, vg: str) -> Mutation:
        return self._mutate("vgchange", "-ay", operands=(vg,))
