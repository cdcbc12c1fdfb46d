"""``--simulate``: the same units on made-up hardware with plausible physics.

Nothing in the units changes. The simulation plays the world's side of gpiozero's mock pins and
of the sensors: a person opens the door now and then (with a bouncing switch), the socket's
sense line follows its relay (and rarely does not: a blown fuse), thermometers drift with the
time of day and with noise, the supply sits near 5.1 V with rare dips that also raise the Pi's
under-voltage flag. So the hub's demo fleet can be real agents, and the demo exercises the
debouncing, limits and fault detection that run on a Pi.

Typical use::

    sim = Simulation(configs, workdir)
    units = build_units(configs, sim.drivers, reporter)
    ...start the units, then run ``sim.run()`` in the agent's task group...

The pieces are usable alone (tests use :class:`MockMCP3xxx` and :class:`SwitchPin`).
"""

from __future__ import annotations

import asyncio
import logging
import math
import random
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gpiozero.pins.mock import MockPin, MockSPIDevice

from fieldhub.agent.units import UnitConfig
from fieldhub.agent.units.check import SocketCheckConfig
from fieldhub.agent.units.door import DoorConfig
from fieldhub.agent.units.drivers import Clock, Drivers, SystemClock, Unreadable, mock_pin_factory
from fieldhub.agent.units.relay import SocketConfig
from fieldhub.agent.units.temperature import TemperatureConfig
from fieldhub.agent.units.voltage import VoltageConfig
from fieldhub.private_files import private_dir

__all__ = [
    "SPI_SELECT",
    "MockMCP3xxx",
    "Physics",
    "SimulatedCamera",
    "SimulatedThermometers",
    "Simulation",
    "SwitchPin",
]

log = logging.getLogger(__name__)

SPI_CLOCK, SPI_MOSI, SPI_MISO = 11, 10, 9
SPI_SELECT = (8, 7)
"""The Pi's SPI0 pins (BCM): clock, MOSI, MISO, and chip select CE0/CE1."""
_PIN_HISTORY_S = 60.0


class SwitchPin(MockPin):  # type: ignore[misc]  # gpiozero has no types
    """A mock input wired to something that drives it, like a closed contact or a sensor.

    gpiozero's ``MockPin`` moves to its pull level whenever a pull is set; on a board, a
    switch closed to ground keeps the line low whatever the pull-up says. Once driven
    (``drive_low``/``drive_high``), this pin keeps its level when a device sets the pull, so
    a door that is closed before the agent starts reads closed from the start.
    """

    def __init__(self, factory: Any, info: Any) -> None:
        self._driven: bool | None = None
        super().__init__(factory, info)

    def drive_high(self) -> None:
        self._driven = True
        super().drive_high()

    def drive_low(self) -> None:
        self._driven = False
        super().drive_low()

    def _set_pull(self, value: str) -> None:
        driven = self._driven  # MockPin applies a pull through drive_high/drive_low
        super()._set_pull(value)
        self._driven = driven
        if driven is not None and self._function == "input":
            self._change_state(driven)


class MockMCP3xxx(MockSPIDevice):  # type: ignore[misc]  # gpiozero has no types
    """The chip side of an MCP3004/3008 (10 bits) or MCP3204/3208 (12 bits) on mock pins.

    gpiozero's ``MCP3xxx`` classes talk to it bit by bit over software SPI, exactly as to the
    chip: a start bit, single-ended/differential, three channel bits; then the chip shifts out
    a null bit and the sample, most significant bit first. Only single-ended reads are modelled.

    Args:
        factory: The ``MockFactory`` the ADC's pins live on.
        bits: 10 (MCP30xx) or 12 (MCP32xx).
        device: Chip select: 0 for CE0 (GPIO8), 1 for CE1 (GPIO7).
        vref: Reference voltage; inputs are clamped to 0..vref.
    """

    def __init__(self, factory: Any, *, bits: int = 10, device: int = 0, vref: float = 3.3):
        super().__init__(
            SPI_CLOCK,
            SPI_MOSI,
            SPI_MISO,
            SPI_SELECT[device],
            pin_factory=factory,
        )
        self.bits = bits
        self.vref = vref
        self._volts = [0.0] * 8
        self._lock = threading.Lock()

    def set_volts(self, channel: int, volts: float) -> None:
        """Put ``volts`` on input ``channel`` (any thread)."""
        with self._lock:
            self._volts[channel] = volts

    def on_bit(self) -> None:
        """After the command's last channel bit, queue the null bit and the sample."""
        rx: list[int] = self.rx_buf
        if 1 not in rx:
            return
        start = rx.index(1)
        if len(rx) != start + 5:
            return
        d2, d1, d0 = rx[start + 2 : start + 5]
        with self._lock:
            volts = self._volts[d2 * 4 + d1 * 2 + d0]
        full = 2**self.bits - 1
        code = max(0, min(full, round(volts / self.vref * full)))
        # The next clock is the sample period, the one after it the null bit, then the code.
        self.tx_word(code, self.bits + 2)


@dataclass
class Physics:
    """How lively the simulated world is (mean times between happenings, in seconds).

    The defaults make a quiet site; the demo may want doors opened more often.
    """

    door_every_s: float = 900.0
    first_door_s: float | None = None  # the first opening this long after the start (demo)
    door_open_s: float = 20.0
    door_forgotten: float = 0.05  # share of openings left open for ten minutes
    fault_every_s: float = 6 * 3600.0
    fault_s: float = 180.0
    dip_every_s: float = 1800.0
    dip_s: float = 5.0
    supply_v: float = 5.1
    tick_s: float = 0.2  # how often sense lines and the supply are updated
    heat_c: float = 0.0  # added to every thermometer: a cabinet whose fan has failed runs hot


class SimulatedCamera:
    """Pictures of the time and ``label`` in block letters (PNG), as a camera would see a
    clock on the cabinet's wall (``_picture.py``)."""

    def __init__(self, label: str, clock: Clock) -> None:
        self._label = label
        self._clock = clock

    def picture(self, width: int, height: int) -> tuple[bytes, str]:
        """A new picture and its type (see ``CameraSource``)."""
        from fieldhub.agent.units._picture import PNG_TYPE, picture  # with a camera only

        return picture(self._label, width, height, self._clock.time()), PNG_TYPE


class SimulatedThermometers:
    """DS18B20s that follow the time of day, drift and read with noise and 1/16 °C steps.

    Each sensor id gets its own base temperature (from a hash of the id, 18-32 °C) and a
    daily swing of 3 °C; the reading relaxes towards that with a time constant of 20 min plus
    a random walk, so consecutive samples look like a real cabinet's; ``heat_c`` more in a
    cabinet that runs hot. Thread-safe: units read it from worker threads.
    """

    def __init__(self, clock: Clock, rng: random.Random, heat_c: float = 0.0) -> None:
        self._clock = clock
        self._rng = rng
        self._heat_c = heat_c
        self._lock = threading.Lock()
        self._state: dict[str, tuple[float, float]] = {}  # id: (temperature, monotonic time)
        self.missing: set[str] = set()
        """Ids that read as unplugged (for demos and tests)."""

    def _target(self, sensor_id: str) -> float:
        # A Random seeded with a str hashes it with SHA-512 (stable across runs, unlike
        # hash()), with no hashlib import: hashlib loads OpenSSL, 3.5 MB of the agent's RSS.
        base = 18 + random.Random(sensor_id).random() * 14 + self._heat_c
        day = self._clock.time() % 86400 / 86400
        return base + 3 * math.sin(2 * math.pi * (day - 0.375))  # warmest mid-afternoon

    def read(self, sensor_ids: Sequence[str]) -> dict[str, float | Unreadable]:
        """Read each sensor (see ``TemperatureSource``)."""
        now = self._clock.monotonic()
        out: dict[str, float | Unreadable] = {}
        with self._lock:
            for sensor_id in sensor_ids:
                if sensor_id in self.missing:
                    out[sensor_id] = Unreadable("not on the 1-Wire bus (simulated)")
                    continue
                target = self._target(sensor_id)
                temp, then = self._state.get(sensor_id, (target, now))
                dt = max(0.0, now - then)
                temp += (target - temp) * (1 - math.exp(-dt / 1200))
                temp += self._rng.gauss(0, 0.02 * math.sqrt(dt))
                self._state[sensor_id] = (temp, now)
                measured = temp + self._rng.gauss(0, 0.03)
                out[sensor_id] = round(measured * 16) / 16
        return out


class Simulation:
    """Made-up hardware for a set of unit configs, and the world that acts on it.

    Args:
        configs: The units the agent will build (their pins and chips are prepared here).
        workdir: Folder for the simulated Pi firmware's ``get_throttled`` file.
        physics: How lively the world is.
        seed: Seed of the randomness, for a reproducible run.
        clock: Time (the system clock by default).
        label: What the simulated camera writes on its pictures (the device id).
    """

    def __init__(
        self,
        configs: Sequence[UnitConfig],
        workdir: Path,
        physics: Physics | None = None,
        seed: int | None = None,
        clock: Clock | None = None,
        label: str = "",
    ) -> None:
        self.physics = physics or Physics()
        self._rng = random.Random(seed)
        self._clock = clock or SystemClock()
        self.factory: Any = mock_pin_factory(SwitchPin)
        self.thermometers = SimulatedThermometers(self._clock, self._rng, self.physics.heat_c)
        private_dir(workdir)
        self._throttled = workdir / "get_throttled"
        self._throttled.write_text("0\n", encoding="ascii")
        self.drivers = Drivers(
            pin_factory=self.factory,
            w1_root=workdir / "w1",
            throttled_path=self._throttled,
            clock=self._clock,
            temperatures=self.thermometers,
            camera=SimulatedCamera(label, self._clock),
        )
        self._doors = [c for c in configs if isinstance(c, DoorConfig)]
        sockets = {c.name: c for c in configs if isinstance(c, SocketConfig)}
        self._checks = [
            (c, sockets[c.socket])
            for c in configs
            if isinstance(c, SocketCheckConfig) and c.socket in sockets
        ]
        self._faulty: set[str] = set()
        self._supplies: list[tuple[VoltageConfig, MockMCP3xxx]] = []
        for config in configs:
            if isinstance(config, VoltageConfig) and config.adc is not None:
                adc = config.adc
                if adc.chip[-2:] not in ("04", "08"):
                    log.warning("Simulation: no model of the %s; %r reads 0 V", adc.chip, config)
                    continue
                chip = MockMCP3xxx(
                    self.factory,
                    bits=12 if adc.chip.startswith("MCP32") else 10,
                    device=adc.device,
                    vref=adc.vref,
                )
                self._supplies.append((config, chip))
        self._has_temperature = any(isinstance(c, TemperatureConfig) for c in configs)
        for door in self._doors:
            self._drive(door.pin, door.closed_when == "high")
        for check, socket in self._checks:
            self._follow(check, socket)
        self._supply(self.physics.supply_v)

    def _drive(self, pin: int | str, high: bool) -> None:
        mock = self.factory.pin(pin)
        if high:
            mock.drive_high()
        else:
            mock.drive_low()

    async def run(self) -> None:
        """Act on the hardware until cancelled."""
        async with asyncio.TaskGroup() as group:
            for door in self._doors:
                group.create_task(self._person(door), name=f"simulate:door:{door.name}")
            if self._checks:
                group.create_task(self._sense(), name="simulate:sense")
            if self._supplies:
                group.create_task(self._power(), name="simulate:power")
            group.create_task(self._forget_pin_history(), name="simulate:pin-history")

    async def _forget_pin_history(self) -> None:
        """Empty the mock pins' logs of state changes (``MockPin.states``) every minute.

        gpiozero keeps that log for tests, unbounded; with the FocusPro units it grew by 12
        entries a second (80 B each), 3.6 MB an hour for one simulated agent, and the demo
        fleet runs a hundred for hours. A test that reads the log runs shorter than a minute,
        or clears it itself.
        """
        while True:
            await asyncio.sleep(_PIN_HISTORY_S)
            for pin in list(self.factory.pins.values()):
                pin.clear_states()

    # -- door ------------------------------------------------------------------------------

    async def _person(self, door: DoorConfig) -> None:
        p = self.physics
        closed_high = door.closed_when == "high"
        first = p.first_door_s
        while True:
            await asyncio.sleep(
                first if first is not None else self._rng.expovariate(1 / p.door_every_s)
            )
            first = None
            await self._bounce(door.pin, to_high=not closed_high)
            forgotten = self._rng.random() < p.door_forgotten
            open_s = 600.0 if forgotten else self._rng.lognormvariate(math.log(p.door_open_s), 0.5)
            await asyncio.sleep(open_s)
            await self._bounce(door.pin, to_high=closed_high)

    async def _bounce(self, pin: int | str, *, to_high: bool) -> None:
        """A switch changing over: a few quick contacts and breaks, then the new level."""
        for _ in range(self._rng.randint(1, 4)):
            self._drive(pin, to_high)
            await asyncio.sleep(self._rng.uniform(0.0005, 0.003))
            self._drive(pin, not to_high)
            await asyncio.sleep(self._rng.uniform(0.0005, 0.003))
        self._drive(pin, to_high)

    # -- socket sense ----------------------------------------------------------------------

    def _follow(self, check: SocketCheckConfig, socket: SocketConfig) -> None:
        relay = self.factory.pin(socket.pin)
        energized = relay.function == "output" and bool(relay.state) == socket.active_high
        powered = energized and check.name not in self._faulty
        self._drive(check.pin, powered == (check.powered_when == "high"))

    async def _sense(self) -> None:
        p = self.physics
        next_fault = self._clock.monotonic() + self._rng.expovariate(1 / p.fault_every_s)
        repair_at: dict[str, float] = {}
        while True:
            now = self._clock.monotonic()
            if now >= next_fault:
                check, _ = self._rng.choice(self._checks)
                self._faulty.add(check.name)
                repair_at[check.name] = now + self._rng.expovariate(1 / p.fault_s)
                next_fault = now + self._rng.expovariate(1 / p.fault_every_s)
            for name, when in list(repair_at.items()):
                if now >= when:
                    self._faulty.discard(name)
                    del repair_at[name]
            for check, socket in self._checks:
                self._follow(check, socket)
            await asyncio.sleep(p.tick_s)

    # -- power -----------------------------------------------------------------------------

    def _supply(self, volts: float) -> None:
        for config, chip in self._supplies:
            if config.adc is not None:
                chip.set_volts(config.adc.channel, volts / config.adc.scale)

    async def _power(self) -> None:
        p = self.physics
        flag = 0
        next_dip = self._clock.monotonic() + self._rng.expovariate(1 / p.dip_every_s)
        dip_until = 0.0
        dip_v = p.supply_v
        wander = 0.0
        while True:
            now = self._clock.monotonic()
            if now >= next_dip:
                dip_until = now + self._rng.uniform(0.4, 1.6) * p.dip_s
                dip_v = self._rng.uniform(4.5, 4.75)
                next_dip = now + self._rng.expovariate(1 / p.dip_every_s)
            wander = 0.98 * wander + self._rng.gauss(0, 0.004)
            volts = dip_v if now < dip_until else p.supply_v + wander
            volts += self._rng.gauss(0, 0.005)
            self._supply(volts)
            # The firmware's bits: 0 under-voltage now, 16 under-voltage has occurred.
            new_flag = (flag & 0x10000) | (0x10001 if volts < 4.63 else 0)
            if new_flag != flag:
                flag = new_flag
                await asyncio.to_thread(self._throttled.write_text, f"{flag:x}\n", "ascii")
            await asyncio.sleep(p.tick_s)
