"""devkit.kopfrun: stopping one in-process operator cancels neither its caller nor another operator,
so every operator runs its cleanup and Kopf closes its aiohttp sessions (no "Unclosed client session")."""

from __future__ import annotations

import asyncio
from typing import Any

import kopf

from devkit.kopfrun import kopf_running


def _registry(name: str, cleaned: list[str]) -> kopf.OperatorRegistry:
    registry = kopf.OperatorRegistry()

    @kopf.on.event("disklet.io", "v1alpha1", "disklayouts", registry=registry)
    def _seen(**_: Any) -> None:
        pass

    @kopf.on.cleanup(registry=registry)
    def _cleanup(**_: Any) -> None:
        cleaned.append(name)

    return registry


async def test_nested_operators_stop_cleanly_and_leave_the_caller_running(real_kube):
    kube = real_kube
    cleaned: list[str] = []
    me = asyncio.current_task()
    assert me is not None
    async with kopf_running(_registry("outer", cleaned), kube=kube):
        async with kopf_running(_registry("inner", cleaned), kube=kube):
            pass
        assert cleaned == ["inner"] and me.cancelling() == 0, "the caller was not cancelled"
    assert cleaned == ["inner", "outer"], "both operators ran their cleanup (Kopf then closes its sessions)"
    assert me.cancelling() == 0
