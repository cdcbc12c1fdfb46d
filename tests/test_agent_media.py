"""A picture from the agent's camera reaches the hub whole, against the real hub (its REST API
over real HTTP, its broker, its database) and a real agent (issue 15).

Stories: a captured picture is announced, uploaded once its event is stored, and downloads
with the same SHA-256; an agent stopped in the middle of an upload resumes it after its
restart from where the hub's copy ends; a picture taken while the hub is down waits with its
event and arrives after the hub's restart. Between agent and hub sits a relay the test can
stall (``_Relay``), the way a mobile line stops carrying bytes in the middle of an upload.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import ssl
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from fieldhub.agent.config import AgentConfig
from fieldhub.agent.service import Agent
from fieldhub.agent.units import Drivers, mock_pin_factory
from fieldhub.hub.app import Hub
from fieldhub.hub.media.uploads import FLUSH_BYTES
from tests.conftest import HubFactory, api_client
from tests.hub_client import served
from tests.support.certs import TestCa, public_key_pin
from tests.support.proxy import TcpProxy
from tests.waiting import eventually

pytestmark = pytest.mark.slow


class _Relay:
    """HTTP between agent and hub, on a port known before the hub starts (its ``public_url``),
    that passes at most ``limit`` bytes from the agent per connection and then holds the rest:
    an upload stalls in the middle, until the agent gives up on it."""

    def __init__(self, tls: ssl.SSLContext | None = None) -> None:
        self._tls = tls
        self.target = ("127.0.0.1", 1)
        self.limit: int | None = None
        self.stalled = asyncio.Event()
        self.sent: list[int] = []  # bytes passed from the agent, per connection
        self.port = 0
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def __aenter__(self) -> _Relay:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0, ssl=self._tls)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._server is not None:
            self._server.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    @property
    def url(self) -> str:
        return f"{'https' if self._tls else 'http'}://127.0.0.1:{self.port}"

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:
            writer.close()
            return
        budget = self.limit
        self.sent.append(0)
        pipes = [
            asyncio.create_task(self._pipe(reader, up_writer, budget, len(self.sent) - 1)),
            asyncio.create_task(self._pipe(up_reader, writer, None, None)),
        ]
        self._tasks.update(pipes)
        await asyncio.wait(pipes, return_when=asyncio.FIRST_COMPLETED)
        for task in pipes:
            task.cancel()
            self._tasks.discard(task)
        for each in (writer, up_writer):
            each.close()

    async def _pipe(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        budget: int | None,
        counted: int | None,
    ) -> None:
        while data := await reader.read(65536):
            if budget is not None:
                data = data[:budget]
                budget -= len(data)
            if counted is not None:
                self.sent[counted] += len(data)
            if data:
                writer.write(data)
                await writer.drain()
            if budget == 0:
                self.stalled.set()
                await reader.read()  # hold on until the agent closes its side


def _noise_png(path: Path, side: int) -> bytes:
    """A picture that does not compress: ``side`` by ``side`` pixels, about 3 side² bytes."""
    Image.frombytes("RGB", (side, side), os.urandom(3 * side * side)).save(path, "PNG")
    return path.read_bytes()


def _config(
    hub: Hub,
    device_id: str,
    username: str,
    data: Path,
    source: Path,
    upload: str = "http",
    **media: str,
) -> AgentConfig:
    import msgspec

    copy = "import shutil, sys; shutil.copyfile(sys.argv[1], sys.argv[2])"
    return msgspec.convert(
        {
            "device": {"id": device_id},
            "hub": {"broker": hub.broker_url, "username": username},
            "data_dir": str(data),
            "media": {"upload": upload, **media},
            "units": [
                {
                    "type": "camera",
                    "name": "camera",
                    "media_type": "image/png",
                    "command": [sys.executable, "-c", copy, str(source), "{path}"],
                }
            ],
            "web": {"enabled": False},
        },
        AgentConfig,
    )


@contextlib.asynccontextmanager
async def _agent(config: AgentConfig, secret: str) -> AsyncIterator[Agent]:
    async with Agent(config, secret, drivers=Drivers(pin_factory=mock_pin_factory())) as agent:
        yield agent


async def _capture(agent: Agent) -> str:
    outcome = await agent.registry.run(agent.registry.bind("camera.capture", {}))
    assert outcome.ok, outcome
    return str(outcome.result["sha256"])


async def _media(hub: Hub, device_id: str) -> list[dict[str, Any]]:
    page = await hub.queries.events(device_ids=[device_id], types=["camera.captured"])
    return [media for event in page.events for media in event.media]


async def _download(hub: Hub, media: dict[str, Any]) -> bytes:
    async with api_client(hub) as api:
        answer = await api.get(media["url"])
        assert answer.status_code == 200, answer.text
        return answer.content


async def _stored(hub: Hub, device_id: str, sha256: str) -> dict[str, Any] | None:
    found = [m for m in await _media(hub, device_id) if m["sha256"] == sha256]
    return found[0] if found and found[0]["state"] != "pending" else None


async def test_a_picture_arrives_whole_and_an_interrupted_upload_resumes_after_a_restart(
    make_hub: HubFactory, tmp_path: Path, uid: str
) -> None:
    source = tmp_path / "picture.png"
    picture = _noise_png(source, 600)  # about 1 MB
    async with (
        _Relay() as relay,
        make_hub(public_url=relay.url) as hub,
        served(hub) as url,
    ):
        relay.target = ("127.0.0.1", _port(url))
        device_id = f"cam-{uid}"
        issued = (await hub.devices.create(device_id, labels={"site": "berlin"})).credentials
        config = _config(hub, device_id, issued.username, tmp_path / "agent", source)

        # 1. A picture arrives whole: same hash, same bytes, and the agent's copy is gone.
        async with _agent(config, issued.secret) as agent:
            first = await _capture(agent)
            assert first == hashlib.sha256(picture).hexdigest()
            media = await eventually(lambda: _stored(hub, device_id, first), "the picture stored")
            assert await _download(hub, media) == picture
            spool = agent.spool
            assert spool is not None
            await eventually(lambda: spool.stats.delivered == 1, "the spool emptied")
            assert not (tmp_path / "agent" / "media" / first).exists()

        # 2. The next upload stalls after 300 kB; the agent stops in the middle of it, once
        # the hub has written the first 256 KiB it got (bytes it has not read yet when the
        # sender goes away are lost to it: the agent then simply sends them again).
        picture = _noise_png(source, 600)
        relay.limit = 300_000
        async with _agent(config, issued.secret) as agent:
            second = await _capture(agent)
            await asyncio.wait_for(relay.stalled.wait(), 60)
            await eventually(lambda: hub.media.files.received(second) >= FLUSH_BYTES, "a part")
        assert (tmp_path / "agent" / "media" / second).exists()  # kept: the hub has it not

        # 3. After the restart it resumes from where the hub's copy ends.
        relay.limit = None
        async with _agent(config, issued.secret) as agent:
            media = await eventually(lambda: _stored(hub, device_id, second), "resumed upload")
            assert agent.uploader is not None
            assert agent.uploader.stats.resumed == 1
            assert agent.uploader.stats.sent_bytes < len(picture)
        assert await _download(hub, media) == picture
        await hub.devices.delete(device_id)


async def test_a_picture_taken_while_the_hub_is_down_arrives_after_its_restart(
    make_hub: HubFactory, tmp_path: Path, uid: str
) -> None:
    source = tmp_path / "picture.png"
    picture = _noise_png(source, 64)
    data = tmp_path / "hub"
    async with _Relay() as relay, TcpProxy("127.0.0.1", 1) as broker:
        async with make_hub(data=data, public_url=relay.url) as hub:
            device_id = f"cam-{uid}"
            issued = (await hub.devices.create(device_id)).credentials
        config = _config(hub, device_id, issued.username, tmp_path / "agent", source)
        config = _via(config, broker)
        async with _agent(config, issued.secret) as agent:
            sha = await _capture(agent)  # the hub is down: event and picture wait
            async with make_hub(data=data, public_url=relay.url) as hub, served(hub) as url:
                relay.target = ("127.0.0.1", _port(url))
                broker.retarget("127.0.0.1", _port(hub.broker_url))
                media = await eventually(lambda: _stored(hub, device_id, sha), "after the restart")
                assert await _download(hub, media) == picture
                await hub.devices.delete(device_id)
            assert agent.spool is not None
            assert agent.spool.stats.objects == 0


@pytest.mark.parametrize("db", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
async def test_without_an_http_route_the_picture_goes_in_chunks_over_mqtt(
    make_hub: HubFactory, tmp_path: Path, uid: str, db: str
) -> None:
    source = tmp_path / "picture.png"
    picture = _noise_png(source, 128)  # about 49 kB: two chunks
    async with make_hub(db=db, public_url="http://127.0.0.1:9") as hub:  # nothing listens there
        device_id = f"cam-{uid}"
        issued = (await hub.devices.create(device_id)).credentials
        config = _config(hub, device_id, issued.username, tmp_path / "agent", source, "mqtt")
        async with _agent(config, issued.secret) as agent:
            sha = await _capture(agent)
            media = await eventually(lambda: _stored(hub, device_id, sha), "sent in chunks")
            assert agent.uploader is not None
            assert (agent.uploader.stats.chunks, agent.uploader.stats.puts) == (2, 0)
        assert await _download(hub, media) == picture
        await hub.devices.delete(device_id)


async def test_pictures_the_hub_will_never_take_are_deleted_counted_and_hold_up_nothing(
    make_hub: HubFactory, tmp_path: Path, uid: str
) -> None:
    source = tmp_path / "picture.png"
    _noise_png(source, 128)  # about 49 kB
    async with make_hub(media_max_bytes=10_000) as hub:
        device_id = f"cam-{uid}"
        issued = (await hub.devices.create(device_id)).credentials
        config = _config(hub, device_id, issued.username, tmp_path / "agent", source)
        async with _agent(config, issued.secret) as agent:
            uploader, spool = agent.uploader, agent.spool
            assert uploader is not None
            assert spool is not None
            # A picture whose event never reached the hub (a crash came between them) does not
            # hold up the next one.
            await spool.keep_bytes(b"\x89PNG\r\n\x1a\n orphan", "image/png", "orphan.png")
            sha = await _capture(agent)
            expected = {"unknown_object": 1, "too_large": 1}
            await eventually(lambda: uploader.stats.refused == expected, "both refused")
            assert (spool.stats.objects, spool.stats.given_up, uploader.stats.puts) == (0, 2, 0)
        assert not (tmp_path / "agent" / "media" / sha).exists()
        await hub.devices.delete(device_id)


async def test_an_agent_killed_in_the_middle_of_an_upload_delivers_after_its_restart(
    make_hub: HubFactory, tmp_path: Path, uid: str
) -> None:
    """``fieldhub agent`` as a process, killed (SIGKILL: a power cut) while its upload stalls:
    the picture survives in its spool, and the next start delivers it (from where the hub's
    copy ends: the resume itself is checked above, where the hub's part is waited for)."""
    async with (
        _Relay() as relay,
        make_hub(public_url=relay.url) as hub,
        served(hub) as url,
        api_client(hub) as api,
    ):
        relay.target = ("127.0.0.1", _port(url))
        device_id = f"cam-{uid}"
        issued = (await hub.devices.create(device_id)).credentials
        data = tmp_path / "agent"
        config = tmp_path / "agent.yaml"
        config.write_text(
            f"device: {{id: {device_id}}}\n"
            f"hub:\n  broker: '{hub.broker_url}'\n"
            f"  username: '{issued.username}'\n  secret: '{issued.secret}'\n"
            f"data_dir: '{data}'\n"
            "units:\n  - {type: camera, name: camera, width: 1600, height: 1200}\n"
            "web: {enabled: false}\n"
        )
        config.chmod(0o600)
        relay.limit = 5000
        async with _agent_process(config):
            await eventually(lambda: _offers(hub, device_id, "camera.capture"), "the catalog")
            answer = await api.post(
                f"/api/devices/{device_id}/commands", json={"action": "camera.capture"}
            )
            assert answer.status_code == 200, answer.text
            assert answer.json()["status"] == "succeeded", answer.text
            sha = answer.json()["result"]["sha256"]
            await asyncio.wait_for(relay.stalled.wait(), 60)
            picture = (data / "media" / sha).read_bytes()
            assert len(picture) > 5000
        relay.limit = None
        async with _agent_process(config):
            media = await eventually(lambda: _stored(hub, device_id, sha), "after the restart")
        assert await _download(hub, media) == picture
        assert not (data / "media" / sha).exists()
        await hub.devices.delete(device_id)


@pytest.mark.parametrize("pinned", ["right", "wrong"])
async def test_an_https_upload_checks_the_ca_and_the_pin_before_sending(
    make_hub: HubFactory, tmp_path: Path, uid: str, pinned: str
) -> None:
    ca = TestCa(tmp_path / "ca")
    server = ca.issue("hub", hosts=["127.0.0.1"])
    other = ca.issue("other", hosts=["127.0.0.1"])
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(server.cert, server.key)
    source = tmp_path / "picture.png"
    picture = _noise_png(source, 64)
    pin = public_key_pin(server.cert if pinned == "right" else other.cert)
    async with (
        _Relay(tls=context) as relay,
        make_hub(public_url=relay.url) as hub,
        served(hub) as url,
    ):
        relay.target = ("127.0.0.1", _port(url))
        device_id = f"cam-{uid}"
        issued = (await hub.devices.create(device_id)).credentials
        config = _config(
            hub,
            device_id,
            issued.username,
            tmp_path / "agent",
            source,
            ca_file=str(ca.cert),
            pin_sha256=pin,
        )
        async with _agent(config, issued.secret) as agent:
            sha = await _capture(agent)
            uploader = agent.uploader
            assert uploader is not None
            if pinned == "right":
                media = await eventually(lambda: _stored(hub, device_id, sha), "over https")
                assert await _download(hub, media) == picture
            else:
                await eventually(lambda: "pin mismatch" in uploader.stats.last_error, "refused")
                assert sum(relay.sent) == 0  # not a byte of the request left
                assert (tmp_path / "agent" / "media" / sha).exists()  # kept for later
        await hub.devices.delete(device_id)


def _offers(hub: Hub, device_id: str, action: str) -> bool:
    entry = hub.directory.get(device_id)
    return entry is not None and action in (entry.actions or {})


@contextlib.asynccontextmanager
async def _agent_process(config: Path) -> AsyncIterator[None]:
    """``fieldhub agent --simulate``, killed with SIGKILL on the way out."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        *("-m", "fieldhub", "agent", "--config", str(config), "--simulate"),
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    try:
        yield
    finally:
        process.kill()
        await process.wait()


def _port(url: str) -> int:
    return int(url.rstrip("/").rsplit(":", 1)[1])


def _via(config: AgentConfig, proxy: TcpProxy) -> AgentConfig:
    import msgspec

    hub = msgspec.structs.replace(config.hub, broker=f"mqtt://{proxy.host}:{proxy.port}")
    return msgspec.structs.replace(config, hub=hub)
