"""Watch fan-out: API events delivered to ONE node's agent while 1000 other nodes' objects change.

The agent (Kopf, its real registry and server-side label selector; a stand-in LVM engine, so no
root needed) watches the API mock; 1000 LVMVolumeGroups of other nodes are created and then
changed, and the agent's own object is changed once. The mock counts every watch event it sends
to the agent, and an unfiltered watcher alongside receives everything (the side-by-side
baseline). Goal: only the agent's own objects reach it.
Run: python3 bench/watch_fanout.py [--others N]   writes bench/results/watch_fanout.json
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import logging
import os
import platform
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "agent"), str(ROOT / "operator"), str(ROOT / "tests" / "api")]

import aiohttp  # noqa: E402
import attrs  # noqa: E402
from agent_fixtures import FakeDisks, FakeEngine  # noqa: E402
from disklet_agent.config import AgentConfig  # noqa: E402
from disklet_agent.daemon import build_registry, configure_settings  # noqa: E402
from disklet_agent.deps import AgentDeps  # noqa: E402

from devkit.kopfrun import kopf_running  # noqa: E402
from devkit.kubeapi import KubeAPI, served  # noqa: E402
from disklet.api.resources import NODE_LABEL  # noqa: E402

RESULTS = ROOT / "bench" / "results" / "watch_fanout.json"
LVG_PATH = "/apis/disklet.io/v1alpha1/lvmvolumegroups"
NODE = "bench-self"


@attrs.define(kw_only=True)
class CountingAPI(KubeAPI):
    """Counts the watch events sent, per (selector given?, node label of the object)."""

    sent: collections.Counter[tuple[str, str]] = attrs.field(factory=collections.Counter, init=False)

    async def _serve_watch(self, request: Any) -> AsyncIterator[Any]:
        selector = (request.params or {}).get("labelSelector") or ""
        async for event in super()._serve_watch(request):
            obj = event.get("object") if isinstance(event, dict) else None
            if isinstance(obj, dict) and "lvmvolumegroups" in str(request.url):
                labels = (obj.get("metadata") or {}).get("labels") or {}
                self.sent[("agent" if selector else "unfiltered", labels.get(NODE_LABEL, "?"))] += 1
            yield event


def lvg(name: str, node: str) -> dict[str, Any]:
    return {"apiVersion": "disklet.io/v1alpha1", "kind": "LVMVolumeGroup",
            "metadata": {"name": name, "labels": {NODE_LABEL: node}},
            "spec": {"type": "Local", "local": {"nodeName": node}, "actualVGNameOnTheNode": "vg0",
                     "fileDevices": [{"name": "a", "directory": "/var/lib/disklet/file-devices", "size": "1Gi"}]}}


async def unfiltered_watch(server: str, seen: list[int], stop: asyncio.Event) -> None:
    async with aiohttp.ClientSession() as http, http.get(f"{server}{LVG_PATH}", params={"watch": "true"}) as resp:
        while not stop.is_set():
            try:
                line = await asyncio.wait_for(resp.content.readline(), 0.5)
            except TimeoutError:
                continue
            if not line:
                return
            seen[0] += 1


async def measure(others: int, work: Path) -> dict[str, Any]:
    async with served(work, api=CountingAPI(), export_kubeconfig=True) as api:
        os.environ.pop("KUBERNETES_SERVICE_HOST", None)
        os.environ.setdefault("DISKLET_NAMESPACE", "disklet-bench")
        config = AgentConfig(node_name=NODE, scan_interval_seconds=3600)
        registry = build_registry(AgentDeps(config=config), engine=FakeEngine(NODE), topology_reader=FakeDisks([]).read,
                                  pv_reader=lambda: {})
        seen = [0]
        stop = asyncio.Event()
        async with kopf_running(registry, server=api.server_url, configure=lambda s: configure_settings(s, config)):
            logging.getLogger("kopf").setLevel(logging.ERROR)
            watcher = asyncio.create_task(unfiltered_watch(api.server_url, seen, stop))
            await asyncio.sleep(0.3)
            t0 = time.perf_counter()
            async with aiohttp.ClientSession() as http:
                await (await http.post(f"{api.server_url}{LVG_PATH}", json=lvg("self-0", NODE))).read()
                for i in range(others):
                    await (await http.post(f"{api.server_url}{LVG_PATH}", json=lvg(f"other-{i}", f"node-{i}"))).read()
                for i in range(others):  # every other node's object changes once
                    await (await http.patch(f"{api.server_url}{LVG_PATH}/other-{i}",
                                            json={"metadata": {"annotations": {"bench": "changed"}}},
                                            headers={"Content-Type": "application/merge-patch+json"})).read()
                await (await http.patch(f"{api.server_url}{LVG_PATH}/self-0",
                                        json={"metadata": {"annotations": {"bench": "changed"}}},
                                        headers={"Content-Type": "application/merge-patch+json"})).read()
            generated_s = time.perf_counter() - t0
            await asyncio.sleep(1.0)
            stop.set()
            await asyncio.wait_for(watcher, 5)
    agent_own = sum(v for (who, node), v in api.sent.items() if who == "agent" and node == NODE)
    agent_other = sum(v for (who, node), v in api.sent.items() if who == "agent" and node != NODE)
    unfiltered = sum(v for (who, _node), v in api.sent.items() if who == "unfiltered")
    return {"agent_events_own": agent_own, "agent_events_other_nodes": agent_other,
            "unfiltered_watch_events": unfiltered, "unfiltered_lines_read": seen[0],
            "changes_generated": 2 * others + 2, "generate_seconds": round(generated_s, 2)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--others", type=int, default=1000, help="other nodes whose objects change")
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="disklet-bench-watch-") as tmp:
        r = asyncio.run(measure(args.others, Path(tmp)))
    agent_total = r["agent_events_own"] + r["agent_events_other_nodes"]
    ratio = agent_total / r["unfiltered_watch_events"] if r["unfiltered_watch_events"] else None
    result = {"name": "watch_fanout", "python": platform.python_version(), "other_nodes": args.others, **r,
              "agent_events_total": agent_total, "ratio_agent_to_unfiltered": round(ratio, 5) if ratio else None,
              "goal": "only its own objects (0 events of other nodes)",
              "meets_goal": r["agent_events_other_nodes"] == 0}
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    print(f"watch_fanout: the agent received {agent_total} LVMVolumeGroup events ({r['agent_events_other_nodes']} of "
          f"other nodes) while an unfiltered watch received {r['unfiltered_watch_events']} "
          f"(ratio {result['ratio_agent_to_unfiltered']}; {r['changes_generated']} changes over {args.others} nodes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
