"""disko as the oracle for what disklet emits (needs nix-instantiate and disko's sources; no root
work is done: layouts are only evaluated into disko's scripts, never run).

1. Every layout disklet renders or accepts — the examples, the DiskLayouts and Nix bodies shown in
   docs/, and hypothesis-generated structured layouts — evaluates under disko's own module types.
2. No byte that came from the user lands in disko's generated ``format,mount`` script outside an
   inert context (:mod:`devkit.disko.shellctx`): every user string of a generated layout is found
   in the script text and checked at each occurrence.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from devkit import disko
from devkit.disko import shellctx
from disklet.api.disklayout import FILESYSTEM_FORMATS, DiskLayoutSpec, StructuredLayout
from disklet.layout import LayoutError, MalformedLayout, evaluate_nix, render_disko_nix, resolve_body
from disklet.layout.validate import layout_problems
from tests.host.disko_cases import disko_sources, documented_disklayouts  # noqa: F401 - fixture

REPO = Path(__file__).resolve().parents[2]


def _evaluates(body: str, tmp_path: Path) -> disko.Evaluated:
    try:
        return disko.evaluate_text(body, "/", workdir=tmp_path)
    except disko.EvalError as exc:
        raise AssertionError(f"disko's types reject a layout disklet accepts:\n{body}\n--- nix says ---\n{exc}") from None


def test_the_harness_evaluates_every_example_disko_ships(tmp_path: Path) -> None:
    """The evaluation (devkit/disko/eval.nix, shaped like disko's cli.nix) accepts every example layout
    disko itself ships at the pinned commit, functions taking ``{ lib, ... }`` included."""
    d = disko.eval_dir()
    assert d is not None
    examples = sorted((d / "disko" / "example").glob("*.nix"))
    assert len(examples) >= 30
    for f in examples:
        try:
            ev = disko.evaluate(f, "/mnt")
        except disko.EvalError as exc:
            raise AssertionError(f"disko's own example {f.name} does not evaluate through the harness: {exc}") from None
        assert ev.format_mount.startswith(ev.create), f.name


MANIFESTS = documented_disklayouts()


def test_the_examples_are_found() -> None:
    names = {n for n, _, _ in MANIFESTS}
    assert {"disklayout-structured-ext4.yaml", "disklayout-lvm-pv.yaml", "disklayout-zfs.yaml",
            "disklayout-raw-nix.yaml", "disklayout-nix-file.yaml"} <= names


@pytest.mark.parametrize(("name", "doc", "base"), MANIFESTS, ids=[n for n, _, _ in MANIFESTS])
def test_every_example_and_documented_layout_evaluates_under_disko(name: str, doc: dict[str, Any], base: Path,
                                                                   tmp_path: Path) -> None:
    spec = DiskLayoutSpec.model_validate(doc["spec"])
    body, _ = resolve_body(spec, base)
    ev = _evaluates(body, tmp_path)
    assert ev.summary["disks"], name
    assert ev.format_mount.startswith(ev.create) and ev.mount in ev.format_mount


def _doc_nix_bodies() -> list[tuple[str, str]]:
    out = []
    for f in sorted((REPO / "docs").glob("*.md")):
        for i, block in enumerate(re.findall(r"```nix\n(.*?)```", f.read_text(), re.S)):
            if "disko" in block:
                out.append((f"{f.name}[{i}]", block))
    return out


@pytest.mark.parametrize(("name", "body"), _doc_nix_bodies(), ids=[n for n, _ in _doc_nix_bodies()])
def test_every_documented_nix_body_disklet_accepts_evaluates_under_disko(name: str, body: str,
                                                                         tmp_path: Path) -> None:
    try:
        evaluate_nix(body)
    except MalformedLayout:
        pytest.skip(f"{name} is an abridged excerpt (disklet's own evaluation rejects it too)")
    _evaluates(body, tmp_path)


# ------------------------------------------------------------------ generated structured layouts
# Character sets: the ones the model and the validator accept, so the property covers every value a
# user can get through — plus, for mountpoints, any printable ASCII: whatever validation lets
# through must be inert where disko puts it (inside double quotes), the rest must be refused.
NAME = st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,9}", fullmatch=True)
POOL = st.from_regex(r"[A-Za-z][A-Za-z0-9_]{0,9}", fullmatch=True)
DEVICE_TAIL = st.from_regex(r"[A-Za-z0-9._:+/-]{1,24}", fullmatch=True)
MOUNT_OPTION = st.from_regex(r"[A-Za-z0-9_=,.:+/-]{1,16}", fullmatch=True)
MOUNT_ROOT = st.sampled_from(["/srv", "/data", "/mnt", "/var/lib/kcore", "/var/lib/scratch"])
MOUNT_SEGMENT = st.one_of(
    st.from_regex(r"[A-Za-z0-9_@+-][A-Za-z0-9._@+-]{0,11}", fullmatch=True),
    st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7E, exclude_characters="/"),
            min_size=1, max_size=12))
SIZE = st.one_of(st.integers(1, 4096).map(lambda n: f"{n}M"), st.sampled_from(["1G", "64K", "3T", "7"]))


@st.composite
def layouts(draw: st.DrawFn) -> dict[str, Any]:
    vgs = draw(st.lists(NAME, max_size=2, unique=True))
    pools = draw(st.lists(POOL, max_size=2, unique=True))
    disks: list[dict[str, Any]] = []
    for d in range(draw(st.integers(1, 3))):
        parts: list[dict[str, Any]] = []
        for i in range(draw(st.integers(1, 3))):
            kind = draw(st.sampled_from(["filesystem"] + (["lvm_pv"] if vgs else []) + (["zfs"] if pools else [])))
            if kind == "filesystem":
                content: dict[str, Any] = {
                    "type": "filesystem", "format": draw(st.sampled_from(FILESYSTEM_FORMATS)),
                    "mountpoint": draw(MOUNT_ROOT) + "/" + "/".join(draw(st.lists(MOUNT_SEGMENT, min_size=1,
                                                                                   max_size=3)))}
                if draw(st.booleans()):
                    content["mountOptions"] = draw(st.lists(MOUNT_OPTION, min_size=1, max_size=3))
            elif kind == "lvm_pv":
                content = {"type": "lvm_pv", "vg": draw(st.sampled_from(vgs))}
            else:
                content = {"type": "zfs", "pool": draw(st.sampled_from(pools))}
            parts.append({"name": f"p{i}" + draw(NAME), "size": draw(SIZE), "content": content})
        if draw(st.booleans()):
            parts[-1]["size"] = "100%"
        disks.append({"name": f"d{d}" + draw(NAME), "device": "/dev/" + draw(DEVICE_TAIL), "gpt": {"partitions": parts}})
    layout: dict[str, Any] = {"disks": disks}
    used_vgs = {p["content"]["vg"] for d in disks for p in d["gpt"]["partitions"] if p["content"]["type"] == "lvm_pv"}
    used_pools = {p["content"]["pool"] for d in disks for p in d["gpt"]["partitions"] if p["content"]["type"] == "zfs"}
    if used_vgs:
        layout["lvmVolumeGroups"] = [{"name": v} for v in sorted(used_vgs)]
    if used_pools:
        layout["zfsPools"] = [{"name": p} for p in sorted(used_pools)]
    return layout


def _accepted(layout: dict[str, Any]) -> StructuredLayout | None:
    try:
        model = StructuredLayout.model_validate(layout)
    except ValueError:
        return None
    try:
        if layout_problems(model):
            return None
    except LayoutError:
        return None
    return model


def _user_strings(layout: dict[str, Any]) -> set[str]:
    out: set[str] = set()
    for d in layout["disks"]:
        out |= {d["name"], d["device"]}
        for p in d["gpt"]["partitions"]:
            out.add(p["name"])
            c = p["content"]
            out |= {v for k, v in c.items() if k in ("mountpoint", "vg", "pool", "format") and isinstance(v, str)}
            out |= set(c.get("mountOptions") or [])
    out |= {v["name"] for v in layout.get("lvmVolumeGroups") or []} | {p["name"] for p in layout.get("zfsPools") or []}
    return out


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
@given(layouts())
def test_generated_layouts_evaluate_and_user_bytes_stay_inert(tmp_path_factory: pytest.TempPathFactory,
                                                              layout: dict[str, Any]) -> None:
    model = _accepted(layout)
    if model is None:
        return  # disklet refuses it: nothing reaches disko
    # what disko is given on the node: the checked artifact (pool roots closed, docs/layouts.md)
    from disklet.layout.checked import check_layout

    body = check_layout(render_disko_nix(model)).artifact
    ev = _evaluates(body, tmp_path_factory.mktemp("oracle"))
    script = ev.format_mount
    ctx = shellctx.contexts(script)
    holes = []
    for value in sorted(_user_strings(layout), key=len, reverse=True):
        for occ in shellctx.occurrences(script, value, ctx):
            if not occ.inert:
                holes.append(f"{value!r} in {'/'.join(occ.contexts)} context: {occ.line}")
    assert not holes, "user bytes reach disko's script outside an inert context:\n" + "\n".join(holes)
    # and what the script mounts (mount lines, ZFS properties, pool roots) stays inside the allowed roots
    from devkit.disko.mounts import script_mounts
    from disklet.layout.mounts import MountPolicy

    outside = [p for p in script_mounts(script).all() if MountPolicy().problem(p)]
    assert not outside, f"disko's script mounts outside the allowed roots: {outside}"


def test_a_mountpoint_reaches_disko_inside_double_quotes(tmp_path: Path) -> None:
    """Pins where disko puts a mountpoint, which is what the mountpoint character set must fit."""
    layout = {"disks": [{"name": "d", "device": "/dev/vdz", "gpt": {"partitions": [
        {"name": "a", "size": "100%", "content": {"type": "filesystem", "format": "ext4", "mountpoint": "/srv/mk9q"}}]}}]}
    model = _accepted(layout)
    assert model is not None
    script = _evaluates(render_disko_nix(model), tmp_path).format_mount
    kinds = {occ.contexts for occ in shellctx.occurrences(script, "/srv/mk9q")}
    assert (shellctx.DOUBLE,) in kinds and kinds <= {(shellctx.DOUBLE,), (shellctx.BARE,), (shellctx.COMMENT,)}
