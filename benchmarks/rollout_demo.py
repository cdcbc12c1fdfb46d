"""Rollouts to the demo's real agents (issue 16's "a 100-device rollout (the demo's agents)"):
what ``fieldhub demo --devices N`` costs when a bundle goes to all of it.

``benchmarks/rollout.py`` measures the hub with devices that only speak the bundle contract;
here every device is the demo's agent (``cli/demo_fleet.py``: the real agent with its
installer, on simulated hardware, all in this one process as the demo runs them), trusting the
demo's signing key. Two rollouts of ``examples/bundles``, as the README's walk-through makes
them: ``hello`` 1.0.0 to every device (a canary of 10 %, then 50 %, then the rest), then the
broken 2.0.0, whose health check fails on each of its 10 % canary (they roll back by
themselves) so the rollout aborts.

Measured: ``ready_s``, from the fleet's start to every agent online with its catalog;
``healthy_s`` and ``broken_s``, from each rollout's start to ``completed`` / ``aborted``;
``cpu_s`` over both rollouts and ``rss_mb`` (peak) of the whole process: hub and agents. The
last line printed is one JSON object.

    PYTHONPATH=src:. .venv/bin/python benchmarks/rollout_demo.py [--devices 100]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import resource
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import uvicorn
from tests.support.example_bundles import example_bundle
from tests.support.servers import free_port

from fieldhub.cli.demo_fleet import demo_devices, run_demo_fleet
from fieldhub.hub.api import create_app
from fieldhub.hub.app import Hub
from fieldhub.hub.config import HubSettings
from fieldhub.hub.rollouts.plan import Plan


async def until(check: Callable[[], bool], timeout_s: float) -> bool:
    """Poll ``check`` until it holds (True) or ``timeout_s`` passed (False)."""
    deadline = time.perf_counter() + timeout_s
    while not check():
        if time.perf_counter() > deadline:
            return False
        await asyncio.sleep(0.1)
    return True


async def roll_out(hub: Hub, bundle_file: bytes, ids: list[str], timeout_s: float) -> Any:
    """Upload and roll out to ``ids`` (canary 10 %, then 50 %, 100 %); the run once it ended."""
    bundle, _new = await hub.bundles.upload(bundle_file, actor="bench", source="")
    plan = Plan(
        target={"all": True},
        canary=max(1, len(ids) // 10),
        waves=(50.0, 100.0),
        promote_at=0.9,
        abort_below=0.5,
        retries=0,
    )
    created = await hub.rollouts.create(
        bundle, plan, [(i, {}) for i in ids], actor="bench", source=""
    )
    await until(lambda: created.record.status in {"completed", "aborted", "paused"}, timeout_s)
    return await hub.rollouts.get(created.record.id)


async def run(args: argparse.Namespace) -> dict[str, Any]:
    data = Path(tempfile.mkdtemp(prefix="fh-rollout-demo-"))
    port = free_port()
    settings = HubSettings(
        data=data, instance="bench", mqtt="127.0.0.1:0", http=f"127.0.0.1:{port}"
    )
    async with Hub(settings) as hub:
        server = uvicorn.Server(
            uvicorn.Config(create_app(hub), host="127.0.0.1", port=port, log_level="warning")
        )
        serving = asyncio.create_task(server.serve())
        started = time.perf_counter()
        fleet = asyncio.create_task(run_demo_fleet(hub, args.devices, data, door_every_s=1e9))
        ids = [d.device_id for d in demo_devices(args.devices, data)]
        ready = await until(
            lambda: all((e := hub.directory.get(i)) is not None and e.actions for i in ids),
            args.timeout,
        )
        ready_s = time.perf_counter() - started
        cpu = time.process_time()
        t0 = time.perf_counter()
        healthy = await roll_out(
            hub, example_bundle(data, "hello", "1.0.0", "hello.say"), ids, args.timeout
        )
        healthy_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        broken = await roll_out(
            hub, example_bundle(data, "hello-broken", "2.0.0", "hello.check"), ids, args.timeout
        )
        broken_s = time.perf_counter() - t0
        cpu_s = time.process_time() - cpu
        fleet.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await fleet
        server.should_exit = True
        await serving

    def counts(run_now: Any) -> dict[str, int]:
        states = [d.state for d in run_now.devices.values()]
        return {state: states.count(state) for state in sorted(set(states))}

    return {
        "devices": args.devices,
        "ready": ready,
        "ready_s": round(ready_s, 1),
        "healthy": healthy.record.status,
        "healthy_counts": counts(healthy),
        "healthy_s": round(healthy_s, 1),
        "broken": broken.record.status,
        "broken_counts": counts(broken),
        "broken_s": round(broken_s, 1),
        "cpu_s": round(cpu_s, 1),
        "rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", type=int, default=100)
    parser.add_argument("--timeout", type=float, default=600)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    print(json.dumps(asyncio.run(run(args))))


if __name__ == "__main__":
    main()
