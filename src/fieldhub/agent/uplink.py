"""The agent's MQTT connection: drains the outbox to the hub, takes commands and desired state.

How reports leave and what happens to the unacknowledged and the refused ones (the window,
resends, acks that say "send again", refusals, renumbering) is the business of
``fieldhub.agent.sender``, which the gateway's uplink shares; this module is the connection:
subscribing, the status and its last will, commands and desired state.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any, Final, Self

from fieldhub.agent._tasks import log_if_failed
from fieldhub.agent.outbox import Outbox
from fieldhub.agent.sender import REFUSED_EVENT, ClientLink, Sender, SenderStats
from fieldhub.clock import now_ms
from fieldhub.logthrottle import LogThrottle, held_back
from fieldhub.mqtt import ConnectRefused, MqttClient, MqttError, SubscribeRefused, Will
from fieldhub.protocol import (
    Channel,
    Command,
    Desired,
    MediaAnswer,
    PayloadError,
    Reply,
    Status,
    Upload,
    decode,
    encode,
    topic_for,
)

__all__ = ["REFUSED_EVENT", "Uplink", "UplinkSettings", "UplinkStats"]

if TYPE_CHECKING:  # ssl loads OpenSSL: a plain-TCP agent does without (fieldhub.cli.plain)
    import ssl

log = logging.getLogger(__name__)

_STOP_FLUSH_S: Final = 2.0
_MAX_EARLY_COMMANDS: Final = 256
"""Commands kept while no handler is attached; more are dropped (the hub sends them again)."""


@dataclass(frozen=True, slots=True)
class UplinkSettings:
    """Knobs of the uplink; the defaults suit a Pi on a mobile or DSL line.

    Attributes:
        window: messages sent and not yet acknowledged by the hub, at most.
        ack_timeout_s: first resend of an unacknowledged message after this long.
        max_ack_timeout_s: the resend delay doubles per attempt up to this (while the hub
            gives no sign of life: see the module docstring).
        refuse_after: sends, each followed by a reject, after which the oldest message in
            flight is given up (see the module docstring).
        keepalive_s: MQTT keepalive; a dead connection is noticed within 1.5 times this.
        connect_timeout_s: for each connection attempt.
        reconnect_min_s: first delay before connecting again; doubles per failed attempt.
        reconnect_max_s: longest delay between attempts.
        clean_session: False lets the broker keep commands (QoS 1) for a device that is
            briefly away.
    """

    window: int = 8
    ack_timeout_s: float = 10.0
    max_ack_timeout_s: float = 30.0
    refuse_after: int = 3
    keepalive_s: int = 30
    connect_timeout_s: float = 10.0
    reconnect_min_s: float = 0.5
    reconnect_max_s: float = 30.0
    clean_session: bool = False

    def __post_init__(self) -> None:
        if not 1 <= self.window <= 1000:
            raise ValueError(f"window must be 1..1000, not {self.window!r}.")
        if not 0 < self.ack_timeout_s <= self.max_ack_timeout_s:
            raise ValueError(
                "Need 0 < ack_timeout_s <= max_ack_timeout_s, got "
                f"{self.ack_timeout_s!r} and {self.max_ack_timeout_s!r}."
            )
        if self.refuse_after < 1:
            raise ValueError(f"refuse_after must be at least 1, not {self.refuse_after!r}.")


@dataclass(slots=True)
class UplinkStats(SenderStats):
    """What the uplink did, for the technician page and the status API: the sender's figures
    (``SenderStats``) and these.

    Attributes:
        connected: the broker connection is up now.
        connections: successful connections since start.
        commands: commands received.
        invalid_inbound: hub → device messages that could not be decoded.
    """

    connected: bool = False
    connections: int = 0
    commands: int = 0
    invalid_inbound: int = 0


class Uplink:
    """One device's MQTT connection to its hub. Use as an async context manager.

    Entering starts connecting in the background (an agent that boots without network keeps
    storing reports and connects when it can); leaving publishes the offline status, waits
    briefly for the broker to take it, and disconnects. Call the methods on the event loop.

    Args:
        outbox: the outbox to drain; it must be open.
        device_id: client id and topic level.
        host: broker address.
        port: broker port.
        websocket_path: MQTT over WebSocket at this HTTP path (``ws(s)://``); None for TCP.
        username: ``{device_id}.{key id}`` (docs/protocol.md "Connecting").
        password: the device's secret; never logged.
        settings: see :class:`UplinkSettings`.
        tls: speak TLS with this context (``fieldhub.mqtt.tls.broker_context``): a broker
            whose certificate fails is not sent the secret, and the reason is logged and shown
            in :meth:`snapshot` (``uplink.last_error``) while it lasts.
    """

    def __init__(
        self,
        outbox: Outbox,
        *,
        device_id: str,
        host: str,
        port: int,
        websocket_path: str | None = None,
        username: str | None = None,
        password: str | None = None,
        settings: UplinkSettings | None = None,
        tls: ssl.SSLContext | None = None,
    ) -> None:
        self._outbox = outbox
        self._device_id = device_id
        self._settings = settings = settings or UplinkSettings()
        self.stats = UplinkStats()
        self._topics = {channel: topic_for(device_id, channel) for channel in Channel}
        self._client = MqttClient(
            host,
            port,
            client_id=device_id,
            on_message=self._on_message,
            username=username,
            password=password,
            clean_session=settings.clean_session,
            keepalive_s=settings.keepalive_s,
            will=Will(
                self._topics[Channel.STATUS],
                encode(Status(online=False, reason="connection lost")),
            ),
            on_connect=self._on_connect,
            on_disconnect=self._on_disconnect,
            reconnect_min_s=settings.reconnect_min_s,
            reconnect_max_s=settings.reconnect_max_s,
            max_inflight=settings.window + 64,
            max_queued=1000,
            tls=tls,
            websocket_path=websocket_path,
        )
        self._link = ClientLink(self._client)
        self._sender = Sender(outbox, device_id, self._link, settings, self.stats)
        self._tasks: list[asyncio.Task[None]] = []
        self._command_callback: Callable[[Command], None] | None = None
        self._desired_callback: Callable[[Desired], None] | None = None
        self._media_callback: Callable[[MediaAnswer], None] = lambda _answer: None
        # What arrives before the agent attached its handlers (the broker delivers a kept
        # session's commands and the retained desired state right after connecting) waits.
        self._early_commands: list[Command] = []
        self._early_desired: Desired | None = None
        self._throttle = LogThrottle()

    # -- life cycle ------------------------------------------------------------------------
    async def __aenter__(self) -> Self:
        self._sender.start()
        self._tasks = [asyncio.create_task(self._connect(), name="uplink-connect")]
        for task in self._tasks:
            task.add_done_callback(log_if_failed)
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        """Say goodbye (retained offline status) and disconnect. Idempotent."""
        await self._sender.stop()
        tasks, self._tasks = self._tasks, []
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._client.connected:
            status = Status(online=False, ts=now_ms(), reason="agent stopped")
            self._client.publish(self._topics[Channel.STATUS], encode(status), qos=1, retain=True)
            with contextlib.suppress(MqttError, TimeoutError):
                async with asyncio.timeout(_STOP_FLUSH_S):
                    await self._client.flushed()
        await self._client.close()
        self.stats.connected = False

    async def _connect(self) -> None:
        """Connect until it works, then subscribe; the client reconnects by itself after."""
        delay = self._settings.reconnect_min_s
        while True:
            try:
                await self._client.connect(self._settings.connect_timeout_s)
                break
            except ConnectRefused as exc:  # wrong credentials, or revoked: say so, keep trying
                held = self._throttle.due("refused")
                if held is not None:
                    log.error(
                        "the broker %s refused device %s: %s; reports are kept meanwhile%s",
                        self.address,
                        self._device_id,
                        exc,
                        held_back(held),
                    )
            except (OSError, TimeoutError) as exc:  # MqttError is an OSError
                held = self._throttle.due("connect")
                if held is not None:
                    log.warning(
                        "cannot reach the broker %s (%s); reports are kept meanwhile%s",
                        self.address,
                        exc,
                        held_back(held),
                    )
            await asyncio.sleep(delay * random.uniform(0.5, 1.0))
            delay = min(delay * 2, self._settings.reconnect_max_s)
        filters = [
            (self._topics[Channel.ACK], 0),
            (self._topics[Channel.REJECT], 0),
            (self._topics[Channel.CMD], 1),
            (self._topics[Channel.DESIRED], 1),
            (self._topics[Channel.MEDIA], 1),
        ]
        try:
            await self._client.subscribe(filters)
        except SubscribeRefused as exc:
            log.error("the broker %s refused subscriptions: %s", self.address, exc)
        except MqttError as exc:  # lost before SUBACK: subscribed again on reconnection
            log.debug("subscription interrupted: %s", exc)
        # Only now say "online": the hub sends waiting commands when it hears it, and a
        # command that reached the broker before the subscription would be lost.
        self._link.subscribed = True
        if self._client.connected:
            self._announce("agent started")
        self._sender.poke()  # and only now send reports (see Link.ready)

    @property
    def address(self) -> str:
        """``host:port`` of the broker."""
        return self._client.address

    @property
    def connected(self) -> bool:
        """True while the broker connection is up."""
        return self._client.connected

    # -- hooks for the rest of the agent ---------------------------------------------------
    def on_command(self, callback: Callable[[Command], None]) -> None:
        """Call ``callback`` (on the loop, must not block) with every command received,
        beginning with those that arrived before it was set."""
        self._command_callback = callback
        early, self._early_commands = self._early_commands, []
        for command in early:
            callback(command)

    def on_desired(self, callback: Callable[[Desired], None]) -> None:
        """Call ``callback`` with every desired state received (retained: also on connect),
        beginning with the newest one that arrived before it was set."""
        self._desired_callback = callback
        early, self._early_desired = self._early_desired, None
        if early is not None:
            callback(early)

    def publish_reply(self, instance: str, reply: Reply) -> None:
        """Send a command's outcome to hub instance ``instance`` (QoS 1, not through the
        outbox: the actions keep replies of recent commands and answer redeliveries)."""
        topic = topic_for(self._device_id, Channel.REPLY, instance)
        self._client.publish(topic, encode(reply), qos=1)

    def on_media(self, callback: Callable[[MediaAnswer], None]) -> None:
        """Call ``callback`` with every answer on ``media`` (the media uploader's)."""
        self._media_callback = callback

    def publish_upload(self, request: Upload) -> None:
        """Ask the hub on ``upload`` (QoS 1; not through the outbox: asked again if lost)."""
        self._client.publish(self._topics[Channel.UPLOAD], encode(request), qos=1)

    def snapshot(self) -> dict[str, Any]:
        """Uplink and outbox figures, JSON-ready, for the local page and the status API."""
        uplink = asdict(self.stats)
        if self._client.stats.last_error:  # why it is not connected, e.g. a TLS refusal
            uplink["last_error"] = self._client.stats.last_error
        return {"uplink": uplink, "outbox": asdict(self._outbox.stats)}

    # -- connection events -----------------------------------------------------------------
    def _on_connect(self) -> None:
        self.stats.connected = True
        self.stats.connections += 1
        if self._link.subscribed:  # the client subscribed again before this; the first time,
            self._announce("reconnected")  # _connect announces after subscribing
        self._sender.send_window()  # the hub may not have them
        self._sender.poke()

    def _announce(self, reason: str) -> None:
        status = Status(online=True, ts=now_ms(), reason=reason)
        self._client.publish(self._topics[Channel.STATUS], encode(status), qos=1, retain=True)

    def _on_disconnect(self, exc: BaseException | None) -> None:
        self.stats.connected = False
        self._sender.wake()

    # -- from the hub ----------------------------------------------------------------------
    def _on_message(self, topic: str, payload: bytes) -> None:
        topics = self._topics
        try:
            if topic == topics[Channel.ACK]:
                self._sender.on_ack(decode(Channel.ACK, payload))
            elif topic == topics[Channel.REJECT]:
                self._sender.on_reject(decode(Channel.REJECT, payload))
            elif topic == topics[Channel.CMD]:
                command = decode(Channel.CMD, payload)
                self.stats.commands += 1
                if self._command_callback is not None:
                    self._command_callback(command)
                elif len(self._early_commands) < _MAX_EARLY_COMMANDS:
                    self._early_commands.append(command)
            elif topic == topics[Channel.MEDIA]:
                self._media_callback(decode(Channel.MEDIA, payload))
            elif topic == topics[Channel.DESIRED] and payload:  # empty: desired state cleared
                desired = decode(Channel.DESIRED, payload)
                if self._desired_callback is not None:
                    self._desired_callback(desired)
                else:
                    self._early_desired = desired
        except PayloadError as exc:
            self.stats.invalid_inbound += 1
            held = self._throttle.due(("inbound", topic))
            if held is not None:
                log.warning(
                    "ignored a message from the hub on %s: %s%s", topic, exc, held_back(held)
                )
