"""Rollout benchmark (issue 16): a 1 MB signed bundle to 200 devices in waves of 10 % at full
pace, against a raw HTTP download of the same bytes by the same devices in the same run.

The parts, all real, in this one process (one event loop, like ``fieldhub demo``):

- **the hub**: embedded broker, SQLite, its REST API served by uvicorn on a real port (the
  address the download links name);
- **the devices**: ``--devices`` clients of ``tests/support/bundle_devices.py``, each with its
  own MQTT connection and credentials, speaking the bundle contract: they take
  ``bundle.install``, download the bundle over HTTP with their command's token (one
  ``httpx.AsyncClient``, a connection per device), check its SHA-256 and size, and report
  ``bundle.installing`` / ``bundle.confirmed`` and their ``software`` state;
- **the raw reference**: a plain Starlette ``FileResponse`` of the same file on its own uvicorn
  port, downloaded by the same client, ``--devices`` times, as many at once as the hub's
  download saw at its busiest (``raw_mb_s``).

Measured: ``seconds`` from the rollout's start (``POST /api/rollouts``) to every device
``confirmed`` and the rollout ``completed``; ``mb_s``, the bundle bytes the devices downloaded
from the hub divided by the time from the first download's start to the last one's end;
``cpu_s``, this process's CPU time over the rollout: the hub **and** the simulated devices (an
upper bound of the hub's own share). The last line printed is one JSON object. Targets:
``confirmed == devices``, ``failed == 0``.

    .venv/bin/python benchmarks/rollout.py [--devices 200] [--size-mb 1] [--wave-percent 10]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import secrets
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import uvicorn
from starlette.applications import Starlette
from starlette.responses import FileResponse
from starlette.routing import Route
from tests.support.bundle_devices import BundleDevice
from tests.support.servers import free_port

from fieldhub.bundles import SigningKey, make_bundle
from fieldhub.hub.api import create_app
from fieldhub.hub.app import Hub
from fieldhub.hub.config import HubSettings
from fieldhub.hub.rollouts.plan import Plan


class Timed:
    """Downloads through one client: bytes, the time at least one was under way (``busy``),
    and the most under way at once. Throughput is bytes over busy time, so that the waits
    between waves (no download at all) do not count against the hub."""

    def __init__(self, client: httpx.AsyncClient) -> None:
        self.client = client
        self.busy = 0.0
        self.bytes = 0
        self.now = self.most = 0
        self._since = 0.0

    async def __call__(self, url: str) -> bytes:
        if self.now == 0:
            self._since = time.perf_counter()
        self.now += 1
        self.most = max(self.most, self.now)
        try:
            answer = await self.client.get(url)
            answer.raise_for_status()
        finally:
            self.now -= 1
            if self.now == 0:
                self.busy += time.perf_counter() - self._since
        self.bytes += len(answer.content)
        return answer.content

    @property
    def mb_s(self) -> float:
        return self.bytes / 1e6 / self.busy if self.busy > 0 else 0.0


async def serve(app: Any, port: int) -> tuple[uvicorn.Server, asyncio.Task[None]]:
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    task = asyncio.create_task(server.serve())
    await until(lambda: server.started)
    return server, task


async def until(check: Callable[[], bool], timeout_s: float = 600) -> bool:
    """Poll ``check`` until it holds (True) or ``timeout_s`` passed (False)."""
    deadline = time.perf_counter() + timeout_s
    while True:
        if check():
            return True
        if time.perf_counter() > deadline:
            return False
        await asyncio.sleep(0.05)


async def raw_reference(path: Path, count: int, at_once: int) -> float:
    """MB/s of ``count`` downloads of ``path`` from a plain file server, ``at_once`` at a time."""
    port = free_port()
    app = Starlette(routes=[Route("/f", lambda _request: FileResponse(path))])
    server, task = await serve(app, port)
    limits = httpx.Limits(max_connections=at_once)
    try:
        async with httpx.AsyncClient(limits=limits, timeout=60) as client:
            timed = Timed(client)
            gate = asyncio.Semaphore(at_once)

            async def one() -> None:
                async with gate:
                    await timed(f"http://127.0.0.1:{port}/f")

            await asyncio.gather(*(one() for _ in range(count)))
            return timed.mb_s
    finally:
        server.should_exit = True
        await task


async def run(args: argparse.Namespace) -> dict[str, Any]:
    data = Path(tempfile.mkdtemp(prefix="fh-rollout-bench-"))
    port = free_port()
    settings = HubSettings(
        data=data, instance="bench", mqtt="127.0.0.1:0", http=f"127.0.0.1:{port}"
    )
    key = SigningKey.generate()
    payload = {"actions/blob.bin": os.urandom(int(args.size_mb * 1_000_000))}
    bundle_file = make_bundle(payload, key, name="bench", version="1.0.0")
    async with Hub(settings) as hub:
        server, serving = await serve(create_app(hub), port)
        limits = httpx.Limits(max_connections=args.devices)
        async with httpx.AsyncClient(limits=limits, timeout=120) as client:
            download = Timed(client)
            await hub.bundles.add_key(key.public.to_text(), "bench", actor="bench", source="")
            bundle, _new = await hub.bundles.upload(bundle_file, actor="bench", source="")
            devices = []
            for n in range(args.devices):
                name = f"bench-{n:04d}-{secrets.token_hex(2)}"
                issued = (await hub.devices.create(name, labels={"site": "bench"})).credentials
                devices.append(
                    BundleDevice(hub, name, (issued.username, issued.secret), download=download)
                )
            await asyncio.gather(*(device.start() for device in devices))
            await until(
                lambda: all(
                    (entry := hub.directory.get(d.device_id)) is not None and entry.actions
                    for d in devices
                )
            )
            waves = (*(float(p) for p in range(args.wave_percent, 100, args.wave_percent)), 100.0)
            plan = Plan(target={"labels": {"site": "bench"}}, canary=0, waves=waves, retries=0)
            cpu, started = time.process_time(), time.perf_counter()
            created = await hub.rollouts.create(
                bundle, plan, [(d.device_id, {}) for d in devices], actor="bench", source=""
            )
            ended = {"completed", "aborted", "paused"}
            await until(lambda: created.record.status in ended, args.timeout)
            run_now = await hub.rollouts.get(created.record.id)
            seconds = time.perf_counter() - started
            cpu_s = time.process_time() - cpu
            states = [d.state for d in run_now.devices.values()]
            await asyncio.gather(*(device.close() for device in devices))
        server.should_exit = True
        await serving
    raw = await raw_reference(hub.bundles.path(bundle.id), args.devices, max(1, download.most))
    return {
        "devices": args.devices,
        "bundle_bytes": len(bundle_file),
        "waves": len(waves),
        "status": run_now.record.status,
        "confirmed": states.count("confirmed"),
        "failed": states.count("failed") + states.count("skipped"),
        "rolled_back": states.count("rolled_back"),
        "seconds": round(seconds, 2),
        "cpu_s": round(cpu_s, 2),
        "downloads_at_once": download.most,
        "mb_s": round(download.mb_s, 1),
        "raw_mb_s": round(raw, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", type=int, default=200)
    parser.add_argument("--size-mb", type=float, default=1.0)
    parser.add_argument("--wave-percent", type=int, default=10)
    parser.add_argument("--timeout", type=float, default=600)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    result = asyncio.run(run(args))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
