"""``temperature``: named 1-Wire thermometers with limits, read on an interval.

Every ``sample_s`` all sensors of the unit are read in one worker thread (a DS18B20 takes
up to 750 ms per conversion; the event loop never waits for it). Each value is checked
against the sensor's limits (``temperature.high``/``low`` events, and ``normal`` when it is
back inside by more than the hysteresis) and sent as telemetry on change beyond the deadband or
at least every ``report_s``. A sensor that fails ``missing_after`` reads in a row is reported
missing (a cut cable, a dead sensor, owserver down); its first good read after that reports
it recovered. One failed read is not yet an event: a single CRC error happens on long cables.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Annotated, Literal

import msgspec

from fieldhub.agent.reporting import Reporter, Value
from fieldhub.agent.units.base import Band, TelemetryPolicy, Unit, UnitConfigBase, UnitName
from fieldhub.agent.units.drivers import Drivers, TemperatureSource, Unreadable
from fieldhub.agent.units.onewire import OwserverSource, SensorId, SysfsSource, owfs_id

__all__ = ["SensorConfig", "TemperatureConfig", "TemperatureUnit"]

Celsius = Annotated[float, msgspec.Meta(ge=-55, le=125)]  # a DS18B20's range


class SensorConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """One thermometer.

    Attributes:
        id: Its 1-Wire id, owfs (``28.9DB6AB050000``) or kernel (``28-000005abb69d``) style.
        high: At or above this, ``temperature.high``; None: no upper limit.
        low: At or below this, ``temperature.low``; None: no lower limit.
    """

    id: SensorId
    high: Celsius | None = None
    low: Celsius | None = None

    def __post_init__(self) -> None:
        if self.high is not None and self.low is not None and self.low >= self.high:
            raise ValueError(f"low ({self.low}) must be below high ({self.high})")


class TemperatureConfig(UnitConfigBase, frozen=True, tag="temperature"):
    """A set of thermometers read together.

    Attributes:
        sensors: Sensor name (used in telemetry keys ``<unit>.<sensor>``) to sensor.
        source: ``owserver`` (pyownet) or ``w1`` (kernel sysfs).
        sample_s: Time between reads.
        report_s: Longest time between two telemetry values of a sensor.
        deadband: Smallest change in °C sent before ``report_s`` is up.
        hysteresis: How far back inside a limit a value must be to count as normal again.
        missing_after: Failed reads in a row before ``sensor.missing``.
    """

    sensors: Annotated[dict[UnitName, SensorConfig], msgspec.Meta(min_length=1, max_length=32)]
    source: Literal["owserver", "w1"] = "owserver"
    sample_s: Annotated[float, msgspec.Meta(ge=0.05, le=3600)] = 10.0
    report_s: Annotated[float, msgspec.Meta(gt=0)] = 300.0
    deadband: Annotated[float, msgspec.Meta(ge=0)] = 0.25
    hysteresis: Annotated[float, msgspec.Meta(ge=0)] = 0.5
    missing_after: Annotated[int, msgspec.Meta(ge=1, le=100)] = 3

    def __post_init__(self) -> None:
        seen: dict[str, str] = {}
        for name, sensor in self.sensors.items():
            canonical = owfs_id(sensor.id)
            if canonical in seen:
                raise ValueError(f"sensors {seen[canonical]!r} and {name!r} have the same id")
            seen[canonical] = name


@dataclass
class _Sensor:
    name: str
    id: str  # owfs-style
    key: str  # telemetry and state key
    band: Band
    value: float | None = None
    failures: int = 0
    missing: bool = False
    reason: str = ""


class TemperatureUnit(Unit):
    """Reports telemetry ``<unit>.<sensor>`` in °C, state ``<unit>.<sensor>:
    normal|high|low|missing``, and the events ``temperature.high``, ``temperature.low``,
    ``temperature.normal``, ``sensor.missing`` and ``sensor.recovered``."""

    kind = "temperature"

    def __init__(self, config: TemperatureConfig, drivers: Drivers, reporter: Reporter) -> None:
        super().__init__(config.name, reporter, drivers.clock)
        self._config = config
        self._source: TemperatureSource
        if drivers.temperatures is not None:
            self._source = drivers.temperatures
        elif config.source == "owserver":
            self._source = OwserverSource(*drivers.owserver)
        else:
            self._source = SysfsSource(drivers.w1_root)
        self._policy = TelemetryPolicy(config.report_s, config.deadband)
        self._sensors = [
            _Sensor(
                name=name,
                id=owfs_id(sensor.id),
                key=f"{config.name}.{name}",
                band=Band(sensor.high, sensor.low, config.hysteresis),
            )
            for name, sensor in config.sensors.items()
        ]

    async def start(self) -> None:
        await super().start()
        self.spawn(self._run(), "sample")

    async def sample(self) -> None:
        """Read every sensor once and report what follows (the loop's body; tests call it)."""
        readings = await asyncio.to_thread(self._source.read, [s.id for s in self._sensors])
        ts, now = self.now_ms(), self._clock.monotonic()
        values: dict[str, float] = {}
        for sensor in self._sensors:
            reading = readings.get(sensor.id, Unreadable("not read"))
            if isinstance(reading, Unreadable):
                self._failed(sensor, reading.reason)
            else:
                value = round(reading, 3)
                self._read(sensor, value)
                values[sensor.key] = value
        chosen = self._policy.select(values, now)
        if chosen:
            self._reporter.telemetry(chosen, ts)

    async def _run(self) -> None:
        while True:
            started = self._clock.monotonic()
            await self.sample()
            elapsed = self._clock.monotonic() - started
            await asyncio.sleep(max(0.0, self._config.sample_s - elapsed))

    def _failed(self, sensor: _Sensor, reason: str) -> None:
        sensor.failures += 1
        sensor.reason = reason
        if sensor.missing or sensor.failures < self._config.missing_after:
            return
        sensor.missing = True
        sensor.value = None
        self._policy.forget(sensor.key)
        self.emit(
            "sensor.missing",
            "warning",
            f"Thermometer {sensor.name!r} ({sensor.id}) gives no value: {reason}",
            sensor=sensor.name,
            id=sensor.id,
            reason=reason,
        )
        self.set_state(sensor.key, "missing")

    def _read(self, sensor: _Sensor, value: float) -> None:
        sensor.failures = 0
        sensor.value = value
        sensor.reason = ""
        if sensor.missing:
            sensor.missing = False
            self.emit(
                "sensor.recovered",
                "info",
                f"Thermometer {sensor.name!r} ({sensor.id}) reads again: {value:g} °C",
                sensor=sensor.name,
                id=sensor.id,
                value=value,
            )
        level = sensor.band.update(value)
        if level is not None:
            self._level_changed(sensor, level, value)
        self.set_state(sensor.key, sensor.band.level)

    def _level_changed(
        self, sensor: _Sensor, level: Literal["normal", "high", "low"], value: float
    ) -> None:
        if level == "normal":
            message = f"Temperature {sensor.name!r} back to normal: {value:g} °C"
            self.emit("temperature.normal", "info", message, sensor=sensor.name, value=value)
            return
        limit = sensor.band.high if level == "high" else sensor.band.low
        where = "above" if level == "high" else "below"
        self.emit(
            f"temperature.{level}",
            "warning",
            f"Temperature {sensor.name!r} {value:g} °C, {where} {limit} °C",
            sensor=sensor.name,
            value=value,
            limit=limit,
        )

    def status(self) -> dict[str, Value | None]:
        status: dict[str, Value | None] = {}
        for sensor in self._sensors:
            status[sensor.name] = sensor.value
            status[f"{sensor.name}.state"] = "missing" if sensor.missing else sensor.band.level
            if sensor.reason:
                status[f"{sensor.name}.error"] = sensor.reason
        return status
