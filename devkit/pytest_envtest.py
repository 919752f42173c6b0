"""pytest plugin: one real control plane per session (loaded by the repository's root conftest.py).

Fixture ``envtest`` (session scope) yields a :class:`devkit.envtest.Cluster`:
- ``E2E_KUBECONFIG`` set: that cluster (admin rights expected), nothing is started;
- else a :class:`devkit.envtest.ControlPlane` from ``KUBEBUILDER_ASSETS``, started on first use
  and stopped (and proven gone) at the end of the session;
- else every test that needs it is reported as ONE skipped line saying how to enable the tier
  (the others are deselected, so the summary stays one line); with ``CI=true`` that is an error
  instead (CI has the assets, like the host tier's prerequisites).

Tests that use the fixture get the ``envtest`` marker automatically.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from devkit.envtest import Cluster, ControlPlane, assets_dir, unavailable_reason

FIXTURE = "envtest"


def _reason() -> str | None:
    if os.environ.get("E2E_KUBECONFIG"):
        return None
    return unavailable_reason()


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "envtest: needs a real kube-apiserver (devkit/envtest.py or E2E_KUBECONFIG)")


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    mine = [i for i in items if FIXTURE in getattr(i, "fixturenames", ())]
    for item in mine:
        item.add_marker(pytest.mark.envtest)
    skip_tier_as_one_line(config, items, mine, _reason() if mine else None)


def skip_tier_as_one_line(config: pytest.Config, items: list[pytest.Item], mine: list[pytest.Item],
                          reason: str | None) -> None:
    """A tier whose prerequisites are missing (``reason``) is ONE skipped line: its first test is
    skipped saying why and how many, the rest deselected. Under ``CI=true`` the machine has the
    prerequisites, so a missing one is a usage error instead."""
    if not mine or reason is None:
        return
    if os.environ.get("CI") == "true":
        raise pytest.UsageError(f"CI=true but {reason}")
    mine[0].add_marker(pytest.mark.skip(reason=f"{reason} ({len(mine)} tests)"))
    rest = set(mine[1:])
    if rest:
        config.hook.pytest_deselected(items=list(rest))
        items[:] = [i for i in items if i not in rest]


@pytest.fixture(scope="session")
def envtest() -> Iterator[Cluster]:
    """The real API server of this session (see the module docstring)."""
    external = os.environ.get("E2E_KUBECONFIG")
    if external:
        yield Cluster(external)
        return
    reason = unavailable_reason()
    if reason:
        pytest.skip(reason)
    assets = assets_dir()
    assert assets is not None
    cp = ControlPlane(assets=assets).start()
    try:
        yield cp
    finally:
        cp.stop()
