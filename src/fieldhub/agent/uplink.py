"""The agent's MQTT connection: drains the outbox to the hub, takes commands and desired state.

Draining. The outbox hands out messages in seq order while the uplink has room in its *window*:
at most ``window`` messages sent and not yet acknowledged by the hub's storage ack. A small
window bounds memory (a message carries up to 1000 samples) and is enough: the hub acks after
each commit (tens of ms), and when reports come faster than that, they pile up in the outbox
and leave as multi-sample messages, so a backlog after an outage drains ``window`` times 1000
samples per round trip. An ack for seq N deletes every message up to N. What stays
unacknowledged is sent again on every reconnection, and after ``ack_timeout_s`` (doubling per
attempt up to ``max_ack_timeout_s``): the ack is QoS 0, the hub may have restarted, its broker
may have lost our message. Resends are safe: the hub stores each seq once and acks duplicates.

The hub being there again resets that doubling: a reconnection and every ack that frees
something start the timeouts from ``ack_timeout_s`` again, and an ack marked ``resend`` (the
hub has just subscribed again to a broker that lost its session, docs/protocol.md) sends the
whole window at once. Without that, an agent that reconnected to a restarted broker before the
hub did resent into nothing and then waited out timeouts doubled by the outage (up to 120 s,
with a backlog growing behind them). The first ack on a connection also tells the MQTT client
that the connection works, so the next reconnection starts with its shortest delay, not with a
back-off grown by earlier outages.

Refusals. The outbox takes only reports that match the wire contract, so the hub refusing a
message is rare (a hub stricter than this agent, a damaged file), but such a message must not
block the queue forever: the hub's ack would stay below it. The hub's ``reject`` names the
channel and not always the seq, and it is throttled; so the uplink drops the *oldest* message
in flight when it was sent ``refuse_after`` times in a row, each time followed by a reject on
its channel and no ack covering it. The loss is counted, logged once and reported upward as an
``outbox.refused`` event; that event (like every later message) carries ``oldest`` above the
dropped seq, so the hub's watermark moves past the gap.

A hub that acks a seq this agent never handed out holds seqs from an earlier life of the device
(its outbox file was lost or replaced): everything not yet acknowledged is numbered again above
the hub's seq, or the hub would discard it as duplicates.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any, Final, Self

import msgspec

from fieldhub.agent._tasks import log_if_failed
from fieldhub.agent.outbox import Outbox, OutboxReporter, OutMessage
from fieldhub.clock import now_ms
from fieldhub.logthrottle import LogThrottle, held_back
from fieldhub.mqtt import ConnectRefused, MqttClient, MqttError, SubscribeRefused, Will
from fieldhub.protocol import (
    Ack,
    Channel,
    Command,
    Desired,
    MediaAnswer,
    PayloadError,
    Reject,
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

REFUSED_EVENT: Final = "outbox.refused"
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
class UplinkStats:
    """What the uplink did, for the technician page and the status API.

    Attributes:
        connected: the broker connection is up now.
        connections: successful connections since start.
        sent: messages published for the first time.
        resent: messages published again (reconnection, ack timeout).
        acked: messages the hub confirmed it stored.
        acked_seq: the last storage ack received.
        in_flight: messages sent and not yet acknowledged.
        refused: messages given up because the hub refused them.
        rejects: reject notices received from the hub.
        renumbered: times the hub was found ahead of this outbox's seqs.
        hub_returns: acks marked ``resend`` (the hub back on a broker that lost its session).
        commands: commands received.
        invalid_inbound: hub → device messages that could not be decoded.
    """

    connected: bool = False
    connections: int = 0
    sent: int = 0
    resent: int = 0
    acked: int = 0
    acked_seq: int = 0
    in_flight: int = 0
    refused: int = 0
    rejects: int = 0
    renumbered: int = 0
    hub_returns: int = 0
    commands: int = 0
    invalid_inbound: int = 0


class _InFlight:
    """A message in the window."""

    __slots__ = ("attempts", "deadline", "message", "refusals", "sends", "sent_at")

    def __init__(self, message: OutMessage) -> None:
        self.message = message
        self.sends = 0
        self.attempts = 0  # sends since the hub last showed it is there (the timeout doubles)
        self.sent_at = 0.0
        self.deadline = 0.0
        self.refusals = 0  # consecutive timeouts that followed a reject on its channel


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
        self._window: dict[int, _InFlight] = {}  # by seq, in seq order
        self._changed = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._reporter: OutboxReporter | None = None
        self._rejected_at: dict[str, float] = {}  # channel -> when the last reject came
        self._reject_error: dict[str, str] = {}
        self._renumbered_to = 0
        self._subscribed = False  # set once the first subscription was sent
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
        self._reporter = OutboxReporter(self._outbox)
        self._outbox.attach(self._take, self._room)
        self._tasks = [
            asyncio.create_task(self._connect(), name="uplink-connect"),
            asyncio.create_task(self._resend_loop(), name="uplink-resend"),
        ]
        for task in self._tasks:
            task.add_done_callback(log_if_failed)
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        """Say goodbye (retained offline status) and disconnect. Idempotent."""
        self._outbox.detach()
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
        self._subscribed = True
        if self._client.connected:
            self._announce("agent started")
        self._outbox.poke()  # and only now send reports (see _room)

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
        if self._subscribed:  # the client subscribed again before this; the first time,
            self._announce("reconnected")  # _connect announces after subscribing
        self._send_window()  # the hub may not have them
        self._outbox.poke()

    def _announce(self, reason: str) -> None:
        status = Status(online=True, ts=now_ms(), reason=reason)
        self._client.publish(self._topics[Channel.STATUS], encode(status), qos=1, retain=True)

    def _on_disconnect(self, exc: BaseException | None) -> None:
        self.stats.connected = False
        self._changed.set()

    # -- draining --------------------------------------------------------------------------
    def _room(self) -> int:
        # Nothing leaves before the first subscription and the status: the hub's acks would
        # find no subscriber, and the hub would hear data first and then "online" again.
        if not self._client.connected or not self._subscribed:
            return 0
        return self._settings.window - len(self._window)

    def _take(self, messages: list[OutMessage]) -> None:
        """Messages the outbox handed out, in seq order: into the window, and sent."""
        for message in messages:
            entry = _InFlight(message)
            self._window[message.seq] = entry
            if self._client.connected:
                self._send(entry)
        self.stats.in_flight = len(self._window)
        self._changed.set()

    def _oldest(self) -> int:
        return next(iter(self._window)) if self._window else 0

    def _send(self, entry: _InFlight) -> None:
        message = entry.message
        try:
            payload = message.payload(self._oldest() or message.seq)
        except (msgspec.ValidationError, msgspec.DecodeError) as exc:
            self._refuse(entry, f"stored message unreadable: {exc}")
            return
        self._client.publish(self._topics[message.channel], payload, qos=1)
        if entry.sends:
            self.stats.resent += 1
        else:
            self.stats.sent += 1
        entry.sends += 1
        entry.attempts += 1
        settings = self._settings
        timeout = min(
            settings.ack_timeout_s * 2 ** min(entry.attempts - 1, 16), settings.max_ack_timeout_s
        )
        entry.sent_at = time.monotonic()
        entry.deadline = entry.sent_at + timeout

    def _send_window(self) -> None:
        """Send everything in flight again now, timeouts starting afresh (the hub is there,
        and may never have had it)."""
        for entry in list(self._window.values()):
            entry.attempts = 0
            self._send(entry)
        self._changed.set()

    async def _resend_loop(self) -> None:
        """Send again what stays unacknowledged past its deadline; sleeps while idle."""
        while True:
            self._changed.clear()
            if not self._window or not self._client.connected:
                await self._changed.wait()
                continue
            delay = min(e.deadline for e in self._window.values()) - time.monotonic()
            if delay > 0:
                # Not wait_for: on 3.11 it can swallow a cancellation that comes as the event
                # fires, and close() would then wait for this task forever.
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(delay):
                        await self._changed.wait()
                continue
            self._resend_due()

    def _resend_due(self) -> None:
        now = time.monotonic()
        head = True
        for entry in list(self._window.values()):
            if entry.deadline > now:
                head = False
                continue
            if head:
                channel = entry.message.channel.value
                if self._rejected_at.get(channel, 0.0) >= entry.sent_at:
                    entry.refusals += 1
                else:
                    entry.refusals = 0
                if entry.refusals >= self._settings.refuse_after:
                    self._refuse(entry, self._reject_error.get(channel, "refused"))
                    continue  # the next one is the head now
            head = False
            self._send(entry)

    def _refuse(self, entry: _InFlight, error: str) -> None:
        """Give a message up for good: counted, logged, reported, and the hub told (through
        ``oldest`` on the next messages) not to wait for it."""
        message = entry.message
        self._window.pop(message.seq, None)
        self.stats.in_flight = len(self._window)
        self.stats.refused += 1
        self._outbox.refuse(message.seq)
        log.error(
            "the hub refused message %d (%s, %d report(s)) %d times; dropped: %s",
            message.seq,
            message.channel.value,
            message.reports,
            entry.sends,
            error,
        )
        if self._reporter is not None:
            self._reporter.event(
                REFUSED_EVENT,
                "warning",
                "a message the hub refused was dropped from the outbox",
                {
                    "seq": message.seq,
                    "channel": message.channel.value,
                    "reports": message.reports,
                    "error": error[:200],
                },
            )
        self._outbox.poke()

    # -- from the hub ----------------------------------------------------------------------
    def _on_message(self, topic: str, payload: bytes) -> None:
        topics = self._topics
        try:
            if topic == topics[Channel.ACK]:
                self._on_ack(decode(Channel.ACK, payload))
            elif topic == topics[Channel.REJECT]:
                self._on_reject(decode(Channel.REJECT, payload))
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

    def _on_ack(self, ack: Ack) -> None:
        seq = ack.seq
        self.stats.acked_seq = seq
        self._client.healthy()  # the hub answers through this connection
        if seq > max(self._outbox.last_seq, self._renumbered_to):
            self._renumber(seq)
            return
        done = 0
        while self._window:
            first = next(iter(self._window))
            if first > seq:
                break
            del self._window[first]
            done += 1
        self._outbox.ack(seq)
        if ack.resend:
            self.stats.hub_returns += 1
            self._send_window()
        elif done:
            # The hub keeps up: what still waits gets the first timeout again, not one doubled
            # while the hub was away.
            first_timeout = self._settings.ack_timeout_s
            for entry in self._window.values():
                entry.attempts = 1
                entry.deadline = min(entry.deadline, entry.sent_at + first_timeout)
        if done:
            self.stats.acked += done
            self.stats.in_flight = len(self._window)
            self._changed.set()
            self._outbox.poke()

    def _renumber(self, hub_seq: int) -> None:
        log.warning(
            "the hub holds seqs up to %d, this outbox handed out only up to %d: its file was "
            "replaced or reset; numbering what it holds again above %d",
            hub_seq,
            self._outbox.last_seq,
            hub_seq,
        )
        self.stats.renumbered += 1
        self._renumbered_to = hub_seq
        self._window.clear()
        self.stats.in_flight = 0
        self._outbox.renumber(hub_seq)
        self._changed.set()

    def _on_reject(self, reject: Reject) -> None:
        self.stats.rejects += 1
        held = self._throttle.due(("reject", reject.channel))
        if held is not None:
            log.warning(
                "the hub rejected a %s message: %s%s", reject.channel, reject.error, held_back(held)
            )
        entry = self._window.get(reject.seq) if reject.seq is not None else None
        if entry is not None:
            self._refuse(entry, reject.error)
            return
        self._rejected_at[reject.channel] = time.monotonic()
        self._reject_error[reject.channel] = reject.error
