"""Agent hardware units through the real libraries: gpiozero's MockFactory pins driven like
switches, a real owserver with fake DS18B20s read through pyownet, a w1 sysfs tree on disk,
an MCP3008/3208 answering gpiozero's SPI bit by bit. Assertions are what a user would see:
reports (telemetry, events, state), pin levels, action results."""

from __future__ import annotations

import asyncio
import re
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import msgspec
import pytest
import yaml

from fieldhub.agent.actions import ActionRegistry, InvalidArguments
from fieldhub.agent.reporting import Value
from fieldhub.agent.units import (
    DoorConfig,
    DoorUnit,
    Drivers,
    LedConfig,
    LedUnit,
    SocketCheckConfig,
    SocketCheckUnit,
    SocketConfig,
    SocketUnit,
    TemperatureConfig,
    TemperatureUnit,
    Unit,
    UnitConfig,
    UnitConfigError,
    UnitStartError,
    VoltageConfig,
    VoltageUnit,
    build_units,
    mock_pin_factory,
)
from fieldhub.agent.units.base import Band, TelemetryPolicy
from fieldhub.agent.units.drivers import Unreadable
from fieldhub.agent.units.led import Blink
from fieldhub.agent.units.onewire import kernel_id, owfs_id
from fieldhub.agent.units.simulate import MockMCP3xxx, Physics, Simulation, SwitchPin
from fieldhub.protocol.messages import Severity
from tests.conftest import OWSERVER_SENSORS
from tests.support.servers import Owserver

# -- a reporter that records, and waiting on what it recorded -----------------------------


@dataclass(frozen=True)
class Event:
    type: str
    severity: Severity
    message: str
    data: Mapping[str, Any]


class RecordingReporter:
    """Keeps every report, as the agent's outbox would; callable from any thread."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.telemetry_log: list[tuple[dict[str, Value], int | None]] = []
        self.events: list[Event] = []
        self.state_log: list[dict[str, Value | None]] = []

    def telemetry(self, values: Mapping[str, Value], ts: int | None = None) -> None:
        with self._lock:
            self.telemetry_log.append((dict(values), ts))

    def event(
        self,
        type: str,
        severity: Severity = "info",
        message: str = "",
        data: Mapping[str, Any] | None = None,
    ) -> None:
        with self._lock:
            self.events.append(Event(type, severity, message, dict(data or {})))

    def state(self, changes: Mapping[str, Value | None]) -> None:
        with self._lock:
            self.state_log.append(dict(changes))

    @property
    def states(self) -> dict[str, Value | None]:
        """Reported state as the hub would hold it now."""
        merged: dict[str, Value | None] = {}
        for changes in self.state_log:
            merged.update(changes)
        return merged

    def types(self, prefix: str = "") -> list[str]:
        return [e.type for e in self.events if e.type.startswith(prefix)]

    def of(self, type: str) -> list[Event]:
        return [e for e in self.events if e.type == type]

    def values(self, key: str) -> list[Value]:
        return [values[key] for values, _ in self.telemetry_log if key in values]


async def until(condition: Callable[[], bool], within: float = 5.0, what: str = "") -> None:
    """Wait until ``condition()`` holds, polling; fail after ``within`` seconds."""
    deadline = time.monotonic() + within
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {within} s waiting for {what or condition}")
        await asyncio.sleep(0.005)


@asynccontextmanager
async def running(*units: Unit) -> AsyncIterator[None]:
    for unit in units:
        await unit.start()
    try:
        yield
    finally:
        for unit in reversed(units):
            await unit.stop()


@pytest.fixture
def reporter() -> RecordingReporter:
    return RecordingReporter()


@pytest.fixture
def factory() -> Any:
    """gpiozero's MockFactory, with pins that keep a level driven onto them (a closed switch
    beats the pull-up, as on the board)."""
    return mock_pin_factory(SwitchPin)


@pytest.fixture
def drivers(factory: Any, tmp_path: Path) -> Drivers:
    return Drivers(
        pin_factory=factory,
        w1_root=tmp_path / "w1",
        throttled_path=tmp_path / "get_throttled",
    )


# -- policies ------------------------------------------------------------------------------


def test_telemetry_goes_out_on_change_beyond_deadband_and_on_interval() -> None:
    policy = TelemetryPolicy(interval_s=60, deadband=0.5)
    assert policy.select({"t": 20.0}, now=0) == {"t": 20.0}  # first value always
    assert policy.select({"t": 20.4}, now=1) == {}  # within the deadband
    assert policy.select({"t": 20.5}, now=2) == {"t": 20.5}  # moved by the deadband
    assert policy.select({"t": 20.6}, now=30) == {}
    assert policy.select({"t": 20.6}, now=62) == {"t": 20.6}  # interval since the last report
    policy.forget("t")
    assert policy.select({"t": 20.6}, now=63) == {"t": 20.6}  # after a gap, at once


def test_band_has_hysteresis_on_both_limits() -> None:
    band = Band(high=30, low=5, hysteresis=1)
    seen = [band.update(v) for v in (25, 30, 29.5, 31, 29.1, 28.9, 5, 5.9, 6.1, 4, 40)]
    assert seen == [None, "high", None, None, None, "normal", "low", None, "normal", "low", "high"]


# -- led -----------------------------------------------------------------------------------


async def test_led_shows_steady_states_and_blink_patterns(
    factory: Any, drivers: Drivers, reporter: RecordingReporter
) -> None:
    config = LedConfig(name="led", pin=4, initial="ok", patterns={"fast": Blink(0.01, 0.01)})
    led = LedUnit(config, drivers, reporter)
    pin = factory.pin(4)
    async with running(led):
        assert reporter.states == {"led": "ok"}
        spec = led.actions()["led.set"]
        assert spec.args == {"state": str}

        assert await spec.handler(state="on") == {"state": "on"}
        assert pin.state is True
        assert led.status() == {"mode": "on", "lit": True}

        await spec.handler(state="fast")
        pin.clear_states()
        await until(lambda: len(pin.states) >= 6, what="the LED to blink")
        assert {s.state for s in pin.states} == {True, False}

        await spec.handler(state="off")
        assert pin.state is False
        with pytest.raises(ValueError, match="'party' is not one of on, off, blink, ok"):
            await spec.handler(state="party")
        assert reporter.states == {"led": "off"}


async def test_led_wired_to_sink_current_is_lit_at_low_level(
    factory: Any, drivers: Drivers, reporter: RecordingReporter
) -> None:
    led = LedUnit(LedConfig(name="led", pin=4, active_high=False), drivers, reporter)
    async with running(led):
        assert factory.pin(4).state is True  # off
        led.show("on")
        assert factory.pin(4).state is False


# -- door ----------------------------------------------------------------------------------


async def test_door_reports_open_and_closed_with_debounce(
    factory: Any, drivers: Drivers, reporter: RecordingReporter
) -> None:
    switch = factory.pin(17)
    switch.drive_low()  # the closed door holds the switch to ground
    door = DoorUnit(DoorConfig(name="door", pin=17, debounce_s=0.05), drivers, reporter)
    async with running(door):
        assert reporter.states == {"door": "closed"}
        assert reporter.events == []  # being closed at start is not an event

        # The door opens: the contact bounces, from gpiozero's thread as on the Pi.
        def bouncing_open() -> None:
            for _ in range(5):
                switch.drive_high()
                switch.drive_low()
            switch.drive_high()

        opened_at = time.monotonic()
        await asyncio.to_thread(bouncing_open)
        await until(lambda: reporter.types() == ["door.opened"])
        assert time.monotonic() - opened_at >= 0.05  # accepted only once it stayed open
        assert reporter.states == {"door": "open"}
        assert door.status()["door"] == "open"

        # A glitch shorter than the debounce time is nothing; the real closing is one event.
        switch.drive_low()
        switch.drive_high()
        await asyncio.sleep(0)
        switch.drive_low()
        await until(lambda: len(reporter.events) == 2)
        assert reporter.types() == ["door.opened", "door.closed"]
        closed = reporter.events[1]
        assert closed.data["unit"] == "door"
        assert isinstance(closed.data["open_s"], float)
        assert closed.data["open_s"] >= 0.05
        assert reporter.state_log == [
            {"door": "closed"},
            {"door": "open"},
            {"door": "closed"},
        ]


async def test_door_open_too_long_once_per_opening(
    factory: Any, drivers: Drivers, reporter: RecordingReporter
) -> None:
    switch = factory.pin(17)
    switch.drive_low()
    config = DoorConfig(name="door", pin=17, debounce_s=0.01, open_too_long_s=0.2)
    door = DoorUnit(config, drivers, reporter)
    async with running(door):
        switch.drive_high()
        await until(lambda: reporter.types("door.open_too_long") != [], what="open too long")
        alarm = reporter.of("door.open_too_long")[0]
        assert alarm.severity == "warning"
        assert alarm.data["limit_s"] == 0.2
        switch.drive_low()
        await until(lambda: reporter.types("door.closed") != [])

        # A short opening is no alarm, and its timer does not go off later in the next one.
        switch.drive_high()
        await until(lambda: len(reporter.of("door.opened")) == 2)
        switch.drive_low()
        await until(lambda: len(reporter.of("door.closed")) == 2)
        switch.drive_high()
        await until(lambda: len(reporter.of("door.opened")) == 3)
        third_opened = time.monotonic()
        await until(lambda: len(reporter.of("door.open_too_long")) == 2)
        assert time.monotonic() - third_opened >= 0.2 - 0.02
        assert door.status()["open_too_long"] is True


async def test_door_switch_wired_the_other_way(
    factory: Any, drivers: Drivers, reporter: RecordingReporter
) -> None:
    switch = factory.pin(27)
    switch.drive_high()
    config = DoorConfig(name="door", pin=27, pull="down", closed_when="high", debounce_s=0)
    async with running(DoorUnit(config, drivers, reporter)):
        assert reporter.states == {"door": "closed"}
        switch.drive_low()
        await until(lambda: reporter.types() == ["door.opened"])


# -- socket and lock -----------------------------------------------------------------------


async def test_socket_switches_and_keeps_minimum_off_time(
    factory: Any, drivers: Drivers, reporter: RecordingReporter
) -> None:
    relay = factory.pin(22)
    config = SocketConfig(name="socket", pin=22, initial="on", min_off_s=0.3)
    socket = SocketUnit(config, drivers, reporter)
    async with running(socket):
        assert relay.state is True
        assert reporter.states == {"socket": "on"}
        actions = socket.actions()
        assert set(actions) == {"socket.set", "socket.cycle"}
        assert actions["socket.set"].args == {"on": bool}
        assert actions["socket.cycle"].args == {"off_s": float}

        assert await actions["socket.set"].handler(on=False) == {"state": "off", "waited_s": 0.0}
        assert relay.state is False
        result = await actions["socket.set"].handler(on=True)  # at once: must wait
        assert result is not None
        assert result["waited_s"] == pytest.approx(0.3, abs=0.05)
        assert relay.state is True
        # The relay's own log: it was off for the minimum time.
        assert relay.states[-1].state is True
        assert relay.states[-1].timestamp >= 0.3 - 0.01
        assert reporter.state_log == [{"socket": "on"}, {"socket": "off"}, {"socket": "on"}]


async def test_socket_power_cycle(
    factory: Any, drivers: Drivers, reporter: RecordingReporter
) -> None:
    relay = factory.pin(22)
    config = SocketConfig(name="modem", pin=22, initial="on", min_off_s=0.25)
    socket = SocketUnit(config, drivers, reporter)
    async with running(socket):
        cycle = socket.actions()["modem.cycle"].handler
        relay.clear_states()
        result = await cycle(off_s=0.1)
        assert result["off_s"] == pytest.approx(0.25, abs=0.03)
        assert [s.state for s in relay.states] == [True, False, True]
        assert relay.states[-1].timestamp >= 0.25 - 0.01  # the minimum off time wins
        # ... and the result says the device changed what was asked, not silently.
        changed = result["adjusted"]["off_s"]
        assert (changed["requested"], changed["used"]) == (0.1, result["off_s"])
        assert "0.25 s" in changed["why"]

        relay.clear_states()
        assert "adjusted" not in await cycle(off_s=0.35)
        assert relay.states[-1].timestamp >= 0.35 - 0.01
        # The range and default are the action's details, checked before anything runs.
        registry = ActionRegistry()
        registry.add_builtin(socket.actions()["modem.cycle"])
        with pytest.raises(InvalidArguments, match=r"'off_s' must be at least 0.1 s, got 0"):
            registry.bind("modem.cycle", {"off_s": 0})
        assert registry.bind("modem.cycle", {}).args == {"off_s": 0.25}  # min_off_s
        assert reporter.states == {"modem": "on"}


async def test_socket_commands_run_in_order(
    factory: Any, drivers: Drivers, reporter: RecordingReporter
) -> None:
    config = SocketConfig(name="socket", pin=22, initial="on", min_off_s=0)
    socket = SocketUnit(config, drivers, reporter)
    async with running(socket):
        cycling = asyncio.create_task(socket.cycle(0.1))
        await until(lambda: socket.status()["busy"] is True)
        await socket.set(False)  # waits for the cycle, then switches off
        assert cycling.done()
        assert factory.pin(22).state is False
        assert [s["socket"] for s in reporter.state_log] == ["on", "off", "on", "off"]


async def test_active_low_relay_module(
    factory: Any, drivers: Drivers, reporter: RecordingReporter
) -> None:
    config = SocketConfig(name="socket", pin=22, active_high=False, min_off_s=0)
    socket = SocketUnit(config, drivers, reporter)
    async with running(socket):
        assert factory.pin(22).state is True  # off: the module switches on at low level
        await socket.set(True)
        assert factory.pin(22).state is False


async def test_relay_as_lock(factory: Any, drivers: Drivers, reporter: RecordingReporter) -> None:
    config = SocketConfig(name="lock", pin=5, role="lock", initial="on", locked_when="off")
    lock = SocketUnit(config, drivers, reporter)
    async with running(lock):
        assert factory.pin(5).state is False  # a lock starts locked, whatever `initial` says
        assert reporter.states == {"lock": "locked"}
        actions = lock.actions()
        assert set(actions) == {"lock.lock", "lock.unlock"}
        assert actions["lock.unlock"].args == {}
        assert await actions["lock.unlock"].handler() == {"state": "unlocked", "waited_s": 0.0}
        assert factory.pin(5).state is True
        await actions["lock.lock"].handler()
        assert reporter.states == {"lock": "locked"}


# -- socket check --------------------------------------------------------------------------


async def test_socket_check_finds_faults_after_settle_time(
    factory: Any, drivers: Drivers, reporter: RecordingReporter
) -> None:
    sense = factory.pin(23)
    sense.drive_low()  # optocoupler: low while the socket has power
    socket = SocketUnit(
        SocketConfig(name="socket", pin=22, initial="on", min_off_s=0), drivers, reporter
    )
    config = SocketCheckConfig(name="socket_check", socket="socket", pin=23, settle_s=0.1)
    check = SocketCheckUnit(config, drivers, reporter, socket)
    async with running(socket, check):
        await until(lambda: reporter.states.get("socket_check") == "ok")

        # Switched off, and the power goes away within the settle time: no fault.
        await socket.set(False)
        await asyncio.sleep(0.03)
        sense.drive_high()
        # Switched on, and the power does not come: a blown fuse.
        await socket.set(True)
        await until(lambda: reporter.types("socket.") != [], what="a socket event")
        fault = reporter.events[0]
        assert (fault.type, fault.severity) == ("socket.fault", "critical")
        assert fault.data == {
            "unit": "socket_check",
            "socket": "socket",
            "commanded": "on",
            "sensed": "off",
        }
        assert reporter.states["socket_check"] == "fault"

        sense.drive_low()  # fuse replaced
        await until(lambda: reporter.types() == ["socket.fault", "socket.recovered"])
        assert reporter.states["socket_check"] == "ok"

        # Switched off, but the power stays: a welded relay contact.
        await socket.set(False)
        await until(lambda: len(reporter.of("socket.fault")) == 2)
        assert "although switched off" in reporter.of("socket.fault")[1].message
        assert check.status() == {"commanded": "off", "sensed": "on", "fault": True}


# -- temperature ---------------------------------------------------------------------------


def test_sensor_ids_in_both_spellings() -> None:
    # The same DS18B20 as owfs and as the kernel list it.
    assert owfs_id("28-000005abb69d") == "28.9DB6AB050000"
    assert kernel_id("28.9DB6AB050000") == "28-000005abb69d"
    assert owfs_id("28.9db6ab050000") == "28.9DB6AB050000"
    with pytest.raises(ValueError, match="neither"):
        owfs_id("28:000005abb69d")


def write_w1(root: Path, sensor: str, milli: int, *, style: str = "temperature") -> None:
    """Write a sensor's sysfs files the way the kernel's w1-therm driver shows them."""
    folder = root / kernel_id(sensor)
    folder.mkdir(parents=True, exist_ok=True)
    if style == "temperature":
        (folder / "temperature").write_text(f"{milli}\n")
    else:
        crc = "NO" if style == "bad-crc" else "YES"
        (folder / "w1_slave").write_text(
            f"72 01 4b 46 7f ff 0e 10 57 : crc=57 {crc}\n72 01 4b 46 7f ff 0e 10 57 t={milli}\n"
        )


async def test_temperature_from_w1_sysfs_with_limits_hysteresis_and_deadband(
    drivers: Drivers, reporter: RecordingReporter
) -> None:
    root = drivers.w1_root
    cabinet = "28-000005abb69d"
    write_w1(root, cabinet, 25000)
    config = msgspec.convert(
        {
            "name": "temp",
            "source": "w1",
            "sensors": {"cabinet": {"id": cabinet, "high": 30, "low": 5}},
            "sample_s": 3600,  # the test takes the samples
            "deadband": 0.5,
            "hysteresis": 1.0,
        },
        TemperatureConfig,
    )
    unit = TemperatureUnit(config, drivers, reporter)
    async with running(unit):
        await until(lambda: reporter.values("temp.cabinet") == [25.0], what="the first sample")
        steps = [25.2, 25.6, 30.0, 29.5, 30.5, 28.9, 4.0, 5.5, 6.5]
        for value in steps:
            write_w1(root, cabinet, round(value * 1000))
            await unit.sample()
        assert reporter.values("temp.cabinet") == [
            25.0,
            25.6,
            30.0,
            29.5,
            30.5,
            28.9,
            4.0,
            5.5,
            6.5,
        ]
        assert reporter.types() == [
            "temperature.high",
            "temperature.normal",
            "temperature.low",
            "temperature.normal",
        ]
        high = reporter.events[0]
        assert high.severity == "warning"
        assert high.data == {"unit": "temp", "sensor": "cabinet", "value": 30.0, "limit": 30.0}
        assert reporter.states == {"temp.cabinet": "normal"}
        assert unit.status() == {"cabinet": 6.5, "cabinet.state": "normal"}


async def test_w1_sensor_missing_and_recovered(
    drivers: Drivers, reporter: RecordingReporter
) -> None:
    root = drivers.w1_root
    old = "28-0000075565a5"  # an older kernel: only w1_slave
    write_w1(root, old, 21500, style="w1_slave")
    config = msgspec.convert(
        {
            "name": "temp",
            "source": "w1",
            "sensors": {"old": {"id": old}},
            "sample_s": 3600,
            "missing_after": 2,
        },
        TemperatureConfig,
    )
    unit = TemperatureUnit(config, drivers, reporter)
    async with running(unit):
        await until(lambda: reporter.values("temp.old") == [21.5])
        write_w1(root, old, 21500, style="bad-crc")
        await unit.sample()
        assert reporter.events == []  # one bad read on a long cable is not yet missing
        write_w1(root, old, 85000, style="w1_slave")  # power-on value: a brown-out
        await unit.sample()
        assert reporter.types() == ["sensor.missing"]
        missing = reporter.events[0]
        assert missing.data["reason"] == "power-on value 85 °C: the conversion did not run"
        assert reporter.states == {"temp.old": "missing"}

        write_w1(root, old, 22000, style="w1_slave")
        await unit.sample()
        assert reporter.types() == ["sensor.missing", "sensor.recovered"]
        assert reporter.values("temp.old") == [21.5, 22.0]  # reported at once after the gap

        for path in (root / kernel_id(old)).iterdir():
            path.unlink()
        (root / kernel_id(old)).rmdir()  # unplugged: the kernel drops the folder
        await unit.sample()
        await unit.sample()
        assert reporter.of("sensor.missing")[1].data["reason"].startswith("not on the 1-Wire bus")
        assert unit.status()["old"] is None


async def test_temperature_from_owserver(
    owserver: Owserver, drivers: Drivers, reporter: RecordingReporter
) -> None:
    a, b = OWSERVER_SENSORS
    config = msgspec.convert(
        {
            "type": "temperature",
            "name": "temperature",
            "sensors": {"inside": {"id": a}, "outside": {"id": kernel_id(b)}},  # both spellings
            "sample_s": 0.05,
            "deadband": 0,
        },
        UnitConfig,
    )
    assert isinstance(config, TemperatureConfig)
    unit = TemperatureUnit(config, replace(drivers, owserver=owserver.address), reporter)
    async with running(unit):
        await until(lambda: len(reporter.values("temperature.outside")) >= 3, what="3 samples")
    for key in ("temperature.inside", "temperature.outside"):
        values = reporter.values(key)
        assert all(isinstance(v, float) and 20 <= v <= 25 for v in values), values
    assert reporter.states == {"temperature.inside": "normal", "temperature.outside": "normal"}
    assert reporter.events == []


@pytest.fixture
def own_owserver(owserver: Owserver, tmp_path: Path) -> Iterator[Owserver]:
    """An owserver of this test's own, to unplug sensors from and to stop (the session's
    fixture first: it skips, or fails in CI, when owserver is not installed)."""
    with Owserver(tmp_path / "owserver", sensors=("28.0000000000B1", "28.0000000000B2")) as own:
        yield own


async def test_owserver_sensor_unplugged_heat_and_server_outage(
    own_owserver: Owserver, drivers: Drivers, reporter: RecordingReporter
) -> None:
    config = msgspec.convert(
        {
            "type": "temperature",
            "name": "t",
            "sensors": {
                "a": {"id": "28.0000000000B1", "high": 35},
                "b": {"id": "28.0000000000B2", "high": 35},
            },
            "sample_s": 3600,
            "missing_after": 2,
        },
        UnitConfig,
    )
    assert isinstance(config, TemperatureConfig)
    unit = TemperatureUnit(config, replace(drivers, owserver=own_owserver.address), reporter)
    async with running(unit):
        await until(lambda: len(reporter.telemetry_log) == 1, what="the first sample")

        # Sensor b is unplugged.
        await asyncio.to_thread(own_owserver.restart, sensors=["28.0000000000B1"])
        await unit.sample()
        await unit.sample()
        assert reporter.types() == ["sensor.missing"]
        assert reporter.events[0].data["sensor"] == "b"
        assert "not on the 1-Wire bus" in reporter.events[0].message

        # Plugged in again, and the cabinet heats up: both above the limit.
        both = ["28.0000000000B1", "28.0000000000B2"]
        await asyncio.to_thread(own_owserver.restart, both, (40, 41))
        await unit.sample()
        assert sorted(reporter.types()[1:]) == [
            "sensor.recovered",
            "temperature.high",
            "temperature.high",
        ]
        assert reporter.states == {"t.a": "high", "t.b": "high"}

        # owserver goes away: every sensor is missing, and says why.
        await asyncio.to_thread(own_owserver.stop)
        await unit.sample()
        await unit.sample()
        missing = reporter.of("sensor.missing")[1:]
        assert sorted(e.data["sensor"] for e in missing) == ["a", "b"]
        assert all("unreachable" in e.data["reason"] for e in missing)

        await asyncio.to_thread(own_owserver.start)
        await unit.sample()
        assert len(reporter.of("sensor.recovered")) == 3


class SlowSource:
    """A source that blocks like a DS18B20 conversion and records where it ran."""

    def __init__(self) -> None:
        self.threads: list[threading.Thread] = []

    def read(self, sensor_ids: Sequence[str]) -> dict[str, float | Unreadable]:
        self.threads.append(threading.current_thread())
        time.sleep(0.2)
        return dict.fromkeys(sensor_ids, 20.0)


async def test_blocking_reads_stay_off_the_event_loop(
    drivers: Drivers, reporter: RecordingReporter
) -> None:
    source = SlowSource()
    config = msgspec.convert(
        {"type": "temperature", "name": "t", "sensors": {"a": {"id": "28.000000000001"}}},
        UnitConfig,
    )
    assert isinstance(config, TemperatureConfig)
    unit = TemperatureUnit(config, replace(drivers, temperatures=source), reporter)
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            await asyncio.sleep(0.01)

    tick_task = asyncio.create_task(ticker())
    try:
        await unit.sample()
    finally:
        tick_task.cancel()
    assert source.threads
    assert source.threads[0] is not threading.main_thread()
    assert ticks >= 10  # the loop kept running while the sensor was read


# -- voltage -------------------------------------------------------------------------------


@pytest.mark.parametrize(("chip", "bits", "device"), [("MCP3008", 10, 0), ("MCP3208", 12, 1)])
async def test_supply_voltage_from_adc_and_under_voltage_flag(
    factory: Any,
    drivers: Drivers,
    reporter: RecordingReporter,
    chip: str,
    bits: int,
    device: int,
) -> None:
    adc = MockMCP3xxx(factory, bits=bits, device=device, vref=3.3)
    adc.set_volts(2, 2.55)  # 5.1 V through a 1:1 divider
    drivers.throttled_path.write_text("0\n")
    config = msgspec.convert(
        {
            "type": "voltage",
            "name": "supply",
            "adc": {"chip": chip, "channel": 2, "device": device, "scale": 2.0},
            "sample_s": 3600,
            "deadband": 0.05,
        },
        UnitConfig,
    )
    assert isinstance(config, VoltageConfig)
    unit = VoltageUnit(config, drivers, reporter)
    lsb = 3.3 / 2**bits * 2
    async with running(unit):
        await until(lambda: reporter.values("supply") != [], what="the first sample")
        assert reporter.values("supply")[0] == pytest.approx(5.1, abs=lsb)
        assert reporter.states == {"supply": "normal", "supply.under_voltage": False}

        adc.set_volts(2, 2.3)  # 4.6 V
        drivers.throttled_path.write_text("50005\n")
        await unit.sample()
        assert reporter.types() == ["voltage.low", "voltage.under_voltage"]
        assert reporter.events[0].data["value"] == pytest.approx(4.6, abs=lsb)

        adc.set_volts(2, 2.55)
        drivers.throttled_path.write_text("50000\n")  # "has occurred" stays set
        await unit.sample()
        assert reporter.types() == [
            "voltage.low",
            "voltage.under_voltage",
            "voltage.normal",
            "voltage.under_voltage_cleared",
        ]
        assert reporter.states == {"supply": "normal", "supply.under_voltage": False}
        assert reporter.values("supply") == [pytest.approx(v, abs=lsb) for v in (5.1, 4.6, 5.1)]
    adc.close()


async def test_voltage_off_the_pi_without_adc_watches_nothing(
    drivers: Drivers, reporter: RecordingReporter
) -> None:
    unit = VoltageUnit(VoltageConfig(name="supply"), drivers, reporter)  # no get_throttled here
    async with running(unit):
        await unit.sample()
    assert reporter.events == reporter.state_log == reporter.telemetry_log == []
    assert unit.status() == {"volts": None, "level": None, "under_voltage": None, "error": None}


# -- configs and the factory ---------------------------------------------------------------

FOCUSPRO = [
    {"type": "led", "name": "led", "pin": 4, "initial": "ok"},
    {"type": "door", "name": "door", "pin": 17, "open_too_long_s": 300},
    {"type": "socket_check", "name": "power", "socket": "socket", "pin": 23},
    {"type": "socket", "name": "socket", "pin": 22, "active_high": False, "initial": "on"},
    {"type": "socket", "name": "lock", "pin": 5, "role": "lock"},
    {
        "type": "temperature",
        "name": "temperature",
        "sensors": {"cabinet": {"id": "28-000005abb69d", "high": 45}},
    },
    {"type": "voltage", "name": "supply", "adc": {"chip": "MCP3008", "channel": 0}},
]


def test_focuspro_config_decodes_and_builds(drivers: Drivers, reporter: RecordingReporter) -> None:
    configs = msgspec.convert(FOCUSPRO, list[UnitConfig])
    units = build_units(configs, drivers, reporter)
    assert [u.name for u in units] == [c["name"] for c in FOCUSPRO]
    assert isinstance(units[2], SocketCheckUnit)  # found its socket, listed after it
    actions = {name: spec for unit in units for name, spec in unit.actions().items()}
    assert set(actions) == {"led.set", "socket.set", "socket.cycle", "lock.lock", "lock.unlock"}


@pytest.mark.parametrize(
    ("item", "message"),
    [
        ({"type": "door", "name": "door", "pin": 17, "debounce": 1}, "unknown field `debounce`"),
        ({"type": "doors", "name": "door", "pin": 17}, "Invalid value 'doors' - at `$.type`"),
        ({"type": "door", "name": "Door 1", "pin": 17}, "at `$.name`"),
        (
            {"type": "voltage", "name": "v", "adc": {"chip": "MCP3004", "channel": 5}},
            "channel 5 does not exist on a MCP3004",
        ),
        (
            {"type": "temperature", "name": "t", "sensors": {"a": {"id": "28-1", "high": 1}}},
            "at `$.sensors[...].id`",
        ),
        (
            {"type": "led", "name": "led", "pin": 4, "initial": "disco"},
            "initial 'disco' is not one of",
        ),
    ],
)
def test_bad_configs_name_the_field(item: dict[str, Any], message: str) -> None:
    with pytest.raises(msgspec.ValidationError, match=re.escape(message)):
        msgspec.convert(item, UnitConfig)


def test_units_that_do_not_fit_together(drivers: Drivers, reporter: RecordingReporter) -> None:
    twice = msgspec.convert([FOCUSPRO[0], {**FOCUSPRO[1], "name": "led"}], list[UnitConfig])
    with pytest.raises(UnitConfigError, match="Two units are named 'led'"):
        build_units(twice, drivers, reporter)
    orphan = msgspec.convert([FOCUSPRO[2]], list[UnitConfig])
    with pytest.raises(UnitConfigError, match="checks socket 'socket', but there is no unit"):
        build_units(orphan, drivers, reporter)


async def test_two_units_on_one_pin_fail_at_start(
    drivers: Drivers, reporter: RecordingReporter
) -> None:
    led = LedUnit(LedConfig(name="led", pin=4), drivers, reporter)
    door = DoorUnit(DoorConfig(name="door", pin="GPIO4"), drivers, reporter)
    async with running(led):
        with pytest.raises(UnitStartError, match="Door 'door' on pin GPIO4"):
            await door.start()
    # Stopped units give their pins back: the agent can restart in the same process.
    async with running(DoorUnit(DoorConfig(name="door", pin=4), drivers, reporter)):
        pass


# -- simulation ----------------------------------------------------------------------------


async def test_simulation_drives_the_same_units(tmp_path: Path) -> None:
    items = [
        {**FOCUSPRO[1], "debounce_s": 0.01},
        {**FOCUSPRO[2], "settle_s": 0.05},
        {**FOCUSPRO[3], "min_off_s": 0},
        {**FOCUSPRO[5], "sample_s": 0.05, "deadband": 0},
        {**FOCUSPRO[6], "sample_s": 0.05, "deadband": 0},
    ]
    configs = msgspec.convert(items, list[UnitConfig])
    physics = Physics(
        door_every_s=0.1,
        door_open_s=0.1,
        door_forgotten=0,
        fault_every_s=0.3,
        fault_s=0.2,
        dip_every_s=0.2,
        dip_s=0.2,
        tick_s=0.01,
    )
    sim = Simulation(configs, tmp_path / "sim", physics, seed=7)
    reporter = RecordingReporter()
    units = build_units(configs, sim.drivers, reporter)
    async with running(*units):
        assert reporter.states["door"] == "closed"  # a closed door reads closed from the start
        world = asyncio.create_task(sim.run())
        try:
            wanted = {
                "door.opened",
                "door.closed",
                "socket.fault",
                "socket.recovered",
                "voltage.low",
                "voltage.normal",
                "voltage.under_voltage",
            }
            await until(lambda: wanted <= set(reporter.types()), 15, "every kind of happening")
        finally:
            world.cancel()
            with pytest.raises(asyncio.CancelledError):
                await world
    assert reporter.types("door.")[0] == "door.opened"
    temperatures = reporter.values("temperature.cabinet")
    assert temperatures
    assert all(isinstance(t, float) and 15 < t < 36 for t in temperatures)
    supply = [v for v in reporter.values("supply") if isinstance(v, float) and v > 4.9]
    assert supply
    assert all(abs(v - 5.1) < 0.1 for v in supply)


@pytest.mark.skipif(Path("/proc/device-tree/model").exists(), reason="a board with GPIO")
def test_off_the_pi_hardware_drivers_say_what_to_do() -> None:
    # This machine has no GPIO; the error says why each library failed and what to do.
    with pytest.raises(UnitStartError, match=r"No GPIO access.*lgpio.*--simulate"):
        Drivers.hardware()


def test_the_documented_focuspro_config_is_valid(
    drivers: Drivers, reporter: RecordingReporter
) -> None:
    doc = (Path(__file__).parent.parent / "docs" / "agent-units.md").read_text()
    block = re.search(r"```yaml\n(.*?)```", doc, re.DOTALL)
    assert block is not None
    configs = msgspec.convert(yaml.safe_load(block[1])["units"], list[UnitConfig])
    units = build_units(configs, drivers, reporter)
    assert [u.kind for u in units] == [
        "led", "door", "socket", "socket_check", "socket", "temperature", "voltage"
    ]  # fmt: skip
