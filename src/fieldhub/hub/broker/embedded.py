"""The hub's embedded MQTT broker: amqtt speaking MQTT 3.1.1 over TCP, in the hub's event loop.

For one machine and for tests: ``pip install`` and run, no second process. Production fleets
use Mosquitto or a broker cluster (DESIGN §4, §5); nothing else in the hub knows which broker
it talks to.

amqtt does the protocol; this module owns the TCP side. amqtt is given an *external* listener
and every accepted connection is handed to it, so that:

- port 0 works: the port the OS picked is read from our own socket (amqtt does not report it);
- every connection is a task we track and end on exit, so nothing outlives the broker;
- the MQTT keep-alive is enforced. amqtt 0.12 times a silent client out and then carries on
  reading (``BrokerProtocolHandler.handle_read_timeout`` is a no-op), so a device that loses
  power or network would stay connected forever and its last will, which fieldhub presence
  depends on, would never fire. A watchdog closes connections silent for 1.5 x keep-alive
  (MQTT 3.1.1 §3.1.2.10), which makes amqtt publish the will;
- every packet is read whole and checked against MQTT 3.1.1 *before* amqtt sees it
  (``packets``): a client that breaks the protocol (a wildcard in a PUBLISH topic, QoS 3, packet
  id 0, reserved flags, a second CONNECT, ...) is disconnected, as Mosquitto does, where
  amqtt would carry on, skip packets or store what it should refuse. Each such violation is
  counted (:attr:`EmbeddedBroker.violations`) and logged, at most once a minute per client
  address and rule;
- every CONNECT is checked *before* amqtt sees it (``_admit``). amqtt 0.12 looks up, takes
  over and even deletes the session of the client id a CONNECT names before it asks its auth
  plugins, so a client with a wrong password could still throw the hub (or any device) off and
  wipe its subscriptions. Here a refused client gets its CONNACK refusal from us and never
  reaches amqtt. Client ids and user names holding ``+ # / $`` or NUL are refused, and so is
  a last will on a topic the client may not publish to (amqtt would publish it unchecked);
- a device whose connection ends without DISCONNECT and without a last will (it set none)
  still has its ``status`` set offline, retained, as its will would have: presence does not
  depend on every device registering a will.

Who may do what comes from an :class:`~fieldhub.hub.broker.keyring.AccessPolicy` (the hub passes its
``KeyRing``): checked on CONNECT, and on every publish, subscription and delivery, retained
messages included, so a revoked key stops working at once even before its connection is
closed (:meth:`EmbeddedBroker.kick`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import Counter
from collections.abc import Collection, Sequence
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, NamedTuple, Self

from amqtt.adapters import StreamWriterAdapter
from amqtt.broker import Broker
from amqtt.contexts import Action, BrokerConfig, ListenerConfig, ListenerType
from amqtt.mqtt.disconnect import DisconnectPacket
from amqtt.mqtt.protocol.broker_handler import BrokerProtocolHandler
from amqtt.session import Session

from fieldhub.clock import now_ms
from fieldhub.hub.broker.admission import MAX_CONNECT_BYTES, admit, broker_plugins
from fieldhub.hub.broker.connection import BrokerConnection
from fieldhub.hub.broker.keyring import AccessPolicy, BrokerPrincipal, DevicePrincipal
from fieldhub.hub.broker.packets import Violation, check_connect, read_packet
from fieldhub.hub.broker.retained import BrokerStateError, Retained, load_retained, save_retained
from fieldhub.logthrottle import LogThrottle, held_back
from fieldhub.mqtt.websocket import WebSocketTunnel
from fieldhub.protocol import Channel, Status, encode, topic_for

if TYPE_CHECKING:
    import ssl

__all__ = ["BrokerStateError", "EmbeddedBroker", "TlsListener", "WebSocketListener"]

log = logging.getLogger(__name__)

_LISTENER = "default"  # amqtt requires a listener of this name
_AMQTT_LOGGERS = ("amqtt", "transitions")  # transitions: amqtt's state machines, INFO per change
_WATCHDOG_PERIOD_S = 0.5
_CONNECT_TIMEOUT_S = 10.0  # a connection must send CONNECT within this
_STOP_TIMEOUT_S = 5.0  # how long a stop waits for amqtt to end the sessions of its clients
_KEEPALIVE_GRACE = 1.5  # MQTT 3.1.1 §3.1.2.10: one and a half times the keep-alive
_LOST = "connection lost"  # the reason of the status published for a device without a will
_NOT_AUTHORIZED = 5  # CONNACK return code (MQTT 3.1.1 §3.2.2.3)


class TlsListener(NamedTuple):
    """A second listener speaking MQTT over TLS (``mqtts://``), with the server's context."""

    host: str
    port: int
    context: ssl.SSLContext


class WebSocketListener(NamedTuple):
    """A listener speaking MQTT over WebSocket at ``path`` (``ws://``, or ``wss://`` with a
    server context), for devices that reach the broker through an HTTPS proxy such as nginx."""

    host: str
    port: int
    path: str
    context: ssl.SSLContext | None = None

    def url(self, port: int) -> str:
        """``ws(s)://host:port/path`` for clients, with the port actually bound."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{'wss' if self.context else 'ws'}://{host}:{port}{self.path}"


class _Broker(Broker):  # type: ignore[misc]
    """amqtt's broker, with fieldhub's topic rules and retained replay only where allowed.

    Every publish, subscription and delivery is checked against the access policy directly
    (``broker_auth.broker_plugins`` says why not through a plugin). A session whose key was
    revoked has no principal any more: from then on nothing it sends or should receive passes.

    amqtt 0.12, on every CONNECT, replays the retained messages matching *any* client's
    subscription to the new client (it means to restore a persistent session's
    subscriptions). A device would then receive every other device's retained status and
    desired state as soon as the hub subscribes to them: a flood at fleet scale and a leak
    past the topic rules. Here retained messages go only to subscriptions the client holds,
    and only those it may receive.
    """

    def __init__(self, config: BrokerConfig, access: AccessPolicy) -> None:
        super().__init__(config)
        self._access = access

    def _principal(self, session: Session) -> BrokerPrincipal | None:
        return self._access.principal(session.client_id, session.username)

    async def _handle_message_delivery(
        self, session: Session, handler: BrokerProtocolHandler, wait_deliver: asyncio.Future[Any]
    ) -> bool:
        """Drop a PUBLISH to a ``$`` topic, as any topic its client may not publish to.

        No principal may publish there (``fieldhub.protocol.acl``), but amqtt checks ``$``
        before asking: it then leaves its client loop without ending the session or sending the
        will, and the session stays "connected" until the client id comes back.
        """
        message = wait_deliver.result()
        if message is not None and str(message.topic).startswith("$"):
            return True
        result: bool = await super()._handle_message_delivery(session, handler, wait_deliver)
        return result

    async def _handle_disconnect(
        self, session: Session, handler: BrokerProtocolHandler, disconnect: asyncio.Future[Any]
    ) -> None:
        """End the session as amqtt does (the will is sent when it was lost), then, for a
        device that was lost without a will, publish the offline status its will would say.

        A session that a newer connection of its client id replaced (amqtt deleted it) was not
        lost: the device is connected again, and its old will would be a lie. This is known
        here for sure; the watchdog may not have seen the old session yet.
        """
        connection = handler.reader
        current = self.sessions.get(session.client_id)
        if current is None or current[0] is not session:
            session.will_flag = False
            if isinstance(connection, BrokerConnection):
                connection.hushed = True
        lost = not isinstance(disconnect.result(), DisconnectPacket)
        will = bool(session.will_flag)
        await super()._handle_disconnect(session, handler, disconnect)
        if lost and not will and isinstance(connection, BrokerConnection) and not connection.hushed:
            principal = connection.principal
            if isinstance(principal, DevicePrincipal):
                await self._announce_lost(principal.device_id)

    async def _announce_lost(self, device_id: str) -> None:
        """Publish and retain ``device_id``'s status as offline, like a last will (QoS 1)."""
        topic = topic_for(device_id, Channel.STATUS)
        data = encode(Status(online=False, ts=now_ms(), reason=_LOST))
        await self._broadcast_message(None, topic, data, 1)
        await self.retain_message(None, topic, data, 1)

    async def _topic_filtering(self, session: Session, topic: str, action: Action) -> bool:
        principal = self._principal(session)
        if principal is None:
            return False
        if action == Action.PUBLISH:
            return principal.may_publish(topic)
        if action == Action.SUBSCRIBE:
            return principal.may_subscribe(topic)
        return principal.may_receive(topic)

    async def _publish_retained_messages_for_subscription(
        self, subscription: tuple[str, int], session: Session
    ) -> None:
        topic_filter, qos = subscription
        holders = self.subscriptions.get(topic_filter, ())
        if not any(holder.client_id == session.client_id for holder, _qos in holders):
            return
        principal, handler = self._principal(session), self._get_handler(session)
        if principal is None or handler is None:
            return
        sends = [
            asyncio.ensure_future(
                handler.mqtt_publish(
                    retained.topic, retained.data, min(qos, retained.qos or qos), retain=True
                )
            )
            for topic, retained in list(self.retained_messages.items())
            if self._matches(topic, topic_filter) and principal.may_receive(topic)
        ]
        if sends:
            await asyncio.wait(sends)


class EmbeddedBroker:
    """An MQTT 3.1.1 broker listening on TCP, run as an async context manager.

    Only clients that ``access`` admits may connect, and they may use only the topics it
    allows them (see the module doc). Retained messages and last wills work; QoS 0 and 1 are
    delivered. A client that connects with ``clean_session=False`` gets a persistent session:
    its subscriptions and the QoS 1 messages published while it was away are delivered when it
    comes back (in memory only: a broker restart forgets sessions). amqtt marks those queued
    messages as retained when it delivers them.

    Connections are watched: one silent for 1.5 x its keep-alive is closed and its will
    published; one that sends no CONNECT within 10 s is closed; one whose client id has
    connected again elsewhere is closed *without* its will (the device is online on the new
    connection; amqtt would otherwise keep the old one and publish its will whenever it
    finally dies, after the device said it is online). Stopping the broker publishes no wills.

    Args:
        host: address to listen on.
        port: TCP port; 0 picks a free one, read it from :attr:`port` once started.
        access: who may connect and what they may do; the hub's ``KeyRing``.
        data_dir: if given, retained messages are saved there when the broker stops (cleanly:
            a crash loses what changed since the start) and restored when it starts, so
            retained desired state survives a hub restart. A
            restored device status may be stale until the device reconnects; presence does
            not trust it alone (DESIGN §3: presence is layered).
        tls: also listen for TLS clients there; after the handshake its connections are
            served like the others (amqtt and the checks above see plain MQTT); a failed
            handshake is counted in :attr:`violations` as the rule ``TLS``, and logged.
        websockets: also listen for MQTT over WebSocket there (``fieldhub.mqtt.websocket``);
            after the WebSocket handshake its connections are served like the others.

    Raises:
        OSError: on entry, when ``host:port`` cannot be bound.
        BrokerStateError: on entry, when the saved retained messages cannot be read.
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 1883,
        *,
        access: AccessPolicy,
        data_dir: Path | None = None,
        tls: TlsListener | None = None,
        websockets: Sequence[WebSocketListener] = (),
    ) -> None:
        self._host = host
        self._tls = tls
        self._websockets = tuple(websockets)
        self._websocket_servers: list[asyncio.Server] = []
        self._port = port
        self._access = access
        self._data_dir = data_dir
        self._refusals = LogThrottle()
        self._violations: Counter[str] = Counter()
        self._broker: _Broker | None = None
        self._server: asyncio.Server | None = None
        self._tls_server: asyncio.Server | None = None
        self._watchdog: asyncio.Task[None] | None = None
        self._connections: dict[BrokerConnection, asyncio.Task[None]] = {}

    @property
    def host(self) -> str:
        """The address the broker listens on."""
        return self._host

    @property
    def port(self) -> int:
        """The TCP port; once started, the one actually bound (also when 0 was asked for)."""
        return self._port

    @property
    def violations(self) -> Counter[str]:
        """How many connections were closed for breaking MQTT 3.1.1, by the rule broken
        (``MQTT-3.3.2-2``, ...): a copy, counted since the broker was made."""
        return self._violations.copy()

    @property
    def url(self) -> str:
        """``mqtt://host:port``, for clients."""
        host = f"[{self._host}]" if ":" in self._host else self._host
        return f"mqtt://{host}:{self._port}"

    @property
    def tls_url(self) -> str | None:
        """``mqtts://host:port`` of the TLS listener once started (None without one)."""
        if self._tls is None or self._tls_server is None:
            return None
        host = f"[{self._tls.host}]" if ":" in self._tls.host else self._tls.host
        return f"mqtts://{host}:{self._tls_server.sockets[0].getsockname()[1]}"

    @property
    def websocket_urls(self) -> list[str]:
        """``ws(s)://host:port/path`` of each WebSocket listener once started."""
        return [
            listener.url(server.sockets[0].getsockname()[1])
            for listener, server in zip(self._websockets, self._websocket_servers, strict=True)
        ]

    async def __aenter__(self) -> Self:
        if self._broker is not None:
            raise RuntimeError(f"broker {self.url} is already running")
        debug = log.isEnabledFor(logging.DEBUG)
        _quiet_amqtt_loggers(debug=debug)
        retained = await asyncio.to_thread(load_retained, self._data_dir)
        config = BrokerConfig(
            listeners={_LISTENER: ListenerConfig(type=ListenerType.EXTERNAL)},
            plugins=broker_plugins(self._access, debug=debug),
        )
        started = time.perf_counter()
        broker = _Broker(config, self._access)
        await broker.start()
        try:
            for message in retained:
                await broker.retain_message(None, message.topic, message.data, message.qos)
            server = await asyncio.start_server(self._serve, self._host, self._port)
            if self._tls is not None:
                self._tls_server = await asyncio.start_server(
                    self._serve_tls, self._tls.host, self._tls.port
                )
            for listener in self._websockets:
                self._websocket_servers.append(await self._listen_websocket(listener))
        except BaseException:
            for opened in (self._tls_server, *self._websocket_servers):
                if opened is not None:
                    opened.close()
            self._tls_server = None
            self._websocket_servers.clear()
            await broker.shutdown()
            raise
        self._broker, self._server = broker, server
        self._port = server.sockets[0].getsockname()[1]
        self._watchdog = asyncio.create_task(
            self._watch(), name=f"mqtt-broker-watchdog:{self.port}"
        )
        log.info(
            "MQTT broker listening on %s (%d retained messages restored, %.0f ms)",
            " and ".join(
                [self.url, *([self.tls_url] if self.tls_url else []), *self.websocket_urls]
            ),
            len(retained),
            (time.perf_counter() - started) * 1000,
        )
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        broker, server, watchdog = self._broker, self._server, self._watchdog
        self._broker = self._server = self._watchdog = None
        if broker is None or server is None or watchdog is None:
            return
        server.close()  # no new connections
        tls_server, self._tls_server = self._tls_server, None
        if tls_server is not None:
            tls_server.close()
        websocket_servers, self._websocket_servers = self._websocket_servers, []
        for websocket_server in websocket_servers:
            websocket_server.close()
        watchdog.cancel()
        snapshot = [
            Retained(topic, bytes(message.data), message.qos or 0)
            for topic, message in broker.retained_messages.items()
        ]
        for session, _handler in broker.sessions.values():
            session.will_flag = False  # a broker stop is not a device failure
        for connection in self._connections:
            connection.hush()
        # Hang up on every client first; amqtt then ends each session as it reads EOF. Left to
        # amqtt's shutdown, which cancels each session's reader, a stop can hang for good on
        # Python 3.11: asyncio.wait_for swallows a cancellation that coincides with a packet
        # arriving (CPython gh-86296), and amqtt then waits for a reader that never stops.
        for connection in self._connections:
            connection.writer.transport.abort()
        if self._connections:
            await asyncio.wait(self._connections.values(), timeout=_STOP_TIMEOUT_S)
        await broker.shutdown()
        tasks = list(self._connections.values())
        for task in tasks:  # what did not end by itself, such as a connection without CONNECT
            task.cancel()
        await asyncio.gather(watchdog, *tasks, return_exceptions=True)
        await server.wait_closed()
        if tls_server is not None:
            await tls_server.wait_closed()
        for websocket_server in websocket_servers:
            await websocket_server.wait_closed()
        await asyncio.to_thread(save_retained, self._data_dir, snapshot)
        log.info("MQTT broker on %s stopped", self.url)

    async def _listen_websocket(self, listener: WebSocketListener) -> asyncio.Server:
        """Listen for MQTT over WebSocket: each accepted connection is unwrapped by a
        :class:`WebSocketTunnel` and then served as a stream like a TCP one."""
        loop = asyncio.get_running_loop()

        def tunnel() -> WebSocketTunnel:
            reader = asyncio.StreamReader()
            stream = asyncio.StreamReaderProtocol(reader, self._serve)
            return WebSocketTunnel.server(stream, path=listener.path, refused=refused)

        def refused(peer: str, why: str) -> None:
            self._refuse_peer(peer, None, Violation("WebSocket", why))

        return await loop.create_server(tunnel, listener.host, listener.port, ssl=listener.context)

    async def _serve_tls(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Take the TLS handshake here rather than in asyncio's server, so that a failed one (a
        client that does not trust the certificate, plain MQTT on this port) is counted and
        logged as the rule ``TLS``; then serve the connection like any other."""
        if self._tls is None:  # not listening without it
            return
        try:
            async with asyncio.timeout(_CONNECT_TIMEOUT_S):
                await writer.start_tls(self._tls.context)
        except (OSError, TimeoutError) as exc:
            writer.transport.abort()
            peer = writer.get_extra_info("peername") or ("?", 0)
            why = f"TLS handshake failed: {exc or 'none within 10 s'}"
            self._refuse_peer(f"{peer[0]}:{peer[1]}", None, Violation("TLS", why))
            return
        await self._serve(reader, writer)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Hand one accepted TCP connection to amqtt, for as long as it lasts."""
        broker, task = self._broker, asyncio.current_task()
        if broker is None or task is None:  # accepted while stopping
            writer.close()
            return
        connection = BrokerConnection(reader, writer, self._refuse)
        self._connections[connection] = task
        try:
            if await self._admit(connection, reader, writer):
                await broker.external_connected(connection, StreamWriterAdapter(writer), _LISTENER)
        except (OSError, asyncio.IncompleteReadError) as exc:
            log.debug("MQTT connection from %s ended: %r", connection.peer, exc)
        finally:
            del self._connections[connection]
            writer.close()  # amqtt leaves the socket open when the first packet is not CONNECT

    async def _admit(
        self,
        connection: BrokerConnection,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
    ) -> bool:
        """Read the CONNECT and check it; refuse it ourselves, or let amqtt read it again.

        Returns False when the connection is to be closed: not a sound CONNECT (see
        ``packets``), or refused (the client then has its CONNACK with the reason code).
        """
        try:
            raw = await read_packet(reader, MAX_CONNECT_BYTES)
        except ValueError as exc:
            self._refuse(connection, Violation("MQTT-2.2.3", f"first packet: {exc}"))
            return False
        violation = check_connect(raw)
        if violation is not None:
            self._refuse(connection, violation)
            if violation.connack:
                writer.write(bytes((0x20, 2, 0, violation.connack)))
                with contextlib.suppress(OSError):
                    await writer.drain()
            return False
        admission = await admit(raw, self._access)
        if admission is None:
            log.debug("MQTT connection from %s: unreadable CONNECT", connection.peer)
            return False
        mismatch = connection.certificate_mismatch(admission.client_id)
        if mismatch is not None and admission.principal is not None:
            # The certificate proves who the device is: another device's credentials, or a
            # certificate lent to another device, must not pass.
            self._refuse(connection, Violation("certificate", mismatch))
            writer.write(bytes((0x20, 2, 0, _NOT_AUTHORIZED)))
            with contextlib.suppress(OSError):
                await writer.drain()
            return False
        if admission.principal is not None:
            connection.admitted(raw, admission)
            return True
        code, why, client_id = admission.refusal, admission.why, admission.client_id
        held = self._refusals.due((connection.peer.rpartition(":")[0], why))
        if held is not None:
            log.info(
                "MQTT client %r (%s) refused: %s%s",
                client_id,
                connection.peer,
                why,
                held_back(held),
            )
        writer.write(bytes((0x20, 2, 0, code)))  # CONNACK: no session present, refused
        with contextlib.suppress(OSError):
            await writer.drain()
        return False

    def _refuse(self, connection: BrokerConnection, violation: Violation) -> None:
        self._refuse_peer(connection.peer, connection.client_id, violation)

    def _refuse_peer(self, peer: str, client_id: str | None, violation: Violation) -> None:
        """Count a protocol violation; log it, at most once a minute per address and rule."""
        self._violations[violation.rule] += 1
        held = self._refusals.due((peer.rpartition(":")[0], violation.rule))
        if held is not None:
            log.info(
                "MQTT client %r (%s) disconnected: %s [%s]%s",
                client_id,
                peer,
                violation.why,
                violation.rule,
                held_back(held),
            )

    def replace_tls_context(self, context: ssl.SSLContext) -> None:
        """Serve the TLS listener's next handshakes with ``context`` (a new revocation list)."""
        if self._tls is not None:
            self._tls = self._tls._replace(context=context)

    def kick_certificates(self, serials: Collection[int]) -> int:
        """Close the connections made with a client certificate of one of ``serials`` (just
        revoked); how many. Their wills are published: the device is offline."""
        revoked = [
            connection
            for connection in self._connections
            if (certificate := connection.certificate) is not None
            and certificate[1] in serials
            and not connection.writer.is_closing()
        ]
        for connection in revoked:
            connection.abort("its client certificate was revoked")
        return len(revoked)

    def kick(self, usernames: Collection[str]) -> int:
        """Close the connections of clients that logged in as one of ``usernames``.

        Their wills are published, as for any lost connection: the device is offline. The
        keys must already be gone from the access policy, or the clients simply reconnect.
        Returns how many connections were closed.
        """
        kicked = 0
        for connection in list(self._connections):
            if connection.username in usernames and not connection.writer.is_closing():
                connection.abort("its credentials were revoked or expired")
                kicked += 1
        return kicked

    async def _watch(self) -> None:
        """Every half second, close the connections MQTT says must go (see the class doc)."""
        while (broker := self._broker) is not None:
            await asyncio.sleep(_WATCHDOG_PERIOD_S)
            now = time.monotonic()
            registered = {handler.reader: session for session, handler in broker.sessions.values()}
            for connection in list(self._connections):
                if connection.writer.is_closing():
                    continue
                session = registered.get(connection)
                if session is not None:
                    connection.session = session
                    silent = now - connection.last_read
                    if 0 < session.keep_alive * _KEEPALIVE_GRACE < silent:
                        connection.abort(
                            f"silent {silent:.1f} s, keep-alive {session.keep_alive} s"
                        )
                elif connection.session is None:
                    if now - connection.opened > _CONNECT_TIMEOUT_S:
                        connection.abort(f"no CONNECT within {_CONNECT_TIMEOUT_S:.0f} s")
                else:
                    _taken_over(broker, connection)


def _taken_over(broker: _Broker, connection: BrokerConnection) -> None:
    """``connection`` lost its session to a newer connection with the same client id."""
    old = connection.session
    if old is None:
        return
    current = broker.sessions.get(old.client_id)
    if current is not None and current[0] is not old:
        connection.hush()  # the client is connected again: its old will would be a lie
    connection.abort("its client id connected again")


def _quiet_amqtt_loggers(*, debug: bool) -> None:
    """amqtt logs every connection at INFO: keep it at WARNING unless the hub debugs.

    Only loggers nobody configured are touched, so an operator's logging config wins.
    """
    for name in _AMQTT_LOGGERS:
        logger = logging.getLogger(name)
        if logger.level == logging.NOTSET:
            logger.setLevel(logging.DEBUG if debug else logging.WARNING)
