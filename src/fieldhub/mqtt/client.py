"""A thin asyncio MQTT 3.1.1 client for hot paths: one protocol object, few syscalls.

Why not a general client: profiling the hub's ingest showed gmqtt writing every PUBACK with a
send call of its own (a quarter of the hub's main thread) and parsing packet by packet through
awaits; it also cannot stop reading when the hub falls behind. Here one ``asyncio.Protocol``
(``_connection.py``) parses every complete packet of a ``data_received`` chunk in a plain
loop, calls the message callback synchronously, and answers all the chunk's QoS 1 messages
with one write. Anything else sent in the same event loop iteration (publishes made by
callbacks, acks of other tasks) is coalesced into one write as well.

What it does not do, on purpose: QoS 2, MQTT 5 and unsubscribing. TLS is given as an
``ssl.SSLContext`` (``tls``), made by ``fieldhub.mqtt.tls.broker_context`` so that a broker
whose certificate fails is refused, with the reason, before CONNECT (and its secret) is sent;
MQTT over WebSocket (``websocket_path``) runs it inside ``fieldhub.mqtt.websocket``.

Example::

    async with MqttClient("127.0.0.1", 1883, client_id="hub", on_message=handle) as client:
        await client.subscribe([("fh/v1/+/telemetry", 1)])
        client.publish("fh/v1/dev-1/ack", b'{"seq":5}', qos=1)
        await client.flushed()
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections import deque
from collections.abc import Callable, Sequence
from types import TracebackType
from typing import TYPE_CHECKING, Final, Self

from fieldhub.logthrottle import LogThrottle
from fieldhub.mqtt import packets
from fieldhub.mqtt._connection import _Connection
from fieldhub.mqtt._stats import MqttStats
from fieldhub.mqtt.packets import MqttError, MqttProtocolError, SubscribeRefused, Will

if TYPE_CHECKING:  # ssl loads OpenSSL: a plain-TCP agent does without (fieldhub.cli.plain)
    import ssl

__all__ = ["MessageCallback", "MqttClient", "MqttStats"]

log = logging.getLogger(__name__)

MessageCallback = Callable[[str, bytes], None]
"""``on_message(topic, payload)``: called on the event loop, synchronously, per message."""

_DISCONNECT_TIMEOUT_S: Final = 2.0
_RESUBSCRIBE_CHUNK: Final = 64
_DUP: Final = 0x08


class MqttClient:
    """One MQTT 3.1.1 connection that stays up: connect once, then it reconnects by itself.

    After the first successful :meth:`connect`, a supervisor task watches the connection. When
    it is lost, the client reconnects with jittered exponential back-off between
    ``reconnect_min_s`` and ``reconnect_max_s``, subscribes again to every filter given to
    :meth:`subscribe`, and re-sends unacknowledged QoS 1 publishes (DUP set, in their order).
    The outage is logged twice: a warning when lost, info when back.

    QoS 1 publishes are in flight (sent, awaiting PUBACK) up to ``max_inflight`` and queued
    beyond that, and while disconnected, up to ``max_queued``; when the queue is full the
    oldest is dropped. QoS 0 publishes are dropped while disconnected. Every drop is counted in
    :attr:`stats`.

    Everything runs on the event loop that called :meth:`connect`; call the methods from it
    (from another thread, go through ``loop.call_soon_threadsafe``).

    Args:
        host: broker address.
        port: broker TCP port.
        client_id: MQTT client identifier; the broker keeps the session under it.
        on_message: ``(topic, payload)`` for each message received; called synchronously from
            the protocol, so it must not block. If it raises, the error is counted and logged
            (once per exception type per minute) and the connection carries on.
        username: user name for the broker, if it asks for one.
        password: password (needs ``username``).
        clean_session: False asks the broker to keep subscriptions and QoS 1 messages while
            the client is away.
        keepalive_s: the client pings when idle this long, and drops a connection from which
            nothing arrived for 1.5 times as long; 0 turns both off.
        will: published by the broker if the connection ends without DISCONNECT.
        on_connect: called soon after each successful connection (the first one too), after
            the subscriptions were sent again.
        on_disconnect: called soon after the connection is lost, with the reason, and with
            ``None`` after :meth:`close`.
        reconnect_min_s: first delay before reconnecting; it doubles per failed attempt.
        reconnect_max_s: longest delay between attempts.
        max_inflight: QoS 1 publishes sent and not yet acknowledged, at most.
        max_queued: QoS 1 publishes waiting beyond those, at most.
        tls: speak TLS with this context (``fieldhub.mqtt.tls.broker_context``); the
            certificate is checked against ``host``.
        websocket_path: speak MQTT over WebSocket, asking ``host:port`` for this HTTP path
            (``ws://``, or ``wss://`` with ``tls``); None speaks MQTT over TCP.

    Raises:
        ValueError: an argument is out of range (or a password comes without user name).
    """

    def __init__(
        self,
        host: str,
        port: int,
        *,
        client_id: str,
        on_message: MessageCallback,
        username: str | None = None,
        password: str | None = None,
        clean_session: bool = True,
        keepalive_s: int = 30,
        will: Will | None = None,
        on_connect: Callable[[], None] | None = None,
        on_disconnect: Callable[[BaseException | None], None] | None = None,
        reconnect_min_s: float = 0.1,
        reconnect_max_s: float = 10.0,
        max_inflight: int = 1000,
        max_queued: int = 10_000,
        tls: ssl.SSLContext | None = None,
        websocket_path: str | None = None,
    ) -> None:
        if not 0 < reconnect_min_s <= reconnect_max_s:
            raise ValueError(
                f"Need 0 < reconnect_min_s <= reconnect_max_s, got {reconnect_min_s!r} and "
                f"{reconnect_max_s!r}."
            )
        if not 1 <= max_inflight <= 60_000:  # leaves packet ids free for SUBSCRIBE
            raise ValueError(f"max_inflight must be 1..60000, not {max_inflight!r}.")
        if max_queued < 0:
            raise ValueError(f"max_queued must not be negative, not {max_queued!r}.")
        self._connect_packet = packets.connect(
            client_id,
            clean_session=clean_session,
            keepalive_s=keepalive_s,
            username=username,
            password=password,
            will=will,
        )
        self._host = host
        self._port = port
        self._client_id = client_id
        self._on_message = on_message
        self._on_connect = on_connect
        self._on_disconnect = on_disconnect
        self._keepalive_s = keepalive_s
        self._reconnect_min_s = reconnect_min_s
        self._reconnect_max_s = reconnect_max_s
        self._max_inflight = max_inflight
        self._max_queued = max_queued
        self._tls = tls
        self._websocket_path = websocket_path
        self.stats = MqttStats()
        """Counters; see :class:`MqttStats`."""
        self._conn: _Connection | None = None  # set while connected (CONNACK accepted)
        self._supervisor: asyncio.Task[None] | None = None
        self._lost = asyncio.Event()
        self._closed = False
        self._paused = False
        self._connect_timeout_s = 10.0
        self._connected_at = 0.0
        self._session_present = False
        self._healthy = False  # the application vouched for the current connection
        self._subscriptions: dict[str, int] = {}  # remembered for re-subscription
        # packet id -> (filters, future of the caller; None for a re-subscription)
        self._subacks: dict[int, tuple[list[tuple[str, int]], asyncio.Future[bytes] | None]] = {}
        self._inflight: dict[int, tuple[int, bytes]] = {}  # packet id -> (serial, packet)
        self._queue: deque[tuple[int, str, bytes, bool]] = deque()  # (serial, topic, ...)
        self._serial = 0  # QoS 1 publishes so far; flushed() waits for a serial
        self._last_packet_id = 0
        self._flush_waiters: list[tuple[int, asyncio.Future[None]]] = []
        self._log_limit = LogThrottle()

    @property
    def connected(self) -> bool:
        """True while the broker has accepted the connection and it is up."""
        return self._conn is not None

    @property
    def session_present(self) -> bool:
        """Whether the broker still held this client's session at the last connection (its
        CONNACK said so): False after a broker restart that lost it, always with a clean
        session. While it is False, nothing was kept for us while we were away."""
        return self._session_present

    def healthy(self) -> None:
        """Say that the current connection works end to end (the peer behind the broker
        answered): when it is lost, reconnecting starts again from ``reconnect_min_s``.
        Without this, only a connection that lasted ``reconnect_max_s`` resets the back-off,
        so that a broker that accepts and then drops us at once is not hammered."""
        if self._conn is not None:
            self._healthy = True

    @property
    def address(self) -> str:
        """``host:port`` of the broker, for messages."""
        return f"{self._host}:{self._port}"

    @property
    def client_id(self) -> str:
        """The MQTT client identifier."""
        return self._client_id

    async def __aenter__(self) -> Self:
        await self.connect()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def connect(self, timeout_s: float = 10.0) -> None:
        """Connect once, then keep the connection up in the background until :meth:`close`.

        The first connection is not retried: a wrong address or refused credentials should
        fail the start of a program, not hide in a retry loop.

        Args:
            timeout_s: for the TCP connection and the CONNACK together; also used for each
                reconnection attempt later.

        Raises:
            ConnectRefused: the broker answered with a non-zero CONNACK code.
            MqttError: the broker broke the protocol or closed the connection first, or this
                client is already connected or closed.
            OSError: the TCP connection failed.
            TimeoutError: no CONNACK within ``timeout_s``.
        """
        if self._closed:
            raise MqttError(f"MQTT client {self._client_id} is closed.")
        if self._supervisor is not None:
            raise MqttError(f"MQTT client {self._client_id} is already connected.")
        self._connect_timeout_s = timeout_s
        await self._open()
        self._supervisor = asyncio.create_task(
            self._supervise(), name=f"mqtt-supervisor:{self._client_id}"
        )
        self._supervisor.add_done_callback(self._supervisor_ended)
        log.debug("connected to MQTT broker %s as %s", self.address, self._client_id)

    async def subscribe(self, filters: Sequence[tuple[str, int]]) -> None:
        """Subscribe to ``(topic_filter, qos)`` pairs and wait for the broker's SUBACK.

        The filters are remembered and subscribed again after every reconnection. While reading
        is paused, the SUBACK waits behind the undelivered messages, and so does this call.

        Raises:
            ValueError: no filters, an empty filter, or QoS other than 0 or 1 (QoS 2 is not
                supported: a QoS 2 message would be a protocol violation to this client).
            SubscribeRefused: the broker refused some filters (those are not remembered; the
                others are subscribed).
            MqttError: not connected, or the connection was lost before the SUBACK (the
                filters then stay remembered and are subscribed on reconnection).
        """
        wanted = list(filters)
        if not wanted:
            raise ValueError("subscribe() needs at least one (topic_filter, qos).")
        for topic_filter, qos in wanted:
            packets.check_filter(topic_filter)
            if qos not in (0, 1):
                raise ValueError(f"Subscribe at QoS 0 or 1, not {qos!r} ({topic_filter!r}).")
        conn = self._conn
        if conn is None:
            raise MqttError(f"not connected to the MQTT broker {self.address}")
        future: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        packet_id = self._next_packet_id()
        self._subacks[packet_id] = (wanted, future)
        conn.send(packets.subscribe(packet_id, wanted))
        self._subscriptions.update(wanted)
        codes = await future
        refused = [f for (f, _qos), code in zip(wanted, codes, strict=True) if code >= 0x80]
        if refused:
            for topic_filter in refused:
                self._subscriptions.pop(topic_filter, None)
            raise SubscribeRefused(refused)

    def publish(self, topic: str, payload: bytes, qos: int = 0, retain: bool = False) -> None:
        """Send a message; never blocks. QoS 1 is kept until the broker acknowledges it.

        QoS 0 is dropped (and counted) while disconnected or while over 1 MiB waits for the
        broker. QoS 1 is sent at once while fewer than ``max_inflight`` are unacknowledged,
        otherwise queued; re-sent after a reconnection; dropped only when the queue is full.

        Raises:
            ValueError: a topic with wildcards or NUL, or QoS other than 0 or 1.
            MqttError: the client is closed.
        """
        if self._closed:
            raise MqttError(f"MQTT client {self._client_id} is closed.")
        conn = self._conn
        if qos == 0:
            packet = packets.publish(topic, payload, 0, retain)
            if conn is None or conn.write_paused:
                self.stats.dropped_qos0 += 1
            else:
                conn.send(packet)
            return
        if qos != 1:
            raise ValueError(f"This client publishes at QoS 0 or 1, not {qos!r}.")
        if conn is not None and not self._queue and len(self._inflight) < self._max_inflight:
            packet_id = self._next_packet_id()
            packet = packets.publish(topic, payload, 1, retain, packet_id)
            self._serial += 1
            self._inflight[packet_id] = (self._serial, packet)
            conn.send(packet)
            return
        packets.check_topic(topic)
        self._serial += 1
        self._queue.append((self._serial, topic, payload, retain))
        if len(self._queue) > self._max_queued:
            self._queue.popleft()
            self.stats.dropped_qos1 += 1
            if self._flush_waiters:
                self._wake_flush_waiters()

    async def flushed(self) -> None:
        """Wait until every QoS 1 message published so far is acknowledged (or dropped when
        the queue overflowed: see ``stats.dropped_qos1``). Later publishes are not waited for.

        Raises:
            MqttError: the client is, or gets, closed first.
        """
        if self._closed:
            raise MqttError(f"MQTT client {self._client_id} is closed.")
        target = self._serial
        oldest = self._oldest_unacked()
        if oldest is None or oldest > target:
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._flush_waiters.append((target, future))
        await future

    def pause_reading(self) -> None:
        """Stop taking messages from the broker (back-pressure) until :meth:`resume_reading`.

        No message is delivered after this call, even from data already read; the socket is
        no longer read, so the broker's send window fills and it stops sending (holding QoS 1
        messages for us, which is the point). Lasts across reconnections. PUBACKs for our own
        publishes wait too, so those then queue up to ``max_inflight``.
        """
        if self._paused:
            return
        self._paused = True
        if self._conn is not None:
            self._conn.pause_reading()

    def resume_reading(self) -> None:
        """Deliver what was held back and read the socket again."""
        if not self._paused:
            return
        self._paused = False
        if self._conn is not None:
            self._conn.resume_reading()

    async def close(self) -> None:
        """Disconnect cleanly (DISCONNECT, so the broker does not publish the will) and stop
        reconnecting. Unacknowledged QoS 1 messages are dropped. Idempotent."""
        if self._closed:
            return
        self._closed = True
        supervisor, self._supervisor = self._supervisor, None
        if supervisor is not None:
            supervisor.cancel()
            await asyncio.wait([supervisor])
        conn, self._conn = self._conn, None
        if conn is not None:
            await conn.disconnect(_DISCONNECT_TIMEOUT_S)
        error = MqttError(f"MQTT client {self._client_id} was closed")
        self._fail_waiters(error)
        for _target, future in self._flush_waiters:
            if not future.done():
                future.set_exception(error)
        self._flush_waiters.clear()
        if conn is not None:
            self._callback_soon(self._on_disconnect, None)
            log.debug("disconnected from MQTT broker %s", self.address)

    # connection life cycle

    async def _open(self) -> None:
        """Open one connection and bring it to the state the client promises (subscribed,
        unacknowledged messages re-sent)."""
        loop = asyncio.get_running_loop()
        conn = _Connection(self, self._connect_packet)
        protocol: asyncio.Protocol = conn
        if (path := self._websocket_path) is not None:
            from fieldhub.mqtt.websocket import WebSocketTunnel  # websockets: only when used

            protocol = WebSocketTunnel.client(conn, self._host, self._port, path, self._tls)
        transport: asyncio.Transport | None = None  # under a WebSocket, not conn's
        try:
            async with asyncio.timeout(self._connect_timeout_s):
                transport, _ = await loop.create_connection(
                    lambda: protocol, self._host, self._port, ssl=self._tls
                )
                session_present = await conn.connack
        except TimeoutError:
            conn.abandon(transport)
            self.stats.last_error = f"no CONNACK within {self._connect_timeout_s} s"
            raise TimeoutError(
                f"no CONNACK from MQTT broker {self.address} within {self._connect_timeout_s} s"
            ) from None
        except BaseException as exc:
            conn.abandon(transport)
            self.stats.last_error = str(exc) or type(exc).__name__
            raise
        if self._closed:  # close() ran while we waited
            conn.abandon()
            raise MqttError(f"MQTT client {self._client_id} was closed while connecting.")
        if conn.lost:  # between CONNACK and now; _connection_lost ignored it (not ours yet)
            raise MqttError(f"MQTT broker {self.address} closed the connection after CONNACK")
        self._conn = conn
        self._session_present = session_present
        self._healthy = False
        self._connected_at = time.monotonic()
        self.stats.connections += 1
        self.stats.last_error = ""
        conn.start_keepalive(self._keepalive_s)
        remembered = list(self._subscriptions.items())
        for i in range(0, len(remembered), _RESUBSCRIBE_CHUNK):
            chunk = remembered[i : i + _RESUBSCRIBE_CHUNK]
            packet_id = self._next_packet_id()
            self._subacks[packet_id] = (chunk, None)
            conn.send(packets.subscribe(packet_id, chunk))
        for _serial, packet in self._inflight.values():  # in the order first sent
            conn.send(bytes([packet[0] | _DUP]) + packet[1:])
        self._fill_window()
        self._callback_soon(self._on_connect)

    async def _supervise(self) -> None:
        """Reconnect after every loss, until cancelled by :meth:`close`."""
        delay = self._reconnect_min_s
        while True:
            await self._lost.wait()
            self._lost.clear()
            lost_at = time.monotonic()
            # A connection that lived long, or that the application found healthy, resets the
            # back-off; one that died at once (a broker that accepts and then kicks us) keeps
            # it growing.
            if self._healthy or lost_at - self._connected_at >= self._reconnect_max_s:
                delay = self._reconnect_min_s
            attempts = 0
            while True:
                await asyncio.sleep(delay * random.uniform(0.5, 1.0))
                delay = min(delay * 2, self._reconnect_max_s)
                attempts += 1
                try:
                    await self._open()
                except (OSError, TimeoutError) as exc:  # MqttError is an OSError
                    log.debug("reconnect %d to %s failed: %s", attempts, self.address, exc)
                else:
                    break
            log.info(
                "reconnected to MQTT broker %s after %.1f s (%d attempt(s))",
                self.address,
                time.monotonic() - lost_at,
                attempts,
            )

    def _supervisor_ended(self, task: asyncio.Task[None]) -> None:
        """A supervisor that dies of a bug must say so: the client would never reconnect."""
        if not task.cancelled() and (exc := task.exception()) is not None:
            log.critical(
                "MQTT client %s stopped reconnecting to %s: its supervisor failed",
                self._client_id,
                self.address,
                exc_info=exc,
            )

    def _connection_lost(self, conn: _Connection, exc: BaseException | None) -> None:
        """Called by a connection when its transport is gone."""
        if conn is not self._conn:
            return  # a connection attempt that failed; _open reports that
        self._conn = None
        self._fail_waiters(MqttError(f"lost the MQTT broker {self.address} before SUBACK"))
        if self._closed:
            return
        # None is kept for close(): a broker that hangs up is a loss like any other.
        exc = exc or MqttError(f"MQTT broker {self.address} closed the connection")
        log.warning("lost MQTT broker %s: %s; reconnecting", self.address, exc)
        self._lost.set()
        self._callback_soon(self._on_disconnect, exc)

    def _fail_waiters(self, error: MqttError) -> None:
        for _filters, future in self._subacks.values():
            if future is not None and not future.done():
                future.set_exception(error)
        self._subacks.clear()

    @staticmethod
    def _callback_soon(callback: Callable[..., None] | None, *args: object) -> None:
        """Run a user callback on its own, so that whatever it raises lands in the event
        loop's exception handler instead of in the middle of our state changes."""
        if callback is not None:
            asyncio.get_running_loop().call_soon(callback, *args)

    # QoS 1 bookkeeping

    def _next_packet_id(self) -> int:
        inflight, subacks = self._inflight, self._subacks
        packet_id = self._last_packet_id
        for _ in range(packets.MAX_PACKET_ID):
            packet_id = packet_id % packets.MAX_PACKET_ID + 1
            if packet_id not in inflight and packet_id not in subacks:
                self._last_packet_id = packet_id
                return packet_id
        raise MqttError("no free MQTT packet id")  # cannot happen: max_inflight <= 60000

    def _fill_window(self) -> None:
        """Move queued QoS 1 messages into flight while there is room and a connection."""
        conn = self._conn
        queue = self._queue
        while conn is not None and queue and len(self._inflight) < self._max_inflight:
            serial, topic, payload, retain = queue.popleft()
            packet_id = self._next_packet_id()
            packet = packets.publish(topic, payload, 1, retain, packet_id)
            self._inflight[packet_id] = (serial, packet)
            conn.send(packet)

    def _oldest_unacked(self) -> int | None:
        """Serial of the oldest QoS 1 message not yet acknowledged (in flight come first)."""
        for serial, _packet in self._inflight.values():
            return serial
        return self._queue[0][0] if self._queue else None

    def _wake_flush_waiters(self) -> None:
        oldest = self._oldest_unacked()
        waiting = []
        for target, future in self._flush_waiters:
            if future.done():
                continue
            if oldest is None or oldest > target:
                future.set_result(None)
            else:
                waiting.append((target, future))
        self._flush_waiters = waiting

    # called by the connection's read loop

    def _puback(self, packet_id: int) -> None:
        if self._inflight.pop(packet_id, None) is None:
            log.debug("PUBACK for packet id %d, which is not in flight", packet_id)
            return
        if self._queue:
            self._fill_window()
        if self._flush_waiters:
            self._wake_flush_waiters()

    def _suback(self, packet_id: int, codes: bytes) -> None:
        entry = self._subacks.pop(packet_id, None)
        if entry is None:
            raise MqttProtocolError(f"SUBACK for packet id {packet_id}, which was not subscribed")
        filters, future = entry
        if len(codes) != len(filters):
            raise MqttProtocolError(f"SUBACK has {len(codes)} codes for {len(filters)} filters")
        if future is not None:
            if not future.done():
                future.set_result(codes)
            return
        refused = [f for (f, _qos), code in zip(filters, codes, strict=True) if code >= 0x80]
        if refused:
            log.error(
                "MQTT broker %s refused the re-subscription to %s after reconnecting",
                self.address,
                ", ".join(refused),
            )

    def _callback_failed(self, exc: Exception) -> None:
        self.stats.callback_errors += 1
        skipped = self._log_limit.due(type(exc))
        if skipped is not None:
            log.error(
                "on_message of MQTT client %s raised %s (%d more like it in the last minute "
                "not logged); the message is acknowledged and the connection carries on",
                self._client_id,
                type(exc).__name__,
                skipped,
                exc_info=exc,
            )

    def _invalid_topic(self, topic: bytes) -> None:
        self.stats.invalid_topics += 1
        skipped = self._log_limit.due("invalid topic")
        if skipped is not None:
            log.warning(
                "MQTT broker %s sent a message on a topic that is not UTF-8 (%r); skipped and "
                "acknowledged (%d more in the last minute not logged)",
                self.address,
                topic[:100],
                skipped,
            )
