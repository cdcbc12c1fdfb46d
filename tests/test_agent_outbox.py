"""The agent's outbox on its own: seqs that survive restarts, deletion on ack, the bound and what
goes first, loss counted, and a reporter that units may call from any thread.

The uplink is played by a small fake window (``Drain``) that takes what the outbox hands out;
the real uplink against a real hub is in ``test_agent_uplink.py``.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import msgspec
import pytest

from fieldhub.agent.outbox import (
    OVERFLOW_EVENT,
    Kind,
    Outbox,
    OutboxReporter,
    OutMessage,
)
from fieldhub.protocol import Channel, Event, Telemetry, decode


class Drain:
    """Takes messages from an outbox into a window of ``room`` messages, like the uplink."""

    def __init__(self, outbox: Outbox, room: int = 8, *, auto_ack: bool = False) -> None:
        self.outbox = outbox
        self.room = room
        self.auto_ack = auto_ack  # the hub acks every message at once
        self.window: dict[int, OutMessage] = {}
        self.taken: list[OutMessage] = []
        outbox.attach(self._take, lambda: self.room - len(self.window))

    def _take(self, messages: list[OutMessage]) -> None:
        for message in messages:
            self.window[message.seq] = message
            self.taken.append(message)
        if self.auto_ack and messages:
            self.ack(messages[-1].seq)

    def open(self, room: int) -> None:
        """More room, as after acks or a reconnection."""
        self.room = room
        self.outbox.poke()

    def ack(self, seq: int) -> None:
        for s in [s for s in self.window if s <= seq]:
            del self.window[s]
        self.outbox.ack(seq)
        self.outbox.poke()

    def decoded(self, message: OutMessage, oldest: int | None = None) -> Any:
        return decode(message.channel, message.payload(oldest or message.seq))


async def until(condition: Callable[[], bool], within_s: float = 5.0) -> None:
    """Wait (without blocking the loop) until ``condition()`` holds."""
    deadline = time.monotonic() + within_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {within_s} s")
        await asyncio.sleep(0.005)


async def joined(threads: list[threading.Thread]) -> None:
    """Wait for reporting threads to end, then for the loop to take their last hand-overs
    (``call_soon_threadsafe`` callbacks queued before this task runs again)."""
    await asyncio.to_thread(lambda: [thread.join() for thread in threads])
    await asyncio.sleep(0)


def values_of(messages: list[OutMessage]) -> list[int]:
    """Every ``n`` in the telemetry messages, in order."""
    found = []
    for message in messages:
        if message.kind is Kind.TELEMETRY:
            telemetry: Telemetry = decode(Channel.TELEMETRY, message.payload(message.seq))
            found += [values["n"] for _ts, values in telemetry.instants()]
    return found


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "agent" / "outbox.db"


@pytest.fixture
async def outbox(path: Path) -> AsyncIterator[Outbox]:
    async with Outbox(path, max_messages=1000, ack_linger_s=0.01) as opened:
        yield opened


async def test_reports_are_stored_in_order_and_telemetry_is_combined(outbox: Outbox):
    reporter = OutboxReporter(outbox)
    for n in range(1, 6):
        reporter.telemetry({"n": n}, ts=1000 + n)
    reporter.event("door.opened", "warning", "front door", {"door": "front"})
    reporter.telemetry({"n": 6}, ts=1006)
    reporter.state({"socket": "on", "old": None})
    await outbox.sync()
    assert outbox.stats.accepted == outbox.stats.depth == outbox.stats.unsent == 8

    drain = Drain(outbox)
    await until(lambda: len(drain.taken) == 4)
    first, event, single, state = drain.taken
    assert [m.seq for m in drain.taken] == [1, 2, 3, 4]
    combined = drain.decoded(first)
    assert combined.samples is not None
    assert [(s.ts, s.values) for s in combined.samples] == [
        (1000 + n, {"n": n}) for n in range(1, 6)
    ]
    assert drain.decoded(event) == Event(
        seq=2,
        oldest=2,
        ts=drain.decoded(event).ts,
        type="door.opened",
        severity="warning",
        message="front door",
        data={"door": "front"},
    )
    one = drain.decoded(single)
    assert (one.ts, one.values, one.samples) == (1006, {"n": 6}, None)  # one instant: plain form
    assert drain.decoded(state).state == {"socket": "on", "old": None}
    assert drain.decoded(state, oldest=1).oldest == 1  # the uplink says what it still holds
    assert outbox.stats.unsent == 0
    assert outbox.stats.depth == 8


async def test_ack_deletes_what_it_covers_and_nothing_else(outbox: Outbox):
    reporter = OutboxReporter(outbox)
    drain = Drain(outbox, room=1)
    for n in range(1, 4):
        reporter.event("tick", data={"n": n})
        await outbox.sync()
    await until(lambda: len(drain.taken) == 1)
    drain.ack(1)
    await until(lambda: len(drain.taken) == 2)
    await until(lambda: outbox.stats.depth == 2)
    drain.ack(1)  # again (the hub acks duplicates): nothing more goes
    drain.ack(2)
    await until(lambda: len(drain.taken) == 3)
    await until(lambda: outbox.stats.depth == 1)
    assert [m.seq for m in drain.taken] == [1, 2, 3]


async def test_seqs_survive_a_restart_and_never_repeat(path: Path):
    async with Outbox(path, ack_linger_s=0.01) as outbox:
        reporter = OutboxReporter(outbox)
        for n in range(1, 11):
            reporter.event("tick", data={"n": n})
        await outbox.sync()
        drain = Drain(outbox, room=4)
        await until(lambda: len(drain.taken) == 4)
        drain.ack(4)
        await until(lambda: len(drain.taken) == 8)
        # 5..8 are out (the hub may have them); 9 and 10 never left.
    async with Outbox(path, ack_linger_s=0.01) as outbox:
        assert outbox.stats.depth == 6
        assert outbox.last_seq == 8
        drain = Drain(outbox, room=8)
        await until(lambda: len(drain.taken) == 6)
        # The same seqs with the same content, then new seqs for what was never sent.
        assert [m.seq for m in drain.taken] == [5, 6, 7, 8, 9, 10]
        assert [drain.decoded(m).data["n"] for m in drain.taken] == [5, 6, 7, 8, 9, 10]
        drain.ack(10)
        await until(lambda: outbox.stats.depth == 0)
    async with Outbox(path, ack_linger_s=0.01) as outbox:  # empty, and still counting on
        reporter = OutboxReporter(outbox)
        reporter.telemetry({"n": 11}, ts=11)
        drain = Drain(outbox)
        await until(lambda: len(drain.taken) == 1)
        assert drain.taken[0].seq == 11


async def test_a_message_keeps_its_reports_across_a_restart(path: Path):
    """A combined message is fixed once handed out: after a crash it goes again with the same
    seq and the same samples, even though more telemetry arrived meanwhile."""
    async with Outbox(path) as outbox:
        reporter = OutboxReporter(outbox)
        for n in range(1, 4):
            reporter.telemetry({"n": n}, ts=n)
        await outbox.sync()
        drain = Drain(outbox, room=1)
        await until(lambda: len(drain.taken) == 1)
        for n in range(4, 7):
            reporter.telemetry({"n": n}, ts=n)
        await outbox.sync()
    async with Outbox(path) as outbox:
        drain = Drain(outbox, room=2)
        await until(lambda: len(drain.taken) == 2)
        assert [m.seq for m in drain.taken] == [1, 2]
        assert values_of(drain.taken) == [1, 2, 3, 4, 5, 6]
        assert [m.reports for m in drain.taken] == [3, 3]


async def test_combined_messages_respect_the_sample_and_size_limits(path: Path):
    async with Outbox(path, max_samples=100, max_payload_bytes=2000) as outbox:
        reporter = OutboxReporter(outbox)
        for n in range(250):
            reporter.telemetry({"n": n}, ts=n)
        reporter.telemetry({"text": "x" * 250}, ts=1)
        for n in range(250, 260):
            reporter.telemetry({"n": n}, ts=n)
        await outbox.sync()
        drain = Drain(outbox, room=100, auto_ack=True)
        await until(lambda: outbox.stats.depth == 0)
        for message in drain.taken:
            assert message.reports <= 100
            assert sum(len(b) for b in message.bodies) <= 2000
        assert sum(m.reports for m in drain.taken) == 261


async def test_full_outbox_drops_oldest_telemetry_then_state_then_events(path: Path):
    async with Outbox(path, max_messages=20) as outbox:
        reporter = OutboxReporter(outbox)
        reporter.event("first.event", data={"n": 0})
        reporter.state({"n": 0})
        for n in range(1, 11):
            reporter.telemetry({"n": n}, ts=n)
        reporter.state({"n": 1})
        await outbox.sync()
        assert outbox.stats.depth == 13
        drain = Drain(outbox, room=1)  # the oldest report goes out: never dropped after that
        await until(lambda: len(drain.taken) == 1)
        drain.room = 0
        for n in range(11, 20):
            reporter.event("later.event", data={"n": n})
        await outbox.sync()
        # 22 reports + 1 overflow event for 20 places: 3 telemetry went, the oldest first.
        assert outbox.stats.depth == 20
        assert outbox.stats.lost == {"telemetry": 3, "state": 0, "event": 0}
        for n in range(20, 30):
            reporter.event("later.event", data={"n": n})
        await outbox.sync()
        # 10 more: the other 7 telemetry, then both state reports, then the oldest later event.
        assert outbox.stats.lost == {"telemetry": 10, "state": 2, "event": 1}
        assert outbox.stats.depth == 20

        drain.auto_ack = True
        drain.ack(1)
        drain.open(100)
        await until(lambda: outbox.stats.depth == 0)
    kept = [drain.decoded(m) for m in drain.taken]
    assert drain.taken[0].kind is Kind.EVENT
    assert kept[0].type == "first.event"  # in flight when the outbox filled: kept
    rest = kept[1:]
    assert all(isinstance(m, Event) for m in rest)
    overflow = [m for m in rest if m.type == OVERFLOW_EVENT]
    assert len(overflow) == 1  # one event that grew while it waited
    assert overflow[0].data == {"telemetry": 10, "state": 2, "event": 1}
    assert overflow[0].severity == "warning"
    later = [m.data["n"] for m in rest if m.type == "later.event"]
    assert later == list(range(12, 30))  # n=11 went, the oldest of the droppable events


async def test_loss_counts_survive_a_restart_and_a_new_overflow_reports_again(path: Path):
    async with Outbox(path, max_messages=10) as outbox:
        reporter = OutboxReporter(outbox)
        for n in range(15):
            reporter.telemetry({"n": n}, ts=n)
        await outbox.sync()
        assert outbox.stats.lost["telemetry"] == 6  # 15 + the overflow event for 10 places
    async with Outbox(path, max_messages=10) as outbox:
        assert outbox.stats.lost["telemetry"] == 6
        drain = Drain(outbox, room=100, auto_ack=True)
        await until(lambda: outbox.stats.depth == 0)
        reporter = OutboxReporter(outbox)
        for n in range(15, 26):
            reporter.telemetry({"n": n}, ts=n)
        await outbox.sync()
        await until(lambda: outbox.stats.depth == 0)
        assert outbox.stats.lost["telemetry"] == 8
    overflows = [
        drain.decoded(m) for m in drain.taken if m.kind is Kind.EVENT
    ]  # the first overflow was sent, so the second got an event of its own
    assert [e.data["telemetry"] for e in overflows] == [6, 2]


async def test_refused_and_renumbered_messages(outbox: Outbox):
    reporter = OutboxReporter(outbox)
    for n in range(1, 4):
        reporter.event("tick", data={"n": n})
    await outbox.sync()
    drain = Drain(outbox, room=3)
    await until(lambda: len(drain.taken) == 3)
    outbox.refuse(2)
    await until(lambda: outbox.stats.refused == 1)
    assert outbox.stats.depth == 2
    # The hub turns out to hold seqs up to 50 (this device's outbox file was replaced).
    drain.window.clear()
    outbox.renumber(50)
    await until(lambda: len(drain.taken) == 5)
    assert [m.seq for m in drain.taken[3:]] == [51, 52]
    assert [drain.decoded(m).data["n"] for m in drain.taken[3:]] == [1, 3]


async def test_invalid_reports_are_counted_and_never_stored(outbox: Outbox, caplog):
    reporter = OutboxReporter(outbox)
    reporter.telemetry({"bad key": 1})
    reporter.telemetry({"t": float("nan")})
    reporter.telemetry({"t": [1, 2]})  # type: ignore[dict-item]
    reporter.telemetry({})
    reporter.event("Not Lower Case")
    reporter.event("ok.type", data={"x": object()})
    reporter.state({})
    reporter.telemetry({"t": 1.5}, ts=1)
    await outbox.sync()
    assert outbox.stats.invalid == 7
    assert outbox.stats.accepted == 1
    assert sum("invalid telemetry report" in r.message for r in caplog.records) == 1  # throttled


async def test_reporter_is_safe_from_many_threads(path: Path):
    """gpiozero calls back from its own threads: every report is stored exactly once, each
    thread's reports in the order it made them."""
    async with Outbox(path, ack_linger_s=0.01) as outbox:
        await _report_from_threads(outbox)


async def _report_from_threads(outbox: Outbox) -> None:
    reporter = OutboxReporter(outbox)
    threads, per_thread = 8, 500

    def report(thread: int) -> None:
        for i in range(per_thread):
            reporter.telemetry({"n": thread * per_thread + i}, ts=i)

    workers = [threading.Thread(target=report, args=(t,)) for t in range(threads)]
    for worker in workers:
        worker.start()
    await joined(workers)
    await outbox.sync()
    assert outbox.stats.accepted == threads * per_thread
    drain = Drain(outbox, room=100, auto_ack=True)
    await until(lambda: outbox.stats.depth == 0)
    found = values_of(drain.taken)
    assert sorted(found) == list(range(threads * per_thread))
    for thread in range(threads):
        mine = [n for n in found if n // per_thread == thread]
        assert mine == sorted(mine)


async def test_a_stalled_disk_never_blocks_a_reporting_thread(path: Path):
    """Another writer holds the file's lock for a second (as a slow SD card would stall a
    commit): reports made meanwhile return at once and are stored when the disk is back."""
    import sqlite3

    async with Outbox(path) as outbox:
        reporter = OutboxReporter(outbox)
        reporter.telemetry({"n": 0}, ts=0)
        await outbox.sync()
        blocker = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        blocker.execute("BEGIN IMMEDIATE")
        slowest = [0.0]

        def report() -> None:
            for n in range(1, 101):
                started = time.perf_counter()
                reporter.telemetry({"n": n}, ts=n)
                slowest[0] = max(slowest[0], time.perf_counter() - started)
                time.sleep(0.005)

        worker = threading.Thread(target=report)
        worker.start()
        await asyncio.sleep(1.0)
        blocker.rollback()
        blocker.close()
        await joined([worker])
        await outbox.sync()
        assert outbox.stats.accepted == 101
        assert slowest[0] < 0.5  # the disk was stuck for 1 s


def test_reporter_after_the_loop_closed_drops_and_counts(path: Path):
    loop = asyncio.new_event_loop()
    outbox: Outbox | None = None

    async def open_outbox() -> OutboxReporter:
        nonlocal outbox
        outbox = Outbox(path)
        await outbox.open()
        return OutboxReporter(outbox)

    reporter = loop.run_until_complete(open_outbox())
    assert outbox is not None
    loop.run_until_complete(outbox.close())
    loop.close()
    thread = threading.Thread(target=reporter.telemetry, args=({"t": 1},))
    thread.start()
    thread.join()
    assert reporter.closed_drops == 1


async def test_append_rate(path: Path, capsys):
    """Group commit: reports from four threads share fsyncs. Printed for the docstring of
    ``fieldhub.agent.outbox``; the floor is far below what this machine does."""
    # The memory bound is not what this measures: let a flood wait for the disk in full.
    async with Outbox(path, max_messages=200_000, max_pending=100_000) as outbox:
        reporter = OutboxReporter(outbox)
        count = 5_000

        def report() -> None:
            for i in range(count):
                reporter.telemetry({"n": i, "temperature": 21.5}, ts=i)
                if i % 100 == 0:
                    time.sleep(0.001)  # units report in bursts, not in a busy loop

        started = time.perf_counter()
        workers = [threading.Thread(target=report) for _ in range(4)]
        for worker in workers:
            worker.start()
        await joined(workers)
        await outbox.sync()
        elapsed = time.perf_counter() - started
        rate = 4 * count / elapsed
        assert outbox.stats.accepted == 4 * count
        assert outbox.stats.lost_unstored == 0
        with capsys.disabled():
            print(
                f"\noutbox append: {rate:,.0f} reports/s in {outbox.stats.commits} commits "
                "(WAL, synchronous=FULL, group commit)"
            )
        assert rate > 2_000


def test_a_newer_outbox_file_is_refused(path: Path):
    import sqlite3

    from fieldhub.agent._outbox_store import OutboxStore
    from fieldhub.agent.outbox import OutboxStoreError

    path.parent.mkdir(parents=True)
    with sqlite3.connect(path) as db:
        db.execute("PRAGMA user_version = 99")
    with pytest.raises(OutboxStoreError, match="version 99"):
        OutboxStore(path)


def test_stored_bodies_are_the_protocol_types():
    """The file stores protocol structs, so a report readable today is readable after an
    upgrade that keeps the wire contract."""
    body = msgspec.json.encode({"ts": 5, "values": {"t": 1}})
    message = OutMessage(seq=3, kind=Kind.TELEMETRY, bodies=(body,))
    assert decode(Channel.TELEMETRY, message.payload(2)) == Telemetry(
        seq=3, oldest=2, ts=5, values={"t": 1}
    )
