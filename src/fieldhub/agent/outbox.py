"""Store-and-forward: every report goes to a SQLite file first, and leaves it only when the
hub says it has committed it (DESIGN §3: transport acks are not storage acks).

Durability. The agent runs on a Raspberry Pi that may lose power at any moment, on an SD card.
The file is in WAL mode with ``synchronous=FULL``: every commit is fsynced before it counts, so
a power cut loses no committed report and, just as important, no committed seq assignment (a
seq sent to the hub and then forgotten would be reused for other reports, and the hub would
drop those as duplicates). ``synchronous=NORMAL`` would save that fsync and could roll back the
last commits on power loss: exactly that failure. The price of an fsync (0.4 ms here, tens of
ms on a slow SD card) is paid per transaction, not per report: reports that arrive within
``linger_s`` (5 ms) of each other, acknowledgements, refusals and the hand-out of the next
messages to send all share one transaction (group commit). A report counts as accepted when its
transaction has committed (:meth:`Outbox.sync` waits for that); one that is still in memory when
the process dies was never accepted. Deletions after an ack are not urgent (losing one means
a resend, which the hub recognises), so an ack alone waits up to ``ack_linger_s`` for company.
Measured on this machine (fsync of the WAL 0.4 ms; ``test_append_rate`` prints the first
figure): four threads flooding reports get ~25,000 reports/s stored, bound by the per-report
encode-and-check in Python, not by the disk (``synchronous=NORMAL`` measured the same), against
~2,200/s for one commit per report. At a steady 1,000 reports/s from four threads, a commit
carries 7 reports with the 5 ms linger and 1.3 without; on an SD card the batches grow further.

Seqs. The wire ``seq`` numbers *messages* (the hub acknowledges the highest contiguous one), and
a backlog drains as multi-sample telemetry messages, so a report gets its seq when it is first
handed out for sending, in the same transaction that commits before the message is published;
from then on its seq and its message's content are fixed, also across restarts. Reports keep
their order (the table's ``id``). The last seq is kept in the file, so seqs only grow.

Bound. At most ``max_messages`` reports are kept. When full, the oldest *unsent* reports go:
telemetry first, then state, events last; reports already sent are kept (the hub may have
them). Losses are counted by kind in the file and reported upward by one ``outbox.overflow``
event (counts by kind) that grows while it waits; being an event it is dropped only after
every older telemetry and state report. Unsent reports never had a seq, so dropping them leaves
no gap at the hub; ``oldest`` on every message covers the seqs the agent gave up otherwise (a
message the hub refused, see ``uplink.py``).

All SQLite work runs on one thread of its own; the event loop never waits for the disk.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
import threading
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, Final, Self

import msgspec

from fieldhub.agent._outbox_file import OutboxFile
from fieldhub.agent._outbox_store import (
    OVERFLOW_EVENT,
    Done,
    Kind,
    OutboxStore,
    OutboxStoreError,
    OutMessage,
    Work,
)
from fieldhub.agent._tasks import log_if_failed
from fieldhub.agent.reporting import StateValue, Value
from fieldhub.clock import now_ms
from fieldhub.logthrottle import LogThrottle, held_back
from fieldhub.protocol import Event, MediaRef, Sample, State, encode
from fieldhub.protocol.messages import MAX_PAYLOAD_BYTES, MAX_SAMPLES, Severity

__all__ = [
    "OVERFLOW_EVENT",
    "Kind",
    "OutMessage",
    "Outbox",
    "OutboxFile",
    "OutboxReporter",
    "OutboxStats",
    "OutboxStoreError",
]

log = logging.getLogger(__name__)

_RETRY_MIN_S: Final = 0.5
_RETRY_MAX_S: Final = 30.0
_MAX_TAKE: Final = 2
"""Messages handed out per transaction, at most. A message of a backlog carries 1,000 reports,
and the transaction builds all it hands out at once in the SQLite thread: the uplink's
window of 8 in one go left 1 MB more RSS after a 50,000-report drain than 2 at a time (the
window fills over four transactions instead of one, at the start of a drain; then every
ack frees room for one or two anyway). The drain rate was the same (docs/benchmarks.md)."""
_SAMPLE = msgspec.json.Decoder(Sample)
_encode_body = msgspec.json.Encoder().encode  # the stored form; wire messages use protocol.encode
_EVENT = msgspec.json.Decoder(Event)
_STATE = msgspec.json.Decoder(State)
_BAD_REPORT = (
    msgspec.ValidationError,
    msgspec.DecodeError,
    msgspec.EncodeError,
    TypeError,
    ValueError,
    OverflowError,
)


@dataclass(slots=True)
class OutboxStats:
    """What the outbox did, for the technician page and the status API.

    Attributes:
        accepted: reports stored (committed) since start.
        invalid: reports refused at the source: they do not match the wire contract.
        depth: reports held now, sent or not.
        unsent: of those, how many were never handed to the uplink.
        last_seq: the last seq handed out.
        lost: reports dropped because the outbox was full, by kind, since the file was made.
        lost_unstored: reports dropped before they were stored (the file failing for long).
        refused: reports in messages the hub refused for good, since the file was made.
        commits: transactions committed since start.
        write_errors: transactions that failed (and were retried).
    """

    accepted: int = 0
    invalid: int = 0
    depth: int = 0
    unsent: int = 0
    last_seq: int = 0
    lost: dict[str, int] = field(default_factory=dict)
    lost_unstored: int = 0
    refused: int = 0
    commits: int = 0
    write_errors: int = 0


class Outbox:
    """The agent's outbox: accepts reports on the event loop, hands messages to the uplink.

    Use as an async context manager; leaving it commits what is still pending. Everything but
    the SQLite work runs on the event loop: call the methods from it (units on other threads
    go through :class:`OutboxReporter`).

    Args:
        path: the SQLite file.
        max_messages: reports kept at most (see the module docstring for what goes first).
        linger_s: how long a transaction waits for more reports once one is pending.
        ack_linger_s: how long a deletion after an ack may wait for other work.
        max_pending: reports waiting in memory for the file, at most (the oldest telemetry
            goes first beyond that; only reached when the file fails or stalls for long).
        max_samples: telemetry reports combined into one message, at most.
        max_payload_bytes: size of one combined telemetry message, about, at most.
        shared: the file and the device id, for an outbox in a file shared by many devices
            (a gateway's children, ``_outbox_file.py``); ``path`` then only names it in logs.
    """

    def __init__(
        self,
        path: Path,
        *,
        max_messages: int = 100_000,
        linger_s: float = 0.005,
        ack_linger_s: float = 1.0,
        max_pending: int = 10_000,
        max_samples: int = MAX_SAMPLES,
        max_payload_bytes: int = MAX_PAYLOAD_BYTES * 3 // 4,
        shared: tuple[OutboxFile, str] | None = None,
    ) -> None:
        self._path = path
        self._shared = shared
        self._store_args: dict[str, Any] = {
            "max_messages": max_messages,
            "max_samples": max_samples,
            "max_payload_bytes": max_payload_bytes,
        }
        self._linger_s = linger_s
        self._ack_linger_s = ack_linger_s
        self._max_pending = max_pending
        self.stats = OutboxStats()
        self._store: OutboxStore | None = None
        self._executor = (
            shared[0].executor if shared else ThreadPoolExecutor(1, thread_name_prefix="outbox")
        )
        self._work = Work()
        self._wake = asyncio.Event()
        self._urgent = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        self._submitted = 0  # reports submitted so far
        self._settled = 0  # of those, committed or dropped
        self._sync_waiters: list[tuple[int, asyncio.Future[None]]] = []
        self._stored_through = 0
        self._held_from = 1
        self._gone_waiters: list[tuple[int, asyncio.Future[None]]] = []
        self._deliver: Callable[[list[OutMessage]], None] | None = None
        self._room: Callable[[], int] = lambda: 0
        self._ready = False  # the file holds messages to hand out
        self._throttle = LogThrottle()

    async def __aenter__(self) -> Self:
        await self.open()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def open(self) -> None:
        """Open (or create) the file and start committing.

        Raises:
            OutboxStoreError: the file belongs to a newer agent.
            sqlite3.Error, OSError: the file cannot be opened or created.
        """
        loop = asyncio.get_running_loop()
        store = await loop.run_in_executor(self._executor, self._open_store)
        self._store = store
        # An empty transaction reads the figures the file starts with.
        self._apply(await loop.run_in_executor(self._executor, store.transact, Work()))
        self._task = asyncio.create_task(self._run(), name="outbox-commit")
        self._task.add_done_callback(log_if_failed)

    def _open_store(self) -> OutboxStore:
        if self._shared is None:
            return OutboxStore(self._path, **self._store_args)
        file, device_id = self._shared
        return file.store(device_id, **self._store_args)

    async def close(self) -> None:
        """Commit what is pending, then close the file (a shared one stays open). Idempotent."""
        task, self._task = self._task, None
        if task is not None:
            self._closing = True
            self._wake.set()
            self._urgent.set()
            try:
                await task
            finally:
                store, self._store = self._store, None
                if store is not None:
                    await asyncio.get_running_loop().run_in_executor(self._executor, store.close)
        if self._shared is None:
            self._executor.shutdown(wait=True)

    # -- the uplink's side -----------------------------------------------------------------
    def attach(self, deliver: Callable[[list[OutMessage]], None], room: Callable[[], int]) -> None:
        """Hand messages to ``deliver`` (on the loop, in seq order) while ``room()`` says how
        many more it takes now. Call :meth:`poke` when the room grows."""
        self._deliver = deliver
        self._room = room
        self.poke()

    def detach(self) -> None:
        """Stop handing out messages (the uplink is closing). What was handed out and not
        acknowledged is handed out again, with the same seqs, after the next start."""
        self._deliver = None
        self._room = lambda: 0

    def poke(self) -> None:
        """The uplink has room again: hand out what is unsent."""
        if self._room() > 0 and (self._ready or self._work.reports):
            self._wake_now()

    def ack(self, seq: int) -> None:
        """The hub has committed everything up to ``seq``: delete what carries it (soon)."""
        if seq > self._work.ack:
            self._work.ack = seq
            self._wake.set()

    def refuse(self, seq: int) -> None:
        """The hub will never store message ``seq``: delete it, counting its reports as lost."""
        self._work.refused.append(seq)
        self._wake_now()

    def renumber(self, hub_seq: int) -> None:
        """The hub holds seqs up to ``hub_seq`` that this outbox never gave out (its file was
        replaced): take back every seq handed out, and number everything again above it."""
        self._work.renumber_after = hub_seq
        self._work.ack = 0
        self._wake_now()

    @property
    def pending(self) -> int:
        """Reports taken and not yet committed (or counted as lost)."""
        return self._submitted - self._settled

    @property
    def last_seq(self) -> int:
        """The last seq handed out, ever (as of the last commit)."""
        return self.stats.last_seq

    # -- the reporter's side ---------------------------------------------------------------
    def submit(self, kind: Kind, body: bytes) -> None:
        """Take one checked report (see :class:`OutboxReporter`); stored with the next commit."""
        self._submitted += 1
        reports = self._work.reports
        reports.append((kind, body))
        if len(reports) > self._max_pending:
            index = next((i for i, r in enumerate(reports) if r[0] is Kind.TELEMETRY), 0)
            del reports[index]
            self.stats.lost_unstored += 1
            self._settled += 1
            held = self._throttle.due("pending")
            if held is not None:
                log.warning(
                    "outbox %s: %d reports wait for the disk; dropped the oldest%s",
                    self._path,
                    self._max_pending,
                    held_back(held),
                )
        self._wake_now()

    def invalid(self, kind: Kind, error: str) -> None:
        """Count (and log, sparingly) a report that did not match the wire contract."""
        self.stats.invalid += 1
        held = self._throttle.due(("invalid", kind))
        if held is not None:
            log.error(
                "a unit made an invalid %s report, dropped: %s%s",
                kind.name.lower(),
                error,
                held_back(held),
            )

    async def sync(self) -> None:
        """Wait until every report submitted so far is committed (or counted as lost)."""
        target = self._submitted
        if self._settled >= target:
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._sync_waiters.append((target, future))
        await future

    @property
    def stored_through(self) -> int:
        """A mark for every report committed so far: once :meth:`gone` returns for it, all
        of them have left the outbox. Read it after :meth:`sync`."""
        return self._stored_through

    async def gone(self, mark: int) -> None:
        """Wait until every report stored up to ``mark`` (a :attr:`stored_through`) has left
        the outbox: the hub acknowledged it (or, rarely, it was dropped or refused). The
        media uploader waits for this before it asks for the upload of an announced object."""
        if self._held_from > mark:
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._gone_waiters.append((mark, future))
        await future

    # -- the commit loop -------------------------------------------------------------------
    def _wake_now(self) -> None:
        self._wake.set()
        self._urgent.set()

    async def _run(self) -> None:
        retry_s = _RETRY_MIN_S
        while True:
            await self._wake.wait()
            if not self._closing:
                if not self._urgent.is_set():  # only an ack: let it wait for company
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(self._ack_linger_s):
                            await self._urgent.wait()
                elif self._work.reports and self._linger_s > 0:
                    await asyncio.sleep(self._linger_s)  # group commit
            self._wake.clear()
            self._urgent.clear()
            work, self._work = self._work, Work()
            if self._deliver is not None and not self._closing:
                work.want = min(max(0, self._room()), _MAX_TAKE)
            if not (work.reports or self._ready or work.renumber_after is not None):
                work.want = 0  # nothing to hand out: do not make a transaction for it
            if work:
                store = self._store
                if store is None:  # pragma: no cover - the task ends before the store closes
                    return
                try:
                    done = await self._transact(store, work)
                except (sqlite3.Error, OSError) as exc:
                    self._failed(work, exc)
                    if self._closing:
                        return
                    await asyncio.sleep(retry_s)
                    retry_s = min(retry_s * 2, _RETRY_MAX_S)
                    continue
                retry_s = _RETRY_MIN_S
                self._apply(done)
                self._settle(len(work.reports))
                if done.messages and self._deliver is not None:
                    self._deliver(done.messages)
                # More may fit; without progress, wait for the next ack. When this round could
                # hand out nothing (the uplink was down as it began), room that opened while
                # it ran found nothing ready to poke for: look again now.
                if done.messages or work.renumber_after is not None or not work.want:
                    self.poke()
            if self._closing:
                return

    async def _transact(self, store: OutboxStore, work: Work) -> Done:
        if self._shared is not None:  # with the other devices of the file: one commit for all
            return await self._shared[0].transact(store, work)
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, store.transact, work)

    def _failed(self, work: Work, exc: BaseException) -> None:
        """Keep the work for the next attempt (nothing of it happened)."""
        self.stats.write_errors += 1
        held = self._throttle.due(("write", type(exc)))
        if held is not None:
            log.error("outbox %s: commit failed, retrying: %s%s", self._path, exc, held_back(held))
        newer = self._work
        work.reports.extend(newer.reports)
        work.ack = max(work.ack, newer.ack)
        work.refused.extend(newer.refused)
        if newer.renumber_after is not None:
            work.renumber_after, work.ack = newer.renumber_after, 0
        work.want = 0
        self._work = work
        excess = len(work.reports) - self._max_pending
        if excess > 0:  # the disk is failing for long: keep the newest (see submit)
            del work.reports[:excess]
            self.stats.lost_unstored += excess
            self._settle(excess)
        self._wake_now()

    def _apply(self, done: Done) -> None:
        stats = self.stats
        stats.commits += 1
        stats.accepted += done.stored
        stats.depth = done.depth
        stats.unsent = done.unsent
        self._ready = done.ready
        stats.last_seq = done.last_seq
        stats.lost = done.lost
        stats.refused = done.refused_total
        self._stored_through, self._held_from = done.stored_through, done.held_from
        waiting = []
        for mark, future in self._gone_waiters:
            if mark < done.held_from:
                if not future.done():
                    future.set_result(None)
            else:
                waiting.append((mark, future))
        self._gone_waiters = waiting
        if done.dropped:
            held = self._throttle.due("overflow")
            if held is not None:
                lost = ", ".join(f"{count} {kind}" for kind, count in done.dropped.items())
                log.warning(
                    "outbox full (%d reports): dropped the oldest unsent reports (%s)%s",
                    done.depth,
                    lost,
                    held_back(held),
                )

    def _settle(self, count: int) -> None:
        self._settled += count
        waiting = []
        for target, future in self._sync_waiters:
            if target <= self._settled:
                if not future.done():
                    future.set_result(None)
            else:
                waiting.append((target, future))
        self._sync_waiters = waiting


class OutboxReporter:
    """A :class:`~fieldhub.agent.reporting.Reporter` into an :class:`Outbox`, safe from any
    thread: it stamps and checks a report on the caller's thread (CPU only, microseconds),
    then hands it to the event loop with ``call_soon_threadsafe``. It never blocks.

    A report that breaks the wire contract (a bad key, a NaN, a string too long) is dropped
    here, counted in ``stats.invalid`` and logged sparingly: a report that cannot be stored
    must not sit in the outbox in front of good ones.

    Args:
        outbox: where reports go.
        loop: the loop the outbox runs on; the running one by default.
    """

    def __init__(self, outbox: Outbox, loop: asyncio.AbstractEventLoop | None = None) -> None:
        self._outbox = outbox
        self._loop = loop or asyncio.get_running_loop()
        self._loop_thread = threading.get_ident() if loop is None else None
        self.closed_drops = 0  # reports made after the loop stopped (the agent shutting down)

    def telemetry(self, values: Mapping[str, Value], ts: int | None = None) -> None:
        """Values measured at ``ts`` (epoch ms; now if None)."""
        try:
            body = _encode_body(Sample(ts=now_ms() if ts is None else ts, values=dict(values)))
            _SAMPLE.decode(body)
        except _BAD_REPORT as exc:
            self._hand_over(self._outbox.invalid, Kind.TELEMETRY, str(exc))
            return
        self._hand_over(self._outbox.submit, Kind.TELEMETRY, body)

    def event(
        self,
        type: str,
        severity: Severity = "info",
        message: str = "",
        data: Mapping[str, Any] | None = None,
        *,
        media: Sequence[MediaRef] = (),
        ts: int | None = None,
    ) -> None:
        """Something happened; stored at once, sent with the next messages."""
        try:
            body = encode(
                Event(
                    seq=1,
                    ts=now_ms() if ts is None else ts,
                    type=type,
                    severity=severity,
                    message=message,
                    data=dict(data or {}),
                    media=list(media),
                )
            )
            _EVENT.decode(body)
        except _BAD_REPORT as exc:
            self._hand_over(self._outbox.invalid, Kind.EVENT, str(exc))
            return
        self._hand_over(self._outbox.submit, Kind.EVENT, body)

    def state(self, changes: Mapping[str, StateValue]) -> None:
        """Reported state changed; None removes a key."""
        try:
            body = encode(State(seq=1, ts=now_ms(), state=dict(changes)))
            _STATE.decode(body)
        except _BAD_REPORT as exc:
            self._hand_over(self._outbox.invalid, Kind.STATE, str(exc))
            return
        self._hand_over(self._outbox.submit, Kind.STATE, body)

    def _hand_over(self, method: Callable[[Kind, Any], None], kind: Kind, arg: Any) -> None:
        if self._loop_thread == threading.get_ident():
            method(kind, arg)
            return
        try:
            self._loop.call_soon_threadsafe(method, kind, arg)
        except RuntimeError:  # the loop is closed: the agent is stopping
            self.closed_drops += 1
