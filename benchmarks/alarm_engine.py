"""Alarm engine benchmark: what evaluating rules costs per committed message.

The issue's target is that rules do not slow ingest (``ingest_ratio_rules_on_off >= 0.9``);
evaluation runs on the hub's event loop, after the commit, so its cost per message is what it
takes from ingest's loop. This measures that cost alone, on a real SQLite store: 1,000
threshold rules (one per device, all on one key: the worst case for a by-key index) over 1,000
devices, batches of 20,000 committed messages whose values cross no threshold (the steady
state), then one batch in which every device crosses (1,000 alarms raised and written).
``cold_ms`` is one such quiet batch right after a device changed, when which rules cover
which device is worked out anew (the index's memo is emptied by every device event: on a hub
that registers devices during a load, it is paid again and again).

Raw reference in the same run: a loop that only walks the same batch's values (the floor of
any evaluation). Last line: JSON with ``evaluate_us_per_msg``, ``walk_us_per_msg``, ``msgs_s``,
``cold_ms`` and ``raise_1000_ms``.

Run: ``.venv/bin/python benchmarks/alarm_engine.py``.
"""

from __future__ import annotations

import asyncio
import json
import tempfile
import time
from pathlib import Path

from fieldhub.hub.alarms import AlarmEngine, AlarmService
from fieldhub.hub.devices.directory import DeviceDirectory
from fieldhub.hub.ingest.batch import Batch
from fieldhub.hub.store.alarms import AlarmFilter, AlarmStore
from fieldhub.hub.store.database import create_engine, migrate, sqlite_url
from fieldhub.hub.store.devices import DeviceRegistry
from fieldhub.hub.store.writes import writes_for
from fieldhub.protocol import Telemetry

DEVICES = 1000
MESSAGES = 20_000
ROUNDS = 5


def _batch(temp: float) -> Batch:
    return Batch(
        telemetry=[
            (
                f"d{i % DEVICES}",
                Telemetry(seq=1, ts=1, values={"temp": temp + i % 3, "volts": 12.0}),
            )
            for i in range(MESSAGES)
        ]
    )


async def main() -> None:
    with tempfile.TemporaryDirectory() as folder:
        engine = create_engine(sqlite_url(Path(folder) / "bench.db"))
        await migrate(engine)
        registry, directory = DeviceRegistry(engine), DeviceDirectory()
        for i in range(DEVICES):
            directory.put(await registry.create(f"d{i}", labels={"site": f"s{i % 50}"}))
        writes = writes_for(engine)
        alarms = AlarmEngine(AlarmStore(engine), writes, directory)
        service = AlarmService(alarms, writes, directory)
        for i in range(DEVICES):
            rule = {
                "id": f"r{i}",
                "target": {"devices": [f"d{i}"]},
                "condition": {
                    "kind": "threshold",
                    "key": "temp",
                    "direction": "above",
                    "raise": 50,
                    "clear": 45,
                },
            }
            await service.put_rule(rule, actor="bench", create=True)
        quiet = _batch(20.0)
        started = time.perf_counter()
        for _ in range(ROUNDS):
            for _device, message in quiet.telemetry:
                for _ts, values in message.instants():
                    for _key, _value in values.items():
                        pass
        walk = (time.perf_counter() - started) / (ROUNDS * MESSAGES)
        alarms.committed(quiet)
        await alarms.evaluate(tick=False)  # the covering memo fills
        started = time.perf_counter()
        for _ in range(ROUNDS):
            alarms.committed(quiet)
            await alarms.evaluate(tick=False)
        evaluate = (time.perf_counter() - started) / (ROUNDS * MESSAGES)
        colds = []
        for _ in range(ROUNDS):
            alarms.index.forget_devices()  # what a device event does
            started = time.perf_counter()
            alarms.committed(quiet)
            await alarms.evaluate(tick=False)
            colds.append(time.perf_counter() - started)
        started = time.perf_counter()
        alarms.committed(_batch(60.0))
        await alarms.evaluate(tick=False)
        raise_ms = (time.perf_counter() - started) * 1000
        raised = len(await service.find(AlarmFilter(states=["active"], limit=1000)))
        await writes.close()
        await engine.dispose()
    result = {
        "evaluate_us_per_msg": round(evaluate * 1e6, 3),
        "walk_us_per_msg": round(walk * 1e6, 3),
        "msgs_s": round(1 / evaluate),
        "cold_ms": round(min(colds) * 1000, 1),
        "raise_1000_ms": round(raise_ms, 1),
        "alarms_raised": raised,
    }
    print(
        f"evaluation: {result['evaluate_us_per_msg']} µs per message "
        f"(walking the values alone: {result['walk_us_per_msg']} µs)"
    )
    print(json.dumps(result))


if __name__ == "__main__":
    asyncio.run(main())
