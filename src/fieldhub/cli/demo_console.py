"""The demo's notification receiver: a webhook on 127.0.0.1 that prints to the console.

So that a newcomer sees a notification without setting up a mail server or a chat hook, the
demo runs this tiny HTTP server in its own process, makes (or points) the webhook channel
``demo console`` at it, and prints one line per notification::

    notification: [MAJOR] Cabinet too hot on demo-002: raised

It checks what a real receiver should (``docs/notifications.md``): the HMAC signature over
timestamp and body with the channel's secret, and a timestamp no older than five minutes.
Anything else is refused (401, 400, 413) and counted in :attr:`DemoConsole.refused`. The
secret is made anew at each start and written into the channel with the new address, so it
never needs to be kept on disk.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import secrets
import time
from collections.abc import Callable
from typing import Any, Final

from fieldhub.logescape import escape

__all__ = ["CHANNEL_NAME", "DemoConsole", "point_channel"]

CHANNEL_NAME: Final = "demo console"
MAX_BODY: Final = 64 * 1024
"""A notification's JSON is a few hundred bytes; anything much larger is not one."""
MAX_HEADERS: Final = 64
MAX_AGE_S: Final = 300
REQUEST_TIMEOUT_S: Final = 10.0


class _Refusal(Exception):
    """A request the receiver does not accept (its HTTP status and why)."""

    def __init__(self, status: str, why: str) -> None:
        super().__init__(why)
        self.status = status


class DemoConsole:
    """An HTTP server on 127.0.0.1 (a free port) that accepts signed webhook notifications.

    Use as ``async with DemoConsole(say) as console: ...``; :attr:`url` is where it listens.

    Args:
        say: called with each line to print (``notification: <subject>``), on the event loop.
        secret: the channel's signing secret (a new random one by default).
        clock: epoch seconds, for the timestamp's age.
    """

    def __init__(
        self,
        say: Callable[[str], None],
        *,
        secret: str | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.secret = secret or secrets.token_urlsafe(32)
        self.refused = 0
        self.received = 0
        self._say = say
        self._clock = clock
        self._server: asyncio.Server | None = None
        self._seen: dict[str, None] = {}  # delivery ids, oldest first (a retry prints once)

    @property
    def url(self) -> str:
        """``http://127.0.0.1:<port>/``."""
        if self._server is None:
            raise RuntimeError("the demo console is not started")
        port = self._server.sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{port}/"

    async def __aenter__(self) -> DemoConsole:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """One request per connection (answered with ``Connection: close``)."""
        try:
            try:
                async with asyncio.timeout(REQUEST_TIMEOUT_S):
                    status = await self._handle(reader)
            except _Refusal as refusal:
                self.refused += 1
                status = refusal.status
            writer.write(
                f"HTTP/1.1 {status}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".encode()
            )
            await writer.drain()
        except (TimeoutError, ConnectionError, asyncio.IncompleteReadError, ValueError):
            self.refused += 1  # cut off, too slow or a line past the reader's limit
        finally:
            writer.close()

    async def _handle(self, reader: asyncio.StreamReader) -> str:
        method, _, _ = (await reader.readline()).decode("latin-1").partition(" ")
        headers: dict[str, str] = {}
        for _ in range(MAX_HEADERS + 1):
            line = (await reader.readline()).decode("latin-1").strip()
            if not line:
                break
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        else:
            raise _Refusal("431 Request Header Fields Too Large", "too many headers")
        if method != "POST":
            raise _Refusal("405 Method Not Allowed", f"method {method!r}")
        try:
            length = int(headers.get("content-length", ""))
        except ValueError:
            raise _Refusal("411 Length Required", "no Content-Length") from None
        if not 0 <= length <= MAX_BODY:
            raise _Refusal("413 Content Too Large", f"Content-Length {length}")
        body = await reader.readexactly(length)
        self._verify(headers, body)
        delivery = headers.get("x-fieldhub-delivery", "")
        if delivery in self._seen:
            return "204 No Content"  # the hub sent it again (at least once): printed already
        try:
            subject = json.loads(body)["subject"]
        except (ValueError, KeyError, TypeError):
            raise _Refusal("400 Bad Request", "not a notification's JSON") from None
        self._seen[delivery] = None
        if len(self._seen) > 1000:
            del self._seen[next(iter(self._seen))]
        self.received += 1
        self._say(f"notification: {escape(str(subject))[:300]}")  # one line, whatever it says
        return "204 No Content"

    def _verify(self, headers: dict[str, Any], body: bytes) -> None:
        """The signature and the timestamp's age, as ``docs/notifications.md`` says."""
        from fieldhub.hub.notify.channels.webhook import sign

        timestamp = headers.get("x-fieldhub-timestamp", "")
        try:
            age = abs(self._clock() - int(timestamp))
        except ValueError:
            raise _Refusal("401 Unauthorized", f"timestamp {timestamp[:32]!r}") from None
        if age > MAX_AGE_S:
            raise _Refusal("401 Unauthorized", f"timestamp {age:.0f} s old")
        expected = sign(self.secret, timestamp, body)
        if not hmac.compare_digest(expected, headers.get("x-fieldhub-signature", "")):
            raise _Refusal("401 Unauthorized", "bad signature")


async def point_channel(hub: Any, url: str, secret: str) -> bool:
    """Make the webhook channel ``demo console`` send to ``url`` signed with ``secret``:
    created on a new data folder (with a hub-wide subscription: every alarm raised and
    cleared), else changed in place (enabled or not, as the user left it).

    Args:
        hub: the running hub (``fieldhub.hub.app.Hub``).
        url: where the channel sends.
        secret: what it signs with.

    Returns:
        False when a channel of another kind has that name (the user's own: left alone).
    """
    config = {"url": url, "secret": secret}
    for channel in await hub.notifications.channels():
        if channel.name == CHANNEL_NAME:
            if channel.kind != "webhook":
                return False
            await hub.notifications.update_channel(channel.id, config=config, actor="demo")
            return True
    channel = await hub.notifications.create_channel(CHANNEL_NAME, "webhook", config, actor="demo")
    # Hub-wide: the console hears every alarm raised and cleared, whoever is signed in.
    await hub.notifications.subscriptions.subscribe_hub_wide(channel.id, actor="demo")
    return True
