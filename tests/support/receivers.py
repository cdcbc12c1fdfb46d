"""Real endpoints for notification tests: an HTTP webhook receiver and an SMTP server.

The webhook receiver is a small HTTP/1.1 server on ``asyncio`` streams (keep-alive, one
request at a time per connection, ``Content-Length`` bodies): it records every request and
answers each path from a script (statuses in turn, then 200), or hangs until the client
gives up. The SMTP server is aiosmtpd's ``Controller`` with a handler that records messages
and can refuse the next N with a temporary error.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from email import message_from_bytes
from email.message import Message
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session

from tests.support.servers import free_port

HANG = "hang"


@dataclass(frozen=True)
class Received:
    """One request as the receiver saw it."""

    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    at: float  # time.monotonic()

    def json(self) -> Any:
        return json.loads(self.body)


class WebhookReceiver:
    """Records requests; ``script[path]`` lists what to answer next (a status or ``HANG``)."""

    def __init__(self) -> None:
        self.requests: list[Received] = []
        self.script: dict[str, list[int | str]] = {}
        self.delay_s = 0.0  # before every answer
        self.big_body = 0  # > 0: answer 200 with a body this long (zeros), written slowly
        self.port = 0
        self._server: asyncio.Server | None = None
        self._handlers: set[asyncio.Task[None]] = set()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def to(self, path: str) -> list[Received]:
        """Requests to ``path``, in arrival order."""
        return [r for r in self.requests if r.path == path]

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._connected, "127.0.0.1", self.port)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            for task in list(self._handlers):
                task.cancel()
            for task in list(self._handlers):
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            await self._server.wait_closed()
            self._server = None

    def _connected(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        handler = asyncio.ensure_future(self._serve(reader, writer))
        self._handlers.add(handler)
        handler.add_done_callback(self._handlers.discard)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while line := await reader.readline():
                method, path, _version = line.decode("latin-1").split(" ", 2)
                headers: dict[str, str] = {}
                while (header := await reader.readline()) not in (b"\r\n", b""):
                    name, _, value = header.decode("latin-1").partition(":")
                    headers[name.strip().lower()] = value.strip()
                body = await reader.readexactly(int(headers.get("content-length", "0")))
                self.requests.append(Received(method, path, headers, body, time.monotonic()))
                queued = self.script.get(path)
                answer = queued.pop(0) if queued else 200
                if answer == HANG:
                    await asyncio.Event().wait()  # until the client gives up (or the end)
                if self.delay_s:
                    await asyncio.sleep(self.delay_s)
                if self.big_body:
                    await self._big(writer)
                    continue
                writer.write(f"HTTP/1.1 {answer} X\r\ncontent-length: 0\r\n\r\n".encode())
                await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    async def _big(self, writer: asyncio.StreamWriter) -> None:
        writer.write(f"HTTP/1.1 200 OK\r\ncontent-length: {self.big_body}\r\n\r\n".encode())
        chunk = bytes(64 * 1024)
        for _ in range(self.big_body // len(chunk)):
            writer.write(chunk)
            await writer.drain()
            await asyncio.sleep(0.01)


@asynccontextmanager
async def webhook_receiver() -> AsyncIterator[WebhookReceiver]:
    """A running :class:`WebhookReceiver` on a free port of 127.0.0.1."""
    receiver = WebhookReceiver()
    await receiver.start()
    try:
        yield receiver
    finally:
        await receiver.stop()


class MailBox:
    """An aiosmtpd handler: keeps every accepted message; ``refuse`` the next N with 451."""

    def __init__(self) -> None:
        self.messages: list[Message] = []
        self.envelopes: list[tuple[str, list[str]]] = []
        self.refuse = 0
        self.refused = 0

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        if self.refuse > 0:
            self.refuse -= 1
            self.refused += 1
            return "451 4.3.0 try again later"
        content = envelope.original_content or b""
        self.messages.append(message_from_bytes(content))
        self.envelopes.append((str(envelope.mail_from), list(envelope.rcpt_tos)))
        return "250 OK"


@contextmanager
def smtp_server() -> Iterator[tuple[MailBox, int]]:
    """A real SMTP server (aiosmtpd, in its own thread) on 127.0.0.1: its mailbox and port."""
    box = MailBox()
    port = free_port()
    controller = Controller(box, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        yield box, port
    finally:
        controller.stop()
