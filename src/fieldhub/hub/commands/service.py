"""Commands to devices as first-class objects: stored, delivered, acknowledged, answered.

A command's life (``GET /api/commands/{id}``)::

    queued ──device connected──► sent ──device took it──► acknowledged ──► succeeded | failed
      │                           │  ▲                          │
      │ TTL over                  │  └─ device left before     └── no outcome within timeout_s
      ▼                           │     taking it: queued again     of taking it: timed_out
    expired                       └── not taken before the TTL ran out: timed_out

- **Durable**: a command is written to the database before it is sent; unfinished commands
  are loaded again when the hub starts, and sent again to their devices.
- **Delivered until taken**: the broker may lose a command (it restarts, a connection drops),
  so one not taken yet is sent again when the device comes online, when the hub starts or
  reconnects, and every few seconds while the device is connected (2 s doubling to 30 s,
  ``timing.py``), in the order made; one taken is sent again on those events (not on the
  clock), in case its outcome was lost. The TTL is the deadline for the device to *take* a
  command; ``timeout_s`` counts from then.
- **Groups** (``batches.py``): devices that do not offer the action are ``unsupported`` at
  once; the others may be paced (a command is not sent before its ``not_before``, and holds
  back the later commands of its device) and aborted when too many fail.
- **At most once**: the hub may deliver a command twice (a reconnect, a restart); the agent
  runs each id once and answers later deliveries from its log (``agent/commands.py``), so
  resending is safe: it is how lost replies and writes lost in a crash come back.
- **Replies reach the hub that asked**: a command names its hub instance, the device answers
  on ``reply/{instance}``, and each hub loads and tracks only its own commands.
- Later states are written behind, in batches: a round trip waits for one commit, not three.
- A late outcome (after ``timed_out``) is still recorded, as ``late``: a door that did open
  must not read "timed out" for ever.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import Counter, OrderedDict
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from typing import Any, Final, Protocol

from fieldhub.clock import now_ms
from fieldhub.hub.commands.batches import (
    AbortGuard,
    Pace,
    Request,
    audit_rows,
    new_batch_id,
    plan_records,
)
from fieldhub.hub.commands.check import CommandRefused, Fit, fit_group
from fieldhub.hub.commands.timing import DeliveryTiming
from fieldhub.hub.devices.events import DeviceEvent, DeviceRemoving
from fieldhub.hub.devices.presence import ONLINE, PresenceTracker
from fieldhub.hub.ingest.batch import PresenceChange
from fieldhub.hub.store.commands import BatchRecord, CommandRecord, CommandStore
from fieldhub.hub.store.health import storage_problem
from fieldhub.logthrottle import LogThrottle, held_back
from fieldhub.protocol import Channel, Command, Reply, encode, topic_for

log = logging.getLogger(__name__)

LATE_WINDOW_MS: Final = 600_000  # how long after timing out a command listens for its outcome
_UNTAKEN: Final = frozenset({"sent"})
_UNFINISHED: Final = frozenset({"sent", "acknowledged"})
_RECENT: Final = 10_000  # finished ids remembered: a repeated reply is recognised, not rejected
_FLUSH_LINGER_S: Final = 0.02


class CommandPublisher(Protocol):
    """Where commands go out (the hub's bus)."""

    def publish(self, topic: str, payload: bytes, qos: int = 0, retain: bool = False) -> None:
        """Queue a message for the broker."""

    @property
    def connected(self) -> bool:
        """True while the broker connection is up."""


ChangeListener = Callable[[CommandRecord], None]


class CommandService:
    """Sends this hub instance's commands and follows them to their end.

    Args:
        store: the commands table.
        publisher: the hub's bus.
        presence: whether a device is connected now (commands wait while it is not).
        instance: this hub's instance name (replies come to ``reply/{instance}``).
        clock: epoch ms (tests move it).
    """

    def __init__(
        self,
        store: CommandStore,
        publisher: CommandPublisher,
        presence: PresenceTracker,
        *,
        instance: str,
        clock: Callable[[], int] = now_ms,
    ) -> None:
        self.store = store
        self._publisher = publisher
        self._presence = presence
        self.instance = instance
        self._clock = clock
        self._open: dict[str, CommandRecord] = {}  # unfinished, or timed out and listening
        # device id → its commands' ids in the order they were made (a dict as ordered set):
        # a device gets its commands in that order, also when they are sent again
        self._by_device: dict[str, dict[str, None]] = {}
        self._timing = DeliveryTiming()
        self._abort = AbortGuard()
        self._recent: OrderedDict[str, str] = OrderedDict()  # finished id → device id
        self._waiters: dict[str, list[asyncio.Future[None]]] = {}
        self._dirty: dict[str, CommandRecord] = {}  # changed, not yet written
        self._flushing: dict[str, CommandRecord] = {}  # being written now
        self.writing = asyncio.Lock()
        """Held while states are written; the hub's stop cancels :meth:`run` only outside it,
        so that no write is cut off with its database connection checked out."""
        self._wake = asyncio.Event()
        self._listeners: list[ChangeListener] = []
        self._log_throttle = LogThrottle()
        self.counts: Counter[str] = Counter()
        """Commands by how they ended (succeeded, failed, timed_out, expired, late,
        unsupported, aborted), refused requests (refused), replies by what became of them
        (duplicate_reply), since the hub started."""

    # -- life cycle ---------------------------------------------------------------------------
    async def load(self) -> int:
        """Take up this instance's unfinished commands from the store; returns how many."""
        batch_ids: set[str] = set()
        for record in await self.store.open_for(self.instance):
            self._track(record)
            if record.status == "sent" and not self._deliverable(record.device_id):
                record.status = "queued"  # it waits for the device again
            self._schedule(record)
            if record.batch_id is not None:
                batch_ids.add(record.batch_id)
        for batch_id in sorted(batch_ids):  # the failures before the restart count
            batch = await self.store.batch(batch_id)
            if batch.abort_failure_ratio is not None:
                self._abort.watch(batch, await self.store.of_batch(batch_id))
        self.redeliver()  # sent or taken before: asked again, answered from the device's log
        return len(self._open)

    def redeliver(self) -> None:
        """Send every unfinished command of each connected device again.

        For when the broker may have lost what it held: the hub starts, or its broker
        connection is back (a broker restart loses every message in flight, ours and the
        device's). A command the device took is asked for again too: its answer may be what
        was lost, and the device answers a delivery after the first from its log."""
        for device_id in list(self._by_device):
            self._deliver(device_id, again=_UNFINISHED)

    async def run(self) -> None:
        """Time commands out, expire them, and write states behind; forever."""
        while True:
            delay = self._timing.delay_s(self._clock(), 1.0)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(delay):
                    await self._wake.wait()
            self._wake.clear()
            self._expire_due()
            if self._dirty:
                await asyncio.sleep(_FLUSH_LINGER_S)  # let a burst of replies share a commit
                try:
                    await self.flush()
                except Exception as exc:  # kept for the next round; the live states stay right
                    # A full disk is logged once by the storage health; anything else once a
                    # minute, with its traceback, not every second.
                    held = self._log_throttle.due(type(exc))
                    if held is not None and storage_problem(exc) is None:
                        log.exception(
                            "cannot write command states; trying again in 1 s%s", held_back(held)
                        )
                    await asyncio.sleep(1.0)

    async def flush(self) -> None:
        """Write every state change made before this call (also one being written now)."""
        async with self.writing:
            dirty, self._dirty = self._dirty, {}
            self._flushing = dirty
            try:
                await self.store.save(dirty.values())
            except BaseException:
                for command_id, record in dirty.items():  # try again with the next flush
                    self._dirty.setdefault(command_id, record)
                raise
            finally:
                self._flushing = {}

    def on_change(self, listener: ChangeListener) -> None:
        """Call ``listener`` with a command whenever its state moves (for live views)."""
        self._listeners.append(listener)

    # -- requests -----------------------------------------------------------------------------
    async def submit(
        self,
        device_ids: list[str],
        action: str,
        args: Mapping[str, Any],
        *,
        timeout_s: float,
        ttl_s: float,
        actor: str,
        source: str = "",
        target: Mapping[str, Any] | None = None,
    ) -> tuple[BatchRecord | None, list[CommandRecord]]:
        """Create one command per device, the same for each, store them, and send those whose
        device is there.

        With ``target`` (how a group was chosen) the commands form a batch, even of one
        (:meth:`submit_group`).
        """
        fits = [Fit(device_id, dict(args), timeout_s) for device_id in device_ids]
        if target is not None:
            return await self.submit_group(
                fits, action, args, target=target, ttl_s=ttl_s, actor=actor, source=source
            )
        request = self._request(action, actor, ttl_s, source)
        records = plan_records(request, None, fits, {})
        await self._start(records, None, audit_rows(request, records, None, args))
        return None, records

    async def submit_group(
        self,
        fits: Sequence[Fit],
        action: str,
        args: Mapping[str, Any],
        *,
        target: Mapping[str, Any],
        ttl_s: float,
        actor: str,
        source: str = "",
        unsupported: Mapping[str, str] | None = None,
        pace: Pace | None = None,
    ) -> tuple[BatchRecord, list[CommandRecord]]:
        """One command per device of ``fits`` and a finished ``unsupported`` one per device of
        ``unsupported`` (id → why), as a batch: how the group was chosen (``target``), paced
        and aborted as ``pace`` says (``batches.py``)."""
        pace = pace or Pace()
        unsupported = unsupported or {}
        request = self._request(action, actor, ttl_s, source)
        batch = BatchRecord(
            id=new_batch_id(),
            action=action,
            args=dict(args),
            target=dict(target),
            size=len(fits) + len(unsupported),
            created_by=actor,
            created_at=request.now,
            per_second=pace.per_second,
            abort_failure_ratio=pace.abort_failure_ratio,
        )
        records = plan_records(request, batch, fits, unsupported)
        await self._start(records, batch, audit_rows(request, records, batch, args))
        self._abort.watch(batch, records)
        self.counts["unsupported"] += len(unsupported)
        return batch, records

    def abort_unsent(self, batch_ids: Iterable[str], why: str) -> int:
        """End every command of these batches not sent yet as ``aborted`` (those sent run to
        their end); returns how many. A batch's own abort (too many failures) and a rollout
        that stops (its paced commands must not go out after it)."""
        wanted = set(batch_ids)
        unsent = [
            record
            for record in self._open.values()
            if record.batch_id in wanted and record.status == "queued" and not record.sent_at
        ]
        for record in unsent:
            self._end(record, "aborted", why)
        return len(unsent)

    def _request(self, action: str, actor: str, ttl_s: float, source: str) -> Request:
        ttl_ms = round(ttl_s * 1000)
        return Request(action, actor, source, self.instance, ttl_ms, self._clock())

    async def _start(
        self,
        records: list[CommandRecord],
        batch: BatchRecord | None,
        audit: list[dict[str, Any]],
    ) -> None:
        """Store the records (and their batch, and the audit rows) in one transaction, then
        follow and send those still to be sent."""
        await self.store.insert(records, batch, audit)  # committed before anything is sent
        to_send = [record for record in records if not record.finished]
        for record in to_send:
            self._track(record)
            self._schedule(record)
            self._changed(record)
        for device_id in {record.device_id for record in to_send}:
            self._deliver(device_id)

    async def wait(self, command_ids: Iterable[str], timeout_s: float) -> None:
        """Return when every one of ``command_ids`` has finished, or after ``timeout_s``."""
        loop = asyncio.get_running_loop()
        futures = []
        for command_id in command_ids:
            record = self._open.get(command_id)
            if record is None or record.finished:
                continue
            future: asyncio.Future[None] = loop.create_future()
            self._waiters.setdefault(command_id, []).append(future)
            futures.append((command_id, future))
        if not futures:
            return
        try:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout_s):
                    await asyncio.gather(*(future for _id, future in futures))
        finally:
            for command_id, future in futures:
                waiting = self._waiters.get(command_id)
                if waiting is not None and future in waiting:
                    waiting.remove(future)
                    if not waiting:
                        del self._waiters[command_id]

    def current(self, command_id: str) -> CommandRecord | None:
        """The live record of a command this hub follows or has not written yet (fresher
        than the store's row), else None."""
        return (
            self._open.get(command_id)
            or self._dirty.get(command_id)
            or self._flushing.get(command_id)
        )

    def following(self) -> dict[str, CommandRecord]:
        """Every command :meth:`current` knows now, by id. Take it *before* reading commands
        from the store: a state written while the read runs is not in the rows read, but it is
        in these records (the service changes them in place)."""
        return {**self._flushing, **self._dirty, **self._open}

    def fit(
        self,
        devices: Iterable[tuple[str, Mapping[str, Any]]],
        action: str,
        args: Mapping[str, Any],
        timeout_s: float | None,
    ) -> tuple[list[Fit], dict[str, str]]:
        """The command for each device, and why the others cannot run it
        (``check.fit_group``); a refused request is counted.

        Raises:
            CommandRefused: no device can (with one device: naming what it offers, the
                argument problems, or a timeout shorter than the action).
        """
        try:
            return fit_group(devices, action, args, timeout_s)
        except CommandRefused:
            self.counts["refused"] += 1
            raise

    async def get(self, command_id: str) -> CommandRecord:
        """A command as it is now: the live record of one this hub follows, else the stored one.

        Raises:
            CommandNotFound: there is none.
        """
        return self.current(command_id) or await self.store.get(command_id)

    async def of_device(
        self, device_id: str, *, limit: int, before: int | None = None
    ) -> list[CommandRecord]:
        """The device's commands, newest first, each as it is now."""
        return await self._fresh(self.store.of_device(device_id, limit=limit, before=before))

    async def batch(
        self, batch_id: str, wait_s: float = 0
    ) -> tuple[BatchRecord, list[CommandRecord]]:
        """A group command and its commands as they are now, after waiting up to ``wait_s``
        for every one to end.

        Raises:
            CommandNotFound: there is no such batch.
        """
        batch = await self.store.batch(batch_id)
        if wait_s:
            await self.wait(batch.command_ids, wait_s)
        return batch, await self._fresh(self.store.of_batch(batch_id))

    async def _fresh(self, read: Awaitable[list[CommandRecord]]) -> list[CommandRecord]:
        """The live state of commands this hub follows, the stored one of the others. The live
        records are taken before the read: one finished and written while the read ran would
        otherwise be neither live any more nor fresh in the rows read."""
        live = self.following()
        return [live.get(record.id, record) for record in await read]

    def forget_device(self, device_id: str) -> None:
        """The device was deleted: stop following its commands (its rows go with it)."""
        for command_id in self._by_device.pop(device_id, {}):
            record = self._open.pop(command_id, None)
            self._dirty.pop(command_id, None)
            if record is not None:
                self._release(command_id)

    def on_device(self, event: DeviceEvent) -> None:
        """A device about to be deleted: its commands are followed no more."""
        if isinstance(event, DeviceRemoving):
            self.forget_device(event.device_id)

    # -- from the device side -----------------------------------------------------------------
    def on_presence(self, change: PresenceChange) -> None:
        """A device came (send what waits for it, and again what it may have missed) or went
        (what it never took waits again)."""
        if change.device_id not in self._by_device:
            return
        if self._deliverable(change.device_id):
            self._deliver(change.device_id, again=_UNFINISHED)
            return
        for command_id in self._by_device[change.device_id]:
            record = self._open[command_id]
            if record.status == "sent":
                record.status = "queued"
                self._schedule(record)
                self._changed(record)

    def on_reply(self, device_id: str, reply: Reply) -> tuple[str, str] | None:
        """Take a reply from ``device_id``; returns ``(reason, error)`` if it is refused."""
        record = self._open.get(reply.id)
        if record is None:
            if self._recent.get(reply.id) == device_id:
                self.counts["duplicate_reply"] += 1  # answered again from the device's log
                return None
            return "unknown_command", f"no command {reply.id!r} is waiting for a reply"
        if record.device_id != device_id:
            return "wrong_device", f"command {reply.id!r} was not sent to {device_id!r}"
        now = self._clock()
        if reply.stage == "accepted":
            if record.status in ("queued", "sent"):
                record.status = "acknowledged"
                record.acknowledged_at = now  # timeout_s counts from here
                self._schedule(record)
                self._changed(record)
            return None
        late = record.status == "timed_out"
        record.status = "succeeded" if reply.ok else "failed"
        record.result = reply.result
        record.error = reply.error
        record.finished_at = now
        if record.acknowledged_at is None:
            record.acknowledged_at = now
        self.counts[record.status] += 1
        if late:
            self.counts["late"] += 1
            log.warning("command %s to %s answered after its timeout", record.id, device_id)
        self._finish(record)
        if not late:  # a late one counted when it timed out
            self._count_against_batch(record)
        return None

    # -- internals ----------------------------------------------------------------------------
    def _deliverable(self, device_id: str) -> bool:
        state = self._presence.get(device_id)
        return state.connected is True or state.presence == ONLINE

    def _deliver(
        self, device_id: str, *, again: frozenset[str] = frozenset(), clock: bool = False
    ) -> None:
        """Send every queued command of ``device_id`` if it is connected, oldest first, and
        again those in a state of ``again`` (sent: not taken yet; acknowledged: taken).
        ``clock``: sent again because none was taken in time (the next wait doubles); else
        for an event (device online, hub back: the waits start again from the shortest).
        A paced command before its time holds back the device's later ones (their order)."""
        if not self._deliverable(device_id):
            return
        now = self._clock()
        for command_id in list(self._by_device.get(device_id, ())):
            record = self._open[command_id]
            if record.status == "queued":
                if record.expires_at <= now:
                    self._end(record, "expired", "not delivered before its TTL ran out")
                    continue
                if record.not_before is not None and record.not_before > now:
                    break
            elif record.status not in again:
                continue
            elif record.status == "sent" and record.expires_at <= now:
                continue  # not taken in time: timed out by the clock (run)
            self._timing.sent(command_id, now, backoff=clock and record.status == "sent")
            self._send(record, now)

    def _send(self, record: CommandRecord, now: int) -> None:
        command = Command(
            id=record.id,
            action=record.action,
            args=record.args,
            expires=record.expires_at,
            reply=self.instance,
        )
        self._publisher.publish(topic_for(record.device_id, Channel.CMD), encode(command), qos=1)
        if record.status == "queued":
            record.status = "sent"
        if record.sent_at is None:
            record.sent_at = now
        record.deliveries += 1
        self._schedule(record)
        self._changed(record)

    def _expire_due(self) -> None:
        now = self._clock()
        for command_id in self._timing.due(now):
            record = self._open.get(command_id)
            if record is None:
                continue
            if record.status == "queued" and record.expires_at <= now:
                self._end(record, "expired", "the device was not reachable before the TTL ran out")
            elif record.status == "queued" and record.not_before is not None:
                self._deliver(record.device_id)  # a paced command's turn has come
                if record.status == "queued":  # the device is away: it waits for it, or the TTL
                    self._timing.at(record.expires_at, command_id)
            elif record.status == "sent" and record.expires_at <= now:
                self._end(record, "timed_out", "the device did not take it before its TTL ran out")
            elif record.status == "sent" and self._timing.resend_at(record) <= now:
                if self._publisher.connected and self._deliverable(record.device_id):
                    # Lost on the way, most likely, and so were the device's other untaken
                    # ones, sent about as long ago: all once more, in their order.
                    self._deliver(record.device_id, again=_UNTAKEN, clock=True)
                else:  # sent again when the device comes online or the hub's broker is back
                    self._timing.at(record.expires_at, command_id)
            elif (
                record.status == "acknowledged"
                and record.acknowledged_at is not None
                and record.acknowledged_at + record.timeout_ms <= now
            ):
                self._end(record, "timed_out", "no outcome from the device within the timeout")
            elif record.status == "timed_out" and self._listening_until(record) <= now:
                self._release(command_id)

    def _end(self, record: CommandRecord, status: Any, error: str) -> None:
        record.status = status
        record.error = error
        record.finished_at = self._clock()
        self.counts[status] += 1
        if status == "timed_out":  # the outcome may still come: listen a while longer
            self._mark(record)
            self._notify(record)
            self._timing.at(self._listening_until(record), record.id)
        else:
            self._finish(record)
        self._count_against_batch(record)

    def _count_against_batch(self, record: CommandRecord) -> None:
        """A command of a batch ended: abort the batch's unsent rest if it failed too often."""
        if not self._abort.ended(record):
            return
        assert record.batch_id is not None  # only a batch's commands count against one
        why = "not sent: too many devices of the group command failed (abort_failure_ratio)"
        self.abort_unsent([record.batch_id], why)

    def _finish(self, record: CommandRecord) -> None:
        self._mark(record)
        self._notify(record)
        self._release(record.id)

    def _release(self, command_id: str) -> None:
        record = self._open.pop(command_id, None)
        if record is None:
            return
        ids = self._by_device.get(record.device_id)
        if ids is not None:
            ids.pop(command_id, None)
            if not ids:
                del self._by_device[record.device_id]
        self._timing.forget(command_id)
        self._recent[command_id] = record.device_id
        if len(self._recent) > _RECENT:
            self._recent.popitem(last=False)

    @staticmethod
    def _listening_until(record: CommandRecord) -> int:
        return (record.finished_at or record.created_at) + LATE_WINDOW_MS

    def _track(self, record: CommandRecord) -> None:
        self._open[record.id] = record
        self._by_device.setdefault(record.device_id, {})[record.id] = None

    def _schedule(self, record: CommandRecord) -> None:
        if self._timing.schedule(record):
            self._wake.set()

    def _changed(self, record: CommandRecord) -> None:
        self._mark(record)
        self._notify(record)

    def _mark(self, record: CommandRecord) -> None:
        self._dirty[record.id] = record
        self._wake.set()

    def _notify(self, record: CommandRecord) -> None:
        if record.finished:
            for future in self._waiters.pop(record.id, ()):
                if not future.done():
                    future.set_result(None)
        for listener in self._listeners:
            listener(record)
