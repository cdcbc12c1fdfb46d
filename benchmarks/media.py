"""Media benchmark: devices uploading pictures through the hub while ingest runs.

It starts Mosquitto and, in this process, a hub on it (SQLite) with its API served by uvicorn
as ``fieldhub hub`` serves it. D camera devices (``--devices``, 50) each announce a picture of
about ``--size`` bytes (1 MB: a distinct, valid JPEG each, so nothing is deduplicated and every
one gets a thumbnail) with an event, ask for an upload URL over MQTT, and then PUT all of them
at once from an uploader in its own process (``--put``), while the ingest benchmark's load
(``ingest.py``'s ``hub_phase``: telemetry from its own process) runs against the same hub.

Figures, all from the same run:

- ``mb_s``: megabytes the hub took per second, first request to last 201 (each hashed, its
  type sniffed, promoted and its rows complete; thumbnails follow in the background);
- ``raw_mb_s``: the same uploader, the same files, PUT to a bare uvicorn app that writes each
  body to a file and ``fsync``s it (no hub, no ingest): the reference; ``ratio`` is the two;
- ``thumb_p99_ms``: making one thumbnail (decode, scale, encode, write), 99th percentile (the
  run waits for all of them before it ends);
- ``ingest_ratio_on_off``: the ingest rate with uploads running over the rate without them
  (medians of ``--rounds`` phases of each, alternated: off, on, off, on…). Fair by default:
  while ingest runs "without" uploads, the same uploader process PUTs the same bytes to a bare
  app in the hub's process, so both phases run the same processes and receive the same bytes,
  and the ratio is what the hub's handling of uploads costs ingest. Without (``--no-fair``),
  the uploader (2.5 to 3 CPU-seconds for 50 MB, more than the hub's whole extra work) was a
  third busy process on two cores in one phase only;
- ``cpu_off``/``cpu_on``: per phase, CPU seconds of the hub's process and of its children
  that ended in the phase (the load generator, the uploader), and the wall time;
- ``lost``: uploads not answered 201 or whose rows are not complete, plus ingest messages
  not acknowledged.

    .venv/bin/python benchmarks/media.py [--devices 50] [--size 1000000] [--messages 1500]
                                         [--rounds 3] [--no-fair]

The last line printed is one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import hashlib
import json
import logging
import os
import resource
import statistics
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import uvicorn
from PIL import Image

sys.path.insert(0, str(Path(__file__).parent))  # sibling scripts
sys.path.insert(1, str(Path(__file__).resolve().parents[1]))  # tests.support: the real servers

from sqlalchemy import func, select
from tests.hub_client import served
from tests.support.servers import Mosquitto

from fieldhub.clock import now_ms
from fieldhub.hub.app import Hub
from fieldhub.hub.config import HubSettings
from fieldhub.hub.store.schema import media
from fieldhub.mqtt import MqttClient
from fieldhub.protocol import Channel, Event, MediaRef, Upload, decode, encode, topic_for
from ingest import LoadTarget, hub_phase

_WRITE = 256 * 1024


def make_pictures(folder: Path, count: int, size: int) -> list[Path]:
    """``count`` distinct JPEGs of about ``size`` bytes (noise compresses as little as a
    detailed photograph)."""
    folder.mkdir()
    side = int((size / 0.77 * 4 / 3) ** 0.5)  # noise at quality 85: about 0.77 bytes per pixel
    paths = []
    for i in range(count):
        image = Image.frombytes("RGB", (side, side * 3 // 4), os.urandom(side * side * 9 // 4))
        path = folder / f"cam-{i:03d}.jpg"
        image.save(path, "JPEG", quality=85)
        paths.append(path)
    return paths


# -- the uploader (a child process) ------------------------------------------------------------
async def put_all(spec: list[dict[str, str]]) -> dict[str, Any]:
    """PUT every file to its URL at once; when the first began and the last ended."""
    limits = httpx.Limits(max_connections=len(spec))
    async with httpx.AsyncClient(limits=limits, timeout=300) as client:
        bodies = [await asyncio.to_thread(Path(item["path"]).read_bytes) for item in spec]
        began = time.time()

        async def put(url: str, body: bytes) -> int:
            answer = await client.put(url, content=body, headers={"Content-Type": "image/jpeg"})
            return answer.status_code

        statuses = await asyncio.gather(
            *(put(item["url"], body) for item, body in zip(spec, bodies, strict=True))
        )
        ended = time.time()
    return {"began": began, "ended": ended, "statuses": statuses, "bytes": sum(map(len, bodies))}


async def upload_in_subprocess(spec: list[dict[str, str]], folder: Path) -> dict[str, Any]:
    """:func:`put_all` in a child process: the uploader has its own core and GIL."""
    path = folder / f"spec-{time.monotonic_ns()}.json"
    path.write_text(json.dumps(spec), encoding="utf-8")
    process = await asyncio.create_subprocess_exec(
        sys.executable, __file__, "--put", str(path), stdout=asyncio.subprocess.PIPE
    )
    out, _ = await process.communicate()
    if process.returncode:
        raise RuntimeError(f"the uploader exited with {process.returncode}")
    result: dict[str, Any] = json.loads(out)
    return result


# -- the raw reference ------------------------------------------------------------------------
def bare_app(folder: Path) -> Callable[..., Awaitable[None]]:
    """An ASGI app that writes each request's body to a file of its own, ``fsync``s it, 201."""
    counter = iter(range(1 << 30))

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        path = folder / f"body-{next(counter)}"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
        try:
            buffer = bytearray()
            while True:
                message = await receive()
                buffer += message.get("body", b"")
                if len(buffer) >= _WRITE or not message.get("more_body"):
                    await asyncio.to_thread(os.write, fd, bytes(buffer))
                    buffer.clear()
                if not message.get("more_body"):
                    break
            await asyncio.to_thread(os.fsync, fd)
        finally:
            os.close(fd)
        await send({"type": "http.response.start", "status": 201, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    return app


@contextlib.asynccontextmanager
async def _bare(folder: Path) -> AsyncIterator[str]:
    """:func:`bare_app` served by uvicorn in this process, at the address yielded."""
    await asyncio.to_thread(folder.mkdir)
    server = uvicorn.Server(
        uvicorn.Config(bare_app(folder), host="127.0.0.1", port=0, log_level="warning",
                       lifespan="off")
    )  # fmt: skip
    serving = asyncio.create_task(server.serve())

    async def started() -> bool:
        return bool(server.started)

    await _until(started, "the bare server")
    try:
        yield f"http://127.0.0.1:{server.servers[0].sockets[0].getsockname()[1]}"
    finally:
        server.should_exit = True
        await serving


async def raw_reference(pictures: list[Path], folder: Path) -> float:
    """MB/s of the same uploads to :func:`bare_app`."""
    async with _bare(folder) as url:
        spec = [{"url": f"{url}/{p.name}", "path": str(p)} for p in pictures]
        result = await upload_in_subprocess(spec, folder)
    if set(result["statuses"]) != {201}:
        raise RuntimeError(f"the bare server answered {sorted(set(result['statuses']))}")
    return float(result["bytes"]) / 1e6 / (result["ended"] - result["began"])


# -- cameras ---------------------------------------------------------------------------------
async def camera_urls(
    hub: Hub, broker: Mosquitto, pictures: list[Path], *, first: int = 0
) -> list[dict[str, str]]:
    """Each picture announced by its camera's event, and the upload URL its camera got."""
    spec: list[dict[str, str]] = []
    clients: list[MqttClient] = []
    answers: dict[str, asyncio.Future[bytes]] = {}
    loop = asyncio.get_running_loop()
    try:
        for index, path in enumerate(pictures, start=first):
            device_id = f"cam-{index:03d}"
            issued = (await hub.devices.create(device_id)).credentials
            answers[device_id] = loop.create_future()

            def heard(topic: str, payload: bytes, device_id: str = device_id) -> None:
                waiting = answers[device_id]
                if topic.endswith("/media") and not waiting.done():
                    waiting.set_result(payload)

            client = MqttClient(broker.host, broker.port, client_id=device_id,
                                username=issued.username, password=issued.secret,
                                on_message=heard)  # fmt: skip
            await client.connect()
            clients.append(client)
            await client.subscribe([(topic_for(device_id, Channel.MEDIA), 1)])
            data = path.read_bytes()
            ref = MediaRef(
                sha256=hashlib.sha256(data).hexdigest(),
                size=len(data),
                type="image/jpeg",
                name=path.name,
            )
            event = Event(seq=1, ts=now_ms(), type="stranger.detected", media=[ref])
            client.publish(topic_for(device_id, Channel.EVENT), encode(event), qos=1)
            spec.append({"device": device_id, "sha256": ref.sha256, "path": str(path)})
        await _until(lambda: _announced(hub, first + len(pictures)), "every event stored")
        for item, client in zip(spec, clients, strict=True):
            request = Upload(req="b1", sha256=item["sha256"])
            client.publish(topic_for(item["device"], Channel.UPLOAD), encode(request), qos=1)
        for item in spec:
            answer = decode(Channel.MEDIA, await asyncio.wait_for(answers[item["device"]], 30))
            if answer.url is None:
                raise RuntimeError(f"{item['device']} got no URL: {answer}")
            item["url"] = answer.url
    finally:
        for client in clients:
            await client.close()
    return spec


async def _announced(hub: Hub, count: int) -> bool:
    async with hub.engine.connect() as conn:
        stored = (await conn.execute(select(func.count()).select_from(media))).scalar_one()
    return int(stored) >= count


async def _complete(hub: Hub) -> int:
    async with hub.engine.connect() as conn:
        query = select(func.count()).select_from(media).where(media.c.state == "complete")
        return int((await conn.execute(query)).scalar_one())


async def _thumbnails(hub: Hub, count: int) -> bool:
    return len(hub.media.uploads.thumbnails.took_ms) >= count


async def _until(check: Callable[[], Awaitable[bool]], what: str, within_s: float = 60) -> None:
    deadline = time.monotonic() + within_s
    while not await check():
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


def _p99(values: list[float]) -> float:
    if len(values) < 2:
        return values[0] if values else 0.0
    return statistics.quantiles(values, n=100)[98]


@dataclass(slots=True)
class Phase:
    """One ingest phase: its rate and the CPU seconds each process used during it."""

    msg_s: float
    lost: int
    hub_cpu_s: float
    children_cpu_s: float  # the load generator and the uploader (they have ended by then)
    wall_s: float


async def _phase(
    hub: Hub, broker: Mosquitto, target: LoadTarget, load: dict[str, Any],
    prefix: str, uploads: Awaitable[dict[str, Any]] | None,
) -> tuple[Phase, dict[str, Any] | None]:  # fmt: skip
    """The ingest load, with ``uploads`` at the same time when given."""
    began, self_before, children_before = time.perf_counter(), _cpu(), _cpu(children=True)
    if uploads is None:
        result, put = await hub_phase(hub, broker, target, prefix=prefix, **load), None
    else:
        result, put = await asyncio.gather(
            hub_phase(hub, broker, target, prefix=prefix, **load), uploads
        )
    wall = time.perf_counter() - began
    phase = Phase(
        result.rate_msg_s,
        result.lost,
        round(_cpu() - self_before, 2),
        round(_cpu(children=True) - children_before, 2),
        round(wall, 2),
    )
    return phase, put


def _cpu(*, children: bool = False) -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN if children else resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def main(args: argparse.Namespace) -> dict[str, Any]:
    """Raw reference; then ``--rounds`` times ingest alone and ingest with uploads, alternated
    (the machine's other load comes and goes: medians of phases taken side by side); the
    figures."""
    with (
        tempfile.TemporaryDirectory(prefix="fieldhub-media-") as tmp,
        contextlib.ExitStack() as stack,
    ):
        folder = Path(tmp)
        broker = stack.enter_context(Mosquitto(folder / "mosquitto"))
        target = LoadTarget(broker.port)
        pictures = make_pictures(folder / "pictures", args.devices * args.rounds, args.size)
        raw_mb_s = await raw_reference(pictures[: args.devices], folder / "raw")
        settings = HubSettings(data=folder / "data", broker=broker.url, http="127.0.0.1:0")
        offs: list[Phase] = []
        ons: list[Phase] = []
        puts: list[dict[str, Any]] = []
        async with Hub(settings) as hub, served(hub) as url, _bare(folder / "fair") as bare:
            hub.media.uploads.links.base_url = url
            load = {"devices": args.load_devices, "qos": 1, "per_device": args.messages,
                    "samples": 1}  # fmt: skip
            for number in range(args.rounds):
                batch = pictures[number * args.devices : (number + 1) * args.devices]
                alongside = None
                if args.fair:  # the same uploader and bytes, to a bare app in this process
                    spec = [{"url": f"{bare}/{p.name}", "path": str(p)} for p in batch]
                    alongside = upload_in_subprocess(spec, folder)
                off, _ = await _phase(hub, broker, target, load, f"off{number}", alongside)
                spec = await camera_urls(hub, broker, batch, first=number * args.devices)
                uploads = upload_in_subprocess(spec, folder)
                on, put = await _phase(hub, broker, target, load, f"on{number}", uploads)
                assert put is not None
                offs.append(off)
                ons.append(on)
                puts.append(put)
                await _until(
                    lambda n=number: _thumbnails(hub, (n + 1) * args.devices), "every thumbnail"
                )
            complete = await _complete(hub)
            thumbs = list(hub.media.uploads.thumbnails.took_ms)
    rates = [float(p["bytes"]) / 1e6 / (p["ended"] - p["began"]) for p in puts]
    failed = sum(1 for put in puts for status in put["statuses"] if status != 201)
    off_rate = statistics.median(p.msg_s for p in offs)
    on_rate = statistics.median(p.msg_s for p in ons)
    mb_s = statistics.median(rates)
    return {
        "uploads": sum(len(p["statuses"]) for p in puts) - failed,
        "bytes": sum(p["bytes"] for p in puts),
        "mb_s": round(mb_s, 1),
        "raw_mb_s": round(raw_mb_s, 1),
        "ratio": round(mb_s / raw_mb_s, 3),
        "thumbnails": len(thumbs),
        "thumb_p50_ms": round(statistics.median(thumbs), 1) if thumbs else None,
        "thumb_p99_ms": round(_p99(thumbs), 1),
        "rounds": args.rounds,
        "fair": args.fair,
        "ingest_off_msg_s": [p.msg_s for p in offs],
        "ingest_on_msg_s": [p.msg_s for p in ons],
        "ingest_ratio_on_off": round(on_rate / off_rate, 3),
        "cpu_off": [dataclasses.asdict(p) for p in offs],
        "cpu_on": [dataclasses.asdict(p) for p in ons],
        "lost": failed + (args.devices * args.rounds - complete) + sum(p.lost for p in offs + ons),
        "load_avg_1m": round(os.getloadavg()[0], 2),
        "cpus": os.cpu_count(),
    }


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--devices", type=int, default=50, help="cameras, one picture each")
    parser.add_argument("--size", type=int, default=1_000_000, help="bytes per picture, about")
    parser.add_argument("--load-devices", type=int, default=20, help="ingest load: devices")
    parser.add_argument("--messages", type=int, default=1500, help="ingest load: per device")
    parser.add_argument("--rounds", type=int, default=3, help="phases off and on, alternated")
    parser.add_argument(
        "--fair",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="ingest alone runs beside the same uploads to a bare app in the hub's process "
        "(--no-fair: beside nothing, as before session 8)",
    )
    parser.add_argument("--put", type=Path, help=argparse.SUPPRESS)  # the uploader child
    return parser.parse_args(argv)


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING)
    options = parse_args()
    if options.put is not None:
        print(json.dumps(asyncio.run(put_all(json.loads(options.put.read_text())))))
    else:
        print(json.dumps(asyncio.run(main(options))))
