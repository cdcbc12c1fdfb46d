"""Alarm benchmark: device publish → webhook, under ingest load, with 1,000 rules; then a storm.

Issue 13's speed target. It starts Mosquitto and, in this process, a hub (SQLite, or
PostgreSQL with ``--db postgres``) whose only notification channel is a webhook to a receiver
in another process (``webhook_sink.py``, which notes each request's arrival on this machine's
clock). The load is ``loadgen.py``'s (as ``benchmarks/ingest.py`` plays it), from one fleet of
load devices registered once (``alarm_phases.py``):

1. **Rules**: one threshold rule per load device on the key the load carries (``temperature``
   above 50, clear at 45; the load's 21.5 never crosses) and per trigger device: 1,000 rules
   over 1,000 devices, plus the presence rule ``offline`` for the storm's devices.
2. **Rules off and on, alternated**: ``--rounds`` rounds of two flat-out phases each, the
   rules disabled in one and enabled in the other, in the order off-on, on-off, off-on… (the
   machine's other load comes and goes, and the tables grow: each side gets the early and the
   late places alike). Each round's ratio is its on rate over its off rate;
   ``ingest_ratio_rules_on_off`` is the median of the rounds' ratios, ``rounds`` lists every
   phase.
3. **Paced**: the rules on, the load paced at ``--rate`` msg/s (20,000 by default) for
   ``--paced-s`` seconds. Flat out, a load queues in the broker as fast as the hub falls
   behind, and a message's latency is that queue; paced at a rate the hub takes, it is the
   hub's own.
   All along phases 2 and 3, trigger devices (``alarm_devices.py``, 20 of the 1,000) publish
   crossings between the load's messages, one every ``--every`` seconds, each followed half
   a turn later by a clearing value; the benchmark acknowledges every raised alarm it is told
   of, as an operator would, so that the device's next crossing raises a new one (a crossing
   that comes while the previous alarm is still open, or while the rules are off, raises
   nothing; ``missed_crossings`` counts those published with the rules on).
   ``alarm_p50_ms``/``alarm_p99_ms``: from a crossing's publish to its ``alarm.raised``
   request reaching the receiver, over the crossings published during phase 3, split into
   ``raise_*`` (publish → the engine's raise) and ``deliver_*`` (raise → the request);
   ``saturated_alarm_*`` over the flat-out phases with rules on and ``idle_alarm_*`` outside
   the loads.
4. **Checks, from the database**: ``duplicate_alarms`` (alarms beyond one per crossing, or
   two open for one device and rule) and ``lost_notifications`` (a raised alarm whose
   notification had not arrived ``--deadline`` seconds after the phase).
5. **Storm**: ``--storm`` devices, connected with last wills, lose their connections at once
   (their process is killed); the broker publishes the wills, the rule ``offline``
   (``for_s`` = ``OFFLINE_FOR_S``) raises an alarm per device. ``storm_notifications`` is what
   the receiver got for that outage, with the time to the first and the last of them.
6. **Raw reference** (last, once the hub has stopped, on a fresh Mosquitto of the same
   configuration): ``mosquitto_sub`` receives the load of one phase (``raw_rate_msg_s``).

Notifications are routed as the hub routes them: the receiver is subscribed in one place,
:func:`subscribe_receiver`. The last line printed is one JSON object.

    .venv/bin/python benchmarks/alarms.py [--devices 1000] [--messages 300] [--rounds 3]
                                          [--db postgres]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import signal
import statistics
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from sqlalchemy import func, select

sys.path.insert(0, str(Path(__file__).parent))  # sibling scripts
sys.path.insert(1, str(Path(__file__).resolve().parents[1]))  # tests.support: the real servers

from tests.support.servers import Mosquitto, Postgres

from alarm_devices import KEY
from alarm_phases import Fleet, Phase, load_phase, register_fleet, switch_rules
from fieldhub.hub.alarms.service import AlarmCleared, AlreadyAcknowledged
from fieldhub.hub.app import Hub
from fieldhub.hub.auth.rules import principal_for
from fieldhub.hub.config import HubSettings
from fieldhub.hub.notify.digest import FIRST_DIGEST_MS
from fieldhub.hub.notify.subscriptions import MAX_PER_HOUR, SubscriptionSpec
from fieldhub.hub.store.schema import alarms, notifications
from fieldhub.hub.store.schema import notification_deliveries as deliveries
from ingest import LoadTarget, raw_reference

QOS: Final = 1
OFFLINE_RULE: Final = "offline"
OFFLINE_FOR_S: Final = 1
"""Short, so that the storm phase takes seconds; long enough that the rule's timer (checked
every second) is on the path, as with the minute a real fleet would use."""
THRESHOLD: Final = {"kind": "threshold", "key": KEY, "direction": "above", "raise": 50, "clear": 45}
NEVER_FLAPS: Final = {"changes": 1000, "window_s": 1}
"""A trigger device raises and clears its rule's alarm every few seconds, on purpose: with the
default flapping detection (6 changes in 10 min) its notifications would be held as flapping
after the third crossing, and there would be no latency left to measure."""
HERE: Final = Path(__file__).resolve().parent
ADMIN: Final = principal_for(via="session", user_id=0, name="bench", role="admin", sites=[])
REPORT_LIMIT: Final = 64 * 1024 * 1024
"""Longest line read from ``alarm_devices.py``: its report lists every crossing (thousands)."""


@dataclass
class Sink:
    """The webhook receiver's process and every request it reported: ``(epoch s, body)``."""

    process: asyncio.subprocess.Process
    url: str
    received: list[tuple[float, dict[str, Any]]] = field(default_factory=list)

    def raised(self, rule: str | None = None) -> list[tuple[float, dict[str, Any]]]:
        """``alarm.raised`` requests (of ``rule`` only, if given), in arrival order."""
        return [
            (t, body["data"])
            for t, body in self.received
            if body["event"] == "alarm.raised" and rule in (None, body["data"]["rule"])
        ]

    def alarms_told(self) -> set[int]:
        """Every alarm a request told as raised: alone, or in a digest's list."""
        told: set[int] = set()
        for _, body in self.received:
            data = body["data"]
            if body["event"] == "alarm.raised":
                told.add(data["alarm"])
            elif body["event"] == "alarm.digest" and data["change"] == "raised":
                told.update(item["alarm"] for item in data["alarms"])
        return told

    def devices_told(self, rule: str, since: int = 0) -> int:
        """How many devices the requests from the ``since``-th on name as raised by ``rule``:
        one per single message, every listed one per digest."""
        told = 0
        for _, body in self.received[since:]:
            data = body["data"]
            if data.get("rule") == rule and data.get("change") == "raised":
                told += data["count"] if body["event"] == "alarm.digest" else 1
        return told


@contextlib.asynccontextmanager
async def webhook_sink() -> AsyncIterator[Sink]:
    """``webhook_sink.py`` running, its lines read as they come."""
    process = await asyncio.create_subprocess_exec(
        sys.executable, str(HERE / "webhook_sink.py"),
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
    )  # fmt: skip
    assert process.stdout is not None
    assert process.stdin is not None
    port = json.loads(await process.stdout.readline())["port"]
    sink = Sink(process, f"http://127.0.0.1:{port}/")

    async def read() -> None:
        assert process.stdout is not None
        async for line in process.stdout:
            record = json.loads(line)
            sink.received.append((record["t"], record["body"]))

    reader = asyncio.create_task(read())
    try:
        yield sink
    finally:
        process.stdin.close()
        await process.wait()
        await reader


async def subscribe_receiver(hub: Hub, url: str) -> None:
    """Subscribe the receiver as an operator would who wants each hot cabinet at once and a
    fleet outage as few messages: the threshold rules without grouping (each crossing in the
    run is the next of the same few rules, which grouping would rightly gather), ``offline``
    with the default grouping (the first device at once, the others in a digest)."""
    channel = await hub.notifications.create_channel(
        "alarm benchmark", "webhook", {"url": url}, actor="bench"
    )
    subscriptions = hub.notifications.subscriptions
    every_crossing = SubscriptionSpec(
        channel_id=channel.id, rules=["hot-*"], group_interval_s=0, max_per_hour=MAX_PER_HOUR
    )
    await subscriptions.create(every_crossing, ADMIN, owner_id=None)
    await subscriptions.create(
        SubscriptionSpec(channel_id=channel.id, rules=[OFFLINE_RULE]), ADMIN, owner_id=None
    )


def benchmark_rules(targets: list[list[str]], stormers: list[str]) -> list[dict[str, Any]]:
    """A threshold rule for each target's devices, and ``offline`` for the storm's devices.

    ``offline`` watches the storm's devices only: over every device it would also raise an
    alarm for each load device each time a phase ends and its connections close, a burst of
    writes (and digests) that belongs to no rule's cost on ingest."""
    rules: list[dict[str, Any]] = [
        {"id": f"hot-{devices[0]}", "target": {"devices": devices}, "condition": THRESHOLD,
         "flapping": NEVER_FLAPS}
        for devices in targets
    ]  # fmt: skip
    offline = {
        "id": OFFLINE_RULE, "severity": "critical", "target": {"devices": stormers},
        "condition": {"kind": "presence", "presence": "offline"}, "for_s": OFFLINE_FOR_S,
    }  # fmt: skip
    return [*rules, offline]


async def install_rules(hub: Hub, rules: list[dict[str, Any]]) -> None:
    """Create ``rules`` (enabled)."""
    for rule in rules:
        await hub.alarms.put_rule(rule, actor="bench", create=True)


async def issue_credentials(hub: Hub, ids: list[str], folder: Path) -> Path:
    """Register ``ids`` and write their keys where ``alarm_devices.py`` reads them."""
    keys = {}
    for device_id in ids:
        issued = (await hub.devices.create(device_id)).credentials
        keys[device_id] = [issued.username, issued.secret]
    path = folder / "alarm-devices.json"  # the temporary folder is private (mode 0700)
    path.write_text(json.dumps(keys), encoding="utf-8")
    return path


async def acknowledge_as_they_come(hub: Hub, sink: Sink) -> None:
    """An operator: each threshold alarm the receiver hears of is acknowledged, so that it
    clears with its clearing value and the device's next crossing raises a new alarm."""
    done = 0
    while True:
        heard = sink.raised()
        for _t, data in heard[done:]:
            if data["rule"] != OFFLINE_RULE:
                with contextlib.suppress(AlarmCleared, AlreadyAcknowledged):
                    await hub.alarms.acknowledge(data["alarm"], actor="bench")
        done = len(heard)
        await asyncio.sleep(0.05)


def percentile(values: list[float], p: float) -> float:
    """Nearest-rank percentile (``p`` in 0-100) of non-empty ``values``."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(p / 100 * len(ordered) + 0.5) - 1))]


Timed = tuple[float, float, float, int]
"""A crossing heard of: its publish, its request's arrival, its alarm's raise (epoch seconds),
and the alarm's id."""


def split_latency(timed: list[Timed]) -> dict[str, float | None]:
    """Where the time went: publish to the alarm's raise in the engine (``raise_*``: ingest,
    commit, evaluation), and the raise to the webhook's arrival (``deliver_*``: the alarm's
    commit, the outbox, the send)."""
    return {
        **_percentiles("raise", [(raised - published) * 1000 for published, _, raised, _ in timed]),
        **_percentiles("deliver", [(arrived - raised) * 1000 for _, arrived, raised, _ in timed]),
    }


async def delivery_split(hub: Hub, timed: list[Timed]) -> dict[str, float | None]:
    """``deliver_*`` taken apart, from the outbox's own times: the raise to the notification's
    row being written (``write_*``: the round's write job waiting for SQLite's one writer),
    to its first attempt's start (``claim_*``: the commit, the worker's wake-up and its claim,
    another job on the writer), to the request's arrival (``send_*``: the POST)."""
    query = (
        select(notifications.c.body, notifications.c.created_at, func.min(deliveries.c.at))
        .join(deliveries, deliveries.c.notification_id == notifications.c.id)
        .where(notifications.c.event == "alarm.raised")
        .group_by(notifications.c.id, notifications.c.body, notifications.c.created_at)
    )
    async with hub.engine.connect() as conn:
        rows = (await conn.execute(query)).all()
    outbox = {body["alarm"]: (created / 1000, tried / 1000) for body, created, tried in rows}
    known = [(outbox[alarm], arrived, raised) for _, arrived, raised, alarm in timed
             if alarm in outbox]  # fmt: skip
    return {
        **_percentiles("write", [(created - raised) * 1000 for (created, _), _, raised in known]),
        **_percentiles("claim", [(tried - created) * 1000 for (created, tried), _, _ in known]),
        **_percentiles("send", [(arrived - tried) * 1000 for (_, tried), arrived, _ in known]),
    }


def _percentiles(name: str, values: list[float]) -> dict[str, float | None]:
    return {
        f"{name}_p{p}_ms": round(percentile(values, p), 1) if values else None for p in (50, 99)
    }


async def alarm_rows(hub: Hub) -> list[Any]:
    """Every alarm in the database."""
    async with hub.engine.connect() as conn:
        query = select(alarms.c.id, alarms.c.rule_id, alarms.c.device_id, alarms.c.state,
                       alarms.c.value)  # fmt: skip
        return list((await conn.execute(query)).all())


def duplicates(rows: list[Any]) -> int:
    """Alarms beyond one per crossing (a threshold alarm's value is its crossing's, unique
    per crossing; an offline alarm's device went away once), and (device, rule) pairs with
    more than one open alarm."""
    keys = [(r.device_id, r.rule_id, r.value if r.rule_id != OFFLINE_RULE else None) for r in rows]
    open_pairs = [(r.device_id, r.rule_id) for r in rows if r.state != "cleared"]
    return len(keys) - len(set(keys)) + len(open_pairs) - len(set(open_pairs))


async def wait_for(condition: Any, deadline_s: float) -> bool:
    """Poll ``condition()`` until true or ``deadline_s`` passed; whether it came true."""
    end = time.monotonic() + deadline_s
    while not condition():
        if time.monotonic() > end:
            return False
        await asyncio.sleep(0.05)
    return True


async def storm(hub: Hub, sink: Sink, devices: asyncio.subprocess.Process, size: int,
                deadline_s: float) -> dict[str, Any]:  # fmt: skip
    """Kill the devices' process; what the receiver hears of ``offline`` afterwards."""
    before = len(sink.received)
    outage = time.time()
    devices.send_signal(signal.SIGKILL)
    await devices.wait()
    told = lambda: sink.devices_told(OFFLINE_RULE, before) >= size  # noqa: E731
    await wait_for(told, OFFLINE_FOR_S + FIRST_DIGEST_MS / 1000 + deadline_s)
    await asyncio.sleep(2.0)  # anything else the outage brings (a late duplicate)
    heard = [t for t, body in sink.received[before:] if body["data"].get("rule") == OFFLINE_RULE]
    return {
        "storm_devices": size,
        "storm_devices_told": sink.devices_told(OFFLINE_RULE, before),
        "storm_notifications": len(heard),
        "storm_first_s": round(min(heard) - outage, 3) if heard else None,
        "storm_last_s": round(max(heard) - outage, 3) if heard else None,
    }


@dataclass
class RulesOn:
    """When the rules were enabled (epoch-second spans): only a crossing published then can
    raise an alarm."""

    spans: list[tuple[float, float]] = field(default_factory=list)
    since: float | None = None

    async def switch(self, hub: Hub, rules: list[dict[str, Any]], enabled: bool) -> None:
        """Enable or disable ``rules``, noting when."""
        if not enabled and self.since is not None:
            self.spans.append((self.since, time.time()))
            self.since = None
        await switch_rules(hub, rules, enabled)
        if enabled:
            self.since = time.time()

    def covers(self, at: float) -> bool:
        """Whether the rules were on at ``at`` (an open span runs until now)."""
        spans = self.spans + ([(self.since, time.time())] if self.since is not None else [])
        return any(start <= at <= end for start, end in spans)


async def alternated(
    hub: Hub,
    broker: Mosquitto,
    fleet: Fleet,
    rules: list[dict[str, Any]],
    rules_on: RulesOn,
    args: argparse.Namespace,
) -> list[tuple[Phase, Phase]]:
    """``--rounds`` rounds of the flat-out load with the rules off and on, in the order
    off-on, on-off, …; each round as ``(off, on)``. The rules are left on."""
    rounds = []
    for number in range(args.rounds):
        phases: dict[bool, Phase] = {}
        for enabled in (False, True) if number % 2 == 0 else (True, False):
            await rules_on.switch(hub, rules, enabled)
            name = f"{'on' if enabled else 'off'}-{number}"
            phases[enabled] = await load_phase(
                hub, LoadTarget(broker.port), broker.host, fleet,
                name=name, per_device=args.messages, qos=QOS,
            )  # fmt: skip
        rounds.append((phases[False], phases[True]))
    if rules_on.since is None:
        await rules_on.switch(hub, rules, True)
    return rounds


def ratios(rounds: list[tuple[Phase, Phase]]) -> dict[str, Any]:
    """Each round's phases and on/off ratio; the median ratio (the target's figure)."""
    each = [round(on.rate_msg_s / off.rate_msg_s, 3) for off, on in rounds]
    return {
        "rate_off_msg_s": statistics.median(off.rate_msg_s for off, _ in rounds),
        "rate_on_msg_s": statistics.median(on.rate_msg_s for _, on in rounds),
        "ingest_ratio_rules_on_off": statistics.median(each),
        "round_ratios": each,
        "rounds": [
            [phase.summary() for phase in sorted(pair, key=lambda p: p.window[0])]
            for pair in rounds
        ],
    }


def latency(timed: list[Timed], name: str) -> dict[str, Any]:
    """Percentiles of publish → webhook over ``timed``."""
    spans = [(arrived - published) * 1000 for published, arrived, _, _ in timed]
    figures: dict[str, Any] = {f"triggers_{name}": len(spans)}
    prefix = "alarm" if name == "paced" else f"{name}_alarm"
    for p in (50, 99):
        figures[f"{prefix}_p{p}_ms"] = round(percentile(spans, p), 1) if spans else None
    return figures


async def run(hub: Hub, broker: Mosquitto, sink: Sink, folder: Path,
              args: argparse.Namespace) -> dict[str, Any]:  # fmt: skip
    """Phases 1 to 5 on a started hub."""
    await subscribe_receiver(hub, sink.url)
    load = args.devices - args.triggers
    fleet = await register_fleet(hub, "load", load)
    triggers = [f"trig-{i:05d}" for i in range(args.triggers)]
    stormers = [f"storm-{i:05d}" for i in range(args.storm)]
    keys = await issue_credentials(hub, triggers + stormers, folder)
    # Rule i watches load device i: 1,000 rules, each over one publishing device.
    rules = benchmark_rules([[d] for d in fleet.ids] + [[t] for t in triggers], stormers)
    await install_rules(hub, rules)
    rules_on = RulesOn(since=time.time())
    devices = await asyncio.create_subprocess_exec(
        sys.executable, str(HERE / "alarm_devices.py"), f"--host={broker.host}",
        f"--port={broker.port}", f"--credentials={keys}", f"--trigger={','.join(triggers)}",
        f"--storm={','.join(stormers)}", f"--every={args.every}",
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
        limit=REPORT_LIMIT,
    )  # fmt: skip
    assert devices.stdin is not None
    assert devices.stdout is not None
    try:
        if not json.loads(await devices.stdout.readline()).get("ready"):
            raise RuntimeError("the alarm devices did not connect")
        operator = asyncio.create_task(acknowledge_as_they_come(hub, sink))
        rounds = await alternated(hub, broker, fleet, rules, rules_on, args)
        paced_per_device = max(1, round(args.rate * args.paced_s / load))
        paced = await load_phase(hub, LoadTarget(broker.port), broker.host, fleet, name="paced",
                                 per_device=paced_per_device, qos=QOS, rate=args.rate)  # fmt: skip
        devices.stdin.write(b"stop\n")
        fired = json.loads(await devices.stdout.readline())["triggers"]
        crossings = {(device, value) for device, value, t in fired if rules_on.covers(t)}
        await wait_for(
            lambda: {(d["device"], d["value"]) for _t, d in sink.raised()} >= crossings,
            args.deadline,
        )
        operator.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await operator
        heard = {
            (d["device"], d["value"]): (t, d["at"] / 1000, d["alarm"]) for t, d in sink.raised()
        }
        timed = [(t, *heard[(d, v)]) for d, v, t in fired if (d, v) in heard]
        window = paced.window
        in_paced = [x for x in timed if window[0] <= x[0] <= window[1]]
        loaded = [on.window for _, on in rounds]
        in_saturated = [x for x in timed if any(a <= x[0] <= b for a, b in loaded)]
        figures = {
            "rules": len(rules),
            "triggers": len(fired),
            **latency(in_paced, "paced"),
            **split_latency(in_paced),
            **await delivery_split(hub, in_paced),
            **latency(in_saturated, "saturated"),
            **latency([x for x in timed if x not in in_paced + in_saturated], "idle"),
            "missed_crossings": len(crossings - heard.keys()),
            **ratios(rounds),
            "paced_offered_msg_s": args.rate,
            "paced_publish_rate_msg_s": paced.publish_rate_msg_s,
            "paced_rate_msg_s": paced.rate_msg_s,
            "ingest_lost": paced.lost + sum(p.lost for pair in rounds for p in pair),
            "ingest_duplicates": paced.duplicates
            + sum(p.duplicates for pair in rounds for p in pair),
        }
        figures |= await storm(hub, sink, devices, len(stormers), args.deadline)
        rows = await alarm_rows(hub)
        told = sink.alarms_told()
        figures["alarms_raised"] = len(rows)
        figures["duplicate_alarms"] = duplicates(rows)
        # The storm kills the trigger devices too (one process): their own offline alarms may
        # come later, gathered for the group's next digest: they are not the storm's figure.
        measured = [r for r in rows if r.rule_id != OFFLINE_RULE or r.device_id in stormers]
        figures["lost_notifications"] = len({r.id for r in measured} - told)
        return figures
    finally:
        if devices.returncode is None:
            devices.kill()
            await devices.wait()


async def main(args: argparse.Namespace) -> dict[str, Any]:
    """The reference, then the hub's phases; the figures."""
    load = args.devices - args.triggers
    with (
        tempfile.TemporaryDirectory(prefix="fieldhub-bench-") as tmp,
        contextlib.ExitStack() as stack,
    ):
        broker = stack.enter_context(Mosquitto(Path(tmp) / "mosquitto"))
        db_url = None
        if args.db == "postgres":
            db_url = stack.enter_context(Postgres(Path(tmp) / "pg")).url
        settings = HubSettings(data=Path(tmp) / "data", broker=broker.url, db=db_url, qos=QOS)
        async with webhook_sink() as sink, Hub(settings) as hub:
            figures = await run(hub, broker, sink, Path(tmp), args)
        dropped = broker.dropped_messages()
        # Last, the hub stopped, on a Mosquitto of its own with the same configuration. Before
        # the hub, its thousand broker accounts took the hub's start (which removes them) past
        # its timeout on a busy machine; after the hub, on the hub's broker, each account cost
        # a rewrite of dynamic security's file, by then of 3,000 accounts (minutes).
        reference = stack.enter_context(Mosquitto(Path(tmp) / "reference"))
        raw_rate = await raw_reference(
            reference, LoadTarget(reference.port), devices=load, qos=QOS, per_device=args.messages
        )
    return {
        "db": args.db,
        "devices": args.devices,
        "load_devices": load,
        **figures,
        "raw_rate_msg_s": round(raw_rate),
        "ratio_on_raw": round(figures["rate_on_msg_s"] / raw_rate, 3),
        "broker_dropped": dropped,
        "cpus": os.cpu_count(),
        "load_avg_1m": round(os.getloadavg()[0], 2),
    }


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--devices", type=int, default=1000, help="with a threshold rule each")
    parser.add_argument("--triggers", type=int, default=20, help="of them, publishing crossings")
    parser.add_argument("--storm", type=int, default=200, help="devices that go offline at once")
    parser.add_argument("--messages", type=int, default=300, help="per load device and phase")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of rules off and on")
    parser.add_argument("--rate", type=float, default=20_000, help="msg/s of the paced phase")
    parser.add_argument("--paced-s", type=float, default=20.0, help="length of the paced phase")
    parser.add_argument("--every", type=float, default=0.2, help="seconds between crossings")
    parser.add_argument("--deadline", type=float, default=30.0, help="seconds for stragglers")
    parser.add_argument("--db", choices=("sqlite", "postgres"), default="sqlite")
    args = parser.parse_args(argv)
    if not 0 < args.triggers < args.devices:
        parser.error("--triggers must be at least 1 and fewer than --devices")
    return args


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING)
    figures = asyncio.run(main(parse_args()))
    print(json.dumps(figures))
