"""A small HTTP/1.1 server on asyncio streams and h11, for the technician page.

Why not uvicorn and Starlette, as the hub uses: on the agent every megabyte counts (target:
30 MB for the whole process). Measured on this machine, importing and serving one page with
uvicorn + Starlette costs about 9.7 MB of RSS; this server with h11 (already installed, as
uvicorn's parser) costs about 0.5 MB. A page for one technician at a time needs none of
ASGI's generality.

Limits are explicit, because the page faces the site's LAN: at most ``max_connections`` at
once (more are closed at once), requests up to 8 KiB of headers and ``max_body`` bytes of body,
``timeout_s`` to send a request and between requests on a kept-alive connection.

h11 is imported by the first connection, not with this module: listening needs only asyncio,
and an agent that no technician visits does not carry h11 (about 0.2 MB of RSS;
``web/auth.py`` says why the page's imports wait).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from types import TracebackType
from typing import TYPE_CHECKING, Final, Self
from urllib.parse import parse_qsl, urlsplit

if TYPE_CHECKING:
    import ssl  # only a caller serving https has imported it (and pays for OpenSSL)

    import h11

__all__ = ["Handler", "HttpServer", "Request", "Response"]

log = logging.getLogger(__name__)

_MAX_HEADERS: Final = 8 * 1024
_READ: Final = 4096


@dataclass(frozen=True, slots=True)
class Request:
    """One request: header names lower-cased, the last of repeated headers wins."""

    method: str
    path: str
    query: Mapping[str, str]
    headers: Mapping[str, str]
    body: bytes
    client: str
    secure: bool

    def form(self) -> dict[str, str]:
        """The body as an ``application/x-www-form-urlencoded`` form (last value wins);
        empty when it has more than 64 fields (no form of the page has)."""
        try:
            return dict(parse_qsl(self.body.decode("utf-8", errors="replace"), max_num_fields=64))
        except ValueError:
            return {}


@dataclass(frozen=True, slots=True)
class Response:
    """What to answer; ``Content-Length`` is added."""

    status: int
    body: bytes = b""
    headers: list[tuple[str, str]] = field(default_factory=list)


Handler = Callable[[Request], Awaitable[Response]]


class _TooLarge(Exception):
    pass


class HttpServer:
    """Serves ``handler`` on ``host:port`` while entered (``port=0`` picks a free one).

    Args:
        handler: answers a request; if it raises, the client gets a 500 and the error is
            logged.
        ssl_context: serve https instead of http.
    """

    def __init__(
        self,
        handler: Handler,
        host: str,
        port: int,
        *,
        ssl_context: ssl.SSLContext | None = None,
        max_connections: int = 16,
        max_body: int = 8 * 1024,
        timeout_s: float = 10.0,
    ) -> None:
        self._handler = handler
        self._host, self._port = host, port
        self._ssl = ssl_context
        self._max_connections = max_connections
        self._max_body = max_body
        self._timeout_s = timeout_s
        self._server: asyncio.Server | None = None
        self._connections: set[asyncio.Task[None]] = set()

    @property
    def port(self) -> int:
        """The port listened on (the chosen one, when started with 0)."""
        if self._server is None or not self._server.sockets:
            raise RuntimeError("HttpServer is not started.")
        port: int = self._server.sockets[0].getsockname()[1]
        return port

    async def __aenter__(self) -> Self:
        self._server = await asyncio.start_server(
            self._connection, self._host, self._port, ssl=self._ssl, backlog=16
        )
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        server, self._server = self._server, None
        if server is None:
            return
        server.close()
        connections, self._connections = self._connections, set()
        for task in connections:
            task.cancel()
        await asyncio.gather(*connections, return_exceptions=True)
        await server.wait_closed()

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is None or len(self._connections) >= self._max_connections:
            writer.close()
            return
        self._connections.add(task)
        peer = writer.get_extra_info("peername")
        client = str(peer[0]) if isinstance(peer, tuple) else "local"
        import h11  # at the first connection (module docstring)

        conn = h11.Connection(h11.SERVER, max_incomplete_event_size=_MAX_HEADERS)
        try:
            await self._serve(conn, reader, writer, client)
        except (ConnectionError, TimeoutError, h11.ProtocolError):
            pass  # the client went away, stalled, or spoke badly; nothing to tell anyone
        except asyncio.CancelledError:
            # The server is closing. Ending quietly, not cancelled: asyncio (3.11) calls
            # task.exception() on this task, which would raise and log for a cancelled one.
            pass
        finally:
            self._connections.discard(task)
            writer.close()
            with contextlib.suppress(ConnectionError, TimeoutError):
                async with asyncio.timeout(1.0):
                    await writer.wait_closed()

    async def _serve(
        self,
        conn: h11.Connection,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        client: str,
    ) -> None:
        import h11  # imported by _connection already

        while True:
            try:
                request = await self._read(conn, reader, client)
            except h11.RemoteProtocolError as exc:
                await self._send(conn, writer, Response(exc.error_status_hint, b"bad request"))
                return
            except _TooLarge:
                await self._send(conn, writer, Response(413, b"request too large"))
                return
            if request is None:
                return
            try:
                response = await self._handler(request)
            except Exception:  # a page bug must not take the agent down; the log says what
                log.exception("technician page: %s %s failed", request.method, request.path)
                response = Response(500, b"internal error")
            await self._send(conn, writer, response)
            if conn.our_state is not h11.DONE or conn.their_state is not h11.DONE:
                return
            conn.start_next_cycle()

    async def _read(
        self, conn: h11.Connection, reader: asyncio.StreamReader, client: str
    ) -> Request | None:
        import h11  # imported by _connection already

        head: h11.Request | None = None
        body = bytearray()
        async with asyncio.timeout(self._timeout_s):
            while True:
                event = conn.next_event()
                if event is h11.NEED_DATA:
                    conn.receive_data(await reader.read(_READ))
                elif isinstance(event, h11.Request):
                    head = event
                    length = dict(event.headers).get(b"content-length", b"0")
                    if length.isdigit() and int(length) > self._max_body:
                        raise _TooLarge
                elif isinstance(event, h11.Data):
                    body += event.data
                    if len(body) > self._max_body:
                        raise _TooLarge
                elif isinstance(event, h11.EndOfMessage) and head is not None:
                    return _request(head, bytes(body), client, self._ssl is not None)
                else:  # ConnectionClosed (or PAUSED, which a server never sees here)
                    return None

    async def _send(
        self, conn: h11.Connection, writer: asyncio.StreamWriter, response: Response
    ) -> None:
        import h11  # imported by _connection already

        if conn.our_state is not h11.SEND_RESPONSE:
            return
        headers = [*response.headers, ("Content-Length", str(len(response.body)))]
        writer.write(conn.send(h11.Response(status_code=response.status, headers=headers)))
        writer.write(conn.send(h11.Data(data=response.body)))
        writer.write(conn.send(h11.EndOfMessage()))
        async with asyncio.timeout(self._timeout_s):
            await writer.drain()


def _request(head: h11.Request, body: bytes, client: str, secure: bool) -> Request:
    target = urlsplit(head.target.decode("ascii", errors="replace"))
    headers = {name.decode("latin-1"): value.decode("latin-1") for name, value in head.headers}
    return Request(
        method=head.method.decode("ascii"),
        path=target.path or "/",
        query=dict(parse_qsl(target.query, max_num_fields=32)),
        headers=headers,
        body=body,
        client=client,
        secure=secure,
    )
