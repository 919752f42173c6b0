"""Every layout disklet accepts mounts nothing outside the allowed roots — read from disko's own
generated script, not from disklet's model of it (needs nix-instantiate and disko's sources).

The script is disko's real ``format,mount`` text (devkit/disko); :mod:`devkit.disko.mounts` lists
every path it makes the node mount: ``mount`` lines, ZFS ``mountpoint=`` properties, pool roots
created without ``mountpoint=none`` (ZFS mounts them at ``/POOL``) and the datasets that inherit
from them. Each path must pass the default mountpoint policy.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from devkit import disko
from devkit.disko.mounts import script_mounts
from disklet.api.disklayout import DiskLayoutSpec, Phase
from disklet.layout import preflight
from disklet.layout.checked import check_layout
from disklet.layout.errors import LayoutError, MalformedLayout
from disklet.layout.mounts import MountPolicy
from tests.host.disko_cases import disko_sources, documented_disklayouts  # noqa: F401 - fixture

pytestmark = pytest.mark.host
POLICY = MountPolicy()


def _outside_policy(artifact: str, tmp_path: Path) -> list[str]:
    script = disko.evaluate_text(artifact, "/", workdir=tmp_path).format_mount
    found = script_mounts(script)
    return [f"{p}: {why}" for p in found.all() if (why := POLICY.problem(p))]


MANIFESTS = documented_disklayouts()


@pytest.mark.parametrize(("name", "doc", "base"), MANIFESTS, ids=[n for n, _, _ in MANIFESTS])
def test_every_example_and_documented_layout_mounts_only_inside_the_allowed_roots(
        name: str, doc: dict[str, Any], base: Path, tmp_path: Path) -> None:
    pf = preflight(DiskLayoutSpec.model_validate(doc["spec"]), base)
    if pf.phase != Phase.PENDING:
        pytest.skip(f"{name}: disklet refuses it ({pf.message[:80]})")
    assert pf.artifact
    assert _outside_policy(pf.artifact, tmp_path) == [], name


def _zfs_body(pool: str, datasets: str = "") -> str:
    return ('{ disko.devices = { disk.a = { type = "disk"; device = "/dev/disk/by-id/x"; content = { type = "gpt"; '
            f'partitions.z = {{ size = "100%"; content = {{ type = "zfs"; pool = "{pool}"; }}; }}; }}; }};\n'
            f'  zpool.{pool} = {{ type = "zpool"; {datasets} }}; }}; }}')


DS = 'datasets.d = { type = "zfs_fs"; mountpoint = "/srv/d"; };'
ZFS_BODIES = {
    "pool-etc": _zfs_body("etc", DS),
    "pool-nix-with-dataset": _zfs_body("nix", DS + ' datasets.store = { type = "zfs_fs"; };'),
    "pool-data-datasets": _zfs_body("data", 'datasets.a = { type = "zfs_fs"; }; '
                                            'datasets.b = { type = "zfs_fs"; mountpoint = "/data/b"; };'),
    "pool-tank-mirror": _zfs_body("tank", 'mode = "mirror"; datasets.x = { type = "zfs_fs"; mountpoint = "/srv/x"; };'),
    "pool-with-root-none": _zfs_body("usr", DS + ' rootFsOptions = { mountpoint = "none"; };'),
    "pool-with-mountpoint": _zfs_body("boot", 'mountpoint = "/srv/boot"; datasets.a = { type = "zfs_fs"; };'),
}


@pytest.mark.parametrize("name", sorted(ZFS_BODIES))
def test_zfs_layouts_mount_nothing_where_no_mountpoint_was_checked(name: str, tmp_path: Path) -> None:
    checked = check_layout(ZFS_BODIES[name])
    script = disko.evaluate_text(checked.artifact, "/", workdir=tmp_path).format_mount
    found = script_mounts(script)
    assert found.pool_roots == [], found
    assert "-O mountpoint=" in script
    assert _outside_policy(checked.artifact, tmp_path) == []


def test_the_reader_sees_the_implicit_pool_mount_of_an_unclosed_pool(tmp_path: Path) -> None:
    """The check above can fail: disko's script for a pool as the user wrote it (no rootFsOptions)
    mounts the pool root at /etc and its dataset at /etc/x."""
    body = _zfs_body("etc", 'datasets.x = { type = "zfs_fs"; };')
    script = disko.evaluate_text(body, "/", workdir=tmp_path).format_mount
    assert 'zpool create -f "etc"' in script
    found = script_mounts(script)
    assert found.pool_roots == ["/etc"] and found.inherited == ["/etc/x"]
    assert any(p.startswith("/etc:") for p in _outside_policy(body, tmp_path))


POOL = st.sampled_from(["etc", "nix", "usr", "data", "srv", "tank", "boot", "var", "root"])
DS_NAME = st.from_regex(r"[a-z][a-z0-9_]{0,6}", fullmatch=True)
MP = st.one_of(st.none(), st.sampled_from(["/srv/a", "/data/b", "/etc/c", "/mnt/d", "/nix/e", "/tank"]))


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(pool=POOL, datasets=st.dictionaries(DS_NAME, MP, max_size=3), pool_mp=MP)
def test_generated_zfs_layouts_disklet_accepts_mount_only_inside_the_allowed_roots(
        tmp_path_factory: pytest.TempPathFactory, pool: str, datasets: dict[str, str | None],
        pool_mp: str | None) -> None:
    parts = (f'mountpoint = "{pool_mp}"; ' if pool_mp else "") + " ".join(f'datasets.{n} = {{ type = "zfs_fs"; '
                     + (f'mountpoint = "{mp}"; ' if mp else "") + "};" for n, mp in datasets.items())
    try:
        checked = check_layout(_zfs_body(pool, parts))
    except (LayoutError, MalformedLayout):
        return  # refused: nothing reaches disko
    assert _outside_policy(checked.artifact, tmp_path_factory.mktemp("zfs")) == []
