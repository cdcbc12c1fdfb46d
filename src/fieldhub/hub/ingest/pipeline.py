"""Ingest: from an MQTT message to a committed row and a storage acknowledgement.

``accept`` runs for every message of a sequenced channel on the event loop
(``hub/inbound.py`` parsed, decoded and routed it), so it only de-duplicates and appends to
the open batch. ``run`` commits batches one at a time (the next one fills while the previous
commits) and, after each commit, acknowledges to every device the highest contiguous seq now
stored. Nothing is acknowledged that is not committed.

The sequence state held here is a cache of the database's (``ingest/ledger.py``): it skips
the obvious duplicates before they cost a commit, and every commit refreshes it from what all
hubs together committed. Whether a message is stored, and the watermark, the commit decides.

A commit the store cannot take (a full disk: ``store/health.py``) is not dropped: the batch,
with its presence changes, stays open and takes in what arrives meanwhile (up to the brake,
``max_pending_messages``), and is tried again after the back-off the store's health gives
(at most two seconds), so writes and acks resume by themselves within seconds of the store
coming back, without waiting for devices to resend. A commit that fails for a fault of its own
acknowledges nothing and drops its messages (devices resend them); its presence changes,
which nobody resends, go into the next batch.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from sqlalchemy.exc import SQLAlchemyError

from fieldhub.clock import now_ms
from fieldhub.hub.devices.events import DeviceAdded, DeviceEvent, DeviceRemoving
from fieldhub.hub.devices.presence import PresenceTracker
from fieldhub.hub.ingest.batch import Batch, PresenceChange
from fieldhub.hub.ingest.sequence import SeqTracker
from fieldhub.hub.ingest.stats import IngestStats
from fieldhub.hub.ingest.writer import IngestWriter
from fieldhub.hub.store.health import storage_problem
from fieldhub.logthrottle import LogThrottle, held_back
from fieldhub.protocol import (
    Ack,
    Channel,
    encode,
    topic_for,
)

log = logging.getLogger(__name__)

# Hot-path constants: channel names are compared as plain strings, because reaching an enum
# member (``Channel.X``) goes through the enum metaclass, and that several times per message.
_TELEMETRY, _EVENT = Channel.TELEMETRY.value, Channel.EVENT.value
_COMMIT_SMOOTHING = 0.2  # weight of the newest commit in the smoothed commit time


class AckPublisher(Protocol):
    """The hub's MQTT connection as ingest sees it: where acks go, and a brake."""

    def publish(self, topic: str, payload: bytes, qos: int = 0, retain: bool = False) -> None:
        """Queue one message for the broker."""

    def pause_reading(self) -> None:
        """Stop delivering messages to ingest; the broker keeps them."""

    def resume_reading(self) -> None:
        """Deliver messages again."""


CommitListener = Callable[[Batch], None]


@dataclass(frozen=True, slots=True)
class IngestSettings:
    """Batching knobs. The next batch fills while one commits, so under load batches grow by
    themselves toward ``max_batch_messages``; SQLite inserts 2-3x faster in commits of 20,000
    rows than of 1,000 (docs/benchmarks.md)."""

    linger_s: float = 0.01  # how long a batch may wait to fill once it has a message
    rest_factor: float = 2.0
    """After commits that took ``t`` seconds (recently, on average), the next batch waits at
    least ``rest_factor * t``: the database then commits ingest at most a third of the time,
    whatever the load, and a command insert or a registry change finds the writer free twice
    as often as busy. A commit writes one page per series it touches, whether it carries one
    value of that series or a hundred, so under heavy load bigger batches cost the writer
    far less per value (docs/benchmarks.md, Commands, round three)."""
    max_linger_s: float = 0.25  # ... but no batch waits longer than this for the writer
    max_batch_messages: int = 5_000  # commit at once when this many are waiting
    max_pending_messages: int = 50_000  # above this, ask the bus to stop reading
    reject_replies_per_s: float = 1.0
    """Per device: how often a refused message is reported back (``hub/inbound.py``)."""


class Ingest:
    """Accepts device messages, commits them in batches, acknowledges what is stored."""

    def __init__(
        self,
        writer: IngestWriter,
        publisher: AckPublisher,
        presence: PresenceTracker,
        stats: IngestStats,
        settings: IngestSettings | None = None,
    ) -> None:
        self._writer = writer
        self._publisher = publisher
        self._presence = presence
        self.stats = stats
        self._settings = settings or IngestSettings()
        self._trackers: dict[str, SeqTracker] = {}
        self._pending: dict[str, set[int]] = {}  # accepted, not yet committed
        self._batch = Batch()
        self._ack_due: set[str] = set()
        self._wake = asyncio.Event()
        self._opened_at = 0.0  # monotonic time the open batch was woken for
        self._commit_s = 0.0  # recent commits' duration, smoothed (see IngestSettings)
        self._retry_at = 0.0  # monotonic time before which a held batch is not tried again
        self._full = asyncio.Event()
        self._paused = False
        self._listeners: list[CommitListener] = []
        self._throttle = LogThrottle()
        self.writing = asyncio.Lock()  # held while a batch commits

    async def load(self) -> None:
        """Load every registered device's sequence state from the store."""
        self._trackers = await self._writer.load_trackers()

    # -- registry --------------------------------------------------------------------------
    def add_device(self, device_id: str) -> None:
        """Accept messages from a newly registered device."""
        self._trackers.setdefault(device_id, SeqTracker())

    def remove_device(self, device_id: str) -> None:
        """Refuse messages from a deleted device from now on."""
        self._trackers.pop(device_id, None)
        self._pending.pop(device_id, None)
        self._ack_due.discard(device_id)
        self._batch.drop_device(device_id)
        self._writer.forget_device(device_id)

    def on_device(self, event: DeviceEvent) -> None:
        """Accept a registered device's messages; refuse a deleted one's (lifecycle events)."""
        if isinstance(event, DeviceAdded):
            self.add_device(event.record.id)
        elif isinstance(event, DeviceRemoving):
            self.remove_device(event.device_id)

    def acked_seq(self, device_id: str) -> int | None:
        """The watermark acknowledged to ``device_id``, or None for an unknown device."""
        tracker = self._trackers.get(device_id)
        return None if tracker is None else tracker.acked

    def announce(self) -> None:
        """The hub is (back) on the broker: tell every device how far its data is stored, and
        to send again now what is not (``Ack.resend``). Messages a device sent while the hub
        was not subscribed (a restarted broker, before the hub reconnected) reached no one."""
        for device_id, tracker in self._trackers.items():
            ack = Ack(seq=tracker.acked, resend=True)
            self._publisher.publish(topic_for(device_id, Channel.ACK), encode(ack))

    def on_commit(self, listener: CommitListener) -> None:
        """Call ``listener`` with every batch once it is committed."""
        self._listeners.append(listener)

    def record_presence(self, change: PresenceChange) -> None:
        """Queue a presence change for the next commit."""
        self._batch.presence.append(change)
        self._wake_up()

    # -- hot path --------------------------------------------------------------------------
    def accepts(self, device_id: str) -> bool:
        """Whether ``device_id`` is registered (its messages are taken at all)."""
        return device_id in self._trackers

    def accept(self, device_id: str, channel: str, message: Any) -> None:
        """Take one decoded message of a sequenced channel (telemetry, event, state) of a
        registered device (``hub/inbound.py`` checked both): de-duplicate it and add it to the
        open batch. A duplicate is only acknowledged again."""
        tracker = self._trackers[device_id]
        seq = message.seq
        pending = self._pending.get(device_id)
        if tracker.is_duplicate(seq) or (pending is not None and seq in pending):
            self.stats.duplicates += 1
            self._ack_due.add(device_id)
            self._wake_up()
            return
        if pending is None:
            self._pending[device_id] = {seq}
        else:
            pending.add(seq)
        batch = self._batch
        batch.add_seq(device_id, seq, message.floor())
        if channel == _TELEMETRY:
            batch.telemetry.append((device_id, message))
            batch.points += message.point_count()
        elif channel == _EVENT:
            batch.events.append((device_id, now_ms(), message))
        else:
            batch.states.append((device_id, message))
        batch.messages += 1
        self._presence.touch(device_id)
        if batch.messages == 1:
            self._wake_up()
        elif batch.messages >= self._settings.max_batch_messages:
            self._full.set()
            if batch.messages >= self._settings.max_pending_messages and not self._paused:
                # The database is behind: let the broker hold the rest until this commits.
                self.stats.backpressure_pauses += 1
                self._paused = True
                self._publisher.pause_reading()

    # -- commit loop -----------------------------------------------------------------------
    def _wake_up(self) -> None:
        """The open batch has its first message (or presence change): start its linger."""
        if not self._wake.is_set():
            self._opened_at = time.monotonic()
            self._wake.set()

    async def run(self) -> None:
        """Commit batches and send acknowledgements, forever."""
        while True:
            await self._wake.wait()
            held = self._retry_at - time.monotonic()
            if held > 0:  # the store could not take the open batch: back off, full or not
                await asyncio.sleep(held)
                await self.flush()
                continue
            # The linger counts from the batch's first message, not from now: messages that
            # came in while the last batch committed have waited that long already (the live
            # API's latency saw a whole commit more).
            linger = self._opened_at + self.linger_s() - time.monotonic()
            if linger > 0 and self._batch.messages < self._settings.max_batch_messages:
                # asyncio.timeout, not wait_for: on 3.11 wait_for can swallow a cancellation
                # that arrives as the event fires, and the hub's stop waits for this task.
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(linger):
                        await self._full.wait()
            await self.flush()

    def linger_s(self) -> float:
        """How long the open batch may wait to fill: the configured linger, or longer while
        commits take long (``IngestSettings.rest_factor``)."""
        settings = self._settings
        rest = min(settings.max_linger_s, settings.rest_factor * self._commit_s)
        return max(settings.linger_s, rest)

    async def flush(self) -> None:
        """Commit what is waiting now and acknowledge it."""
        self._wake.clear()
        self._full.clear()
        batch, self._batch = self._batch, Batch()
        acks, self._ack_due = self._ack_due, set()
        if batch:
            await self._commit(batch, acks)
        if self._paused and self._batch.messages < self._settings.max_pending_messages:
            self._paused = False
            self._publisher.resume_reading()
        for device_id in acks:
            tracker = self._trackers.get(device_id)
            if tracker is not None:
                self._publisher.publish(
                    topic_for(device_id, Channel.ACK), encode(Ack(seq=tracker.acked))
                )

    async def _commit(self, batch: Batch, acks: set[str]) -> None:
        started = time.perf_counter()
        try:
            async with self.writing:
                stored, advanced = await self._writer.write(batch)
        except (SQLAlchemyError, OSError) as exc:
            self.stats.write_errors += 1
            if storage_problem(exc) is not None:  # logged by the store's health, once
                self._hold(batch)
            else:
                self._failed(batch, exc)
            return
        self._retry_at = 0.0
        for device_id, tracker in advanced.items():
            if device_id in self._trackers:
                self._trackers[device_id] = tracker
                acks.add(device_id)
        self._release_pending(batch)
        stats = self.stats
        stats.batches += 1
        stats.duplicates += batch.messages - stored.messages
        stats.messages_stored += stored.messages
        stats.points_stored += stored.points
        stats.events_stored += len(stored.events)
        took = time.perf_counter() - started
        stats.commit_seconds += took
        self._commit_s += (took - self._commit_s) * _COMMIT_SMOOTHING
        for listener in self._listeners:
            listener(stored)

    def _hold(self, batch: Batch) -> None:
        """Keep a batch the store could not take, first in the open one, for the next try
        (without devices deleted while it was tried: the open batch has lost theirs)."""
        touched = {*batch.seqs, *(change.device_id for change in batch.presence)}
        for device_id in touched - self._trackers.keys():
            batch.drop_device(device_id)
        batch.absorb(self._batch)
        self._batch = batch
        self._retry_at = time.monotonic() + self._writer.storage.retry_in_s()
        self._wake.set()

    def _failed(self, batch: Batch, exc: Exception) -> None:
        """A batch failed for a fault of its own: nothing is acknowledged, so every device
        resends its messages; its presence changes, which nobody resends, go into the next
        batch, unless they were all it held (then they are the fault)."""
        held = self._throttle.due(("commit", type(exc)))
        if held is not None:
            log.error(
                "commit of %d messages failed (%s); devices will resend%s",
                batch.messages,
                exc,
                held_back(held),
                exc_info=exc if not held else None,
            )
        self._release_pending(batch)
        if batch.messages and batch.presence:
            self._batch.presence[:0] = batch.presence
            self._wake_up()

    def _release_pending(self, batch: Batch) -> None:
        for device_id, seqs in batch.seqs.items():
            pending = self._pending.get(device_id)
            if pending is not None:
                pending.difference_update(s for s, _ in seqs)
                if not pending:
                    del self._pending[device_id]
