"""The gateway's children share one outbox file and keep the agent's guarantees each: their
own seqs, acknowledgements and resends, across a restart of the gateway; the bound of one
child drops only that child's reports.

The uplink is played by ``Drain`` from ``test_agent_outbox.py``; the real gateway against a
real hub is in ``test_gateway_uplink.py``.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

from fieldhub.agent.outbox import Outbox, OutboxFile, OutboxReporter
from tests.test_agent_outbox import Drain, until, values_of


def _outbox(file: OutboxFile, device_id: str, max_messages: int = 1000) -> Outbox:
    return Outbox(file.path, max_messages=max_messages, ack_linger_s=0.01, shared=(file, device_id))


async def test_children_number_their_own_reports_and_are_acked_one_by_one(tmp_path: Path):
    file = OutboxFile(tmp_path / "outboxes.db")
    assert await file.open() == []
    lock, socket = _outbox(file, "lock-1"), _outbox(file, "socket-1")
    await lock.open()
    await socket.open()
    for n in range(3):
        OutboxReporter(lock).telemetry({"n": n})
        OutboxReporter(socket).event("door.opened", data={"n": n})
    await lock.sync()
    await socket.sync()
    lock_drain, socket_drain = Drain(lock, room=8), Drain(socket, room=8)
    await until(lambda: len(lock_drain.taken) == 1 and len(socket_drain.taken) == 3)
    assert [m.seq for m in socket_drain.taken] == [1, 2, 3]  # its own seqs, from 1
    assert lock_drain.taken[0].seq == 1
    assert values_of(lock_drain.taken) == [0, 1, 2]

    socket_drain.ack(2)  # only the socket's hub acks: the lock keeps everything
    await until(lambda: socket.stats.depth == 1)
    assert lock.stats.depth == 3
    await lock.close()
    await socket.close()
    await file.close()

    file = OutboxFile(tmp_path / "outboxes.db")  # the gateway restarts
    assert await file.open() == ["lock-1", "socket-1"]
    lock, socket = _outbox(file, "lock-1"), _outbox(file, "socket-1")
    await lock.open()
    await socket.open()
    lock_drain, socket_drain = Drain(lock, room=8), Drain(socket, room=8)
    await until(lambda: len(lock_drain.taken) == 1 and len(socket_drain.taken) == 1)
    # The same seqs again, with the same content: the hub recognises what it has.
    assert (lock_drain.taken[0].seq, values_of(lock_drain.taken)) == (1, [0, 1, 2])
    assert socket_drain.taken[0].seq == 3
    OutboxReporter(socket).state({"relay": "open"})
    await until(lambda: [m.seq for m in socket_drain.taken] == [3, 4])
    await lock.close()
    await socket.close()
    await file.close()
    with sqlite3.connect(tmp_path / "outboxes.db") as db:  # one file for all
        assert db.execute("SELECT count(*) FROM devices").fetchone() == (2,)


async def test_a_full_child_drops_only_its_own_reports(tmp_path: Path):
    file = OutboxFile(tmp_path / "outboxes.db")
    await file.open()
    chatty, quiet = _outbox(file, "chatty", max_messages=10), _outbox(file, "quiet")
    await chatty.open()
    await quiet.open()
    for n in range(30):
        OutboxReporter(chatty).telemetry({"n": n})
    OutboxReporter(quiet).telemetry({"n": 0})
    await chatty.sync()
    await quiet.sync()
    assert chatty.stats.depth == 10
    assert chatty.stats.lost["telemetry"] > 0
    assert quiet.stats.depth == 1
    assert quiet.stats.lost["telemetry"] == 0
    await chatty.close()
    await quiet.close()
    await file.close()


async def test_children_committing_together_each_keep_their_own_reports(tmp_path: Path):
    file = OutboxFile(tmp_path / "outboxes.db")
    await file.open()
    outboxes = [_outbox(file, f"c{i}") for i in range(40)]
    for outbox in outboxes:
        await outbox.open()
    for n in range(5):
        for i, outbox in enumerate(outboxes):
            OutboxReporter(outbox).telemetry({"n": n, "child": i})
    for outbox in outboxes:
        await outbox.sync()
    assert [o.stats.accepted for o in outboxes] == [5] * 40
    for outbox in outboxes:
        await outbox.close()
    await file.close()

    file = OutboxFile(tmp_path / "outboxes.db")
    await file.open()
    again = _outbox(file, "c17")
    await again.open()
    drain = Drain(again, room=8)
    await until(lambda: len(drain.taken) == 1)
    assert values_of(drain.taken) == [0, 1, 2, 3, 4]
    telemetry = drain.decoded(drain.taken[0])
    assert {values["child"] for _ts, values in telemetry.instants()} == {17}
    await again.close()
    await file.close()
