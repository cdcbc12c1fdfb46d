"""The delivery worker: claims due notifications, sends them, records every attempt.

One task per hub process. It wakes when something is enqueued (:meth:`DeliveryWorker.wake`),
when a delivery finishes (a slot is free), and on a timer (retries come due; another hub or
the CLI enqueued). Sends run concurrently, at most ``concurrency`` at once, each under
``timeout_s``: an endpoint that hangs holds one slot for that long and delays nothing else.
Nothing here runs on ingest's path: ingest never waits for a notification.

A notification enqueued with an alarm change comes leased to this instance already
(``outbox.enqueue``'s ``lease``, :meth:`DeliveryWorker.lease`): the worker finds it with a read
(``outbox.handed``) and sends it without a claim, one write job less between an alarm and its
message.

Once per notification, with one window (documented in ``docs/notifications.md``): a delivery
is recorded in its own transaction right after the far side accepted it. A crash between the
two, or a record that fails, leaves it pending, and it is sent again after the restart (this
instance's leases are released on start) or when the lease runs out (another hub). Receivers
de-duplicate by the notification id (``X-Fieldhub-Delivery``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import partial

from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine

from fieldhub.clock import now_ms
from fieldhub.hub.notify.channels.base import Outcome, Sender
from fieldhub.hub.notify.outbox import (
    Lease,
    Screen,
    claim,
    handed,
    prune,
    record_attempt,
    release_leases,
)
from fieldhub.hub.notify.records import ChannelRecord, NotificationRecord, State
from fieldhub.hub.store.writes import Writes

__all__ = ["DeliverySettings", "DeliveryWorker", "chained", "retry_delay_s"]

log = logging.getLogger(__name__)

Prepare = Callable[[NotificationRecord, ChannelRecord], NotificationRecord]
"""Makes the message of one attempt from the stored notification (adds what must not be
stored, such as a fresh acknowledge link)."""


def chained(*steps: Prepare) -> Prepare:
    """One :data:`Prepare` doing ``steps`` in turn (acknowledge link, then media links)."""

    def prepare(notification: NotificationRecord, channel: ChannelRecord) -> NotificationRecord:
        for step in steps:
            notification = step(notification, channel)
        return notification

    return prepare


@dataclass(frozen=True, slots=True)
class DeliverySettings:
    """How hard the worker tries (``FIELDHUB_NOTIFY_*``)."""

    max_attempts: int = 10
    retry_s: float = 5.0
    retry_max_s: float = 600.0
    timeout_s: float = 10.0
    concurrency: int = 8
    poll_s: float = 5.0
    """Longest sleep between two looks at the outbox when nothing wakes the worker."""
    stop_grace_s: float = 2.0
    """How long a stopping hub lets sends under way finish (and be recorded)."""
    keep_days: float = 30.0
    """Delivered and dead notifications (and their logs) older than this are pruned."""
    prune_every_s: float = 3600.0

    @property
    def lease_ms(self) -> int:
        """How long a claimed notification is this hub's: the send's limit and a margin for
        recording it; past that another hub may take it (this one died)."""
        return int((self.timeout_s + 30.0) * 1000)


def retry_delay_s(failures: int, settings: DeliverySettings, rng: random.Random) -> float:
    """Wait before the next attempt after ``failures`` failed ones: ``retry_s`` doubling per
    failure up to ``retry_max_s``, times a random factor from 0.5 to 1 ("equal jitter"), so
    notifications that failed together (an endpoint down) do not all come back together."""
    ceiling = min(settings.retry_max_s, settings.retry_s * 2.0 ** min(failures - 1, 40))
    return ceiling * rng.uniform(0.5, 1.0)


@dataclass(slots=True)
class DeliveryCounts:
    """Attempts since start, by outcome (for metrics and tests)."""

    delivered: int = 0
    retried: int = 0
    dead: int = 0

    def as_dict(self) -> dict[str, int]:
        """By outcome, for the metrics."""
        return {"delivered": self.delivered, "retried": self.retried, "dead": self.dead}


class DeliveryWorker:
    """Delivers the outbox (see the module's text).

    Args:
        writes: where the claim and record jobs run.
        senders: a sender per channel kind.
        instance: this hub process's name: whose leases are whose.
        screen: a last look at due notifications before they are leased (``outbox.Screen``).
        prepare: turns a notification into the message of one attempt (:data:`Prepare`).
        reads: where notifications handed to this instance are read (``outbox.handed``);
            without it they wait for the claim like the others.
    """

    def __init__(
        self,
        writes: Writes,
        senders: Mapping[str, Sender],
        settings: DeliverySettings,
        instance: str,
        *,
        clock: Callable[[], int] = now_ms,
        rng: random.Random | None = None,
        screen: Screen | None = None,
        prepare: Prepare | None = None,
        reads: AsyncEngine | None = None,
    ) -> None:
        self._writes = writes
        self._reads = reads
        self._screen = screen
        self._prepare = prepare
        self._senders = senders
        self.settings = settings
        self._instance = instance
        self._clock = clock
        self._rng = rng or random.Random()
        self._wake = asyncio.Event()
        self._inflight: set[str] = set()
        self._unrecorded: set[str] = set()  # sent, the outcome not recorded: not handed again
        self._sends: set[asyncio.Future[Outcome]] = set()
        self._stopping = False
        self._running = False
        self._stopped = asyncio.Event()
        self.counts = DeliveryCounts()

    def lease(self, now: int) -> Lease:
        """The lease of a notification enqueued at ``now`` to be handed to this worker."""
        return self._instance, now + self.settings.lease_ms

    def wake(self) -> None:
        """Look at the outbox now (something was enqueued and committed)."""
        self._wake.set()

    @property
    def inflight(self) -> int:
        """Notifications being sent right now."""
        return len(self._inflight)

    async def run(self) -> None:
        """Deliver until :meth:`stop` (or cancelled: then sends under way are cut off too, and
        sent again after the next start, see the module's text)."""
        self._running = True
        try:
            released = await self._writes.run(
                partial(release_leases, instance=self._instance, now=self._clock())
            )
            if released:
                log.info("%d notifications claimed before the last stop are due again", released)
            next_prune = time.monotonic()
            async with asyncio.TaskGroup() as sends:
                while not self._stopping:
                    self._wake.clear()
                    if time.monotonic() >= next_prune:
                        await self._prune()
                        next_prune = time.monotonic() + self.settings.prune_every_s
                    wait = await self._claim_and_start(sends)
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(wait):
                            await self._wake.wait()
        finally:
            self._running = False
            self._stopped.set()

    async def stop(self, grace_s: float) -> None:
        """Stop claiming, give the sends under way ``grace_s`` to finish, cut off the rest
        (unrecorded: pending, leased to this instance, due at once at its next start), and
        return once every attempt that finished is recorded. Nothing is cancelled inside a
        database write, so no transaction is left half done."""
        self._stopping = True
        self._wake.set()
        if not self._running:
            return
        if self._sends:
            await asyncio.wait(list(self._sends), timeout=grace_s)
        for send in list(self._sends):
            send.cancel()
        await self._stopped.wait()

    async def _prune(self) -> None:
        """The outbox is bounded by time: forget what finished ``keep_days`` ago, in short
        transactions (between them other writes get their turn)."""
        before = self._clock() - int(self.settings.keep_days * 86_400_000)
        pruned = 0
        try:
            while not self._stopping:
                done = await self._writes.run(partial(prune, before=before, limit=1000))
                pruned += done
                if done < 1000:
                    break
        except (SQLAlchemyError, OSError) as exc:  # the next round tries again
            log.debug("cannot prune notifications: %s", exc)
        if pruned:
            log.info("pruned %d notifications finished before %d", pruned, before)

    async def _claim_and_start(self, sends: asyncio.TaskGroup) -> float:
        """Start what is due; how long to sleep unless woken."""
        settings = self.settings
        free = settings.concurrency - len(self._inflight)
        if free <= 0:
            return settings.poll_s  # a finishing send wakes us
        now = self._clock()
        free -= await self._start_handed(sends, free, now)
        if free <= 0:
            return settings.poll_s
        try:
            claimed, next_due = await self._writes.run(
                partial(
                    claim,
                    now=now,
                    limit=free,
                    lease_ms=settings.lease_ms,
                    instance=self._instance,
                    screen=self._screen,
                ),
                urgent=True,
            )
        except (SQLAlchemyError, OSError) as exc:  # the store is down: storage health says so
            log.debug("cannot claim notifications: %s", exc)
            return settings.poll_s
        for notification, channel in claimed:
            self._inflight.add(notification.id)
            sends.create_task(
                self._deliver(notification, channel), name=f"notify-{notification.id}"
            )
        if next_due is None:
            return settings.poll_s
        return min(settings.poll_s, max(0.0, (next_due - self._clock()) / 1000))

    async def _start_handed(self, sends: asyncio.TaskGroup, free: int, now: int) -> int:
        """Start the notifications handed to this instance (leased at their enqueue); how
        many."""
        if self._reads is None:
            return 0
        try:
            found = await handed(
                self._reads,
                instance=self._instance,
                now=now,
                limit=free,
                skip=self._inflight | self._unrecorded,
            )
        except (SQLAlchemyError, OSError) as exc:  # their lease runs out: claimed then
            log.debug("cannot read handed notifications: %s", exc)
            return 0
        for notification, channel in found:
            self._inflight.add(notification.id)
            sends.create_task(
                self._deliver(notification, channel), name=f"notify-{notification.id}"
            )
        return len(found)

    async def _deliver(
        self, notification: NotificationRecord, channel: ChannelRecord | None
    ) -> None:
        try:
            at = self._clock()
            started = time.monotonic()
            send = asyncio.ensure_future(self._attempt(notification, channel))
            self._sends.add(send)
            try:
                outcome = await send
            except asyncio.CancelledError:
                if self._stopping and send.cancelled():  # cut off by stop(): not recorded
                    log.info("notification %s: cut off by the hub's stop", notification.id)
                    return
                raise
            finally:
                self._sends.discard(send)
            latency_ms = int((time.monotonic() - started) * 1000)
            await self._record(notification, outcome, at, latency_ms)
        finally:
            self._inflight.discard(notification.id)
            self._wake.set()

    async def _attempt(
        self, notification: NotificationRecord, channel: ChannelRecord | None
    ) -> Outcome:
        if channel is None:
            return Outcome(
                False, error=f"channel {notification.channel_id} was deleted", permanent=True
            )
        sender = self._senders.get(channel.kind)
        if sender is None:
            return Outcome(False, error=f"no sender for {channel.kind} channels", permanent=True)
        timeout_s = self.settings.timeout_s
        try:
            if self._prepare is not None:
                notification = self._prepare(notification, channel)
            async with asyncio.timeout(timeout_s):
                return await sender.send(notification, channel)
        except TimeoutError:
            return Outcome(False, error=f"no answer within {timeout_s:g} s")
        except Exception as exc:
            # A fault in one channel's code must not stop the worker and every other
            # notification with it: it is logged with its trace and counts as a failed try.
            log.exception("notification %s: the %s channel failed", notification.id, channel.kind)
            return Outcome(False, error=f"internal error: {type(exc).__name__}")

    async def _record(
        self, notification: NotificationRecord, outcome: Outcome, at: int, latency_ms: int
    ) -> None:
        attempts = notification.attempts + 1
        state: State
        next_at = at
        if outcome.ok:
            state = "delivered"
            self.counts.delivered += 1
        elif outcome.permanent or attempts >= self.settings.max_attempts:
            state = "dead"
            self.counts.dead += 1
            log.warning(
                "notification %s is dead after %d attempts: %s",
                notification.id,
                attempts,
                outcome.error,
            )
        else:
            state = "pending"
            self.counts.retried += 1
            delay_s = retry_delay_s(attempts, self.settings, self._rng)
            next_at = self._clock() + int(delay_s * 1000)
            log.info(
                "notification %s: attempt %d failed (%s), next in %.1f s",
                notification.id,
                attempts,
                outcome.error,
                delay_s,
            )
        try:
            await self._writes.run(
                partial(
                    record_attempt,
                    notification_id=notification.id,
                    at=at,
                    ok=outcome.ok,
                    status=outcome.status,
                    latency_ms=latency_ms,
                    error=outcome.error,
                    state=state,
                    next_attempt_at=next_at,
                ),
                urgent=True,
            )
        except (SQLAlchemyError, OSError) as exc:
            # Not recorded: the lease runs out and it is tried again (sent twice, if it was
            # delivered: the window the module's text describes).
            self._unrecorded.add(notification.id)
            log.warning("notification %s: attempt not recorded: %s", notification.id, exc)
            return
        self._unrecorded.discard(notification.id)
