"""The hub's MQTT connection: subscribe to the device channels, hand messages to ingest.

It runs on fieldhub's own MQTT 3.1.1 client (``fieldhub.mqtt``) rather than gmqtt: on the
ingest hot path gmqtt wrote every PUBACK with its own ``send`` call (a quarter of the hub's
event-loop time at QoS 1) and cannot stop reading the socket; ours acknowledges everything one
read delivered in a single write and can pause reading, which is how ingest pushes back on the
broker when the database falls behind (see ``docs/benchmarks.md``). The session is persistent,
so QoS 1 messages published while the hub is briefly away are kept for it by the broker.

The client reconnects by itself; the hub hears of each loss and each new connection
(``on_lost``, ``on_subscribed``), because a device may have died unseen while the hub was away
(``fieldhub.hub.devices.presence``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from types import TracebackType
from typing import TYPE_CHECKING

from fieldhub.mqtt import MqttClient, MqttError
from fieldhub.mqtt.address import broker_address

if TYPE_CHECKING:
    import ssl

log = logging.getLogger(__name__)

MessageHandler = Callable[[str, bytes], None]
ConnectionHandler = Callable[[], None]


class BusError(ConnectionError):
    """The broker could not be reached or refused the hub."""


class HubBus:
    """One MQTT connection of one hub process, logged in as the hub's own identity.

    An ``mqtts://`` URL needs ``tls`` (``HubSettings.broker_tls``). Credentials in ``url`` are
    ignored: on Mosquitto they are the dynamic-security admin's,
    which the hub uses only to manage device credentials (``fieldhub.hub.broker.selection``).

    ``on_subscribed`` is called soon after every connection (the first one too) once the
    subscriptions are sent, so the broker's retained messages follow; ``on_lost`` when the
    connection drops (not when the hub closes it).
    ``on_reconnect`` is called after every reconnection, not after the first connection
    (after ``on_subscribed``): the broker may have restarted and lost what it held for the
    hub's peers.

    ``keep_session`` (the default) asks the broker to keep what arrives for the hub while it is
    away. A hub of a cluster does not: the broker would go on handing a dead member its share
    of the devices' messages and hold them until it came back, while the other members could
    have taken them (the devices resend what was lost with the connection).
    """

    def __init__(
        self,
        url: str,
        *,
        client_id: str,
        subscriptions: list[str],
        on_message: MessageHandler,
        on_subscribed: ConnectionHandler | None = None,
        on_lost: ConnectionHandler | None = None,
        username: str | None = None,
        password: str | None = None,
        qos: int = 1,
        connect_timeout_s: float = 10.0,
        on_reconnect: ConnectionHandler | None = None,
        tls: ssl.SSLContext | None = None,
        keep_session: bool = True,
    ) -> None:
        address = broker_address(url)
        self._host, self._port = address.host, address.port
        self._subscriptions = [(topic, qos) for topic in subscriptions]
        self._timeout = connect_timeout_s
        self._on_subscribed = on_subscribed
        self._on_lost = on_lost
        self._on_reconnect = on_reconnect
        self._connections = 0
        self._client = MqttClient(
            self._host,
            self._port,
            client_id=client_id,
            on_message=on_message,
            username=username,
            password=password,
            clean_session=not keep_session,
            keepalive_s=30,
            on_connect=self._connected,
            on_disconnect=self._disconnected,
            tls=tls,
        )

    def _connected(self) -> None:
        self._connections += 1
        if self._on_subscribed is not None:
            self._on_subscribed()
        if self._connections > 1 and self._on_reconnect is not None:
            self._on_reconnect()

    def healthy(self) -> None:
        """The connection works end to end (devices' data came through it and was stored):
        if it is lost now, reconnect from the shortest delay, not from a back-off grown by
        earlier outages (a broker killed every few seconds kept the hub away for seconds)."""
        self._client.healthy()

    @property
    def session_present(self) -> bool:
        """Whether the broker kept the hub's session (and so what devices sent meanwhile) at
        the last connection; False after a broker restart that lost it."""
        return self._client.session_present

    @property
    def connected(self) -> bool:
        """True while the broker connection is up."""
        return self._client.connected

    @property
    def address(self) -> str:
        """``host:port`` of the broker (no credentials), for logs and health."""
        return f"{self._host}:{self._port}"

    async def __aenter__(self) -> HubBus:
        try:
            await self._client.connect(self._timeout)
            await self._client.subscribe(self._subscriptions)
        except (OSError, TimeoutError, MqttError) as exc:
            await self._client.close()
            raise BusError(f"cannot connect to the MQTT broker at {self.address}: {exc}") from exc
        log.info("connected to MQTT broker %s", self.address)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self._client.close()

    def _disconnected(self, error: BaseException | None) -> None:
        if error is not None and self._on_lost is not None:  # None: our own close()
            self._on_lost()

    def publish(self, topic: str, payload: bytes, qos: int = 0, retain: bool = False) -> None:
        """Queue a message for the broker (QoS 0 is dropped, and counted, while disconnected)."""
        self._client.publish(topic, payload, qos=qos, retain=retain)

    async def flushed(self) -> None:
        """Return once every QoS 1 message published so far is acknowledged by the broker."""
        await self._client.flushed()

    def pause_reading(self) -> None:
        """Stop taking messages from the broker (it queues them) until :meth:`resume_reading`."""
        self._client.pause_reading()

    def resume_reading(self) -> None:
        """Take messages again."""
        self._client.resume_reading()
