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
  (MQTT 3.1.1 §3.1.2.10), which makes amqtt publish the will.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Self

from amqtt.adapters import StreamReaderAdapter, StreamWriterAdapter
from amqtt.broker import Broker
from amqtt.contexts import BrokerConfig, ListenerConfig, ListenerType
from amqtt.plugins.base import BaseAuthPlugin
from amqtt.session import Session

__all__ = ["BrokerStateError", "EmbeddedBroker", "OpenAuthPlugin", "broker_plugins"]

log = logging.getLogger(__name__)

_LISTENER = "default"  # amqtt requires a listener of this name
_AMQTT_LOGGERS = ("amqtt", "transitions")  # transitions: amqtt's state machines, INFO per change
_RETAINED_FILE = "retained.json"
_WATCHDOG_PERIOD_S = 0.5
_KEEPALIVE_GRACE = 1.5  # MQTT 3.1.1 §3.1.2.10: one and a half times the keep-alive


class BrokerStateError(ValueError):
    """The broker's saved state (``retained.json`` in ``data_dir``) cannot be read."""


class OpenAuthPlugin(BaseAuthPlugin):  # type: ignore[misc]  # amqtt ships no type hints
    """Lets every client connect, for now (the device-store plugin will replace it).

    Unlike amqtt's ``AnonymousAuthPlugin``, which marks *every* session anonymous, a client that
    gives a username is not anonymous here. That matters: amqtt keeps QoS 1 messages for a
    disconnected persistent session (``clean_session=False``) only when it is not anonymous,
    and forgets anonymous sessions a second after they disconnect.
    """

    async def authenticate(self, *, session: Session) -> bool:
        """Accept ``session``; it is anonymous when it came without a username."""
        session.is_anonymous = not session.username
        return True


def broker_plugins(*, debug: bool = False) -> dict[str, dict[str, Any]]:
    """The amqtt plugins of the hub's broker: dotted class path to the plugin's configuration.

    The one place to extend (authentication and topic ACL from the device store come here).
    amqtt builds each plugin's ``Config`` dataclass from the given mapping; a field typed
    ``Any`` can carry a live object such as a store. Without an auth plugin amqtt refuses
    every client; amqtt's ``$SYS`` and event-logging plugins are left out on purpose (they cost
    a task per event), the packet logger runs only with ``debug``.

    Args:
        debug: also log every MQTT packet (amqtt's ``PacketLoggerPlugin``, at DEBUG).
    """
    plugins: dict[str, dict[str, Any]] = {f"{__name__}.{OpenAuthPlugin.__name__}": {}}
    if debug:
        plugins["amqtt.plugins.logging_amqtt.PacketLoggerPlugin"] = {}
    return plugins


class _ConnectionReader(StreamReaderAdapter):  # type: ignore[misc]
    """amqtt's stream reader that remembers when the client last sent anything."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        super().__init__(reader)
        self.writer = writer
        self.last_read = time.monotonic()

    async def read(self, n: int = -1) -> bytes:
        data: bytes = await super().read(n)
        self.last_read = time.monotonic()
        return data


@dataclass(frozen=True, slots=True)
class _Retained:
    topic: str
    data: bytes
    qos: int


class EmbeddedBroker:
    """An MQTT 3.1.1 broker listening on TCP, run as an async context manager.

    Retained messages and last wills work; QoS 0 and 1 are delivered. A client that connects
    with ``clean_session=False`` *and a username* gets a persistent session: its subscriptions
    and the QoS 1 messages published while it was away are delivered when it comes back (in
    memory only: a broker restart forgets sessions).

    Args:
        host: address to listen on.
        port: TCP port; 0 picks a free one, read it from :attr:`port` once started.
        data_dir: if given, retained messages are saved there when the broker stops and
            restored when it starts, so retained desired state survives a hub restart. A
            restored device status may be stale until the device reconnects; presence does
            not trust it alone (DESIGN §3: presence is layered).
    """

    def __init__(
        self, host: str = "127.0.0.1", port: int = 1883, *, data_dir: Path | None = None
    ) -> None:
        self._host = host
        self._port = port
        self._data_dir = data_dir
        self._broker: Broker | None = None
        self._server: asyncio.Server | None = None
        self._connections: set[asyncio.Task[None]] = set()
        self._watchdog: asyncio.Task[None] | None = None

    @property
    def host(self) -> str:
        """The address the broker listens on."""
        return self._host

    @property
    def port(self) -> int:
        """The TCP port; the one actually bound once started (also when 0 was asked for)."""
        return self._port

    @property
    def url(self) -> str:
        """``mqtt://host:port``, for clients."""
        host = f"[{self._host}]" if ":" in self._host else self._host
        return f"mqtt://{host}:{self._port}"

    async def __aenter__(self) -> Self:
        if self._broker is not None:
            raise RuntimeError(f"broker {self.url} is already running")
        debug = log.isEnabledFor(logging.DEBUG)
        _quiet_amqtt_loggers(debug=debug)
        retained = await asyncio.to_thread(_load_retained, self._data_dir)
        config = BrokerConfig(
            listeners={_LISTENER: ListenerConfig(type=ListenerType.EXTERNAL)},
            plugins=broker_plugins(debug=debug),
        )
        broker = Broker(config)
        await broker.start()
        try:
            for message in retained:
                await broker.retain_message(None, message.topic, message.data, message.qos)
            self._server = await asyncio.start_server(self._serve, self._host, self._port)
        except BaseException:
            await broker.shutdown()
            raise
        self._broker = broker
        self._port = self._server.sockets[0].getsockname()[1]
        self._watchdog = asyncio.create_task(self._enforce_keepalive(), name="broker-keepalive")
        log.info("MQTT broker listening on %s", self.url)
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
        watchdog.cancel()
        snapshot = [
            _Retained(topic, bytes(message.data), message.qos or 0)
            for topic, message in broker.retained_messages.items()
        ]
        await broker.shutdown()  # ends every session and closes its socket
        for task in self._connections:  # connections that never completed a CONNECT
            task.cancel()
        await asyncio.gather(watchdog, *self._connections, return_exceptions=True)
        await server.wait_closed()
        await asyncio.to_thread(_save_retained, self._data_dir, snapshot)
        log.info("MQTT broker on %s stopped", self.url)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Hand one accepted TCP connection to amqtt, for as long as it lasts."""
        broker = self._broker
        task = asyncio.current_task()
        if broker is None or task is None:  # accepted while stopping
            writer.close()
            return
        self._connections.add(task)
        try:
            await broker.external_connected(
                _ConnectionReader(reader, writer), StreamWriterAdapter(writer), _LISTENER
            )
        except (OSError, asyncio.IncompleteReadError) as exc:
            log.debug("MQTT connection from %s ended: %r", writer.get_extra_info("peername"), exc)
        finally:
            self._connections.discard(task)
            writer.close()  # amqtt leaves the socket open when the first packet is not CONNECT

    async def _enforce_keepalive(self) -> None:
        """Close connections silent for longer than 1.5 x their keep-alive."""
        while True:
            await asyncio.sleep(_WATCHDOG_PERIOD_S)
            broker = self._broker
            if broker is None:
                return
            now = time.monotonic()
            for session, handler in list(broker.sessions.values()):
                reader = getattr(handler, "reader", None)
                if not isinstance(reader, _ConnectionReader) or session.keep_alive <= 0:
                    continue
                if now - reader.last_read > _KEEPALIVE_GRACE * session.keep_alive:
                    if not reader.writer.is_closing():
                        log.info(
                            "MQTT client %s silent for %.1f s (keep-alive %d s): disconnecting",
                            session.client_id,
                            now - reader.last_read,
                            session.keep_alive,
                        )
                        reader.writer.transport.abort()


def _quiet_amqtt_loggers(*, debug: bool) -> None:
    """amqtt logs every connection at INFO: keep it at WARNING unless the hub debugs.

    Only loggers nobody configured are touched, so an operator's logging config wins.
    """
    for name in _AMQTT_LOGGERS:
        logger = logging.getLogger(name)
        if logger.level == logging.NOTSET:
            logger.setLevel(logging.DEBUG if debug else logging.WARNING)


def _load_retained(data_dir: Path | None) -> list[_Retained]:
    if data_dir is None:
        return []
    path = data_dir / _RETAINED_FILE
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return []
    try:
        return [
            _Retained(str(item["topic"]), base64.b64decode(item["data"]), int(item["qos"]))
            for item in json.loads(text)
        ]
    except (ValueError, KeyError, TypeError, binascii.Error) as exc:
        raise BrokerStateError(
            f"retained messages file {path} is not valid: {exc!r}; move it away to start empty"
        ) from exc


def _save_retained(data_dir: Path | None, messages: list[_Retained]) -> None:
    if data_dir is None:
        return
    data_dir.mkdir(parents=True, exist_ok=True)
    path = data_dir / _RETAINED_FILE
    items = [
        {"topic": m.topic, "qos": m.qos, "data": base64.b64encode(m.data).decode("ascii")}
        for m in messages
    ]
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(items), encoding="utf-8")
    os.replace(tmp, path)
