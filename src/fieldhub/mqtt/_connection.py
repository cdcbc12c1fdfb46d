"""The MQTT client's TCP connection: one ``asyncio.Protocol`` that parses, dispatches,
coalesces writes and keeps the connection alive.

It belongs to :class:`~fieldhub.mqtt.client.MqttClient`, which creates one per connection,
and calls back into it for everything that outlives a connection (QoS 1 bookkeeping,
SUBACKs, counters, reconnecting).
"""

from __future__ import annotations

import asyncio
import socket
import time
from typing import TYPE_CHECKING, Final, cast

from fieldhub.mqtt import packets
from fieldhub.mqtt.packets import MqttError, MqttProtocolError

if TYPE_CHECKING:
    from fieldhub.mqtt.client import MqttClient

_KEEPALIVE_GRACE: Final = 1.5
"""A broker silent for this many keep-alive periods is taken for dead (MQTT 3.1.1 §3.1.2.10
asks the same of the broker for its clients)."""

_PING_AFTER: Final = 0.75
"""Ping when nothing was sent (or received) for this fraction of the keep-alive: the checks
run every quarter period, so a ping is out by 1.0 x keep-alive at the latest and a broker
that enforces 1.5 x never has reason to drop us."""
_TICKS_PER_KEEPALIVE: Final = 4
_WRITE_HIGH_WATER: Final = 1 << 20
"""Bytes waiting for the broker above which QoS 0 publishes are dropped (and counted)."""
_PUBLISH_BITS: Final = 0x30


class _Connection(asyncio.Protocol):
    """One TCP connection to the broker: parse, dispatch, coalesce writes, keep alive.

    Outgoing packets collect in ``_out`` and go to the transport in one write: at the end of
    ``data_received`` (the PUBACKs of every message of the chunk, and whatever the callbacks
    published) or, for packets sent from elsewhere, once per event loop iteration.
    """

    def __init__(self, client: MqttClient, connect_packet: bytes) -> None:
        self._client = client
        self._connect_packet = connect_packet
        self._loop = asyncio.get_running_loop()
        self.connack: asyncio.Future[bool] = self._loop.create_future()
        self._closed: asyncio.Future[None] = self._loop.create_future()
        self._transport: asyncio.Transport | None = None
        self._ready = False  # CONNACK accepted
        self._rest = b""  # bytes of an incomplete packet, or held back while paused
        self._out: list[bytes] = []
        self._flush_scheduled = False
        self._error: BaseException | None = None
        self._discard = False  # DISCONNECT sent: nothing more is delivered
        self.write_paused = False
        self._keepalive_s = 0
        self._timer: asyncio.TimerHandle | None = None
        self._ping_outstanding = False
        self._last_sent = self._last_received = time.monotonic()

    @property
    def lost(self) -> bool:
        """True once the transport is gone."""
        return self._closed.done()

    # asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)
        sock: socket.socket | None = transport.get_extra_info("socket")
        if sock is not None:
            # asyncio sets this already on TCP; stated here because it matters: a lone PUBACK
            # must not wait for Nagle's algorithm.
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._transport.set_write_buffer_limits(high=_WRITE_HIGH_WATER)
        self._transport.write(self._connect_packet)
        self._client.stats.writes += 1

    def data_received(self, data: bytes) -> None:
        if self._discard:
            return
        self._last_received = time.monotonic()
        if self._rest:
            data = self._rest + data
        self._flush_scheduled = True  # send() need not schedule: we flush below
        try:
            self._rest = self._parse(data)
        except MqttError as exc:
            self._rest = b""
            self.fail(exc)
            return
        self.flush()
        if self._client._paused and self._ready:
            self.pause_reading()

    def eof_received(self) -> bool:
        return False  # the broker hung up: close our side too (then connection_lost)

    def pause_writing(self) -> None:
        self.write_paused = True

    def resume_writing(self) -> None:
        self.write_paused = False

    def connection_lost(self, exc: Exception | None) -> None:
        if self._timer is not None:
            self._timer.cancel()
        error = self._error or exc
        if not self.connack.done():
            self.connack.set_exception(
                error or MqttError(f"MQTT broker {self._client.address} closed before CONNACK")
            )
        if not self._closed.done():
            self._closed.set_result(None)
        self._client._connection_lost(self, error)

    # reading

    def _parse(self, data: bytes) -> bytes:
        """Dispatch every complete packet in ``data``; return what is left for later."""
        client = self._client
        on_message = client._on_message
        out = self._out
        read_header = packets.read_fixed_header
        parse_publish = packets.parse_publish
        puback = packets.puback
        received = 0
        pos = 0
        try:
            while (header := read_header(data, pos)) is not None:
                first, start, end = header
                if first & 0xF0 == _PUBLISH_BITS and self._ready:
                    if client._paused:
                        break
                    topic, packet_id, payload_start = parse_publish(data, first, start, end)
                    if packet_id:
                        out.append(puback(packet_id))
                    try:
                        name = topic.decode()
                    except UnicodeDecodeError:
                        client._invalid_topic(topic)
                    else:
                        received += 1
                        try:
                            on_message(name, data[payload_start:end])
                        except Exception as exc:  # a callback bug must not cost the connection
                            client._callback_failed(exc)
                else:
                    self._control(first, data[start:end])
                pos = end
        finally:
            client.stats.received += received
        return data[pos:]

    def _control(self, first: int, body: bytes) -> None:
        """Everything but an accepted connection's PUBLISH."""
        if not self._ready:
            if first != packets.CONNACK << 4:
                raise MqttProtocolError(f"expected CONNACK, got packet 0x{first:02x}")
            _session_present, code = packets.parse_connack(body)
            if code:
                raise packets.ConnectRefused(code, f"MQTT broker {self._client.address}")
            self._ready = True
            self.connack.set_result(_session_present)
        elif first == packets.PUBACK << 4:
            self._client._puback(packets.parse_puback(body))
        elif first == packets.SUBACK << 4:
            self._client._suback(*packets.parse_suback(body))
        elif first == packets.PINGRESP << 4 and not body:
            self._ping_outstanding = False
        else:
            raise MqttProtocolError(f"unexpected MQTT packet 0x{first:02x} ({len(body)} bytes)")

    def pause_reading(self) -> None:
        transport = self._transport
        if self._ready and transport is not None and transport.is_reading():
            transport.pause_reading()

    def resume_reading(self) -> None:
        transport = self._transport
        if transport is None or transport.is_closing():
            return
        self._last_received = time.monotonic()  # the silence was ours
        if not transport.is_reading():
            transport.resume_reading()
        if self._rest:
            # Not now: resume_reading() may be called from inside on_message.
            self._loop.call_soon(self._drain)

    def _drain(self) -> None:
        """Deliver what was held back while paused (the read loop stopped at a PUBLISH)."""
        transport = self._transport
        if transport is not None and not transport.is_closing() and not self._client._paused:
            self.data_received(b"")

    # writing

    def send(self, packet: bytes) -> None:
        """Queue a packet for the next write (this iteration's end at the latest)."""
        self._out.append(packet)
        if not self._flush_scheduled:
            self._flush_scheduled = True
            self._loop.call_soon(self.flush)

    def flush(self) -> None:
        """Write everything queued, in one ``transport.write``."""
        self._flush_scheduled = False
        out = self._out
        if not out:
            return
        transport = self._transport
        if transport is None or transport.is_closing() or self._discard:
            out.clear()  # the connection is gone; QoS 1 is re-sent from _inflight
            return
        transport.write(out[0] if len(out) == 1 else b"".join(out))
        out.clear()
        self._client.stats.writes += 1
        self._last_sent = time.monotonic()

    # keep-alive and ending

    def start_keepalive(self, keepalive_s: int) -> None:
        """Check the connection every quarter keep-alive: ping when idle, drop when dead."""
        self._keepalive_s = keepalive_s
        if keepalive_s:
            self._last_received = time.monotonic()
            self._timer = self._loop.call_later(keepalive_s / _TICKS_PER_KEEPALIVE, self._tick)

    def _tick(self) -> None:
        keepalive = self._keepalive_s
        now = time.monotonic()
        transport = self._transport
        if transport is not None and not transport.is_reading():
            self._last_received = now  # paused by us: the broker's silence proves nothing
        silent = now - self._last_received
        if silent > keepalive * _KEEPALIVE_GRACE:
            self.fail(
                MqttError(
                    f"MQTT broker {self._client.address} silent for {silent:.1f} s "
                    f"(keep-alive {keepalive} s)"
                )
            )
            return
        idle = keepalive * _PING_AFTER
        if now - self._last_sent >= idle or (silent >= idle and not self._ping_outstanding):
            self._ping_outstanding = True
            self._out.append(packets.PINGREQ)
            self.flush()
        self._timer = self._loop.call_later(keepalive / _TICKS_PER_KEEPALIVE, self._tick)

    def fail(self, exc: BaseException) -> None:
        """Drop the connection because of ``exc``; the client then reconnects."""
        if self._error is None:
            self._error = exc
        if not self.connack.done():
            self.connack.set_exception(exc)
        if self._transport is not None:
            self._transport.abort()

    def abandon(self, carrier: asyncio.Transport | None = None) -> None:
        """Drop a connection attempt that failed or was given up (no one awaits it now), and
        the ``carrier`` connection under it (a WebSocket's TCP connection, which this one
        never saw if the handshake did not finish)."""
        self.connack.cancel()
        for transport in (self._transport, carrier):
            if transport is not None:
                transport.abort()

    async def disconnect(self, timeout_s: float) -> None:
        """Send DISCONNECT after what is queued and wait for the broker to hang up.

        Closing at once would make the kernel answer with a reset whenever the broker's next
        packets are already on their way to us, and a reset can destroy the DISCONNECT in the
        broker's receive queue: it would then publish our will. So only our sending side is
        shut; what still arrives is read and dropped (unacknowledged QoS 1 messages stay with
        the broker's session) until the broker closes, or ``timeout_s`` runs out.
        """
        transport = self._transport
        if transport is None or transport.is_closing():
            return
        if self._timer is not None:
            self._timer.cancel()
        self._out.append(packets.DISCONNECT)
        self.flush()
        self._discard = True  # and nothing more is written: the sending side is shut next
        if not transport.is_reading():
            transport.resume_reading()
        if transport.can_write_eof():
            transport.write_eof()
        else:
            transport.close()
        try:
            async with asyncio.timeout(timeout_s):
                await asyncio.shield(self._closed)
        except TimeoutError:
            transport.abort()
