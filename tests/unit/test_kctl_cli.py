"""kctl argument handling, exit codes, offline diff and the agent exec pieces (no cluster needed)."""

from __future__ import annotations

import asyncio
import io
import json
from pathlib import Path

import pytest

from disklet.cli.agentexec import AgentPodError, apply_disk_argv, disks_argv, pick_agent_pod
from disklet.cli.kube import CLOSE, STDIN_CHUNK, Kind, exit_code_of, stdin_frames
from disklet.cli.main import build_parser, main, run

SEED = """\
kind: DiskLayout
metadata: {name: prod-data-pool}
spec:
  nodeId: kvm-node-1
  layoutNix: |
    { disko.devices.disk.data1 = { type = "disk"; device = "/dev/nvme1n1"; content = { type = "gpt";
      partitions.kcore0 = { size = "100%"; content = { type = "filesystem"; format = "ext4";
      mountpoint = "/var/lib/kcore/volumes1"; }; }; }; }; }
"""


def kctl(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = asyncio.run(run(list(argv), out, err))
    return code, out.getvalue(), err.getvalue()


@pytest.mark.parametrize("argv", [
    [], ["frobnicate"], ["get"], ["diff"], ["apply", "--bogus", "-f", "x"], ["node"], ["node", "disks"],
    ["node", "apply-disk", "n1"], ["node", "apply-disk", "n1", "-f", "x", "--timeout-seconds", "3601"],
    ["node", "apply-disk", "n1", "-f", "x", "--timeout-seconds", "ten"], ["get", "dl", "-o", "toml"],
])
def test_usage_errors_exit_2_with_a_hint(argv: list[str]):
    code, out, err = kctl(*argv)
    assert code == 2, (argv, err)
    assert out == "" and err.startswith("error: kctl") and "--help" in err


def test_unknown_resource_type_is_a_usage_error(tmp_path: Path):
    code, _out, err = kctl("get", "pods", "--kubeconfig", str(tmp_path / "none"))
    assert code == 2 and "unknown resource type 'pods'" in err


def test_help_exits_0_and_every_command_has_an_example(capsys: pytest.CaptureFixture[str]):
    for argv in (["--help"], ["diff", "--help"], ["apply", "--help"], ["get", "--help"], ["describe", "--help"],
                 ["delete", "--help"], ["node", "--help"], ["node", "disks", "--help"],
                 ["node", "apply-disk", "--help"], ["node", "apply-disko", "--help"]):
        assert main(argv) == 0
        text = capsys.readouterr().out
        assert "examples:" in text and "kctl " in text, argv
    assert main(["node", "apply-disko", "--help"]) == 0
    assert "DEPRECATED" in capsys.readouterr().out


def test_global_options_work_before_and_after_the_command():
    p = build_parser()
    a = p.parse_args(["--context", "c1", "-n", "ns", "get", "dl"])
    b = p.parse_args(["get", "dl", "--context", "c1", "-n", "ns"])
    assert (a.context, a.namespace) == (b.context, b.namespace) == ("c1", "ns")
    assert p.parse_args(["get", "dl"]).namespace == "disklet-system"


def test_invalid_batch_exits_1_before_touching_the_cluster(tmp_path: Path):
    (tmp_path / "m.yaml").write_text(SEED + "---\nkind: DiskLayout\nmetadata: {name: x}\nspec: {nodeName: n2}\n")
    code, out, err = kctl("apply", "-f", str(tmp_path / "m.yaml"), "--kubeconfig", str(tmp_path / "missing"))
    assert code == 1 and out == ""
    spec_line = SEED.count("\n") + 4  # after the seed: ---, kind, metadata, spec
    assert f"{tmp_path / 'm.yaml'}:{spec_line} DiskLayout/x: spec" in err and "nothing was sent" in err
    assert "kubeconfig" not in err, "validation happens before any connection"


@pytest.mark.parametrize(("content", "says"), [
    (None, "no kubeconfig found at"),
    ("apiVersion: v1\nclusters: [\n", "is not valid YAML (line 3)"),
    ("apiVersion: v1\ncontexts: [{name: a, context: {cluster: c}}]\n", "sets no current-context"),
    ("apiVersion: v1\ncurrent-context: b\ncontexts: [{name: a, context: {cluster: c}}]\n", "context 'b' is not in"),
])
def test_missing_or_broken_kubeconfig_is_one_clear_line(tmp_path: Path, content: str | None, says: str,
                                                        capfd: pytest.CaptureFixture[str]):
    (tmp_path / "m.yaml").write_text(SEED)
    if content is not None:
        (tmp_path / "kubeconfig").write_text(content)
    code, out, err = kctl("apply", "-f", str(tmp_path / "m.yaml"), "--kubeconfig", str(tmp_path / "kubeconfig"))
    assert code == 1 and out == ""
    assert len(err.splitlines()) == 1 and err.startswith("error: ") and says in err and "--kubeconfig" in err, err
    stray = capfd.readouterr()
    assert "Config not found" not in stray.err + stray.out and "Expected key" not in err


def test_offline_diff_shows_seed_manifest_targets_and_body(tmp_path: Path):
    (tmp_path / "m.yaml").write_text(SEED)
    code, out, err = kctl("diff", "--offline", "-f", str(tmp_path / "m.yaml"))
    assert code == 0, err
    assert "DiskLayout/prod-data-pool (node kvm-node-1," in out
    assert "target devices: /dev/nvme1n1" in out
    assert "+{ disko.devices.disk.data1" in out and "nothing was written" in out


def test_offline_diff_of_a_malformed_body_is_an_error_exit_2(tmp_path: Path):
    (tmp_path / "m.yaml").write_text(SEED.replace('device = "/dev/nvme1n1";', "device = ;"))
    code, out, _err = kctl("diff", "--offline", "-f", str(tmp_path / "m.yaml"))
    assert code == 2 and "pre-flight: failed" in out
    code, _out, _err = kctl("diff", "--offline", "-f", str(tmp_path / "absent.yaml"))
    assert code == 2


def test_apply_disk_argv_and_disks_argv():
    assert apply_disk_argv(apply=False, rebuild=True, timeout_seconds=300) == \
        ["disklet-agent", "apply-disk", "-f", "-", "--timeout-seconds", "300"]
    assert apply_disk_argv(apply=True, rebuild=False, timeout_seconds=600) == \
        ["disklet-agent", "apply-disk", "-f", "-", "--timeout-seconds", "600", "--apply", "--no-rebuild"]
    assert apply_disk_argv(apply=False, rebuild=True, timeout_seconds=300, allow_destructive_changes=True)[-1] == \
        "--allow-destructive-changes"
    assert disks_argv() == ["disklet-agent", "disks", "-o", "json"]


def _pod(name: str, node: str, phase: str = "Running", created: str = "2024-01-01T00:00:00Z", **meta: str) -> dict:
    return {"metadata": {"name": name, "creationTimestamp": created, **meta},
            "spec": {"nodeName": node, "containers": [{"name": "init-helper"}, {"name": "agent"}]},
            "status": {"phase": phase}}


def test_pick_agent_pod_rechecks_node_and_skips_unready_pods():
    pods = [_pod("other-node", "n2", created="2024-09-01T00:00:00Z"), _pod("pending", "n1", "Pending"),
            _pod("terminating", "n1", deletionTimestamp="2024-05-01T00:00:00Z", created="2024-08-01T00:00:00Z"),
            _pod("old", "n1"), _pod("new", "n1", created="2024-02-01T00:00:00Z")]
    assert pick_agent_pod(pods, "n1", "disklet-system") == ("new", "agent")
    with pytest.raises(AgentPodError, match=r"no running disklet agent pod on node 'n3'.*\n  hint: kubectl -n x get pods"):
        pick_agent_pod(pods, "n3", "x")
    with pytest.raises(AgentPodError, match=r"found: pending \(Pending\)"):
        pick_agent_pod([_pod("pending", "n1", "Pending")], "n1", "disklet-system")


def test_stdin_frames_chunk_and_close_only_on_v5():
    data = b"x" * (STDIN_CHUNK + 10)
    frames = stdin_frames(data, "v5.channel.k8s.io")
    assert [len(f) for f in frames] == [STDIN_CHUNK + 1, 11, 2]
    assert all(f[0] == 0 for f in frames[:2]) and frames[-1] == bytes([CLOSE, 0])
    assert b"".join(f[1:] for f in frames[:2]) == data
    assert stdin_frames(b"abc", "v4.channel.k8s.io") == [b"\x00abc"]


def test_exit_code_from_the_exec_status():
    assert exit_code_of(json.dumps({"status": "Success"})) == (0, "")
    failure = {"status": "Failure", "message": "command terminated with non-zero exit code", "reason": "NonZeroExitCode",
               "details": {"causes": [{"reason": "ExitCode", "message": "4"}]}}
    assert exit_code_of(json.dumps(failure))[0] == 4
    assert exit_code_of(json.dumps({"status": "Failure", "message": "container not found"})) == (1, "container not found")
    assert exit_code_of(b"not json")[0] == 1


def test_kind_paths():
    assert Kind("disklet.io", "v1alpha1", "disklayouts", "DiskLayout").path("a") == "/apis/disklet.io/v1alpha1/disklayouts/a"
    assert Kind("", "v1", "pods", "Pod", namespaced=True).path(None, "disklet-system") == \
        "/api/v1/namespaces/disklet-system/pods"


def _parsers(p):
    yield p
    for child in getattr(p, "subcommands", {}).values():
        yield from _parsers(child)


@pytest.mark.parametrize("prog", ["kctl", "kubectl disklet"])
def test_every_help_ends_with_the_docs_url_and_names_the_command_as_called(prog: str):
    import re

    from disklet.advice import DOCS_URL

    for p in _parsers(build_parser(prog)):
        text = p.format_help()
        assert text.rstrip().splitlines()[-1] == f"Documentation: {DOCS_URL}/kctl.md", p.prog
        assert not re.search(r"(?<![/\w])docs/\w", text), f"{p.prog}: a relative docs/ path a pip user does not have"
        if prog != "kctl":
            assert "\n  kctl " not in text and "`kctl " not in text, p.prog


def test_a_closed_pipe_ends_kctl_quietly(tmp_path: Path):
    """`kctl diff ... | head`: no BrokenPipeError traceback, the shell's SIGPIPE status."""
    import os
    import subprocess
    import sys

    (tmp_path / "seed.yaml").write_text("\n---\n".join(
        SEED.replace("prod-data-pool", f"pool-{i}").replace("kvm-node-1", f"node-{i}") for i in range(120)))
    root = Path(__file__).resolve().parents[2]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(root), str(root / "operator"), str(root / "agent")])}
    proc = subprocess.Popen([sys.executable, "-m", "disklet.cli.main", "diff", "--offline", "-f",  # noqa: S603
                             str(tmp_path / "seed.yaml")], stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    assert proc.stdout is not None and proc.stderr is not None
    first = proc.stdout.readline()  # `| head -1`
    proc.stdout.close()
    err = proc.stderr.read().decode()
    code = proc.wait(timeout=120)
    assert first.startswith(b"DiskLayout/pool-0")
    assert "Traceback" not in err and "BrokenPipeError" not in err, err
    assert code == 141, (code, err)
