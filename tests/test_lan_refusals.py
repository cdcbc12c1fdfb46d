"""Bad input on the LAN: each refused with a log line and a count, and nothing else stops.

Malformed and oversized frames and announcements, a stranger with the wrong key, a spoofed
announcement, a frame replayed on a live link, a controller whose key is not the gateway's.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import socket
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from fieldhub.lan.discovery import Announcement, encode_announcement
from fieldhub.lan.framing import AUTHENTICATED, pack_frame, read_frame
from fieldhub.lan.handshake import open_hello
from fieldhub.lan.keys import KeyFile, PeerKey
from fieldhub.lan.session import Session, session_key
from tests.lan_support import (
    RecordingUplink,
    controller_config,
    paired_controller,
    running_controller,
    running_gateway,
)
from tests.waiting import eventually


async def _send_raw(port: int, data: bytes) -> bytes:
    """Send ``data`` to a controller and return what it answers before it closes."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(data)
    try:
        async with asyncio.timeout(5):
            return await reader.read()
    finally:
        writer.close()


async def test_strangers_and_garbage_are_refused_and_the_real_link_stays(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    uplink = RecordingUplink()
    async with (
        running_gateway(tmp_path, uplink) as gateway,
        paired_controller(tmp_path, uplink, gateway, "ctrl-1") as controller,
    ):
        assert await _send_raw(controller.port, (70_000).to_bytes(4, "big")) == b""
        assert await _send_raw(controller.port, pack_frame(b"P{not json")) == b""
        assert await _send_raw(controller.port, pack_frame(b'P{"t":"hello","v":9}')) == b""
        assert controller.refusals["bad_frame"] == 3

        # A stranger who says hello as the gateway but does not hold the key.
        reader, writer = await asyncio.open_connection("127.0.0.1", controller.port)
        hello = await open_hello(reader, writer, "gw-test", 5)
        forged = Session(
            session_key(secrets.token_bytes(32), hello.gateway_nonce, hello.controller_nonce),
            "gateway",
        )
        writer.write(pack_frame(forged.seal({"t": "auth"})))
        with pytest.raises(asyncio.IncompleteReadError):
            await read_frame(reader)  # closed without a word
        writer.close()
        await eventually(lambda: controller.refusals["bad_tag"] == 1, "the forgery refused")
        assert "refused a connection from 127.0.0.1 (bad_tag)" in caplog.text

        # A flood of idle connections: beyond 16 in hand (the link counts), each is refused.
        idle = [await asyncio.open_connection("127.0.0.1", controller.port) for _ in range(16)]
        await eventually(
            lambda: controller.refusals["too_many_connections"] == 1, "the 17th refused"
        )
        for _, idle_writer in idle:
            idle_writer.close()

        outcome = await gateway.run_command("ctrl-1", "c-1", "relay.set", {"on": True}, 5)
        assert outcome.status == "succeeded"  # the gateway's link never noticed
        assert gateway.link_states() == {"ctrl-1": "linked"}
        assert len(uplink.online) == 1


async def test_bad_and_spoofed_announcements_are_counted_and_change_nothing(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    uplink = RecordingUplink()
    async with (
        running_gateway(tmp_path, uplink) as gateway,
        paired_controller(tmp_path, uplink, gateway, "ctrl-1"),
    ):
        sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        target = ("127.0.0.1", gateway.announce_port)
        sender.sendto(b"\x00garbage", target)
        sender.sendto(b"{" * 600, target)
        sender.sendto(encode_announcement(Announcement("ghost", 7410, paired=True)), target)
        sender.sendto(encode_announcement(Announcement("ctrl-1", 9, paired=True)), target)
        sender.close()
        await eventually(lambda: gateway.refusals["address_changed"] == 1, "the spoof counted")
        assert gateway.refusals["bad_announcement"] == 2
        assert gateway.refusals["unknown_controller"] == 1
        assert gateway.link_states() == {"ctrl-1": "linked"}  # no ghost, the link kept
        assert "ignored an announcement from 127.0.0.1: not JSON" in caplog.text
        outcome = await gateway.run_command("ctrl-1", "c-1", "relay.set", {"on": False}, 5)
        assert outcome.status == "succeeded"


class ReplayingProxy:
    """Between gateway and controller, a wiretap that can send a command's frame twice."""

    def __init__(self, target_port: int) -> None:
        self._target_port = target_port
        self.replay = asyncio.Event()
        self.frozen = False
        """While set, nothing gets through either way, and nothing closes: a dead cable."""
        self.port = 0

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[ReplayingProxy]:
        server = await asyncio.start_server(self._on_connection, "127.0.0.1", 0)
        self.port = server.sockets[0].getsockname()[1]
        async with server:
            yield self

    async def _on_connection(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self._target_port)
        back = asyncio.create_task(self._pipe(up_reader, writer, self))
        try:
            while True:
                frame = await read_frame(reader)
                if self.frozen:
                    continue
                up_writer.write(pack_frame(frame))
                if self.replay.is_set() and frame[:1] == AUTHENTICATED and b'"op":"run"' in frame:
                    self.replay.clear()
                    up_writer.write(pack_frame(frame))  # the same command, once more
        except (asyncio.IncompleteReadError, OSError):
            pass
        finally:
            back.cancel()
            up_writer.close()
            writer.close()

    @staticmethod
    async def _pipe(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter, proxy: ReplayingProxy
    ) -> None:
        with contextlib.suppress(OSError):
            while data := await reader.read(65536):
                if not proxy.frozen:
                    writer.write(data)
        writer.close()


async def test_a_replayed_frame_ends_the_link_and_the_gateway_links_again(tmp_path: Path) -> None:
    """Over a static address (no broadcast), through a wiretap that sends a command twice:
    the copy is refused, the link ends, the gateway links again, the action ran once."""
    uplink = RecordingUplink()
    config = controller_config(tmp_path, "ctrl-5", announce_port=9)  # announcements go nowhere
    async with running_controller(config) as controller:
        proxy = ReplayingProxy(controller.port)
        async with (
            proxy.running(),
            running_gateway(tmp_path, uplink, static=(f"127.0.0.1:{proxy.port}",)) as gateway,
        ):
            await eventually(lambda: "ctrl-5" in uplink.codes, "the pairing code")
            assert await gateway.approve_pairing_code("ctrl-5", uplink.codes["ctrl-5"])
            await eventually(lambda: uplink.is_online("ctrl-5"), "ctrl-5 online")

            proxy.replay.set()
            lost = await gateway.run_command("ctrl-5", "c-1", "relay.set", {"on": True}, 5)
            assert lost.status == "timed_out"  # the link ended before the outcome came back
            assert controller.refusals["bad_counter"] == 1
            await eventually(lambda: len(uplink.offline) == 1, "ctrl-5 offline")
            await eventually(lambda: uplink.is_online("ctrl-5"), "ctrl-5 linked again")
            retried = await gateway.run_command("ctrl-5", "c-1", "relay.set", {"on": True}, 5)
            assert retried.status == "succeeded"
            assert (tmp_path / "ctrl-5.log").read_text() == "relay true\n"  # ran once
            assert len(uplink.pairing) == 1


async def test_a_silent_link_is_declared_lost_after_three_heartbeats(tmp_path: Path) -> None:
    uplink = RecordingUplink()
    config = controller_config(tmp_path, "ctrl-8", announce_port=9)
    async with running_controller(config) as controller:
        proxy = ReplayingProxy(controller.port)
        async with (
            proxy.running(),
            running_gateway(tmp_path, uplink, static=(f"127.0.0.1:{proxy.port}",)) as gateway,
        ):
            await eventually(lambda: "ctrl-8" in uplink.codes, "the pairing code")
            await gateway.approve_pairing("ctrl-8")
            await eventually(lambda: uplink.is_online("ctrl-8"), "ctrl-8 online")
            proxy.frozen = True
            await eventually(lambda: uplink.offline, "ctrl-8 offline")
            assert uplink.offline == [("ctrl-8", "nothing heard for 3 s")]
            assert gateway.link_states() == {"ctrl-8": "lost: nothing heard for 3 s"}
            proxy.frozen = False
            await eventually(lambda: uplink.is_online("ctrl-8"), "ctrl-8 linked again")


async def test_a_controller_with_another_key_is_refused_by_the_gateway(tmp_path: Path) -> None:
    uplink = RecordingUplink()
    async with running_gateway(tmp_path, uplink) as gateway:
        config = controller_config(tmp_path, "ctrl-6", gateway.announce_port)
        KeyFile(config.data_dir / "gateway.key").store(PeerKey("gw-test", secrets.token_bytes(32)))
        KeyFile(tmp_path / "gateway-keys" / "ctrl-6.key").store(
            PeerKey("ctrl-6", secrets.token_bytes(32))
        )
        async with running_controller(config) as controller:
            await eventually(
                lambda: gateway.refusals["not_authenticated"] >= 1, "the gateway's refusal"
            )
            assert controller.refusals["bad_tag"] >= 1
            assert gateway.link_states()["ctrl-6"] == "lost: the controller refused the key"
            assert not uplink.online
            assert not uplink.pairing
