"""A TCP proxy that tests can cut: the network between a device and its broker, in-process.

Outage tests need the link to fail the way a real one does, without stopping the broker (the
hub and other devices keep it) or killing the device: :meth:`TcpProxy.cut` closes every
connection through the proxy and refuses new ones until :meth:`TcpProxy.restore`. A hub that
restarts on another port is followed with :meth:`TcpProxy.retarget`.

Example::

    async with TcpProxy("127.0.0.1", broker_port) as proxy:
        device = connect(proxy.host, proxy.port)
        proxy.cut()       # the device sees its connection drop, then refused reconnections
        proxy.restore()   # and gets through again
"""

from __future__ import annotations

import asyncio
import contextlib
from types import TracebackType
from typing import Final, Self

__all__ = ["TcpProxy"]

_CHUNK: Final = 65536


class TcpProxy:
    """Forwards connections on a free local port to ``target_host:target_port``."""

    def __init__(self, target_host: str, target_port: int, *, capture: bool = False) -> None:
        self.target = (target_host, target_port)
        self.captured = bytearray()
        """With ``capture``: every byte that went through, both ways (what a wiretap sees)."""
        self._capture = capture
        self.host = "127.0.0.1"
        self.port = 0
        self.connections = 0  # accepted and forwarded so far
        self.refused = 0  # closed at once: cut, or the target unreachable
        self._server: asyncio.Server | None = None
        self._cut = False
        self._pipes: set[asyncio.Task[None]] = set()
        self._writers: set[asyncio.StreamWriter] = set()

    async def __aenter__(self) -> Self:
        self._server = await asyncio.start_server(self._accept, self.host, 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.cut()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
        for task in list(self._pipes):
            task.cancel()
        await asyncio.gather(*self._pipes, return_exceptions=True)

    @property
    def url(self) -> str:
        """``mqtt://host:port`` of the proxy."""
        return f"mqtt://{self.host}:{self.port}"

    def cut(self) -> None:
        """Close every forwarded connection (both ends) and refuse new ones."""
        self._cut = True
        for writer in list(self._writers):
            writer.transport.abort()
        self._writers.clear()

    def restore(self) -> None:
        """Forward new connections again."""
        self._cut = False

    def retarget(self, host: str, port: int) -> None:
        """Forward new connections to another address (a hub restarted on another port)."""
        self.target = (host, port)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self._cut:
            self.refused += 1
            writer.transport.abort()
            return
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:
            self.refused += 1
            writer.transport.abort()
            return
        if self._cut:  # cut while connecting upstream
            self.refused += 1
            writer.transport.abort()
            up_writer.transport.abort()
            return
        self.connections += 1
        self._writers.update((writer, up_writer))
        for source, sink in ((reader, up_writer), (up_reader, writer)):
            task = asyncio.create_task(self._pipe(source, sink, writer, up_writer))
            self._pipes.add(task)
            task.add_done_callback(self._pipes.discard)

    async def _pipe(
        self,
        source: asyncio.StreamReader,
        sink: asyncio.StreamWriter,
        *ends: asyncio.StreamWriter,
    ) -> None:
        """Copy one direction; when either side ends, close both ends."""
        try:
            while data := await source.read(_CHUNK):
                if self._capture:
                    self.captured += data
                sink.write(data)
                await sink.drain()
        except (OSError, asyncio.IncompleteReadError):
            pass
        finally:
            for end in ends:
                self._writers.discard(end)
                with contextlib.suppress(RuntimeError):  # loop closing
                    end.transport.abort()
