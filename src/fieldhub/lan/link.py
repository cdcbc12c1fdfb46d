"""One authenticated link: requests and replies in both directions, and heartbeats.

Either side may start an exchange (seed 001: the home server and the controller each ask the
other): a request ``{"t": "req", "id": n, "op": ..., ...}`` is answered by
``{"t": "res", "id": n, "ok": true, ...}`` or ``{"t": "res", "id": n, "ok": false, "error": ...}``.
Ids are the asker's own; the two directions never mix them up since each side matches replies
only to requests it sent. A side that has sent nothing for a heartbeat interval sends
``{"t": "hb"}``; a side that has received nothing for three intervals declares the link lost.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
from collections.abc import Awaitable, Callable
from typing import Any, Final

from fieldhub.lan.framing import PLAIN, FrameError, decode_json, encode_json, pack_frame, read_frame
from fieldhub.lan.session import AuthError, Session

__all__ = ["Handler", "Link", "LinkLost", "RequestFailed", "read_plain", "send_plain"]

log = logging.getLogger(__name__)

Handler = Callable[[str, dict[str, Any]], Awaitable[dict[str, Any]]]
"""Answers one request of the peer: (op, request body) → reply fields; raises
:class:`RequestFailed` to refuse."""

MISSED_HEARTBEATS: Final = 3


class LinkLost(Exception):
    """The link ended; ``reason`` is a counter name (``bad_tag``, ``closed``, …) and the
    message says what happened, for logs and the hub."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason


class RequestFailed(Exception):
    """A request the peer refused, or that a handler refuses; the message is the peer's."""


def send_plain(writer: asyncio.StreamWriter, body: dict[str, Any]) -> None:
    """Send a plain frame (hello and pairing only)."""
    writer.write(pack_frame(PLAIN + encode_json(body)))


async def read_plain(reader: asyncio.StreamReader, timeout_s: float) -> dict[str, Any]:
    """The next frame, which must be a plain one.

    Raises:
        FrameError: it is not a plain JSON object.
        TimeoutError, asyncio.IncompleteReadError: nothing came, or the peer closed.
    """
    async with asyncio.timeout(timeout_s):
        payload = await read_frame(reader)
    if payload[:1] != PLAIN:
        raise FrameError("an authenticated frame where a plain one is due")
    return decode_json(payload[1:])


class Link:
    """An authenticated link over one TCP connection, once the hello (and pairing) is done."""

    def __init__(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        session: Session,
        *,
        heartbeat_s: float,
    ) -> None:
        self._reader = reader
        self._writer = writer
        self._session = session
        self._heartbeat_s = heartbeat_s
        self._ids = itertools.count(1)
        self._waiting: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self._handlers: set[asyncio.Task[None]] = set()
        self._sent_at = 0.0
        self._closed = False

    @property
    def peer(self) -> str:
        """The peer's ``host:port``."""
        host, port = self._writer.get_extra_info("peername")[:2]
        return f"{host}:{port}"

    def send(self, body: dict[str, Any]) -> None:
        """Send one authenticated frame (sealing and writing in one step keeps the counters in
        the order the frames go out)."""
        if self._closed:
            raise LinkLost("closed", "the link is closed")
        self._writer.write(pack_frame(self._session.seal(body)))
        self._sent_at = asyncio.get_running_loop().time()

    async def request(self, op: str, body: dict[str, Any], timeout_s: float) -> dict[str, Any]:
        """Ask the peer and wait for its reply.

        Raises:
            RequestFailed: the peer refused (its error).
            TimeoutError: no reply within ``timeout_s``.
            LinkLost: the link ended first.
        """
        request_id = next(self._ids)
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._waiting[request_id] = future
        try:
            self.send({**body, "t": "req", "id": request_id, "op": op})
            async with asyncio.timeout(timeout_s):
                reply = await future
        finally:
            self._waiting.pop(request_id, None)
        if reply.get("ok") is not True:
            raise RequestFailed(str(reply.get("error", "refused")))
        return reply

    async def serve(self, handler: Handler) -> None:
        """Read the peer's frames until the link ends; answer its requests with ``handler``.

        Raises:
            LinkLost: always, saying why the link ended.
        """
        heartbeat = asyncio.create_task(self._beat())
        try:
            while True:
                body = await self._next_body()
                kind = body.get("t")
                if kind == "res":
                    future = self._waiting.get(body.get("id"))  # type: ignore[arg-type]
                    if future is not None and not future.done():
                        future.set_result(body)
                elif kind == "req":
                    task = asyncio.create_task(self._answer(handler, body))
                    self._handlers.add(task)
                    task.add_done_callback(self._handlers.discard)
        finally:
            heartbeat.cancel()
            await self.close()

    async def close(self) -> None:
        """End the link: pending requests fail with :class:`LinkLost`, handlers are cancelled."""
        if self._closed:
            return
        self._closed = True
        for future in self._waiting.values():
            if not future.done():
                future.set_exception(LinkLost("closed", "the link ended before the reply"))
        for task in list(self._handlers):
            task.cancel()
        self._writer.close()
        with contextlib.suppress(OSError):
            await self._writer.wait_closed()

    async def _next_body(self) -> dict[str, Any]:
        timeout = self._heartbeat_s * MISSED_HEARTBEATS
        try:
            async with asyncio.timeout(timeout):
                payload = await read_frame(self._reader)
            return self._session.open(payload)
        except AuthError as exc:
            raise LinkLost(exc.reason, str(exc)) from None
        except FrameError as exc:
            raise LinkLost("bad_frame", str(exc)) from None
        except TimeoutError:
            raise LinkLost("silent", f"nothing heard for {timeout:g} s") from None
        except (asyncio.IncompleteReadError, OSError):
            raise LinkLost("closed", "the peer closed the connection") from None

    async def _answer(self, handler: Handler, body: dict[str, Any]) -> None:
        op = body.get("op")
        try:
            if not isinstance(op, str):
                raise RequestFailed("`op` must be a string")
            reply = {"ok": True, **await handler(op, body)}
        except RequestFailed as exc:
            reply = {"ok": False, "error": str(exc)}
        with contextlib.suppress(LinkLost, OSError):
            try:
                self.send({**reply, "t": "res", "id": body.get("id")})
            except FrameError as exc:  # an answer over the frame bound: say so instead
                self.send({"t": "res", "id": body.get("id"), "ok": False, "error": str(exc)})

    async def _beat(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(self._heartbeat_s / 2)
            if loop.time() - self._sent_at >= self._heartbeat_s / 2:
                with contextlib.suppress(LinkLost, OSError):
                    self.send({"t": "hb"})
