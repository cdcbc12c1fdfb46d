"""One device's reports on their way to the hub: the window, resends, acks and refusals.

The agent's uplink drains one outbox through its own connection; the gateway's drains one per
child through a connection shared by all (docs/gateway.md). Both keep the same promises, so
the rules live here once, and a :class:`Link` is all they need of a connection.

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
that the connection works, so the next reconnection starts with its shortest delay: with a
broker back after a second, a reconnection no longer waits for a back-off grown by earlier
outages (it reset only after 30 s connected).

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
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final, Protocol

import msgspec

from fieldhub.agent._tasks import log_if_failed
from fieldhub.agent.outbox import Outbox, OutboxReporter, OutMessage
from fieldhub.logthrottle import LogThrottle, held_back
from fieldhub.mqtt import MqttClient
from fieldhub.protocol import Ack, Channel, Reject, topic_for

if TYPE_CHECKING:
    from fieldhub.agent.uplink import UplinkSettings

__all__ = ["REFUSED_EVENT", "ClientLink", "Link", "Sender", "SenderStats"]

log = logging.getLogger(__name__)

REFUSED_EVENT: Final = "outbox.refused"


class Link(Protocol):
    """The connection a :class:`Sender` publishes through."""

    @property
    def connected(self) -> bool:
        """The broker connection is up."""

    @property
    def ready(self) -> bool:
        """Connected, subscribed to the device's hub → device channels, and its online status
        published: reports may leave."""

    def publish(self, topic: str, payload: bytes, qos: int = 0) -> object:
        """Publish (queued while disconnected is not required: resends cover it)."""

    def healthy(self) -> None:
        """The hub answered through this connection (its next reconnection starts fast)."""


class ClientLink:
    """A :class:`Link` over one MQTT client; its owner sets ``subscribed`` once the device's
    subscriptions are sent and its status published."""

    def __init__(self, client: MqttClient) -> None:
        self._client = client
        self.subscribed = False

    @property
    def connected(self) -> bool:
        """See :class:`Link`."""
        return self._client.connected

    @property
    def ready(self) -> bool:
        """See :class:`Link`."""
        return self.subscribed and self._client.connected

    def publish(self, topic: str, payload: bytes, qos: int = 0) -> None:
        """See :class:`Link`."""
        self._client.publish(topic, payload, qos=qos)

    def healthy(self) -> None:
        """See :class:`Link`."""
        self._client.healthy()


@dataclass(slots=True)
class SenderStats:
    """What a sender did (the agent's ``UplinkStats`` carries these and more).

    Attributes:
        sent: messages published for the first time.
        resent: messages published again (reconnection, ack timeout).
        acked: messages the hub confirmed it stored.
        acked_seq: the last storage ack received.
        in_flight: messages sent and not yet acknowledged.
        refused: messages given up because the hub refused them.
        rejects: reject notices received from the hub.
        renumbered: times the hub was found ahead of this outbox's seqs.
        hub_returns: acks marked ``resend`` (the hub back on a broker that lost its session).
    """

    sent: int = 0
    resent: int = 0
    acked: int = 0
    acked_seq: int = 0
    in_flight: int = 0
    refused: int = 0
    rejects: int = 0
    renumbered: int = 0
    hub_returns: int = 0


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


class Sender:
    """Drains ``outbox`` of ``device_id`` through ``link``: start with :meth:`start`, end with
    :meth:`stop`; feed it the device's ``ack`` and ``reject`` messages, and call
    :meth:`send_window` on every (re)connection and :meth:`wake` on every loss."""

    def __init__(
        self,
        outbox: Outbox,
        device_id: str,
        link: Link,
        settings: UplinkSettings,
        stats: SenderStats | None = None,
    ) -> None:
        self._outbox = outbox
        self._link = link
        self._settings = settings
        self.stats = stats if stats is not None else SenderStats()
        self._topics = {channel: topic_for(device_id, channel) for channel in Channel}
        self._window: dict[int, _InFlight] = {}  # by seq, in seq order
        self._changed = asyncio.Event()
        self._reporter: OutboxReporter | None = None
        self._rejected_at: dict[str, float] = {}  # channel -> when the last reject came
        self._reject_error: dict[str, str] = {}
        self._renumbered_to = 0
        self._throttle = LogThrottle()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Take what the outbox hands out, and resend what stays unacknowledged."""
        self._reporter = OutboxReporter(self._outbox)
        self._outbox.attach(self._take, self._room)
        self._task = asyncio.create_task(self._resend_loop(), name="uplink-resend")
        self._task.add_done_callback(log_if_failed)

    async def stop(self) -> None:
        """Take nothing more; the outbox keeps what is unacknowledged for the next start."""
        self._outbox.detach()
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    def wake(self) -> None:
        """The connection changed: look at the window again."""
        self._changed.set()

    def poke(self) -> None:
        """There may be room: let the outbox hand out more."""
        self._outbox.poke()

    def _room(self) -> int:
        # Nothing leaves before the subscriptions and the status (``Link.ready``): the hub's
        # acks would find no subscriber, and the hub would hear data first, "online" after.
        if not self._link.ready:
            return 0
        return self._settings.window - len(self._window)

    def _take(self, messages: list[OutMessage]) -> None:
        """Messages the outbox handed out, in seq order: into the window, and sent."""
        for message in messages:
            entry = _InFlight(message)
            self._window[message.seq] = entry
            if self._link.connected:
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
        self._link.publish(self._topics[message.channel], payload, qos=1)
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

    def send_window(self) -> None:
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
            if not self._window or not self._link.connected:
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

    def on_ack(self, ack: Ack) -> None:
        seq = ack.seq
        self.stats.acked_seq = seq
        self._link.healthy()  # the hub answers through this connection
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
            self.send_window()
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

    def on_reject(self, reject: Reject) -> None:
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
