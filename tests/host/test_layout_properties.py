"""Properties over generated structured and raw layouts, against real nix-instantiate:

1. the set of devices the final artifact names, evaluated *unrestricted* (as root disko would,
   without any sandbox option), equals the set the classifier was given (``plan.targets``);
2. no string in the artifact can reach a shell unescaped: every string value is inside the
   character sets of docs/layouts.md (no quote, ``$``, backtick, backslash, space, ``;``, ``|``,
   ``&``, ``<``, ``>``, parentheses or newline), so disko's double-quoted and unquoted
   interpolations are inert.
"""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from disklet.api.disklayout import DiskLayoutSpec, Phase
from disklet.hostcmd import HostRunner
from disklet.layout import preflight
from disklet.layout.checked import check_layout
from disklet.layout.errors import LayoutError, MalformedLayout

SAFE = re.compile(r"^[A-Za-z0-9_./:+@%=,-]*$")
NAME = st.from_regex(r"\A[a-z][a-z0-9_]{0,5}\Z")
DEVICE = st.from_regex(r"\A/dev/disk/by-id/[A-Za-z0-9._:+-]{1,20}\Z")
SEGMENT = st.from_regex(r"\A[A-Za-z0-9_@+-][A-Za-z0-9._@+-]{0,8}\Z")
ROOT = st.sampled_from(["/srv", "/data", "/mnt", "/var/lib/kcore"])
HOSTILE = st.sampled_from(['"; reboot; "', "$(touch /tmp/pwned)", "`id`", "a b", "x\\y", "${x}", "a;b", "a|b",
                           "a&b", "a>b", "\n"])
SETTINGS = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def unrestricted(text: str) -> dict[str, Any]:
    res = HostRunner().run(["nix-instantiate", "--eval", "--strict", "--json", "--store", "dummy://", "-"],
                           input=text, timeout=30)
    assert res.ok, res.describe()
    return json.loads(res.stdout)["disko"]["devices"]  # type: ignore[no-any-return]


def named_devices(devices: dict[str, Any]) -> set[str]:
    """Every device path the value names, found without the extractor's rules: any string under /dev/."""
    out: set[str] = set()

    def walk(v: Any) -> None:
        if isinstance(v, dict):
            for x in v.values():
                walk(x)
        elif isinstance(v, list):
            for x in v:
                walk(x)
        elif isinstance(v, str) and v.startswith("/dev/"):
            out.add(v)

    walk(devices)
    return out


def strings(v: Any) -> list[str]:
    if isinstance(v, dict):
        return [s for k, x in v.items() for s in [k, *strings(x)]]
    if isinstance(v, list):
        return [s for x in v for s in strings(x)]
    return [v] if isinstance(v, str) else []


@st.composite
def structured_layouts(draw: st.DrawFn) -> dict[str, Any]:
    disk_names = draw(st.lists(NAME, min_size=1, max_size=3, unique=True))
    devices = draw(st.lists(DEVICE, min_size=len(disk_names), max_size=len(disk_names), unique=True))
    mountpoints = iter(draw(st.lists(st.tuples(ROOT, SEGMENT).map("/".join), min_size=12, max_size=12, unique=True)))
    vgs, disks = set(), []
    for dname, device in zip(disk_names, devices, strict=True):
        pnames = draw(st.lists(NAME, min_size=1, max_size=3, unique=True))
        parts = []
        for i, pname in enumerate(pnames):
            kind = draw(st.sampled_from(["filesystem", "filesystem", "lvm_pv"]))
            size = "100%" if i == len(pnames) - 1 and draw(st.booleans()) else f"{draw(st.integers(1, 999))}M"
            if kind == "lvm_pv":
                vg = draw(st.sampled_from(["vg_a", "vg_b"]))
                vgs.add(vg)
                content: dict[str, Any] = {"type": "lvm_pv", "vg": vg}
            else:
                content = {"type": "filesystem", "format": draw(st.sampled_from(["ext4", "xfs", "vfat"])),
                           "mountpoint": next(mountpoints)}
                if draw(st.booleans()):
                    content["mountOptions"] = draw(st.lists(st.sampled_from(["nofail", "noatime", "ro", "x-a=b"]),
                                                            max_size=3))
            parts.append({"name": pname, "size": size, "content": content})
        disks.append({"name": dname, "device": device, "gpt": {"partitions": parts}})
    layout: dict[str, Any] = {"disks": disks}
    if vgs:
        layout["lvmVolumeGroups"] = [{"name": v} for v in sorted(vgs)]
    return layout


@SETTINGS
@given(structured_layouts())
def test_structured_artifact_names_exactly_the_checked_devices(layout: dict[str, Any]) -> None:
    result = preflight(DiskLayoutSpec.model_validate({"nodeName": "n", "diskLayout": layout}))
    assume(result.phase == Phase.PENDING)  # e.g. a GPT label over 36 characters is refused by design
    assert result.artifact is not None
    value = unrestricted(result.artifact)
    assert named_devices(value) == set(result.target_devices) == {d["device"] for d in layout["disks"]}
    assert all(SAFE.match(s) for s in strings(value)), [s for s in strings(value) if not SAFE.match(s)]


TELL = st.sampled_from(["builtins ? currentTime", 'builtins.getEnv "HOME" != ""', "builtins.pathExists /etc",
                        "builtins ? exec", 'builtins.nixVersion == "2.8.0"'])


@st.composite
def raw_layouts(draw: st.DrawFn) -> str:
    """Raw bodies that try every trick: tells, let, concatenation, interpolation, hostile strings."""
    good, evil = draw(DEVICE), draw(DEVICE)
    tell = draw(TELL)
    spelled = draw(st.sampled_from([
        f'if {tell} then "{evil}" else "{good}"',
        f'let d = "{good}"; in d',
        f'"/dev/" + "{good[5:]}"',
        f'let p = "/dev/"; in "${{p}}{good[5:]}"',
        f'"{good}"',
    ]))
    mountpoint = draw(st.one_of(st.tuples(ROOT, SEGMENT).map("/".join),
                                st.tuples(ROOT, HOSTILE).map("/".join)))
    mp = mountpoint.replace("\\", "\\\\").replace('"', '\\"').replace("$", "\\$").replace("\n", "\\n")
    extra = draw(st.sampled_from(["", 'postMountHook = "reboot";', 'extraArgs = [ "-O" "x" ];']))
    members = draw(st.sampled_from(["", f'zpool.tank = {{ type = "zpool"; datasets = {{ }}; mode.topology = {{ '
                                        f'type = "topology"; vdev = [ {{ members = [ ({spelled}) ]; }} ]; }}; }};']))
    return ('{ disko.devices = { disk.d = { type = "disk"; device = ' + spelled + '; content = { type = "gpt"; '
            'partitions.p = { size = "100%"; content = { type = "filesystem"; format = "ext4"; mountpoint = "'
            + mp + '"; ' + extra + ' }; }; }; }; ' + members + ' }; }')


@SETTINGS
@given(raw_layouts())
def test_raw_artifact_names_exactly_the_checked_devices(body: str) -> None:
    try:
        checked = check_layout(body)
    except (LayoutError, MalformedLayout):
        return  # refused (forbidden option, hostile mountpoint, ...): nothing runs
    value = unrestricted(checked.artifact)
    assert named_devices(value) == set(checked.targets)
    assert all(SAFE.match(s) for s in strings(value)), [s for s in strings(value) if not SAFE.match(s)]
    assert "builtins" not in checked.artifact


@pytest.mark.parametrize("tell", ["builtins ? currentTime", 'builtins.getEnv "HOME" != ""'])
def test_the_user_text_itself_would_have_named_another_disk(tell: str) -> None:
    """Control: without the artifact, the same text evaluated unrestricted names the other disk."""
    body = ('{ disko.devices.disk.d = { type = "disk"; device = if ' + tell
            + ' then "/dev/vda" else "/dev/vdb"; content = { type = "gpt"; partitions.p = { size = "100%"; '
            'content = { type = "filesystem"; format = "ext4"; mountpoint = "/srv/p"; }; }; }; }; }')
    assert named_devices(unrestricted(body)) == {"/dev/vda"}
    assert check_layout(body).targets == ["/dev/vdb"]
