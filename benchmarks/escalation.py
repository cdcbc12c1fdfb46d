"""Escalation benchmark: what planning a policy costs a raise, and cancelling it an
acknowledgement.

Escalation writes its whole plan in the engine's transaction when an alarm is raised, and
cancels it in the transaction of an acknowledgement; both sit on the alarm engine's path (not
ingest's). On a real SQLite store: 1,000 devices, one event rule each, all raised in one
round; then 100 alarms acknowledged one by one (as users do). Once with the rules naming a
policy of 3 steps and 5 reminders to 2 channels (16 held notifications per alarm, 16,000 in
the round), once without (the raw reference, in the same run).

Last line: JSON with ``raise_1000_ms`` and ``ack_ms`` for both, and their ratios.

Run: ``.venv/bin/python benchmarks/escalation.py``.
"""

from __future__ import annotations

import asyncio
import json
import tempfile
import time
from pathlib import Path

from sqlalchemy import insert

from fieldhub.clock import now_ms
from fieldhub.hub.alarms import AlarmEngine, AlarmService
from fieldhub.hub.devices.directory import DeviceDirectory
from fieldhub.hub.ingest.batch import Batch
from fieldhub.hub.notify.escalation import Policy, Step, escalate
from fieldhub.hub.notify.escalation_policies import EscalationPolicies
from fieldhub.hub.store.alarms import AlarmFilter, AlarmStore
from fieldhub.hub.store.database import create_engine, migrate, sqlite_url
from fieldhub.hub.store.devices import DeviceRegistry
from fieldhub.hub.store.schema import notification_channels
from fieldhub.hub.store.writes import writes_for
from fieldhub.protocol import Event

DEVICES = 1000
ACKS = 100
POLICY = Policy(
    "bench", "bench", (Step(60, (1, 2)), Step(600, (1, 2)), Step(1800, (1, 2))), 3600, 5
)


async def _run(folder: Path, *, escalation: bool) -> tuple[float, float]:
    """Milliseconds to raise every alarm in one round, and to acknowledge ``ACKS`` of them."""
    engine = create_engine(sqlite_url(folder / f"bench-{escalation}.db"))
    await migrate(engine)
    registry, directory = DeviceRegistry(engine), DeviceDirectory()
    for i in range(DEVICES):
        directory.put(await registry.create(f"d{i}"))
    writes = writes_for(engine)
    alarms = AlarmEngine(AlarmStore(engine), writes, directory)
    service = AlarmService(alarms, writes, directory)
    if escalation:
        alarms.on_change(escalate)
        rows = [{"name": f"c{n}", "kind": "webhook", "config": {"url": "http://x"}} for n in (1, 2)]
        for row in rows:
            row.update(enabled=True, created_at=0, created_by="bench")
        await writes.run(lambda conn: conn.execute(insert(notification_channels), rows))
        await EscalationPolicies(engine, writes).put(POLICY, actor="b", source="", create=True)
    for i in range(DEVICES):
        rule = {
            "id": f"r{i}",
            "target": {"devices": [f"d{i}"]},
            "condition": {"kind": "event", "match": "door.*"},
            **({"escalation": "bench"} if escalation else {}),
        }
        await service.put_rule(rule, actor="bench", create=True)
    event = Event(seq=1, ts=now_ms(), type="door.opened")
    batch = Batch(events=[(f"d{i}", now_ms(), event) for i in range(DEVICES)])
    started = time.perf_counter()
    alarms.committed(batch)
    await alarms.evaluate(tick=False)
    raise_ms = (time.perf_counter() - started) * 1000
    raised = await service.find(AlarmFilter(states=["active"], limit=DEVICES))
    assert len(raised) == DEVICES, len(raised)
    started = time.perf_counter()
    for alarm in raised[:ACKS]:
        await service.acknowledge(alarm.id, actor="user:bench")
    ack_ms = (time.perf_counter() - started) * 1000 / ACKS
    await writes.close()
    await engine.dispose()
    return raise_ms, ack_ms


async def main() -> None:
    with tempfile.TemporaryDirectory() as folder:
        plain_raise, plain_ack = await _run(Path(folder), escalation=False)
        esc_raise, esc_ack = await _run(Path(folder), escalation=True)
    result = {
        "raise_1000_ms": round(esc_raise, 1),
        "raise_1000_ms_without": round(plain_raise, 1),
        "raise_ratio": round(esc_raise / plain_raise, 2),
        "ack_ms": round(esc_ack, 2),
        "ack_ms_without": round(plain_ack, 2),
        "ack_ratio": round(esc_ack / plain_ack, 2),
        "notifications_planned": DEVICES * 16,
    }
    print(
        f"raising 1,000 alarms: {result['raise_1000_ms']} ms with a 16-message plan each "
        f"({result['raise_1000_ms_without']} ms without); one acknowledgement "
        f"{result['ack_ms']} ms ({result['ack_ms_without']} ms without)"
    )
    print(json.dumps(result))


if __name__ == "__main__":
    asyncio.run(main())
