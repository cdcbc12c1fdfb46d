"""The hub's MQTT connection: subscribe to the device channels, hand messages to ingest.

gmqtt is asyncio-native, so messages arrive on the hub's event loop with no thread hop; the
``benchmarks/`` measurements chose it over paho-mqtt for the hot path. The connection
re-subscribes after every reconnect (gmqtt reconnects with a delay by itself) and keeps a
persistent session, so QoS 1 messages published while the hub is briefly away are kept for it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from types import TracebackType
from typing import Any
from urllib.parse import unquote, urlsplit

import gmqtt
from gmqtt.mqtt.constants import MQTTv311

log = logging.getLogger(__name__)

MessageHandler = Callable[[str, bytes], None]


class BusError(ConnectionError):
    """The broker could not be reached or refused the hub."""


class HubBus:
    """One MQTT connection of one hub process."""

    def __init__(
        self,
        url: str,
        *,
        client_id: str,
        subscriptions: list[str],
        on_message: MessageHandler,
        qos: int = 1,
        connect_timeout_s: float = 10.0,
    ) -> None:
        parts = urlsplit(url)
        self._host = parts.hostname or "127.0.0.1"
        self._port = parts.port or 1883
        self._username = unquote(parts.username) if parts.username else None
        self._password = unquote(parts.password) if parts.password else None
        self._subscriptions = subscriptions
        self._on_message = on_message
        self._qos = qos
        self._timeout = connect_timeout_s
        self._connected = asyncio.Event()
        self._closing = False
        self._client = gmqtt.Client(client_id, clean_session=False)
        self._client.on_connect = self._handle_connect
        self._client.on_disconnect = self._handle_disconnect
        self._client.on_message = self._handle_message
        self._client.set_config({"reconnect_retries": -1, "reconnect_delay": 1})
        if self._username:
            self._client.set_auth_credentials(self._username, self._password)

    @property
    def connected(self) -> bool:
        """True while the broker connection is up."""
        return self._connected.is_set()

    @property
    def address(self) -> str:
        """``host:port`` of the broker (no credentials), for logs and health."""
        return f"{self._host}:{self._port}"

    async def __aenter__(self) -> HubBus:
        try:
            await asyncio.wait_for(
                self._client.connect(self._host, self._port, keepalive=30, version=MQTTv311),
                self._timeout,
            )
            await asyncio.wait_for(self._connected.wait(), self._timeout)
        except (OSError, TimeoutError, gmqtt.mqtt.handler.MQTTConnectError) as exc:
            await self._client.disconnect()
            raise BusError(f"cannot connect to the MQTT broker at {self.address}: {exc}") from exc
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._closing = True
        await self._client.disconnect()

    def publish(self, topic: str, payload: bytes, qos: int = 0, retain: bool = False) -> None:
        """Queue a message for the broker (dropped by gmqtt while disconnected at QoS 0)."""
        self._client.publish(topic, payload, qos=qos, retain=retain)

    def _handle_connect(self, client: Any, flags: Any, rc: Any, properties: Any) -> None:
        for topic in self._subscriptions:
            client.subscribe(topic, qos=self._qos)
        if not self._connected.is_set():
            log.info("connected to MQTT broker %s", self.address)
        self._connected.set()

    def _handle_disconnect(self, client: Any, packet: Any, exc: Any = None) -> None:
        if self._connected.is_set() and not self._closing:
            log.warning("lost MQTT broker %s; reconnecting", self.address)
        self._connected.clear()

    def _handle_message(self, client: Any, topic: str, payload: bytes, qos: int, props: Any) -> int:
        self._on_message(topic, payload)
        return 0
