"""``kctl``: declarative day-2 disk layouts and storage inventory from your kubeconfig.

Exit codes: 0 success; 1 refused or failed (invalid manifest batch, failed pre-flight, API error,
object not found, a remote command's non-zero exit is passed through as is); 2 usage error.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Coroutine, Sequence
from typing import Any, TextIO

from . import commands, lvmdiff, rollout
from .agentexec import DEFAULT_NAMESPACE, DEFAULT_TIMEOUT_SECONDS, MAX_TIMEOUT_SECONDS
from .commands import EXIT_FAILED, EXIT_OK, EXIT_USAGE, Ctx

RAW = argparse.RawDescriptionHelpFormatter
EXIT_CODES = """exit codes:
  0  success
  1  refused or failed: invalid manifest batch (nothing sent), failed pre-flight, API error, not found;
     for `node apply-disk`/`node disks --live` the agent's own exit code is passed through
  2  usage error (unknown command, option or resource type)
"""
TOP_EPILOG = """examples:
  kctl diff -f day2-disk-layout.yaml            # pre-flight, no writes
  kctl apply -f ./disk-layouts/                 # every *.yaml/*.yml, sorted
  kctl get disk-layouts --node kvm-node-1
  kctl describe disk-layout prod-data-pool
  kctl delete disk-layout prod-data-pool        # the node is untouched
  kctl node disks kvm-node-1
  kctl describe node kvm-node-1
  kctl node apply-disk kvm-node-1 -f day2-disk.nix             # validate only
  kctl node apply-disk kvm-node-1 -f day2-disk.nix --apply --timeout-seconds 600

""" + EXIT_CODES + "\nSee docs/kctl.md."


class UsageError(Exception):
    pass


class _Parser(argparse.ArgumentParser):
    """argparse that raises instead of exiting, so ``run()`` returns 2 (and tests can call it)."""

    def error(self, message: str) -> Any:  # type: ignore[override]
        raise UsageError(f"{self.prog}: {message}\n  hint: `{self.prog} --help` shows usage and examples")


def _globals(p: argparse.ArgumentParser, suppress: bool) -> None:
    d = argparse.SUPPRESS if suppress else None
    p.add_argument("--kubeconfig", default=d, metavar="FILE",
                   help="kubeconfig to use (default: $KUBECONFIG, else ~/.kube/config)")
    p.add_argument("--context", default=d, metavar="NAME", help="kubeconfig context (default: current-context)")
    p.add_argument("-n", "--namespace", default=argparse.SUPPRESS if suppress else DEFAULT_NAMESPACE, metavar="NS",
                   help=f"namespace of the disklet agent pods (default: {DEFAULT_NAMESPACE})")


def _sub(sub: Any, name: str, help_: str, description: str, examples: str, **kw: Any) -> argparse.ArgumentParser:
    p: argparse.ArgumentParser = sub.add_parser(name, help=help_, description=description, formatter_class=RAW,
                                                epilog="examples:\n" + examples + "\n\n" + EXIT_CODES, **kw)
    _globals(p, suppress=True)
    return p


def _timeout(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number of seconds") from None
    if not 1 <= value <= MAX_TIMEOUT_SECONDS:
        raise argparse.ArgumentTypeError(f"must be 1..{MAX_TIMEOUT_SECONDS} (the hard cap), got {value}")
    return value


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="kctl", formatter_class=RAW,
                description="disklet's command line: declarative DiskLayouts (diff, apply, get, describe, delete), "
                            "node storage inventory, and one-off layout pushes through the node's disklet agent. "
                            "Talks to the cluster with your kubeconfig.",
                epilog=TOP_EPILOG)
    _globals(p, suppress=False)
    sub = p.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True

    d = _sub(sub, "diff", "pre-flight manifests and show what would change (no writes)",
             "Resolve every DiskLayout (render diskLayout, inline layoutNixFile), run the structural pre-flight, "
             "print the target devices and a unified diff of the resolved Nix body against what the cluster holds "
             "(\"new\" when absent). LVMVolumeGroups and LVMVolumeGroupSets: per node, the files to create or grow, "
             "the devices that become PVs, VG create vs extend, thin pools and what the agent would refuse "
             "(docs/kctl.md). Writes nothing. Exit 1 when an object would be refused or fail.",
             "  kctl diff -f day2-disk-layout.yaml\n  kctl diff -f ./disk-layouts/ --offline\n"
             "  kctl diff -f lvgset.yaml --dry-run=server")
    d.add_argument("-f", "--filename", required=True, metavar="PATH",
                   help="manifest file, directory of *.yaml/*.yml, or - for stdin")
    d.add_argument("--offline", action="store_true", help="do not contact the cluster; pre-flight only")
    lvmdiff.add_arguments(d)

    a = _sub(sub, "apply", "create or update objects by server-side apply",
             "Validate every document (the whole batch is refused, nothing sent, if one is invalid or a layout "
             "fails pre-flight), then server-side apply each one as field manager `kctl` and print "
             "<kind>/<name> created|configured|unchanged. Conflicts with another field manager are errors "
             "unless --force-conflicts.",
             "  kctl apply -f day2-disk-layout.yaml\n  kctl apply -f ./disk-layouts/\n"
             "  kctl apply -f fleet.yaml --force-conflicts")
    a.add_argument("-f", "--filename", required=True, metavar="PATH",
                   help="manifest file, directory of *.yaml/*.yml, or - for stdin")
    a.add_argument("--force-conflicts", action="store_true",
                   help="take ownership of fields another manager set (server-side apply force=true)")
    a.add_argument("--skip-preflight", action="store_true",
                   help="send DiskLayouts even if the local pre-flight fails (the operator judges them)")

    g = _sub(sub, "get", "list disk layouts, LVM volume groups or block devices",
             "Types: disk-layouts (dl, disklayouts), lvmvolumegroups (lvg), lvmvolumegroupsets (lvgset), "
             "blockdevices (bd). Columns for disk-layouts: NAME NODE PHASE REASON DEVICES AGE; "
             "-o wide adds GENERATION MODE HASH.",
             "  kctl get disk-layouts\n  kctl get dl --node kvm-node-1 -o wide\n  kctl get dl prod-data-pool -o yaml\n"
             "  kctl get lvg\n  kctl get bd --node kvm-node-1")
    g.add_argument("type", metavar="TYPE", help="disk-layouts | lvg | lvgset | bd (and their long names)")
    g.add_argument("name", nargs="?", metavar="NAME", help="one object")
    g.add_argument("--node", metavar="NODE", help="only objects of this node")
    g.add_argument("-o", "--output", choices=("wide", "yaml", "json", "name"), help="output format")

    ds = _sub(sub, "describe", "details of a disk layout, or a node's storage inventory",
              "describe disk-layout NAME: spec summary, resolved targets, status, conditions and recent Events.\n"
              "describe node NODE: storage backends, DiskLayout phase, LVM VGs and thin pools, ZFS pools, "
              "BlockDevices.",
              "  kctl describe disk-layout prod-data-pool\n  kctl describe node kvm-node-1")
    ds.add_argument("type", metavar="TYPE", help="disk-layout (dl) or node")
    ds.add_argument("name", metavar="NAME")

    de = _sub(sub, "delete", "delete a DiskLayout (the node is not touched)",
              "Delete the DiskLayout object. Nothing on the node changes: disks, mounts and the persisted layout "
              "(/etc/disklet/disk/current.nix) stay in place.",
              "  kctl delete disk-layout prod-data-pool")
    de.add_argument("type", metavar="TYPE", help="disk-layout (dl)")
    de.add_argument("name", metavar="NAME")

    n = _sub(sub, "node", "per-node commands: disks, apply-disk",
             "Per-node storage commands. `disks` lists the node's BlockDevices (or, with --live, asks the agent). "
             "`apply-disk` streams a disko Nix file to the node's agent pod (Kubernetes exec) and runs "
             "`disklet-agent apply-disk -f -` there: validation only unless --apply.",
             "  kctl node disks kvm-node-1\n  kctl node apply-disk kvm-node-1 -f day2-disk.nix")
    nsub = n.add_subparsers(dest="node_command", metavar="NODE_COMMAND", parser_class=_Parser)
    nsub.required = True
    nd = _sub(nsub, "disks", "the node's block devices",
              "Table of the node's BlockDevice objects (label disklet.io/node=NODE). --live execs "
              "`disklet-agent disks` in the node's agent pod instead (live lsblk + classifier verdicts).",
              "  kctl node disks kvm-node-1\n  kctl node disks kvm-node-1 --live\n  kctl node disks kvm-node-1 -o json")
    nd.add_argument("node", metavar="NODE")
    nd.add_argument("--live", action="store_true", help="ask the node's agent (exec) instead of the API")
    nd.add_argument("-o", "--output", choices=("yaml", "json", "table"), help="output format")
    for name, deprecated in (("apply-disk", False), ("apply-disko", True)):
        ad = _sub(nsub, name, ("DEPRECATED alias of apply-disk" if deprecated else
                               "validate (default) or --apply a disko Nix file on one node"),
                  ("DEPRECATED: use `kctl node apply-disk`.\n\n" if deprecated else "")
                  + "Find the disklet agent pod on NODE (namespace --namespace, label "
                    "app.kubernetes.io/component=agent), send FILE on stdin and run "
                    "`disklet-agent apply-disk -f - [--apply] [--no-rebuild] --timeout-seconds N` in it. "
                    "Output is streamed; the exit code is the agent's. Without --apply nothing is written. "
                    "--apply needs the node in controller-managed mode. Needs RBAC create on pods/exec and "
                    "Kubernetes >= 1.30 (exec protocol v5, to close stdin).",
                  f"  kctl node {name} kvm-node-1 -f day2-disk.nix\n"
                  f"  kctl node {name} kvm-node-1 -f day2-disk.nix --apply --timeout-seconds 600\n"
                  f"  kctl node {name} kvm-node-1 -f day2-disk.nix --apply --no-rebuild")
        ad.add_argument("node", metavar="NODE")
        ad.add_argument("-f", "--filename", required=True, metavar="FILE.nix", help="disko Nix body (defines disko.devices)")
        ad.add_argument("--apply", action="store_true", help="really format (controller-managed mode required)")
        ad.add_argument("--no-rebuild", action="store_true", help="skip nixos-rebuild test/switch (validation flows)")
        ad.add_argument("--timeout-seconds", type=_timeout, default=DEFAULT_TIMEOUT_SECONDS, metavar="N",
                        help=f"bound on the disko run (default {DEFAULT_TIMEOUT_SECONDS}, hard cap {MAX_TIMEOUT_SECONDS})")
        ad.add_argument("-o", "--output", choices=("table", "json"), help="the agent's output format")
        ad.set_defaults(deprecated=deprecated)
    rollout.add_parser(sub, _sub)
    return p


def parse(argv: Sequence[str]) -> argparse.Namespace:
    return build_parser().parse_args(list(argv))


def _dispatch(args: argparse.Namespace, ctx: Ctx) -> Coroutine[Any, Any, int]:
    c = args.command
    if c == "diff":
        return commands.cmd_diff(ctx, args.filename, args.offline, lvmdiff.options(args))
    if c == "apply":
        return commands.cmd_apply(ctx, args.filename, args.force_conflicts, args.skip_preflight)
    if c == "get":
        return commands.cmd_get(ctx, args.type, args.name, args.node, args.output)
    if c == "describe":
        return commands.cmd_describe(ctx, args.type, args.name)
    if c == "delete":
        return commands.cmd_delete(ctx, args.type, args.name)
    if c == "rollout":
        return rollout.run(ctx, args)
    if c == "node" and args.node_command == "disks":
        return commands.cmd_node_disks(ctx, args.node, args.live, args.output)
    return commands.cmd_node_apply_disk(ctx, args.node, args.filename, args.apply, not args.no_rebuild,
                                        args.timeout_seconds, args.output, args.deprecated)


async def run(argv: Sequence[str], out: TextIO | None = None, err: TextIO | None = None) -> int:
    """Run kctl with ``argv`` (without the program name); returns the exit code. Never calls sys.exit."""
    out = out or sys.stdout
    err = err or sys.stderr
    try:
        args = parse(argv)
    except UsageError as exc:
        err.write(f"error: {exc}\n")
        return EXIT_USAGE
    except SystemExit as exc:  # --help / --version
        return EXIT_OK if exc.code in (0, None) else EXIT_USAGE
    ctx = Ctx(out=out, err=err, kubeconfig=args.kubeconfig, context=args.context, namespace=args.namespace)
    try:
        return await _dispatch(args, ctx)
    except KeyboardInterrupt:
        err.write("interrupted\n")
        return EXIT_FAILED


def main(argv: Sequence[str] | None = None) -> int:
    try:
        return asyncio.run(run(sys.argv[1:] if argv is None else argv))
    except KeyboardInterrupt:
        return EXIT_FAILED


if __name__ == "__main__":
    sys.exit(main())
