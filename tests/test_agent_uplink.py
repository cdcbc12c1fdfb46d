"""The agent's outbox and uplink against a real hub: every report stored exactly once, whatever
happens on the way: a cut network, a hub restart, an agent killed with SIGKILL, an outage that
overflows the outbox, a message the hub refuses.

The agent reaches the broker through a cuttable TCP proxy (``tests.support.proxy``), which
also follows a hub that comes back on another port. "Stored once" is checked twice: the points
the hub holds, and the hub's count of points it wrote (a message stored twice would count its
points twice, even where the second write replaces the first).
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import msgspec
import pytest

from fieldhub.agent.outbox import OVERFLOW_EVENT, Kind, Outbox, OutboxReporter
from fieldhub.agent.uplink import REFUSED_EVENT, Uplink, UplinkSettings
from fieldhub.clock import now_ms
from fieldhub.hub.app import Hub
from fieldhub.hub.config import HubSettings
from fieldhub.protocol import Channel, Command, Desired, Event, Reply, encode, topic_for
from tests.conftest import HubFactory
from tests.support.proxy import TcpProxy
from tests.support.servers import Mosquitto

FAST = UplinkSettings(ack_timeout_s=1.0, reconnect_min_s=0.05, reconnect_max_s=0.3, keepalive_s=5)
BASE_TS = now_ms() - 3_600_000  # report n is at BASE_TS + n: one instant per report
BROKERS = [
    pytest.param("embedded", id="amqtt"),
    pytest.param("mosquitto", id="mosquitto", marks=pytest.mark.mosquitto),
]


async def until(
    condition: Callable[[], bool | Awaitable[bool]], within_s: float = 15.0, what: str = ""
) -> None:
    """Wait, without blocking the loop the hub runs on, until ``condition()`` holds."""
    deadline = time.monotonic() + within_s
    while True:
        result = condition()
        if not isinstance(result, bool):
            result = await result
        if result:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {within_s} s: {what or condition}")
        await asyncio.sleep(0.02)


@dataclass
class Device:
    id: str
    username: str
    secret: str


async def register(hub: Hub, name: str, uid: str) -> Device:
    issued = (await hub.devices.create(f"{name}-{uid}")).credentials
    return Device(issued.device_id, issued.username, issued.secret)


async def retire(hub: Hub, device: Device) -> None:
    """Delete the device at the end of a test: the hub clears its retained status, which the
    session's Mosquitto would otherwise replay to the hubs of later tests."""
    await hub.devices.delete(device.id)
    await hub.bus.flushed()


@asynccontextmanager
async def registered(hub: Hub, name: str, uid: str) -> AsyncIterator[Device]:
    """A device registered for the block and deleted after it, also when the test fails."""
    device = await register(hub, name, uid)
    try:
        yield device
    finally:
        await retire(hub, device)


def address(url: str) -> tuple[str, int]:
    parts = urlsplit(url)
    return parts.hostname or "127.0.0.1", parts.port or 1883


@dataclass
class Agent:
    outbox: Outbox
    uplink: Uplink
    reporter: OutboxReporter

    def drained(self) -> bool:
        """Everything reported is acknowledged by the hub."""
        outbox = self.outbox
        return not (outbox.pending or outbox.stats.unsent or self.uplink.stats.in_flight)


@asynccontextmanager
async def agent(
    device: Device,
    path: Path,
    broker: tuple[str, int],
    *,
    settings: UplinkSettings = FAST,
    max_messages: int = 100_000,
) -> AsyncIterator[Agent]:
    host, port = broker
    async with (
        Outbox(path, max_messages=max_messages, ack_linger_s=0.05) as outbox,
        Uplink(
            outbox,
            device_id=device.id,
            host=host,
            port=port,
            username=device.username,
            password=device.secret,
            settings=settings,
        ) as uplink,
    ):
        yield Agent(outbox, uplink, OutboxReporter(outbox))


class Producer:
    """A unit on its own thread, reporting ``{"n": n}`` every ``interval_s``."""

    def __init__(self, reporter: OutboxReporter, first: int, count: int, interval_s: float):
        self.made = first - 1
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._run, args=(reporter, first, count, interval_s), daemon=True
        )
        self._thread.start()

    def _run(self, reporter: OutboxReporter, first: int, count: int, interval_s: float) -> None:
        for n in range(first, first + count):
            if self._stop.is_set():
                return
            reporter.telemetry({"n": n}, ts=BASE_TS + n)
            if n % 10 == 0:
                reporter.event("probe.tick", data={"n": n})
            self.made = n
            time.sleep(interval_s)

    @property
    def done(self) -> bool:
        return not self._thread.is_alive()


async def stored_points(hub: Hub, device_id: str) -> list[int]:
    """Every ``n`` the hub holds for the device, in time order."""
    keys = await hub.queries.keys(device_id)
    if "n" not in keys:
        return []
    series_id, kind = keys["n"]
    points = await hub.queries.history(
        series_id=series_id, kind=kind, start=0, end=2**53, bucket_ms=None, agg="avg", limit=10**7
    )
    return [int(value) for _ts, value in points]  # type: ignore[arg-type]


async def stored_events(hub: Hub, device_id: str, type: str) -> list[dict[str, Any]]:
    """The ``data`` of every event of ``type`` the hub holds for the device, oldest first,
    with the event's ``seq`` added (to tell which message a duplicate came in)."""
    found, cursor = [], None
    while True:
        page = await hub.queries.events(
            device_ids=[device_id], types=[type], cursor=cursor, limit=1000
        )
        found += [{**e.data, "seq": e.seq} for e in page.events]
        cursor = page.next_cursor
        if cursor is None:
            return found[::-1]


async def caught_up(hub: Hub, device: Device, agent: Agent) -> bool:
    return agent.drained() and hub.ingest.acked_seq(device.id) == agent.outbox.last_seq


async def settled(hub: Hub, device: Device, agent: Agent, what: str = "all acknowledged") -> None:
    """Wait until the hub has acknowledged everything the agent reported; if it does not
    come, say where each side stands."""
    try:
        await until(lambda: caught_up(hub, device, agent), what=what)
    except AssertionError as exc:
        stats = hub.stats
        raise AssertionError(
            f"{exc}; agent: pending {agent.outbox.pending}, {agent.uplink.snapshot()}; hub: "
            f"acked {hub.ingest.acked_seq(device.id)}, received {dict(stats.received)}, "
            f"rejected {dict(stats.rejected)}, duplicates {stats.duplicates}, "
            f"presence {hub.presence.get(device.id)}"
        ) from None


def check_ticks(ticks: list[dict[str, Any]], points: list[int]) -> None:
    """Each tick event once, and only for reports the hub has."""
    numbers = [t["n"] for t in ticks]
    twice = [t for t in ticks if numbers.count(t["n"]) > 1]
    assert not twice, f"events stored twice (with their seqs): {twice}"
    assert set(numbers) <= {n for n in points if n % 10 == 0}


# -- the everyday path ------------------------------------------------------------------------


async def test_every_report_is_stored_exactly_once(any_hub: Hub, uid: str, tmp_path: Path):
    async with registered(any_hub, "agent", uid) as device:
        async with agent(device, tmp_path / "outbox.db", address(any_hub.broker_url)) as a:
            producer = Producer(a.reporter, 1, 400, interval_s=0.001)
            a.reporter.state({"socket": "on", "firmware": "1.0"})
            await until(lambda: producer.done)
            a.reporter.state({"firmware": None, "lock": "locked"})
            await settled(any_hub, device, a, "all acknowledged")
            assert any_hub.presence.get(device.id).presence == "online"
            # Reports that piled up while earlier ones were in flight left as combined messages.
            assert a.uplink.stats.sent < 400 + 40 + 2
            assert a.uplink.stats.refused == 0

        points = await stored_points(any_hub, device.id)
        assert points == list(range(1, 401))
        assert any_hub.stats.points_stored == 400
        ticks = await stored_events(any_hub, device.id, "probe.tick")
        assert sorted(t["n"] for t in ticks) == list(range(10, 401, 10))
        state = await any_hub.registry.get(device.id)
        assert state.reported == {"socket": "on", "lock": "locked"}
        await until(lambda: any_hub.presence.get(device.id).presence == "offline")
        assert any_hub.presence.get(device.id).reason == "agent stopped"


@pytest.mark.parametrize("broker", BROKERS)
async def test_network_cut_while_reporting_loses_nothing(
    make_hub: HubFactory, broker: str, uid: str, tmp_path: Path
):
    async with (
        make_hub(broker=broker) as hub,
        TcpProxy(*address(hub.broker_url)) as proxy,
        registered(hub, "cut", uid) as device,
    ):
        async with agent(device, tmp_path / "outbox.db", (proxy.host, proxy.port)) as a:
            producer = Producer(a.reporter, 1, 600, interval_s=0.002)
            await until(lambda: producer.made >= 150)
            proxy.cut()  # the network goes; the unit goes on reporting
            await until(lambda: not a.uplink.connected)
            await until(lambda: producer.made >= 450)
            # The broker saw the connection die without DISCONNECT: the will said so.
            await until(lambda: hub.presence.get(device.id).presence == "offline")
            assert hub.presence.get(device.id).reason == "connection lost"
            proxy.restore()
            await until(lambda: producer.done)
            await settled(hub, device, a, "all acknowledged")
            assert a.uplink.stats.connections >= 2
            assert hub.presence.get(device.id).presence == "online"
        assert await stored_points(hub, device.id) == list(range(1, 601))
        assert hub.stats.points_stored == 600
        check_ticks(await stored_events(hub, device.id, "probe.tick"), list(range(1, 601)))
        assert len(await stored_events(hub, device.id, "probe.tick")) == 60


@pytest.mark.parametrize("broker", BROKERS)
async def test_hub_restart_mid_stream_loses_nothing(
    make_hub: HubFactory, broker: str, uid: str, tmp_path: Path
):
    data = tmp_path / "hub"
    first = make_hub(broker=broker, data=data)
    hub = await first.__aenter__()
    running = True
    device = await register(hub, "restart", uid)
    try:
        async with TcpProxy(*address(hub.broker_url)) as proxy, AsyncExitStack() as later:
            async with agent(device, tmp_path / "outbox.db", (proxy.host, proxy.port)) as a:
                producer = Producer(a.reporter, 1, 800, interval_s=0.002)
                await until(lambda: producer.made >= 200)
                running = False
                await first.__aexit__(None, None, None)  # the hub goes, mid-stream
                await until(lambda: producer.made >= 400)
                again = await later.enter_async_context(make_hub(broker=broker, data=data))
                later.push_async_callback(retire, again, device)  # after the agent stopped
                proxy.retarget(*address(again.broker_url))  # the embedded broker moved
                await until(lambda: producer.done)
                await settled(again, device, a, "all acknowledged")
            assert await stored_points(again, device.id) == list(range(1, 801))
            # Nothing written twice across the restart.
            assert hub.stats.points_stored + again.stats.points_stored == 800
            ticks = await stored_events(again, device.id, "probe.tick")
            check_ticks(ticks, list(range(1, 801)))
            assert len(ticks) == 80
    finally:
        if running:
            await retire(hub, device)
            await first.__aexit__(None, None, None)


@pytest.mark.parametrize("broker", BROKERS)
async def test_long_outage_overflows_the_bound_counts_the_loss_and_the_hub_moves_on(
    make_hub: HubFactory, broker: str, uid: str, tmp_path: Path
):
    async with (
        make_hub(broker=broker) as hub,
        TcpProxy(*address(hub.broker_url)) as proxy,
        registered(hub, "full", uid) as device,
    ):
        host_port = (proxy.host, proxy.port)
        async with agent(device, tmp_path / "outbox.db", host_port, max_messages=200) as a:
            for n in range(1, 51):
                a.reporter.telemetry({"n": n}, ts=BASE_TS + n)
            await settled(hub, device, a, "first 50 acknowledged")
            proxy.cut()
            await until(lambda: not a.uplink.connected)
            a.reporter.event("door.opened", "warning", data={"door": "front"})  # kept
            for n in range(51, 1051):
                a.reporter.telemetry({"n": n}, ts=BASE_TS + n)
            await a.outbox.sync()
            assert a.outbox.stats.depth == 200
            lost = a.outbox.stats.lost
            assert lost == {"telemetry": 1000 + 1 + 1 - 200, "state": 0, "event": 0}
            proxy.restore()
            await settled(hub, device, a, "the rest acknowledged")

        points = await stored_points(hub, device.id)
        # What was sent before the outage, then the newest reports that fit in the bound.
        assert points == list(range(1, 51)) + list(range(1051 - 198, 1051))
        assert hub.stats.points_stored == len(points)
        overflow = await stored_events(hub, device.id, OVERFLOW_EVENT)
        assert [{k: v for k, v in e.items() if k != "seq"} for e in overflow] == [
            {"telemetry": 802, "state": 0, "event": 0}
        ]
        assert len(await stored_events(hub, device.id, "door.opened")) == 1
        assert hub.ingest.acked_seq(device.id) == a.outbox.last_seq


# -- the agent killed -------------------------------------------------------------------------


REPO = Path(__file__).resolve().parents[1]


class Probe:
    """``python -m tests.support.outbox_probe`` as a separate process; its stderr goes to a
    file next to the outbox, shown when a test fails."""

    def __init__(
        self, device: Device, outbox: Path, broker: tuple[str, int], first: int, count: int
    ) -> None:
        env = {**os.environ, "FIELDHUB_PROBE_SECRET": device.secret}
        argv = [
            sys.executable,
            "-m",
            "tests.support.outbox_probe",
            f"--host={broker[0]}",
            f"--port={broker[1]}",
            f"--device={device.id}",
            f"--username={device.username}",
            f"--outbox={outbox}",
            f"--first={first}",
            f"--count={count}",
            f"--base-ts={BASE_TS}",
            "--interval-ms=1",
            "--report-every=20",
            "--ack-timeout=1",
        ]
        self.accepted = first - 1
        self.drained: dict[str, Any] | None = None
        self.log = outbox.with_name(f"probe-{first}.log")
        self.log.parent.mkdir(parents=True, exist_ok=True)
        with self.log.open("w") as log:
            self.process = subprocess.Popen(
                argv, stdout=subprocess.PIPE, stderr=log, env=env, text=True, cwd=REPO
            )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        with self.process.stdout as lines:
            for line in lines:
                said = json.loads(line)
                if "accepted" in said:
                    self.accepted = said["accepted"]
                if said.get("drained"):
                    self.drained = said

    def kill(self) -> None:
        """SIGKILL: no clean-up of any kind in the probe."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
        self.wait()

    def wait(self) -> int:
        returncode = self.process.wait(10)
        self._reader.join(10)
        return returncode


@pytest.mark.slow
@pytest.mark.parametrize("broker", BROKERS)
async def test_agent_killed_with_sigkill_mid_stream_loses_nothing(
    make_hub: HubFactory, broker: str, uid: str, tmp_path: Path
):
    """Three times the agent process is killed at a random point while it reports and sends;
    each time the next run goes on from its outbox file. Whatever a run had accepted (and
    possibly a little more it committed just before dying) reaches the hub exactly once."""
    outbox = tmp_path / "agent" / "outbox.db"
    async with make_hub(broker=broker) as hub, registered(hub, "killed", uid) as device:
        broker_address = address(hub.broker_url)
        accepted: list[tuple[int, int]] = []  # (first, last accepted) of each killed run
        for run, kill_after in enumerate((150, 420, 77)):
            first = run * 1000 + 1
            probe = Probe(device, outbox, broker_address, first, count=1000)
            try:
                await until(lambda p=probe, f=first, k=kill_after: p.accepted >= f + k)
            finally:
                await asyncio.to_thread(probe.kill)
            accepted.append((first, probe.accepted))
        last = Probe(device, outbox, broker_address, 3001, count=100)
        try:
            await until(lambda: last.drained is not None, within_s=30, what="the last run drained")
        finally:
            if last.drained is None:
                last.kill()
                print(last.log.read_text())
        assert await asyncio.to_thread(last.wait) == 0
        await until(lambda: hub.ingest.acked_seq(device.id) == last.drained["outbox"]["last_seq"])

        points = await stored_points(hub, device.id)
        assert hub.stats.points_stored == len(points)  # nothing stored twice
        for first, last_accepted in accepted:
            run_points = [n for n in points if first <= n < first + 1000]
            # Every accepted report, and no gap: reports are committed in order.
            assert run_points == list(range(first, first + len(run_points)))
            assert first + len(run_points) - 1 >= last_accepted
        assert [n for n in points if n > 3000] == list(range(3001, 3101))
        check_ticks(await stored_events(hub, device.id, "probe.tick"), points)


# -- refusals, renumbering, commands ----------------------------------------------------------


@pytest.mark.parametrize("broker", BROKERS)
async def test_a_message_the_hub_refuses_is_dropped_and_the_queue_moves_on(
    make_hub: HubFactory, broker: str, uid: str, tmp_path: Path
):
    """A report the hub will never take (here one too large, as an older agent might have
    left in its file) is given up after being refused twice; the hub's watermark moves past
    it thanks to ``oldest``, and the loss is reported as an event."""
    settings = UplinkSettings(
        ack_timeout_s=1.1, refuse_after=2, reconnect_min_s=0.05, reconnect_max_s=0.3
    )
    async with make_hub(broker=broker) as hub, registered(hub, "refused", uid) as device:
        async with agent(
            device, tmp_path / "outbox.db", address(hub.broker_url), settings=settings
        ) as a:
            for n in range(1, 11):
                a.reporter.telemetry({"n": n}, ts=BASE_TS + n)
            await settled(hub, device, a)
            too_big = Event(seq=1, ts=now_ms(), type="camera.picture", data={"jpeg": "x" * 300_000})
            a.outbox.submit(Kind.EVENT, encode(too_big))
            for n in range(11, 21):
                a.reporter.telemetry({"n": n}, ts=BASE_TS + n)
            await until(lambda: a.uplink.stats.refused == 1, within_s=20)
            await settled(hub, device, a, "the queue moved on")
            assert a.outbox.stats.refused == 1
            assert a.uplink.stats.rejects >= 2
        assert await stored_points(hub, device.id) == list(range(1, 21))
        refused = await stored_events(hub, device.id, REFUSED_EVENT)
        assert len(refused) == 1
        assert refused[0]["channel"] == "event"
        assert "exceeds" in refused[0]["error"]
        assert hub.stats.rejected["invalid_payload"] >= 2


async def test_a_replaced_outbox_file_is_numbered_above_what_the_hub_has(
    hub: Hub, uid: str, tmp_path: Path
):
    """The Pi's SD card was swapped: the new outbox starts at seq 1, the hub holds seqs up to
    30. The hub's first ack tells; the agent numbers its reports again above 30, so none of
    them is taken for a duplicate."""
    device = await register(hub, "swapped", uid)
    broker = address(hub.broker_url)
    async with agent(device, tmp_path / "old.db", broker) as a:
        for n in range(1, 31):
            a.reporter.event("tick", data={"n": n})  # one message each
            await a.outbox.sync()
        await settled(hub, device, a)
    assert hub.ingest.acked_seq(device.id) == 30
    async with agent(device, tmp_path / "new.db", broker) as a:
        for n in range(31, 41):
            a.reporter.event("tick", data={"n": n})
        await until(lambda: a.uplink.stats.renumbered == 1)
        await settled(hub, device, a)
    ticks = await stored_events(hub, device.id, "tick")
    assert [t["n"] for t in ticks] == list(range(1, 41))


@pytest.mark.parametrize("broker", BROKERS)
async def test_commands_desired_state_and_replies(
    make_hub: HubFactory, broker: str, uid: str, tmp_path: Path
):
    async with make_hub(broker=broker) as hub, registered(hub, "cmd", uid) as device:
        desired = Desired(version=4, state={"lock": "locked"})
        hub.bus.publish(topic_for(device.id, Channel.DESIRED), encode(desired), 1, retain=True)
        await hub.bus.flushed()
        commands: list[Command] = []
        desires: list[Desired] = []
        async with agent(device, tmp_path / "outbox.db", address(hub.broker_url)) as a:
            a.uplink.on_command(commands.append)
            a.uplink.on_desired(desires.append)
            await until(lambda: desires == [desired], what="retained desired state on connect")
            command = Command(
                id=f"c-{uid}",
                action="socket.cycle",
                expires=now_ms() + 60_000,
                reply=hub.settings.instance,
                args={"off_s": 5},
            )
            hub.bus.publish(topic_for(device.id, Channel.CMD), encode(command), 1)
            hub.bus.publish(topic_for(device.id, Channel.CMD), b'{"id": 5}', 1)  # not a command
            await until(lambda: commands == [command])
            await until(lambda: a.uplink.stats.invalid_inbound == 1)
            reply = Reply(id=command.id, ok=True, ts=now_ms(), result={"off_s": 5})
            a.uplink.publish_reply(command.reply, reply)
            # The hub has no command waiting for it yet (the commands feature comes later):
            # it says so, which shows the reply reached the hub instance that was named.
            await until(lambda: hub.stats.rejected["unknown_command"] == 1)
            snapshot = a.uplink.snapshot()
            assert snapshot["uplink"]["connected"] is True
            assert snapshot["uplink"]["commands"] == 1
            assert json.dumps(snapshot)  # JSON-ready for the status API
        hub.bus.publish(topic_for(device.id, Channel.DESIRED), b"", 1, retain=True)  # cleared


async def test_an_agent_without_network_at_boot_keeps_reports_and_connects_later(
    hub: Hub, uid: str, tmp_path: Path
):
    device = await register(hub, "boot", uid)
    async with TcpProxy(*address(hub.broker_url)) as proxy:
        proxy.cut()
        async with agent(device, tmp_path / "outbox.db", (proxy.host, proxy.port)) as a:
            for n in range(1, 21):
                a.reporter.telemetry({"n": n}, ts=BASE_TS + n)
            await a.outbox.sync()
            await until(lambda: proxy.refused >= 3, what="a few refused connection attempts")
            assert not a.uplink.connected
            assert a.outbox.stats.depth == 20
            proxy.restore()
            await settled(hub, device, a)
    assert await stored_points(hub, device.id) == list(range(1, 21))


async def test_reports_waiting_at_connect_leave_after_the_online_status(
    hub: Hub, uid: str, tmp_path: Path
):
    """The hub hears "online" once: reports sent before the status made the device online by
    its data first ("data received"), and the status then recorded a second presence.online."""
    host, port = address(hub.broker_url)
    async with (
        registered(hub, "first", uid) as device,
        Outbox(tmp_path / "outbox.db", ack_linger_s=0.05) as outbox,
    ):
        reporter = OutboxReporter(outbox)
        for n in range(1, 21):  # waiting in the outbox when the agent connects
            reporter.telemetry({"n": n}, ts=BASE_TS + n)
        await outbox.sync()
        async with Uplink(
            outbox,
            device_id=device.id,
            host=host,
            port=port,
            username=device.username,
            password=device.secret,
            settings=FAST,
        ) as uplink:
            await settled(hub, device, Agent(outbox, uplink, reporter))
            await until(
                lambda: hub.presence.get(device.id).connected is True, what="the online status"
            )
            await hub.ingest.flush()
            online = await hub.queries.events(device_ids=[device.id], types=["presence.online"])
            assert [e.message for e in online.events] == ["agent started"]


# -- after broker restarts ---------------------------------------------------------------------

PATIENT = UplinkSettings()
"""The defaults a field agent runs with: first ack timeout 10 s, reconnect from 0.5 s to 30 s."""


@pytest.mark.mosquitto
async def test_an_agent_back_before_the_hub_drains_as_soon_as_the_hub_is_back(
    uid: str, tmp_path: Path
):
    # The broker restarts; the agent gets back first and resends into a broker where no hub
    # has subscribed yet, then keeps reporting. Once the hub is back, its outbox must empty
    # within a few seconds, not after ack timeouts the outage doubled.
    broker = Mosquitto(tmp_path / "broker")
    await asyncio.to_thread(broker.start)
    try:
        async with TcpProxy(broker.host, broker.port) as hub_link:
            settings = HubSettings(
                data=tmp_path / "hub",
                broker=f"mqtt://{broker.admin_username}:{broker.admin_password}@"
                f"{hub_link.host}:{hub_link.port}",
                instance=f"t{uid}",
                mqtt="127.0.0.1:0",
                http="127.0.0.1:0",
            )
            async with Hub(settings) as hub:
                device = await register(hub, "early", uid)
                path = tmp_path / "outbox.db"
                async with agent(device, path, (broker.host, broker.port), settings=PATIENT) as a:
                    producer = Producer(a.reporter, 1, 150, interval_s=0.02)
                    await until(lambda: (hub.ingest.acked_seq(device.id) or 0) >= 5)
                    hub_link.cut()  # the hub stays away until the agent has sent into nothing
                    await asyncio.to_thread(_kill, broker)
                    await asyncio.to_thread(broker.start)
                    await until(lambda: a.uplink.connected, what="the agent back first")
                    await until(lambda: producer.done)
                    await until(lambda: a.uplink.stats.in_flight == PATIENT.window)
                    assert not hub.bus.connected
                    hub_link.restore()
                    await until(lambda: hub.bus.connected, what="the hub back")
                    await until(
                        lambda: caught_up(hub, device, a),
                        within_s=5,  # an ack timeout (10 s, doubled by the outage) is far off
                        what="outbox empty soon after the hub is back",
                    )
                    assert a.uplink.stats.hub_returns >= 1
                assert await stored_points(hub, device.id) == list(range(1, 151))
    finally:
        await asyncio.to_thread(broker.stop)


async def test_reconnection_back_off_resets_after_a_short_healthy_connection(
    hub: Hub, uid: str, tmp_path: Path
):
    # Six short outages, each after a connection that worked (the hub acknowledged a report
    # through it). Each time the agent must be back at once, not after a back-off that grew
    # with every outage because no connection lasted 30 s (0.5, 1, 2, 4, 8, 16 s).
    device = await register(hub, "flap", uid)
    async with (
        TcpProxy(*address(hub.broker_url)) as proxy,
        agent(device, tmp_path / "outbox.db", (proxy.host, proxy.port), settings=PATIENT) as a,
    ):
        for n in range(1, 7):
            a.reporter.telemetry({"n": n}, ts=BASE_TS + n)
            await settled(hub, device, a)  # the hub answered through this connection
            proxy.cut()
            await until(lambda: not a.uplink.connected)
            proxy.restore()
            await until(
                lambda n=n: a.uplink.stats.connections == n + 1,
                within_s=2,  # the shortest delay is 0.25-0.5 s; grown, 4-8 s by now
                what=f"reconnected after outage {n}",
            )
        await settled(hub, device, a)
    assert await stored_points(hub, device.id) == list(range(1, 7))


@pytest.mark.mosquitto
async def test_the_hub_also_reconnects_at_once_after_short_outages_it_came_through(
    mosquitto: Mosquitto, uid: str, tmp_path: Path
):
    # The hub's own connection: six short outages, each after data came through it and was
    # stored. Its back-off (0.1 s doubling to 10 s, reset only after 10 s connected) would
    # keep it away for seconds by the sixth.
    async with TcpProxy(mosquitto.host, mosquitto.port) as hub_link:
        settings = HubSettings(
            data=tmp_path / "hub",
            broker=f"mqtt://{mosquitto.admin_username}:{mosquitto.admin_password}@"
            f"{hub_link.host}:{hub_link.port}",
            instance=f"t{uid}",
            mqtt="127.0.0.1:0",
            http="127.0.0.1:0",
        )
        async with Hub(settings) as hub, registered(hub, "steady", uid) as device:
            where = (mosquitto.host, mosquitto.port)
            async with agent(device, tmp_path / "outbox.db", where) as a:
                for n in range(1, 7):
                    a.reporter.telemetry({"n": n}, ts=BASE_TS + n)
                    await settled(hub, device, a)  # stored: the hub's connection works
                    hub_link.cut()
                    await until(lambda: not hub.bus.connected)
                    hub_link.restore()
                    await until(
                        lambda: hub.bus.connected,
                        within_s=1,  # the shortest delay is 0.05-0.1 s; grown, 1.6-3.2 s
                        what=f"the hub back after outage {n}",
                    )
            assert await stored_points(hub, device.id) == list(range(1, 7))


def _kill(broker: Mosquitto) -> None:
    """SIGKILL: sessions and messages in flight are lost, no last will is published."""
    if broker.pid is not None:
        os.kill(broker.pid, signal.SIGKILL)
    broker.stop()  # reaps it


def test_settings_are_checked():
    with pytest.raises(ValueError, match="window"):
        UplinkSettings(window=0)
    with pytest.raises(ValueError, match="ack_timeout_s"):
        UplinkSettings(ack_timeout_s=5, max_ack_timeout_s=1)
    with pytest.raises(ValueError, match="refuse_after"):
        UplinkSettings(refuse_after=0)
    assert msgspec.json.encode(UplinkSettings())  # plain data, for the status API
