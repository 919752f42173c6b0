"""``kctl`` (also ``kubectl disklet``): declarative day-2 disk layouts and storage inventory.

Exit codes: 0 success; 1 refused or failed (invalid manifest batch, failed pre-flight, API error,
object not found, a remote command's non-zero exit is passed through as is); 2 usage error.
``diff`` follows ``kubectl diff``: 0 no differences, 1 differences, 2 an error.

Subcommands live in :data:`SUBCOMMANDS`; another module adds one with :func:`register_subcommand`
(a function ``(sub, make) -> None`` that builds its parser with ``make(sub, name, ...)`` and sets
``handler=async fn(args, ctx) -> int`` with ``set_defaults``).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TextIO

from .. import __version__
from ..advice import DOCS_URL
from . import commands, lvmdiff, rollout
from .agentexec import DEFAULT_NAMESPACE, DEFAULT_TIMEOUT_SECONDS, MAX_TIMEOUT_SECONDS
from .commands import EXIT_FAILED, EXIT_OK, EXIT_USAGE, Ctx
from .output import OUTPUT_HELP, Output, parse_output, parse_sort_by

RAW = argparse.RawDescriptionHelpFormatter
EXIT_CODES = """exit codes:
  0  success
  1  refused or failed: invalid manifest batch (nothing sent), failed pre-flight, API error, not found;
     for `node apply-disk`/`node disks --live` the agent's own exit code is passed through
  2  usage error (unknown command, option or resource type)
  diff: 0 no differences, 1 differences found, 2 an error (as `kubectl diff`)
"""
SIZES = f"""sizes (two grammars, on purpose):
  DiskLayout partition sizes are passed to disko/sgdisk as written: 512M, 64G, 2T or 100%; the
  letters are binary (64G = 64 GiB), and 64Gi is refused ("write 64G"). LVMVolumeGroup sizes
  (fileDevices, thin pools) are Kubernetes quantities like a PVC's: 10Gi, 500Mi, 2Ti (thin pools
  also bytes or NN%); decimal units (10G = 10^9 bytes) are refused there ("did you mean 10Gi?"),
  so the same text never means two sizes. See {DOCS_URL}/kctl.md#sizes.
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
  kubectl disklet get lvg -o custom-columns=NAME:.metadata.name,VG:.spec.actualVGNameOnTheNode
  kctl support-bundle                          # a tarball for a bug report (no secrets)

output (every command): -o json|yaml|wide|name|jsonpath=TEMPLATE|custom-columns=SPEC, --no-headers

""" + EXIT_CODES + "\n" + SIZES + f"\nDocumentation: {DOCS_URL}/kctl.md"


class UsageError(Exception):
    pass


class _Parser(argparse.ArgumentParser):
    """argparse that raises instead of exiting, so ``run()`` returns 2 (and tests can call it).

    It also remembers its option strings and subcommands (for ``kubectl disklet`` completion)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.option_names: list[str] = []
        self.subcommands: dict[str, argparse.ArgumentParser] = {}
        super().__init__(*args, **kwargs)

    def add_argument(self, *args: Any, **kwargs: Any) -> Any:
        self.option_names += [a for a in args if isinstance(a, str) and a.startswith("-")]
        return super().add_argument(*args, **kwargs)

    def add_subparsers(self, **kwargs: Any) -> Any:
        action = super().add_subparsers(**kwargs)
        self.subcommands = action.choices
        return action

    def error(self, message: str) -> Any:  # type: ignore[override]
        raise UsageError(f"{self.prog}: {message}\n  hint: `{self.prog} --help` shows usage and examples")


def _globals(p: argparse.ArgumentParser, suppress: bool) -> None:
    d = argparse.SUPPRESS if suppress else None
    p.add_argument("--kubeconfig", default=d, metavar="FILE",
                   help="kubeconfig to use (default: $KUBECONFIG, else ~/.kube/config)")
    p.add_argument("--context", default=d, metavar="NAME", help="kubeconfig context (default: current-context)")
    p.add_argument("-n", "--namespace", default=argparse.SUPPRESS if suppress else DEFAULT_NAMESPACE, metavar="NS",
                   help=f"namespace of the disklet agent pods (default: {DEFAULT_NAMESPACE})")


def _output_flags(p: argparse.ArgumentParser) -> None:
    """The one -o flag set every command takes (kubectl's)."""
    p.add_argument("-o", "--output", type=parse_output, default=argparse.SUPPRESS, metavar="FORMAT", help=OUTPUT_HELP)
    p.add_argument("--no-headers", action="store_true", default=argparse.SUPPRESS,
                   help="tables without the header line")
    p.add_argument("--show-managed-fields", action="store_true", default=argparse.SUPPRESS,
                   help="keep metadata.managedFields in -o json|yaml (dropped by default, as kubectl)")


def _all_namespaces_flag(p: argparse.ArgumentParser) -> None:
    p.add_argument("-A", "--all-namespaces", action="store_true",
                   help="accepted as kubectl does: disklet's kinds are cluster-scoped, so every object is listed "
                        "anyway")


def _whole_seconds(text: str) -> int:
    from math import ceil

    return ceil(rollout.parse_duration(text))


def _label_columns(text: str) -> list[str]:
    keys = [k.strip() for k in text.split(",") if k.strip()]
    if not keys:
        raise argparse.ArgumentTypeError("-L needs a label key, e.g. -L disklet.io/node")
    return keys


def _sub(sub: Any, name: str, help_: str, description: str, examples: str, *, leaf: bool = True,
         extra_epilog: str = "", **kw: Any) -> argparse.ArgumentParser:
    p: argparse.ArgumentParser = sub.add_parser(name, help=help_, description=description, formatter_class=RAW,
                                                epilog="examples:\n" + examples + "\n\n" + EXIT_CODES + extra_epilog
                                                + f"\nDocumentation: {DOCS_URL}/kctl.md",
                                                **kw)
    _globals(p, suppress=True)
    if leaf:
        _output_flags(p)
    return p


Handler = Callable[[argparse.Namespace, Ctx], Awaitable[int]]
SubcommandBuilder = Callable[[Any, Callable[..., argparse.ArgumentParser]], None]
SUBCOMMANDS: list[SubcommandBuilder] = []


def register_subcommand(build: SubcommandBuilder) -> SubcommandBuilder:
    """Add a top-level subcommand (usable as a decorator); see the module docstring."""
    SUBCOMMANDS.append(build)
    return build


register_subcommand(rollout.add_parser)  # kctl rollout (disklet/cli/rollout.py)


def _timeout(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number of seconds") from None
    if not 1 <= value <= MAX_TIMEOUT_SECONDS:
        raise argparse.ArgumentTypeError(f"must be 1..{MAX_TIMEOUT_SECONDS} (the hard cap), got {value}")
    return value


def _dry_run_flag(p: argparse.ArgumentParser) -> None:
    p.add_argument("--dry-run", nargs="?", const="client", default="none", choices=("none", "client", "server"),
                   metavar="none|client|server",
                   help="client: only print what would be sent; server: the API server judges it (dryRun=All), "
                        "nothing is stored (as kubectl)")


def build_parser(prog: str = "kctl") -> argparse.ArgumentParser:
    p = _Parser(prog=prog, formatter_class=RAW,
                description="disklet's command line: declarative DiskLayouts (diff, apply, get, describe, delete), "
                            "node storage inventory, and one-off layout pushes through the node's disklet agent. "
                            "Talks to the cluster with your kubeconfig.",
                epilog=TOP_EPILOG)
    _globals(p, suppress=False)
    p.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True
    for build in (_builtin_commands, *SUBCOMMANDS):
        build(sub, _sub)
    if prog != "kctl":
        _rename(p, prog)
    return p


def _rename(p: argparse.ArgumentParser, prog: str) -> None:
    """Help under ``kubectl disklet``: examples and hints name that command, not ``kctl``."""
    for attr in ("description", "epilog"):
        text = getattr(p, attr) or ""
        text = text.replace("\n  kctl ", f"\n  {prog} ").replace("`kctl ", f"`{prog} ")
        setattr(p, attr, text.replace("examples:\n  kctl ", f"examples:\n  {prog} "))
    for child in getattr(p, "subcommands", {}).values():
        _rename(child, prog)


def _builtin_commands(sub: Any, _sub: Callable[..., argparse.ArgumentParser]) -> None:

    d = _sub(sub, "diff", "pre-flight manifests and show what would change (no writes)",
             "Resolve every DiskLayout (render diskLayout, inline layoutNixFile), run the structural pre-flight, "
             "print the target devices and a unified diff of the resolved Nix body against what the cluster holds "
             "(\"new\" when absent). LVMVolumeGroups and LVMVolumeGroupSets: per node, the files to create or grow, "
             "the devices that become PVs, VG create vs extend, thin pools and what the agent would refuse "
             "(--dry-run=server also asks the API server). Writes nothing. Exits like kubectl diff: 0 no differences, 1 differences, "
             "2 an error (invalid manifest, a layout that would be refused or fail, API error). With --offline "
             "nothing is compared: 0 when every document passes. -o name lists the objects that would change.",
             "  kctl diff -f day2-disk-layout.yaml\n  kctl diff -f ./disk-layouts/ --offline\n"
             "  kctl diff -f fleet/ -o name      # what would change, one per line", extra_epilog="\n" + SIZES)
    d.add_argument("-f", "--filename", required=True, metavar="PATH",
                   help="manifest file, directory of *.yaml/*.yml, or - for stdin")
    d.add_argument("--offline", action="store_true", help="do not contact the cluster; pre-flight only")
    lvmdiff.add_arguments(d)
    d.set_defaults(handler=lambda a, ctx: commands.cmd_diff(ctx, a.filename, a.offline, lvmdiff.options(a)))

    a = _sub(sub, "apply", "create or update objects by server-side apply",
             "Validate every document and run the same plan as `kctl diff` (layout pre-flight, the per-node "
             "LVM plan, the API server's transition rules): if the plan refuses any object, the whole batch is "
             "refused and nothing is sent (exit 1), unless --force-refused. Then server-side apply each one as "
             "field manager `kctl` and print <kind>/<name> created|configured|unchanged. Conflicts with another "
             "field manager are errors unless --force-conflicts.",
             "  kctl apply -f day2-disk-layout.yaml\n  kctl apply -f ./disk-layouts/\n"
             "  kctl apply -f fleet.yaml --dry-run=server     # the API server judges, nothing is stored\n"
             "  kctl apply -f fleet.yaml --force-conflicts\n  kctl apply -f day2.yaml -o name",
             extra_epilog="\n" + SIZES)
    a.add_argument("-f", "--filename", required=True, metavar="PATH",
                   help="manifest file, directory of *.yaml/*.yml, or - for stdin")
    a.add_argument("--force-conflicts", action="store_true",
                   help="take ownership of fields another manager set (server-side apply force=true)")
    a.add_argument("--force-refused", "--skip-preflight", dest="force_refused", action="store_true",
                   help="send objects even when the plan `diff` prints refuses them (the operator and agents then "
                        "refuse them; an LVMVolumeGroup's file devices can never be removed afterwards). "
                        "--skip-preflight is the old name")
    _dry_run_flag(a)
    lvmdiff.add_arguments(a, dry_run=False)
    a.set_defaults(handler=lambda a, ctx: commands.cmd_apply(ctx, a.filename, a.force_conflicts, a.force_refused,
                                                             lvmdiff.options(a), a.dry_run))

    g = _sub(sub, "get", "list disklet objects (columns are the CRDs' printer columns, as kubectl get)",
             "Types: " + commands.TYPE_HELP + ". The columns are the CRDs' additionalPrinterColumns, so "
             "`kctl get` and `kubectl get` print the same; -o wide adds the priority-1 columns. -w keeps "
             "watching and prints one line per change. Several types at once as kubectl: `dl,lvg` "
             "(names after it are looked up in each) or TYPE/NAME operands; tables then show one "
             "section per type with kind.group/name names, machine formats one List.",
             "  kctl get disklayouts\n  kctl get dl --node kvm-node-1 -o wide\n  kctl get dl prod-data-pool -o yaml\n"
             "  kctl get lvg -l disklet.io/node=kvm-node-1\n  kctl get bd -o jsonpath='{.items[*].status.path}'\n"
             "  kctl get dl -w\n  kctl get dl,lvg --node kvm-node-1\n  kctl get dl/prod-data-pool lvg/vg-data-a -o yaml")
    _dynamic(g.add_argument("type", metavar="TYPE",
                   help="dl | lvg | lvgset | bd (and their long names); TYPE,TYPE for several; or TYPE/NAME"))
    _dynamic(g.add_argument("names", nargs="*", metavar="NAME", help="only these objects (or more TYPE/NAME operands)"))
    g.add_argument("--node", metavar="NODE", help="only objects of this node")
    g.add_argument("-l", "--selector", metavar="SELECTOR", help="label selector, e.g. disklet.io/node=n1")
    g.add_argument("-w", "--watch", action="store_true", help="after listing, watch for changes")
    g.add_argument("-L", "--label-columns", type=_label_columns, action="append", default=[], metavar="KEY[,KEY]",
                   help="a column per label key (repeatable; header: the key's last segment)")
    g.add_argument("--show-labels", action="store_true", help="a last LABELS column with every label")
    g.add_argument("--sort-by", type=parse_sort_by, metavar="JSONPATH",
                   help="sort by this field, e.g. --sort-by=.metadata.creationTimestamp (every output format)")
    _all_namespaces_flag(g)
    g.add_argument("--request-timeout", type=_whole_seconds, metavar="DURATION",
                   help="with -w: stop watching after this long (kubectl durations: 30s, 5m; a bare number is seconds)")
    g.set_defaults(handler=lambda a, ctx: commands.cmd_get(ctx, a.type, a.names, a.node, a.selector, a.watch,
                                                           a.request_timeout))

    ds = _sub(sub, "describe", "details of any disklet object, or a node's storage inventory",
              "describe TYPE NAME: spec, status, conditions and recent Events of any disklet kind "
              "(DiskLayouts also show the resolved targets and the next step).\n"
              "describe node NODE: storage backends, DiskLayout phase, LVM VGs and thin pools, ZFS pools, "
              "BlockDevices.",
              "  kctl describe disklayout prod-data-pool\n  kctl describe lvg vg-data-a\n"
              "  kctl describe bd -l disklet.io/node=kvm-node-1\n  kctl describe node kvm-node-1")
    _dynamic(ds.add_argument("type", metavar="TYPE", help="dl | lvg | lvgset | bd | node"))
    _dynamic(ds.add_argument("names", nargs="*", metavar="NAME"))
    ds.add_argument("-l", "--selector", metavar="SELECTOR", help="label selector")
    _all_namespaces_flag(ds)
    ds.set_defaults(handler=lambda a, ctx: commands.cmd_describe(ctx, a.type, a.names, a.selector))

    de = _sub(sub, "delete", "delete disklet objects (says what happens on the node)",
              "Delete objects by name or label selector. A DiskLayout's deletion changes nothing on the node; an "
              "LVMVolumeGroup's makes its agent remove the VG only when it proves ownership and the VG is empty; "
              "a BlockDevice comes back at the next discovery.",
              "  kctl delete disklayout prod-data-pool\n  kctl delete lvg vg-data-a\n"
              "  kctl delete dl -l team=storage -o name")
    _dynamic(de.add_argument("type", metavar="TYPE", help="dl | lvg | lvgset | bd"))
    _dynamic(de.add_argument("names", nargs="*", metavar="NAME"))
    de.add_argument("-l", "--selector", metavar="SELECTOR", help="label selector")
    _dry_run_flag(de)
    de.set_defaults(handler=lambda a, ctx: commands.cmd_delete(ctx, a.type, a.names, a.selector, a.dry_run))

    sb = _sub(sub, "support-bundle", "one tarball for a bug report: objects, Events, logs, agents' views (no Secrets)",
              "Collect every disklet object, the Events about them, the Nodes, the agents' Leases, the versions "
              "(API server, CRDs, chart, kctl), the operator and agent pods (found in --namespace, else by the "
              "chart's labels in any namespace; every value but disklet's own settings redacted) and their last "
              "--tail log lines, and per node the agent's live `disks` view and LVM reports (read-only, via exec "
              "in the agent pod), into one .tar.gz. Secrets are never read. "
              "Problems met while collecting are listed in index.yaml and on stderr; they do not stop the bundle.",
              "  kctl support-bundle\n  kctl support-bundle --tail 5000 --tarball /tmp/disklet.tar.gz\n"
              "  kctl support-bundle --node kvm-node-1 -n disklet")
    sb.add_argument("--tarball", metavar="FILE", help="where to write (default ./disklet-support-<UTC time>.tar.gz; "
                                                      "never overwrites)")
    sb.add_argument("--tail", type=int, default=1000, metavar="N", help="log lines per container (default 1000)")
    sb.add_argument("--node", dest="nodes", action="append", default=[], metavar="NODE",
                    help="only these nodes' agent views (repeatable; default every node with an agent pod)")
    sb.set_defaults(handler=lambda a, ctx: commands.cmd_support_bundle(ctx, a.tarball, a.tail, a.nodes))

    c = _sub(sub, "completion", "print a shell completion script (bash, zsh or fish)",
             "Print the completion script for SHELL to stdout. Load it in your shell's startup file.",
             "  source <(kctl completion bash)\n  kctl completion zsh > \"${fpath[1]}/_kctl\"\n"
             "  kctl completion fish > ~/.config/fish/completions/kctl.fish", leaf=False)
    c.add_argument("shell", choices=("bash", "zsh", "fish"), metavar="SHELL", help="bash | zsh | fish")
    c.set_defaults(handler=_completion)

    n = _sub(sub, "node", "per-node commands: disks, apply-disk",
             "Per-node storage commands. `disks` lists the node's BlockDevices (or, with --live, asks the agent). "
             "`apply-disk` streams a disko Nix file to the node's agent pod (Kubernetes exec) and runs "
             "`disklet-agent apply-disk -f -` there: validation only unless --apply.",
             "  kctl node disks kvm-node-1\n  kctl node apply-disk kvm-node-1 -f day2-disk.nix", leaf=False)
    nsub = n.add_subparsers(dest="node_command", metavar="NODE_COMMAND", parser_class=_Parser)
    nsub.required = True
    nd = _sub(nsub, "disks", "the node's block devices",
              "Table of the node's BlockDevice objects (label disklet.io/node=NODE). --live execs "
              "`disklet-agent disks` in the node's agent pod instead (live lsblk + classifier verdicts).",
              "  kctl node disks kvm-node-1\n  kctl node disks kvm-node-1 --live\n  kctl node disks kvm-node-1 -o json")
    _dynamic(nd.add_argument("node", metavar="NODE"))
    nd.add_argument("--live", action="store_true", help="ask the node's agent (exec) instead of the API")
    nd.set_defaults(handler=lambda a, ctx: commands.cmd_node_disks(ctx, a.node, a.live))
    for name, deprecated in (("apply-disk", False), ("apply-disko", True)):
        ad = _sub(nsub, name, ("DEPRECATED alias of apply-disk" if deprecated else
                               "validate (default) or --apply a disko Nix file on one node"),
                  ("DEPRECATED: use `kctl node apply-disk`.\n\n" if deprecated else "")
                  + "Find the disklet agent pod on NODE (namespace --namespace, label "
                    "app.kubernetes.io/component=agent), send FILE on stdin and run "
                    "`disklet-agent apply-disk -f - [--apply] [--no-rebuild] [--allow-destructive-changes] "
                    "--timeout-seconds N` in it. "
                    "Output is streamed; the exit code is the agent's. Without --apply nothing is written. "
                    "--apply needs the node in controller-managed mode. Needs RBAC create on pods/exec and "
                    "Kubernetes >= 1.30 (exec protocol v5, to close stdin).",
                  f"  kctl node {name} kvm-node-1 -f day2-disk.nix\n"
                  f"  kctl node {name} kvm-node-1 -f day2-disk.nix --apply --timeout-seconds 600\n"
                  f"  kctl node {name} kvm-node-1 -f day2-disk.nix --apply --no-rebuild")
        _dynamic(ad.add_argument("node", metavar="NODE"))
        ad.add_argument("-f", "--filename", required=True, metavar="FILE.nix", help="disko Nix body (defines disko.devices)")
        ad.add_argument("--apply", action="store_true", help="really format (controller-managed mode required)")
        ad.add_argument("--no-rebuild", action="store_true", help="skip nixos-rebuild test/switch (validation flows)")
        ad.add_argument("--allow-destructive-changes", action="store_true",
                        help="allow removing an applied disk or moving an applied filesystem's mountpoint "
                             "(like a DiskLayout's spec.allowDestructiveChanges)")
        ad.add_argument("--timeout-seconds", type=_timeout, default=DEFAULT_TIMEOUT_SECONDS, metavar="N",
                        help=f"bound on the disko run (default {DEFAULT_TIMEOUT_SECONDS}, hard cap {MAX_TIMEOUT_SECONDS})")
        ad.set_defaults(deprecated=deprecated, handler=lambda a, ctx: commands.cmd_node_apply_disk(
            ctx, a.node, a.filename, a.apply, not a.no_rebuild, a.timeout_seconds, a.deprecated,
            a.allow_destructive_changes))


DYNAMIC = {
    "bash": "_kctl_dynamic_compgen",
    "preamble": {"bash": """
# resource types and object names: asks `kctl __complete` (the cluster, through your kubeconfig)
_kctl_dynamic_compgen() {
  local IFS=$'\\n'
  compgen -W "$("${COMP_WORDS[0]}" __complete "${COMP_WORDS[@]:1:COMP_CWORD-1}" "$1" 2>/dev/null | grep -v '^:')" -- "$1"
}
"""},
}
"""shtab's custom completion for TYPE and NAME operands (bash; zsh and fish complete commands and flags)."""


def _dynamic(action: argparse.Action) -> argparse.Action:
    action.complete = DYNAMIC  # type: ignore[attr-defined]
    return action


async def _completion(args: argparse.Namespace, ctx: Ctx) -> int:
    import shtab

    prog = args.prog_name
    ctx.out.write(shtab.complete(build_parser(prog), shell=args.shell) + "\n")
    return EXIT_OK


def parse(argv: Sequence[str], prog: str = "kctl") -> argparse.Namespace:
    return build_parser(prog).parse_args(list(argv))


def prog_name(argv0: str) -> str:
    """``kubectl disklet`` when run as the kubectl plugin (``kubectl-disklet``), else ``kctl``."""
    return "kubectl disklet" if os.path.basename(argv0).startswith("kubectl-disklet") else "kctl"


class ProgStream:
    """A text stream that names commands as the user typed them: under ``kubectl disklet`` a hint's
    `` `kctl get ...` `` reads `` `kubectl disklet get ...` ``."""

    def __init__(self, stream: TextIO, prog: str) -> None:
        self.stream, self.prog = stream, prog

    def write(self, text: str) -> int:
        return self.stream.write(text.replace("`kctl ", f"`{self.prog} "))

    def flush(self) -> None:
        self.stream.flush()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.stream, name)


async def run(argv: Sequence[str], out: TextIO | None = None, err: TextIO | None = None, prog: str = "kctl") -> int:
    """Run kctl with ``argv`` (without the program name); returns the exit code. Never calls sys.exit."""
    out = out or sys.stdout
    err = err or sys.stderr
    if prog != "kctl":
        out, err = ProgStream(out, prog), ProgStream(err, prog)  # type: ignore[assignment]
    try:
        args = parse(argv, prog)
    except UsageError as exc:
        err.write(f"error: {exc}\n")
        return EXIT_USAGE
    except SystemExit as exc:  # --help / --version
        return EXIT_OK if exc.code in (0, None) else EXIT_USAGE
    args.prog_name = prog
    output: Output = getattr(args, "output", None) or Output()
    output = Output(output.format, output.arg, no_headers=getattr(args, "no_headers", False),
                    label_columns=tuple(k for keys in getattr(args, "label_columns", None) or () for k in keys),
                    show_labels=bool(getattr(args, "show_labels", False)), sort_by=getattr(args, "sort_by", None) or "",
                    show_managed_fields=bool(getattr(args, "show_managed_fields", False)))
    ctx = Ctx(out=out, err=err, kubeconfig=args.kubeconfig, context=args.context, namespace=args.namespace,
              output=output, prog=prog)
    try:
        return await args.handler(args, ctx)
    except KeyboardInterrupt:
        err.write("interrupted\n")
        return EXIT_FAILED


EXIT_BROKEN_PIPE = 128 + 13
"""What a shell reports for a command killed by SIGPIPE (``kctl diff ... | head``)."""


def main(argv: Sequence[str] | None = None) -> int:
    prog = prog_name(sys.argv[0]) if argv is None else "kctl"
    words = list(sys.argv[1:] if argv is None else argv)
    if words and words[0] in ("__complete", "__completeNoDesc"):  # the shell completion's helper (hidden)
        from .completion import kubectl_complete

        return kubectl_complete(words)
    try:
        code = asyncio.run(run(sys.argv[1:] if argv is None else argv, prog=prog))
        sys.stdout.flush()
        return code
    except KeyboardInterrupt:
        return EXIT_FAILED
    except BrokenPipeError:
        # The reader went away (`| head`): no traceback, and no second error when Python flushes stdout at exit.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return EXIT_BROKEN_PIPE


if __name__ == "__main__":
    sys.exit(main())
