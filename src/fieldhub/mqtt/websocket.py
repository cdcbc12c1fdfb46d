"""MQTT over WebSocket (``ws://``, ``wss://``): the same MQTT bytes, carried in binary frames.

Devices behind firewalls that pass only HTTPS reach the broker through nginx's ``/mqtt``
location (deploy/nginx/fieldhub.conf). MQTT over WebSocket is a byte stream like TCP (MQTT
3.1.1 §6): the subprotocol is ``mqtt``, every frame is binary, and a packet may span frames or
share one. So the MQTT side need not know: :class:`WebSocketTunnel` is an ``asyncio.Protocol``
on the TCP (or TLS) connection that speaks the WebSocket handshake and framing, and hands the
MQTT protocol inside (the client's connection, or the embedded broker's stream reader) a
transport of its own, :class:`_FramedTransport`, through which it reads and writes plain bytes.

The inner protocol sees the connection only once the handshake succeeded, so a client sends
its CONNECT (and the device's secret) only to a WebSocket server that accepted ``mqtt``; a
refused handshake fails the connection with the server's answer
(:class:`WebSocketRefused`). The WebSocket protocol itself is the ``websockets`` library's
sans-I/O implementation (the one uvicorn already serves ``/api/live`` with), imported only by
programs that use a ``ws://`` URL or listener: it costs about 5 MB of RSS on import.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any, Final

from websockets.client import ClientProtocol
from websockets.frames import Opcode
from websockets.http11 import Request, Response
from websockets.protocol import Protocol, State
from websockets.server import ServerProtocol
from websockets.typing import Subprotocol
from websockets.uri import parse_uri

from fieldhub.mqtt.packets import MqttError

__all__ = ["SUBPROTOCOL", "HandshakeRefused", "WebSocketRefused", "WebSocketTunnel"]

SUBPROTOCOL: Final = Subprotocol("mqtt")
"""MQTT 3.1.1 §6: the WebSocket subprotocol both sides must agree on."""

_FRAME_BYTES: Final = 64 * 1024
"""Writes larger than this go out in several frames: the receiver buffers a frame whole before
it sees a byte of it, so frames stay small however much MQTT a flush carries."""
_MAX_FRAME_BYTES: Final = 1 << 20
"""Largest frame taken from the peer (websockets' default); we send at most 64 KiB."""
_PROTOCOL_LOG: Final = logging.getLogger(__name__ + ".protocol")
"""websockets logs every connection opened or refused at INFO: a broker with a fleet on it
would log each device's reconnection. Kept at WARNING unless configured otherwise."""
if _PROTOCOL_LOG.level == logging.NOTSET:
    _PROTOCOL_LOG.setLevel(logging.WARNING)


class WebSocketRefused(MqttError):
    """The WebSocket handshake failed: not a WebSocket server there, a wrong path, no ``mqtt``
    subprotocol, or a proxy that refused the upgrade. The message says which."""


HandshakeRefused = Callable[[str, str], None]
"""``refused(peer, why)``: a server's tunnel refused a handshake (for the broker's counters)."""


class WebSocketTunnel(asyncio.Protocol):
    """One WebSocket connection carrying the byte stream of ``inner`` (an MQTT protocol).

    Use :meth:`client` to dial a broker and :meth:`server` for a broker's listener; both return
    the protocol to give ``loop.create_connection`` or ``loop.create_server``.
    """

    def __init__(
        self,
        ws: Protocol,
        inner: asyncio.Protocol,
        *,
        path: str,
        refused: HandshakeRefused | None = None,
    ) -> None:
        self._ws = ws
        self._inner = inner
        self._path = path
        self._refused = refused
        self._transport: asyncio.Transport | None = None
        self._framed: _FramedTransport | None = None  # set once the handshake succeeded
        self._error: BaseException | None = None

    @classmethod
    def client(
        cls, inner: asyncio.Protocol, host: str, port: int, path: str, tls: object | None
    ) -> WebSocketTunnel:
        """A tunnel that asks ``host:port`` for ``path`` with the ``mqtt`` subprotocol
        (``wss`` when the connection has a TLS context ``tls``; the scheme decides only the
        Host header here, TLS itself is the TCP connection's business)."""
        netloc = f"[{host}]" if ":" in host else host
        uri = parse_uri(f"{'wss' if tls is not None else 'ws'}://{netloc}:{port}{path}")
        ws = ClientProtocol(
            uri, subprotocols=[SUBPROTOCOL], max_size=_MAX_FRAME_BYTES, logger=_PROTOCOL_LOG
        )
        return cls(ws, inner, path=path)

    @classmethod
    def server(
        cls, inner: asyncio.Protocol, *, path: str, refused: HandshakeRefused
    ) -> WebSocketTunnel:
        """A tunnel that accepts upgrades to ``path`` asking for ``mqtt``, and refuses others
        (each refusal told to ``refused``)."""
        ws = ServerProtocol(
            subprotocols=[SUBPROTOCOL], max_size=_MAX_FRAME_BYTES, logger=_PROTOCOL_LOG
        )
        return cls(ws, inner, path=path, refused=refused)

    # asyncio.Protocol, on the TCP (or TLS) connection

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]  # a stream transport
        if isinstance(self._ws, ClientProtocol):
            self._ws.send_request(self._ws.connect())
            self._send()

    def data_received(self, data: bytes) -> None:
        self._ws.receive_data(data)
        self._handle_events()

    def eof_received(self) -> bool:
        self._ws.receive_eof()
        self._handle_events()
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        error = self._error or exc
        if self._framed is None and error is None:
            error = WebSocketRefused("the WebSocket connection closed during its handshake")
        self._inner.connection_lost(error)  # type: ignore[arg-type]  # an MqttError or OSError

    def pause_writing(self) -> None:
        if self._framed is not None:
            self._inner.pause_writing()

    def resume_writing(self) -> None:
        if self._framed is not None:
            self._inner.resume_writing()

    # the WebSocket side

    def _handle_events(self) -> None:
        ws = self._ws
        for event in ws.events_received():
            if isinstance(event, Request):
                self._answer(event)
            elif isinstance(event, Response):
                self._opened_as_client(event)
            elif event.opcode in (Opcode.BINARY, Opcode.CONT) and self._framed is not None:
                if event.data:
                    self._inner.data_received(bytes(event.data))
            elif event.opcode is Opcode.TEXT:
                self._error = MqttError("the peer sent a text frame; MQTT travels in binary ones")
                ws.fail(1003, "MQTT needs binary frames")
        if ws.handshake_exc is not None and self._error is None:
            self._error = WebSocketRefused(f"WebSocket handshake refused: {ws.handshake_exc}")
            self._tell_refused(str(ws.handshake_exc))
        self._send()

    def _tell_refused(self, why: str) -> None:
        if self._refused is not None and self._transport is not None:
            peer = self._transport.get_extra_info("peername")
            self._refused(f"{peer[0]}:{peer[1]}" if peer else "?", why)

    def _answer(self, request: Request) -> None:
        """The server's side of the handshake: the path and subprotocol, else a refusal."""
        ws = self._ws
        assert isinstance(ws, ServerProtocol)
        if request.path.partition("?")[0] != self._path:
            response = ws.reject(404, f"MQTT over WebSocket is served at {self._path}\n")
        else:
            response = ws.accept(request)
            if response.status_code == 101 and ws.subprotocol != SUBPROTOCOL:
                response = ws.reject(400, "ask for the WebSocket subprotocol mqtt\n")
        ws.send_response(response)
        if response.status_code == 101:
            self._open()
        else:
            self._error = WebSocketRefused(f"HTTP {response.status_code} {response.reason_phrase}")
            self._tell_refused(
                f"WebSocket handshake refused ({response.status_code}): path {request.path!r}, "
                f"subprotocols {request.headers.get('Sec-WebSocket-Protocol')!r}"
            )

    def _opened_as_client(self, response: Response) -> None:
        ws = self._ws
        if ws.state is not State.OPEN:
            return  # refused: handshake_exc says why (read after the events)
        if ws.subprotocol != SUBPROTOCOL:
            agreed = response.headers.get("Sec-WebSocket-Protocol")
            self._error = WebSocketRefused(
                f"the WebSocket server did not agree to the mqtt subprotocol (it said {agreed!r})"
            )
            ws.fail(1002, "the mqtt subprotocol is required")
            return
        self._open()

    def _open(self) -> None:
        assert self._transport is not None
        self._framed = _FramedTransport(self, self._transport)
        self._inner.connection_made(self._framed)

    def _send(self) -> None:
        """Write what the WebSocket protocol has for the peer; its empty chunk means "close"."""
        transport = self._transport
        if transport is None:
            return
        for chunk in self._ws.data_to_send():
            if chunk:
                transport.write(chunk)
            elif not transport.is_closing():
                if transport.can_write_eof():
                    transport.write_eof()
                else:
                    transport.close()
        if self._ws.close_expected() and self._ws.state is State.CLOSED:
            transport.close()

    # called by the framed transport

    def write(self, data: bytes) -> None:
        ws = self._ws
        if ws.state is not State.OPEN:
            return
        for start in range(0, len(data), _FRAME_BYTES):
            ws.send_binary(data[start : start + _FRAME_BYTES])
        self._send()

    def close(self) -> None:
        """A close frame; the peer answers with its own and ends the TCP connection."""
        if self._ws.state is State.OPEN:
            self._ws.send_close(1000)
            self._send()
        elif self._transport is not None:
            self._transport.close()

    @property
    def closing(self) -> bool:
        transport = self._transport
        return self._ws.state is not State.OPEN or transport is None or transport.is_closing()


class _FramedTransport(asyncio.Transport):
    """What the inner MQTT protocol writes to and reads from: bytes in, frames out.

    Flow control and the socket are the TCP connection's: pausing reading pauses the socket,
    and the TCP transport's buffer limits decide when the inner protocol must stop writing.
    """

    def __init__(self, tunnel: WebSocketTunnel, transport: asyncio.Transport) -> None:
        super().__init__({"websocket": True})
        self._tunnel = tunnel
        self._transport = transport

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        if name == "websocket":
            return True
        return self._transport.get_extra_info(name, default)

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self._tunnel.write(bytes(data))

    def is_closing(self) -> bool:
        return self._tunnel.closing

    def close(self) -> None:
        self._tunnel.close()

    def abort(self) -> None:
        self._transport.abort()

    def can_write_eof(self) -> bool:
        return False  # a close frame ends the stream: see close()

    def write_eof(self) -> None:
        raise NotImplementedError("MQTT over WebSocket ends with close(), not a half-close")

    def is_reading(self) -> bool:
        return self._transport.is_reading()

    def pause_reading(self) -> None:
        self._transport.pause_reading()

    def resume_reading(self) -> None:
        self._transport.resume_reading()

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        self._transport.set_write_buffer_limits(high, low)

    def get_write_buffer_size(self) -> int:
        return self._transport.get_write_buffer_size()

    def get_write_buffer_limits(self) -> tuple[int, int]:
        return self._transport.get_write_buffer_limits()
