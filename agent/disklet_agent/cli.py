"""``disklet-agent``: the node-local CLI (validate/apply a disk layout, show disks) and the daemon entry.

Exit codes: 0 ok, 1 refused or failed (or --apply in installer-only mode), 2 usage error.
See docs/node-cli.md.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TextIO

from disklet import version_line
from disklet.nsenter_target import NSENTER_TARGET_HELP, check_nsenter_target
from disklet.text import printable
from disklet_agent.config import AgentConfig
from disklet_agent.deps import AgentDeps
from disklet_agent.disklayout.apply import (
    DEFAULT_TIMEOUT_SECONDS,
    MAX_TIMEOUT_SECONDS,
    ApplyBusy,
    apply_layout,
    check_timeout,
    expectation_from,
)
from disklet_agent.disklayout.classifier import Verdict, describe_node
from disklet_agent.disklayout.gate import ApplyPlan, current_path, plan_apply
from disklet_agent.disklayout.mode import promote_command, read_management_mode
from disklet_agent.host.lsblk import ProbeFailed, read_block_topology
from disklet_agent.logic.topology import BlockNode, BlockTopology

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2

DESCRIPTION = """\
disklet node agent: run the DaemonSet agent, or validate/apply a disko layout on THIS node.

Formatting is destructive. Every apply passes the same gate as a DiskLayout: the live disks are
snapshotted (lsblk + blkid -p), each target is resolved (by-id → kernel name) and it and all
its descendants must be free of mounts, swap, LVM/ZFS/RAID membership, open crypt mappings and
holders; a disk not in the applied layout must be blank. There is no --force.
"""

EPILOG = """\
examples:
  disklet-agent disks                              # live disks and the classifier's view
  disklet-agent disks -o json
  disklet-agent apply-disk -f day2-disk.nix        # validate only (no writes)
  disklet-agent apply-disk -f day2-disk.nix --apply --timeout-seconds 600
  disklet-agent apply-disk -f day2-disk.nix --apply --no-rebuild
  disklet-agent --nsenter --host-root /host disks  # inside the agent pod
  disklet-agent run                                # the agent daemon (NODE_NAME etc. from env)

--apply needs the node in controller-managed mode:
  echo controller-managed | sudo tee /etc/disklet/disk-management-mode

exit codes: 0 ok, 1 refused/failed/not allowed in this mode, 2 usage error (docs/node-cli.md)
"""


def _timeout(text: str) -> int:
    try:
        return check_timeout(int(text))
    except ValueError as exc:
        raise argparse.ArgumentTypeError(
            f"--timeout-seconds must be a whole number from 1 to {MAX_TIMEOUT_SECONDS} (hard cap): {text!r}") from exc


def _nsenter_target(text: str) -> str:
    try:
        return check_nsenter_target(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="disklet-agent", description=DESCRIPTION, epilog=EPILOG,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--version", action="version", version=version_line("disklet-agent"),
                   help="print the version and the commit of the build, then exit")
    p.add_argument("--host-root", type=Path, default=None, metavar="DIR",
                   help="root under which /etc/disklet lives (default: $DISKLET_HOST_ROOT or /)")
    ns = p.add_mutually_exclusive_group()
    ns.add_argument("--nsenter", dest="nsenter", action="store_true", default=None,
                    help="run host commands in the host's namespaces through nsenter (default: $DISKLET_NSENTER)")
    ns.add_argument("--no-nsenter", dest="nsenter", action="store_false", help="run host commands directly")
    p.add_argument("--nsenter-target", metavar="PID|name:NAME", default=None, type=_nsenter_target,
                   help=f"with --nsenter: {NSENTER_TARGET_HELP} (default: $DISKLET_NSENTER_TARGET or 1)")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    for name, deprecated in (("apply-disk", False), ("apply-disko", True)):
        a = sub.add_parser(
            name, formatter_class=argparse.RawDescriptionHelpFormatter,
            help="deprecated alias of apply-disk" if deprecated else "validate (default) or --apply a disko layout",
            description=("DEPRECATED: use apply-disk.\n\n" if deprecated else "")
            + "Validate a disko Nix body against this node's live disks; with --apply, format them.",
            epilog="examples:\n  disklet-agent apply-disk -f day2-disk.nix\n"
                   "  disklet-agent apply-disk -f day2-disk.nix --apply --timeout-seconds 600\n")
        a.add_argument("-f", "--file", required=True, type=Path, metavar="FILE.nix",
                       help="disko Nix body that defines disko.devices; - reads it from standard input "
                            "(what `kctl node apply-disk` sends)")
        a.add_argument("--apply", action="store_true",
                       help="really run disko (needs controller-managed mode); without it nothing is written")
        a.add_argument("--no-rebuild", action="store_true", help="skip nixos-rebuild test/switch after disko")
        a.add_argument("--allow-destructive-changes", action="store_true",
                       help="allow removing an applied disk or moving an applied filesystem's mountpoint "
                            "(like spec.allowDestructiveChanges)")
        a.add_argument("--timeout-seconds", type=_timeout, default=DEFAULT_TIMEOUT_SECONDS, metavar="N",
                       help=f"bound on the disko run (default {DEFAULT_TIMEOUT_SECONDS}, max {MAX_TIMEOUT_SECONDS})")
        a.add_argument("-o", "--output", choices=("table", "json"), default="table")
        a.set_defaults(deprecated=deprecated)

    d = sub.add_parser("disks", help="live disk topology and what the classifier thinks of each device",
                       description="Print every block device (lsblk + blkid -p) with the classifier's verdict "
                                   "as if it were a layout target.",
                       epilog="examples:\n  disklet-agent disks\n  disklet-agent disks -o json\n",
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    d.add_argument("-o", "--output", choices=("table", "json"), default="table")

    sub.add_parser("lvm-report", help="read-only LVM reports (pvs, vgs, lvs) as JSON, for support bundles",
                   description="Run pvs, vgs and lvs with --reportformat json as the agent sees LVM (its device "
                               "filter) and print them as one JSON object. Reads only.",
                   epilog="examples:\n  disklet-agent lvm-report\n",
                   formatter_class=argparse.RawDescriptionHelpFormatter)

    sub.add_parser("run", help="run the node agent daemon (configured from the environment)",
                   description="Start the Kopf node agent: NODE_NAME, DISKLET_* variables (see docs).")
    return p


def config_from_args(args: argparse.Namespace) -> AgentConfig:
    """The agent's settings from its environment, with the global options (--host-root, --nsenter…) on top."""
    cfg = AgentConfig.from_env()
    update: dict[str, Any] = {}
    if args.host_root is not None:
        update["host_root"] = args.host_root
    if args.nsenter is not None:
        update["use_nsenter"] = args.nsenter
    if args.nsenter_target is not None:
        update["nsenter_target"] = args.nsenter_target
    return cfg.model_copy(update=update) if update else cfg


def write_table(rows: list[list[str]], out: TextIO) -> None:
    """Aligned columns, every cell made printable (device strings come from disk firmware)."""
    rows = [[printable(c) for c in r] for r in rows]  # models and serials come from disk firmware
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for r in rows:
        out.write("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() + "\n")


def _verdict_rows(verdicts: Sequence[Verdict], layout_ok: bool = True) -> list[list[str]]:
    """One row per target. ``safe`` only when the whole layout may be applied: a target whose own live
    state is clear, in a layout refused for another reason, says ``clear`` (not safe to format now)."""
    rows = [["TARGET", "RESOLVED", "VERDICT", "CODE", "DETAIL"]]
    for v in verdicts:
        verdict = ("safe" if layout_ok else "clear") if v.safe else "REFUSED"
        rows.append([v.target, v.resolved_path or "-", verdict, str(v.code or "-"), v.detail])
    return rows


def _plan_json(plan: ApplyPlan) -> dict[str, Any]:
    return {"ok": plan.ok, "failed": plan.failed, "refusalReason": str(plan.code) if plan.code else None,
            "message": plan.message, "targets": plan.targets, "method": plan.method,
            "verdicts": [{"target": v.target, "resolvedPath": v.resolved_path, "safe": v.safe,
                          "code": str(v.code) if v.code else None, "detail": v.detail} for v in plan.verdicts]}


def cmd_apply_disk(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    if args.deprecated:
        err.write("warning: `disklet-agent apply-disko` is deprecated and will be removed; use `apply-disk`\n")
    try:
        body = sys.stdin.read() if str(args.file) == "-" else args.file.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        err.write(f"error: cannot read {args.file}: {exc}\n")
        return EXIT_USAGE
    cfg = config_from_args(args)
    deps = AgentDeps.from_config(cfg)
    plan = plan_apply(body, runner=deps.runner, config=cfg,
                      allow_destructive=bool(getattr(args, "allow_destructive_changes", False)))
    report: dict[str, Any] = {"plan": _plan_json(plan)}
    if args.output == "table":
        if plan.verdicts:
            write_table(_verdict_rows(plan.verdicts, plan.ok), out)
        elif plan.targets:
            out.write("targets: " + ", ".join(printable(t) for t in plan.targets)
                      + ("" if plan.ok else " (not classified: the layout was refused before the live-state check)")
                      + "\n")
        if not plan.ok and not plan.failed:
            out.write(f"layout refused: {plan.code} (details on stderr)\n")
    if not plan.ok:
        if args.output == "json":
            out.write(json.dumps(report, indent=2) + "\n")
        message = plan.message
        if plan.failed:
            err.write(f"failed: {printable(message)}\n")
        else:  # the message names its code first (the gate's form); never print it twice
            if not message.startswith(f"{plan.code}: "):
                message = f"{plan.code}: {message}"
            err.write(f"refused: {printable(message)}\n")
        return EXIT_FAILED
    if not args.apply:
        if args.output == "json":
            out.write(json.dumps(report, indent=2) + "\n")
        else:
            out.write(f"validation passed: {len(plan.targets)} target(s) are safe to format; nothing was written "
                      "(add --apply to run disko)\n")
        return EXIT_OK
    mode = read_management_mode(cfg.etc_dir)
    if not mode.controller_managed:
        err.write(f"error: --apply refused: {mode.explain(cfg.etc_dir)}\n")
        err.write(f"  promote: {promote_command(cfg.etc_dir)}\n")
        return EXIT_FAILED
    try:
        outcome = apply_layout(plan.artifact, runner=deps.runner, config=cfg,
                               expect=expectation_from(plan.devices_value, plan.resolved), targets=dict(plan.resolved),
                               timeout_seconds=args.timeout_seconds, rebuild=not args.no_rebuild)
    except ApplyBusy as exc:
        err.write(f"error: {exc}\n")
        return EXIT_FAILED
    if args.output == "json":
        report["apply"] = {"ok": outcome.ok, "phase": outcome.phase, "message": outcome.message,
                           "failedUnits": outcome.failed_units, "promoted": outcome.promoted,
                           "steps": [{"name": s.name, "argv": list(s.argv), "returncode": s.returncode,
                                      "timedOut": s.timed_out, "seconds": round(s.duration, 3)} for s in outcome.steps]}
        out.write(json.dumps(report, indent=2) + "\n")
    for s in outcome.steps:
        if args.output == "table":
            state = "timed out" if s.timed_out else f"exit {s.returncode}"
            out.write(f"step {s.name}: {state} ({s.duration:.1f}s)\n")
    if outcome.ok:
        if args.output == "table":
            out.write(outcome.message + "\n")
        return EXIT_OK
    err.write(f"failed at {outcome.phase}: {outcome.message}\n")
    return EXIT_FAILED


def _applied_targets(cfg: AgentConfig, deps: AgentDeps) -> tuple[set[str], str | None]:
    cur = current_path(cfg)
    if not cur.exists():
        return set(), None
    try:
        from disklet.layout import extract_targets

        from .host.layout_reads import resolve_targets

        devices = extract_targets(cur.read_text(encoding="utf-8"), deps.runner).devices
        resolved = resolve_targets(deps.runner, devices)
        return set(devices) | {p for p in resolved.values() if p}, None
    except Exception as exc:  # noqa: BLE001 - shown to the user; disks stays a read-only view
        return set(), f"{cur} could not be evaluated ({exc}); every non-blank disk shows as not blank"


def _disk_rows(topology: BlockTopology, views: dict[int, Verdict]) -> list[list[str]]:
    rows = [["DEVICE", "TYPE", "SIZE", "FSTYPE", "MOUNTPOINTS", "CLASSIFIER"]]

    def add(node: BlockNode, depth: int) -> None:
        v = views[id(node)]
        fstype = node.fstype or node.pttype or ("?" if node.probe_error else "-")
        rows.append(["  " * depth + node.path, node.type, _size(node.size), fstype,
                     ",".join(node.mountpoints) or "-", "safe" if v.safe else str(v.code)])
        for c in node.children:
            add(c, depth + 1)

    for r in topology.roots:
        add(r, 0)
    return rows


def _size(n: int) -> str:
    from disklet.units import format_bytes

    try:
        return format_bytes(n)
    except Exception:  # noqa: BLE001 - cosmetic
        return str(n)


def cmd_disks(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    cfg = config_from_args(args)
    deps = AgentDeps.from_config(cfg)
    try:
        topology = read_block_topology(deps.runner)
    except ProbeFailed as exc:
        err.write(f"error: lsblk_probe_failed: {exc}\n")
        return EXIT_FAILED
    applied, note = _applied_targets(cfg, deps)
    views = {id(n): describe_node(n, topology, system_mounts=cfg.system_mounts, volume_mounts=cfg.volume_mounts,
                                  applied_targets=applied) for n in topology.walk()}
    if args.output == "json":
        data = topology.to_dict()

        def annotate(d: dict[str, Any], node: BlockNode) -> None:
            v = views[id(node)]
            d["classifier"] = {"safe": v.safe, "code": str(v.code) if v.code else None, "detail": v.detail}
            for cd, cn in zip(d["children"], node.children, strict=True):
                annotate(cd, cn)

        for d, r in zip(data["blockdevices"], topology.roots, strict=True):
            annotate(d, r)
        data["appliedTargets"] = sorted(applied)
        out.write(json.dumps(data, indent=2) + "\n")
    else:
        write_table(_disk_rows(topology, views), out)
        if topology.swaps:
            out.write("active swaps: " + ", ".join(topology.swaps) + "\n")
        if topology.swaps_error:
            out.write(f"swaps unknown: {topology.swaps_error}\n")
    if note:
        err.write(f"note: {note}\n")
    return EXIT_OK


def cmd_run(args: argparse.Namespace) -> int:
    # Kopf is imported without kubernetes-asyncio by the daemon module itself (disklet/kopf_lean.py).
    from disklet_agent.daemon import run_agent  # imported only when used

    run_agent(config_from_args(args))
    return EXIT_OK


LVM_REPORTS = (("pvs", "pv_all"), ("vgs", "vg_all"), ("lvs", "lv_all"))


def cmd_lvm_report(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    """``{"pvs": <pvs JSON report> | {"error": ...}, "vgs": ..., "lvs": ...}``; exit 1 if one failed."""
    from disklet_agent.host.lvm import Lvm

    cfg = config_from_args(args)
    lvm = Lvm(AgentDeps.from_config(cfg).runner)
    report: dict[str, Any] = {}
    code = EXIT_OK
    for cmd, columns in LVM_REPORTS:
        res = lvm.raw_report(cmd, columns)
        try:
            report[cmd] = json.loads(res.stdout) if res.ok else {"error": (res.stderr or res.describe()).strip()}
        except ValueError:
            report[cmd] = {"error": f"unreadable {cmd} output"}
        if "error" in report[cmd]:
            code = EXIT_FAILED
            err.write(f"{cmd}: {report[cmd]['error']}\n")
    out.write(json.dumps(report, indent=2) + "\n")
    return code


def main(argv: Sequence[str] | None = None, out: TextIO | None = None, err: TextIO | None = None) -> int:
    out = out or sys.stdout
    err = err or sys.stderr
    args = build_parser().parse_args(argv)
    if args.command in ("apply-disk", "apply-disko"):
        return cmd_apply_disk(args, out, err)
    if args.command == "disks":
        return cmd_disks(args, out, err)
    if args.command == "lvm-report":
        return cmd_lvm_report(args, out, err)
    if args.command == "run":
        return cmd_run(args)
    return EXIT_USAGE


if __name__ == "__main__":
    raise SystemExit(main())
