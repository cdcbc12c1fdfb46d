"""Alarm sweep and marks benchmark: what shelving, flapping and maintenance windows cost.

Two costs are new with them: the sweeper's once-a-second write job (expired shelvings,
flapping pairs that settled, maintenance marks that ended), and the marks every raise and
clear gets in its write job (the windows read and matched, the flapping count). Measured on
a real SQLite store holding 100,000 cleared alarms (history accumulates) and 1,000 open ones:

- ``sweep_ms``: one sweep with nothing to do; raw reference ``empty_job_ms``, a write job that
  does nothing (the floor of any sweep);
- ``raise_1000_ms`` with 100 weekly windows (none covering) against ``raise_1000_bare_ms``,
  the same raise with no window.

Last line: JSON. Run: ``.venv/bin/python benchmarks/alarm_sweep.py``.
"""

from __future__ import annotations

import asyncio
import json
import tempfile
import time
from pathlib import Path
from typing import Any

from sqlalchemy import insert
from sqlalchemy.engine import Connection

from fieldhub.hub.alarms import AlarmEngine, AlarmService
from fieldhub.hub.alarms.sweeper import AlarmSweeper
from fieldhub.hub.alarms.windows import MaintenanceService
from fieldhub.hub.devices.directory import DeviceDirectory
from fieldhub.hub.ingest.batch import Batch
from fieldhub.hub.store.alarms import AlarmStore
from fieldhub.hub.store.database import create_engine, migrate, sqlite_url
from fieldhub.hub.store.devices import DeviceRegistry
from fieldhub.hub.store.schema import alarms as alarms_table
from fieldhub.hub.store.writes import writes_for
from fieldhub.protocol import Telemetry

DEVICES = 1000
CLEARED = 100_000
WINDOWS = 100
SWEEPS = 20
WEEKLY = {"kind": "weekly", "days": [6], "start": "02:00", "duration_s": 3600}


def _cleared_rows(conn: Connection) -> None:
    rows: list[dict[str, Any]] = [
        {
            "rule_id": f"old{i % 10}",
            "device_id": f"d{i % DEVICES}",
            "severity": "minor",
            "state": "cleared",
            "condition_active": False,
            "raised_at": i,
            "message": "old",
            "updated_at": i,
        }
        for i in range(CLEARED)
    ]
    for start in range(0, CLEARED, 5000):
        conn.execute(insert(alarms_table), rows[start : start + 5000])


def _batch(temp: float, devices: range) -> Batch:
    return Batch(
        telemetry=[(f"d{i}", Telemetry(seq=1, ts=1, values={"temp": temp})) for i in devices]
    )


async def _raise_all(engine: AlarmEngine, devices: range) -> float:
    started = time.perf_counter()
    engine.committed(_batch(60.0, devices))
    await engine.evaluate(tick=False)
    return (time.perf_counter() - started) * 1000


async def main() -> None:
    with tempfile.TemporaryDirectory() as folder:
        db = create_engine(sqlite_url(Path(folder) / "bench.db"))
        await migrate(db)
        registry, directory = DeviceRegistry(db), DeviceDirectory()
        for i in range(2 * DEVICES):
            directory.put(await registry.create(f"d{i}", labels={"site": f"s{i % 50}"}))
        writes = writes_for(db)
        await writes.run(_cleared_rows)
        engine = AlarmEngine(AlarmStore(db), writes, directory)
        service = AlarmService(engine, writes, directory)
        threshold = {"kind": "threshold", "key": "temp", "direction": "above"}
        await service.put_rule(
            {"id": "hot", "condition": {**threshold, "raise": 50, "clear": 45}},
            actor="bench",
            create=True,
        )
        bare_ms = await _raise_all(engine, range(DEVICES))  # no window yet
        windows = MaintenanceService(db, writes)
        for i in range(WINDOWS):
            schedule = {**WEEKLY, "timezone": "Europe/Berlin"}
            scope = {"sites": [f"elsewhere{i}"]}
            await windows.put({"name": f"w{i}", "scope": scope, "schedule": schedule}, actor="b")
        windowed_ms = await _raise_all(engine, range(DEVICES, 2 * DEVICES))
        sweeper = AlarmSweeper(engine, writes, directory)
        await sweeper.sweep()
        started = time.perf_counter()
        for _ in range(SWEEPS):
            await sweeper.sweep()
        sweep_ms = (time.perf_counter() - started) * 1000 / SWEEPS
        started = time.perf_counter()
        for _ in range(SWEEPS):
            await writes.run(lambda _conn: None)
        empty_ms = (time.perf_counter() - started) * 1000 / SWEEPS
        await writes.close()
        await db.dispose()
    result = {
        "sweep_ms": round(sweep_ms, 2),
        "empty_job_ms": round(empty_ms, 2),
        "raise_1000_ms": round(windowed_ms, 1),
        "raise_1000_bare_ms": round(bare_ms, 1),
        "windows": WINDOWS,
        "cleared_alarms": CLEARED,
    }
    print(
        f"sweep: {result['sweep_ms']} ms (empty write job {result['empty_job_ms']} ms); "
        f"1,000 raises: {result['raise_1000_ms']} ms with {WINDOWS} windows, "
        f"{result['raise_1000_bare_ms']} ms without"
    )
    print(json.dumps(result))


if __name__ == "__main__":
    asyncio.run(main())
