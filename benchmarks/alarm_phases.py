"""The alarm benchmark's loaded phases: one fleet of load devices, rules switched on and off.

Why not ``ingest.hub_phase``: it registers new devices for every phase, and each registration
makes Mosquitto's dynamic security rewrite its whole file (the n-th costs O(n): minutes for the
third thousand on a busy machine), so alternating rules off and on over several rounds would
cost a fleet of devices per phase. Here the load devices are registered once
(:func:`register_fleet`) and every phase goes on from the seq the last one stopped at
(``loadgen``'s ``first_seq``): the hub de-duplicates on (device, seq), so each phase is new
data to it, as a fleet's next minutes are.

A phase's rate runs from the first message *of that phase* the hub received to its last
commit. (``hub_phase`` starts its clock when the hub's received count is above zero, which on
a hub that took an earlier phase is at once: the rate of every phase but the first then
included the load generator's start, encoding and 980 connections, a second or two, and the
rules-on phase, always second, looked slower for it.)

Rules are switched by their own ``enabled`` field (:func:`switch_rules`), through the alarm
service as a user would: off, the engine's index holds none of them and a committed batch
costs the engine nothing but its queueing; on, every one is evaluated.
"""

from __future__ import annotations

import asyncio
import resource
import time
from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, select

from fieldhub.hub.app import Hub
from fieldhub.hub.store.schema import devices, samples, series
from ingest import LoadTarget
from loadgen import VALUES, LoadResult, run_in_subprocess

PHASE_DEADLINE_S = 600.0
"""Longest a phase may take to be stored before the benchmark gives up on it."""


@dataclass
class Fleet:
    """The load devices, registered once, and the seq each of them publishes next."""

    prefix: str
    ids: list[str]
    credentials: dict[str, tuple[str, str]]
    next_seq: int = 1


@dataclass
class Phase:
    """What one loaded phase measured (``window``: epoch seconds from when the hub had stored
    the phase's first 1,000 messages until it had stored all of them)."""

    name: str
    sent: int
    lost: int
    duplicates: int
    rate_msg_s: float
    publish_rate_msg_s: float
    hub_cpu_s: float
    """CPU seconds of the benchmark's process (the hub and this script) over the phase."""
    batches: int
    commit_s: float
    """Ingest's commits over the phase and the time they took (the writer's share)."""
    window: tuple[float, float]

    def summary(self) -> dict[str, Any]:
        """The figures of one phase as the report lists them."""
        return {
            "phase": self.name,
            "rate_msg_s": self.rate_msg_s,
            "publish_rate_msg_s": self.publish_rate_msg_s,
            "hub_cpu_ms_per_1000": round(self.hub_cpu_s * 1e6 / max(self.sent, 1), 1),
            "batches": self.batches,
            "commit_s": round(self.commit_s, 2),
            "lost": self.lost,
            "duplicates": self.duplicates,
        }


async def register_fleet(hub: Hub, prefix: str, count: int) -> Fleet:
    """``count`` devices ``{prefix}-00000``… with the credentials the hub issued."""
    ids = [f"{prefix}-{i:05d}" for i in range(count)]
    credentials = {}
    for device_id in ids:
        issued = (await hub.devices.create(device_id)).credentials
        credentials[device_id] = (issued.username, issued.secret)
    return Fleet(prefix, ids, credentials)


async def switch_rules(hub: Hub, rules: list[dict[str, Any]], enabled: bool) -> None:
    """Every rule of ``rules`` (their dict forms, as created) enabled or disabled."""
    for rule in rules:
        changed = {**rule, "enabled": enabled}
        await hub.alarms.put_rule(changed, actor="bench", rule_id=rule["id"], create=False)


async def load_phase(
    hub: Hub,
    target: LoadTarget,
    host: str,
    fleet: Fleet,
    *,
    name: str,
    per_device: int,
    qos: int,
    rate: float | None = None,
) -> Phase:
    """The fleet publishes ``per_device`` messages each (flat out, or paced at ``rate`` msg/s
    for all); returns once the hub has committed all of them, with the checks."""
    stats = hub.stats
    total = len(fleet.ids) * per_device
    received_before, stored_before = sum(stats.received.values()), stats.messages_stored
    batches_before, commit_before = stats.batches, stats.commit_seconds
    points_before = await _points(hub, fleet.ids)
    cpu_before = _cpu()
    load = asyncio.create_task(
        run_in_subprocess(
            host, target.port, devices=len(fleet.ids), qos=qos, max_per_device=per_device,
            device_prefix=fleet.prefix, credentials=fleet.credentials, ca_file=target.ca_file,
            rate=rate, first_seq=fleet.next_seq,
        )
    )  # fmt: skip
    first = first_epoch = 0.0
    deadline = time.monotonic() + PHASE_DEADLINE_S
    while stats.messages_stored - stored_before < total and time.monotonic() < deadline:
        if not first and sum(stats.received.values()) > received_before:
            first = time.perf_counter()
        if not first_epoch and stats.messages_stored - stored_before >= min(1000, total):
            first_epoch = time.time()
        if load.done() and load.exception():
            break
        await asyncio.sleep(0.005)
    done, done_epoch = time.perf_counter(), time.time()
    cpu = _cpu() - cpu_before
    batches, commit_s = stats.batches - batches_before, stats.commit_seconds - commit_before
    result: LoadResult = await load
    await asyncio.sleep(0.5)  # a late duplicate, if any, committed and counted
    lost = await _lost(hub, fleet, result)
    stored = result.total - lost
    points = await _points(hub, fleet.ids) - points_before
    fleet.next_seq += per_device
    return Phase(
        name=name,
        sent=result.total,
        lost=lost,
        duplicates=max(0, points - stored * len(VALUES)),
        rate_msg_s=round(stored / max(done - first, 1e-9)),
        publish_rate_msg_s=round(result.rate),
        hub_cpu_s=cpu,
        batches=batches,
        commit_s=commit_s,
        window=(first_epoch or done_epoch, done_epoch),
    )


async def _lost(hub: Hub, fleet: Fleet, result: LoadResult) -> int:
    """Messages sent but not acknowledged: each device's watermark must be its last seq."""
    async with hub.engine.connect() as conn:
        query = select(devices.c.id, devices.c.acked_seq).where(devices.c.id.in_(fleet.ids))
        acked = dict((await conn.execute(query)).all())
    last = fleet.next_seq - 1
    return sum(max(0, last + result.sent[d] - acked.get(d, 0)) for d in fleet.ids)


async def _points(hub: Hub, ids: list[str]) -> int:
    """Samples stored for ``ids`` (a phase must add exactly its messages' values)."""
    async with hub.engine.connect() as conn:
        query = (
            select(func.count())
            .select_from(samples.join(series, samples.c.series_id == series.c.id))
            .where(series.c.device_id.in_(ids))
        )
        return int((await conn.execute(query)).scalar_one())


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime
