"""kubectl's common flags, as a table: each row runs `kubectl get ...` and `kctl get ...` (and `kubectl
disklet get ...`) with the same flags on the real API server and compares what they print (the AGE
column aside, which may tick between the two runs). Then the flags kubectl has elsewhere: --dry-run on
apply and delete, durations for --timeout."""

from __future__ import annotations

import io
import json
import re
import subprocess
from pathlib import Path

import pytest
import yaml
from kctl_fixtures import LVG, kctl, lvg

from devkit.envtest import tool
from disklet.cli.main import run

FLAG_ROWS = [
    ("plain", []),
    ("-A", ["-A"]),
    ("--all-namespaces", ["--all-namespaces"]),
    ("-L one", ["-L", "team"]),
    ("-L list", ["-L", "team,disklet.io/node"]),
    ("-L repeated", ["-L", "team", "-L", "disklet.io/node"]),
    ("--label-columns", ["--label-columns=team"]),
    ("--show-labels", ["--show-labels"]),
    ("--sort-by string", ["--sort-by=.spec.actualVGNameOnTheNode"]),
    ("--sort-by braces", ["--sort-by", "{.spec.local.nodeName}"]),
    ("wide + -L + --show-labels + --sort-by", ["-o", "wide", "-L", "team", "--show-labels",
                                               "--sort-by=.spec.actualVGNameOnTheNode"]),
    ("-l", ["-l", "team=a"]),
    ("--no-headers", ["--no-headers", "-L", "team"]),
    ("-o name sorted", ["-o", "name", "--sort-by=.spec.actualVGNameOnTheNode"]),
]


def _seed(kube) -> None:
    for name, node, vg, team in (("lvg-b", "n2", "vg_a", "a"), ("lvg-a", "n3", "vg_c", "b"), ("lvg-c", "n1", "vg_b", None)):
        obj = lvg(name, node, vg)
        if team:
            obj["metadata"]["labels"]["team"] = team
        kube.seed(LVG, obj)


def _kubectl(kube, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([tool("kubectl"), "--kubeconfig", str(kube.kubeconfig), *args],  # noqa: S603
                          capture_output=True, text=True, timeout=60)


def _without_age(text: str) -> list[str]:
    """Table lines with the AGE cell blanked (cut at the header's offsets), trailing blanks dropped."""
    lines = [line.rstrip() for line in text.splitlines()]
    if not lines or "AGE" not in lines[0].split():
        return [re.sub(r"\s+\d+[smhd]\b", " <age>", line) for line in lines]  # --no-headers
    start = lines[0].index("AGE")
    end = start + max(len(line[start:].split("   ")[0]) for line in lines)
    return [(line[:start] + "<age>" + line[end:]).rstrip() for line in lines]


@pytest.fixture()
def kube(real_kube):
    return real_kube


@pytest.mark.parametrize(("row", "flags"), FLAG_ROWS, ids=[r[0] for r in FLAG_ROWS])
async def test_get_prints_what_kubectl_prints(kube, row, flags):
    _seed(kube)
    want = _kubectl(kube, "get", "lvmvolumegroups", *flags)
    assert want.returncode == 0, want.stderr
    got = await kctl(kube, "get", "lvg", *flags)
    assert got.code == 0, got.err
    assert _without_age(got.out) == _without_age(want.stdout), f"kctl:\n{got.out}\nkubectl:\n{want.stdout}"
    out, err = io.StringIO(), io.StringIO()
    code = await run(["get", "lvg", *flags, "--kubeconfig", str(kube.kubeconfig)], out, err, prog="kubectl disklet")
    assert code == 0 and _without_age(out.getvalue()) == _without_age(want.stdout), err.getvalue()


@pytest.mark.parametrize("fmt", ["yaml", "json"])
async def test_machine_output_drops_managed_fields_as_kubectl(kube, fmt):
    _seed(kube)
    load = yaml.safe_load if fmt == "yaml" else json.loads
    want = load(_kubectl(kube, "get", "lvmvolumegroups", "lvg-a", "-o", fmt).stdout)
    got = await kctl(kube, "get", "lvg", "lvg-a", "-o", fmt)
    assert got.code == 0, got.err
    assert "managedFields" not in got.out
    assert load(got.out) == want
    shown = await kctl(kube, "get", "lvg", "lvg-a", "-o", fmt, "--show-managed-fields")
    assert load(shown.out)["metadata"]["managedFields"] == \
        load(_kubectl(kube, "get", "lvmvolumegroups", "lvg-a", "-o", fmt, "--show-managed-fields").stdout)[
            "metadata"]["managedFields"]
    listed = await kctl(kube, "get", "lvg", "-o", fmt, "--sort-by=.spec.actualVGNameOnTheNode")
    assert [i["metadata"]["name"] for i in load(listed.out)["items"]] == ["lvg-b", "lvg-c", "lvg-a"]
    assert "managedFields" not in listed.out


@pytest.mark.parametrize("mode", ["client", "server"])
async def test_dry_run_on_apply_and_delete_stores_nothing(kube, tmp_path: Path, mode):
    _seed(kube)
    manifest = tmp_path / "lvg.yaml"
    manifest.write_text(yaml.safe_dump(lvg("lvg-new", "n1", "vg_new")))
    r = await kctl(kube, "apply", "-f", str(manifest), f"--dry-run={mode}")
    assert r.code == 0 and r.out.startswith("LVMVolumeGroup/lvg-new created ("), r.err
    assert kube.read(LVG, "lvg-new") is None
    version = kube.read(LVG, "lvg-a")["metadata"]["resourceVersion"]
    r = await kctl(kube, "delete", "lvg", "lvg-a", f"--dry-run={mode}")
    assert r.code == 0 and "deleted (" in r.out, r.err
    live = kube.read(LVG, "lvg-a")
    assert live["metadata"]["resourceVersion"] == version and "deletionTimestamp" not in live["metadata"]


@pytest.mark.parametrize("duration", ["5m", "1h30s", "90s", "0"])
async def test_rollout_status_takes_kubectl_durations(kube, duration):
    r = await kctl(kube, "rollout", "status", "lvgset/none-here", "--timeout", duration, "--no-wait")
    assert r.code == 1 and "LVMVolumeGroupSet none-here not found" in r.err, (r.code, r.err)
    r = await kctl(kube, "rollout", "status", "lvgset/none-here", "--timeout", "5 minutes")
    assert r.code == 2 and "invalid duration" in r.err


async def test_watch_keeps_the_columns_of_its_first_lines(kube):
    """-w: a changed object's line is cut at the same offsets as the header, although most cells are empty."""
    import asyncio

    from kctl_fixtures import table_rows

    _seed(kube)
    out, err = io.StringIO(), io.StringIO()
    task = asyncio.create_task(run(["get", "lvg", "-w", "-L", "team", "--request-timeout", "20",
                                    "--kubeconfig", str(kube.kubeconfig)], out, err))
    try:
        for _ in range(1000):
            if out.getvalue().count("\n") >= 4:
                break
            await asyncio.sleep(0.02)
        kube.try_patch(LVG, "lvg-c", {"metadata": {"labels": {"team": "late"}}})
        for _ in range(1000):
            if "late" in out.getvalue():
                break
            await asyncio.sleep(0.02)
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    rows = table_rows(out.getvalue())
    assert len(rows) == 4, out.getvalue()
    changed = rows[-1]
    assert (changed["NAME"], changed["NODE"], changed["VG"], changed["TEAM"]) == ("lvg-c", "n1", "vg_b", "late"), \
        out.getvalue()
    assert changed["THINPOOLS"] == "" and changed["PHASE"] == ""


async def test_completion_offers_types_and_the_clusters_object_names(kube, tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch):
    """kubectl's protocol (`kubectl disklet <TAB>`) and the bash script of `kctl completion bash` both
    complete resource types and the names of the objects in the cluster."""
    import asyncio
    import os
    import sys

    from disklet.cli.completion import kubectl_complete

    _seed(kube)
    kube.seed("disklet.io/v1alpha1/lvmvolumegroupsets", {
        "apiVersion": "disklet.io/v1alpha1", "kind": "LVMVolumeGroupSet", "metadata": {"name": "fleet"},
        "spec": {"nodeSelector": {"matchLabels": {"disk": "fast"}},
                 "lvmVolumeGroupTemplate": {"actualVGNameOnTheNode": "vg-fleet", "fileDevices": [
                     {"name": "a", "directory": "/var/lib/disklet/file-devices", "size": "1Gi"}]}}})
    cfg = ["--kubeconfig", str(kube.kubeconfig)]
    monkeypatch.setenv("KCTL_COMPLETION_TIMEOUT", "60")  # a loaded test machine; the shell's default is 5 s

    def complete(*words: str) -> list[str]:
        out = io.StringIO()
        kubectl_complete(["__complete", *cfg, *words], out)
        return out.getvalue().splitlines()[:-1]

    assert await asyncio.to_thread(complete, "get", "lvg", "") == ["lvg-a", "lvg-b", "lvg-c"]
    assert await asyncio.to_thread(complete, "describe", "lvmvolumegroups", "lvg-a", "lvg-") == ["lvg-b", "lvg-c"]
    assert await asyncio.to_thread(complete, "get", "lvg/lvg-") == ["lvg/lvg-a", "lvg/lvg-b", "lvg/lvg-c"]
    assert await asyncio.to_thread(complete, "rollout", "status", "lvgset", "") == ["fleet"]
    assert await asyncio.to_thread(complete, "rollout", "status", "lvgset/f") == ["lvgset/fleet"]
    assert "lvgset" in await asyncio.to_thread(complete, "get", "lvg")

    shim = tmp_path / "bin" / "kctl"  # what `pip install` puts on PATH
    shim.parent.mkdir()
    shim.write_text(f"#!{sys.executable}\nimport sys\nfrom disklet.cli.main import main\nsys.exit(main())\n")
    shim.chmod(0o755)
    script = tmp_path / "kctl.bash"
    script.write_text((await kctl(kube, "completion", "bash")).out)
    env = {**os.environ, "PATH": f"{shim.parent}{os.pathsep}{os.environ['PATH']}", "KUBECONFIG": str(kube.kubeconfig)}

    def bash(*words: str) -> list[str]:
        line = " ".join(["kctl", *words])
        current = words[-1] or "''"
        prog = (f"source {script}; COMP_WORDS=({line}); COMP_CWORD={len(words)}; "
                f"COMP_LINE='{line}'; COMP_POINT={len(line)}; _shtab_kctl kctl {current} {words[-2]}; "
                "printf '%s\\n' \"${COMPREPLY[@]}\"")
        res = subprocess.run(["bash", "-c", prog], capture_output=True, text=True, env=env, timeout=60)  # noqa: S603, S607
        return [w for w in res.stdout.splitlines() if w]

    assert await asyncio.to_thread(bash, "get", "lvg", "lvg-") == ["lvg-a", "lvg-b", "lvg-c"]
    assert "lvgset" in await asyncio.to_thread(bash, "get", "lvg")


async def test_hints_under_kubectl_disklet_name_kubectl_disklet(kube):
    out, err = io.StringIO(), io.StringIO()
    code = await run(["get", "lvg", "missing", "--kubeconfig", str(kube.kubeconfig)], out, err, prog="kubectl disklet")
    assert code == 1
    assert "hint: `kubectl disklet get lvmvolumegroups` lists them" in err.getvalue()
    assert "`kctl " not in err.getvalue()
