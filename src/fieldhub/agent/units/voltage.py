"""``voltage``: is the supply healthy? From an ADC, and from the Pi's own under-voltage flag.

Two independent witnesses. An MCP3xxx ADC on SPI measures the supply through a resistor
divider (``scale`` turns the ADC pin's voltage back into the supply's) and gives a number with
limits. The Pi firmware raises its under-voltage flag when the 5 V rail sags below about
4.63 V, even for a moment too short for any sample; it is read from sysfs (Raspberry Pi OS
kernels) and skipped where that file does not exist (not a Pi, or an older kernel).

Both are read in a worker thread: an SPI transfer and a sysfs read block.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import msgspec

from fieldhub.agent.reporting import Reporter, Value
from fieldhub.agent.units import _hw
from fieldhub.agent.units.base import (
    Band,
    Level,
    TelemetryPolicy,
    Unit,
    UnitConfigBase,
    UnitStartError,
)
from fieldhub.agent.units.drivers import Drivers

__all__ = ["UNDER_VOLTAGE_NOW", "AdcConfig", "VoltageConfig", "VoltageUnit", "read_throttled"]

log = logging.getLogger(__name__)

UNDER_VOLTAGE_NOW = 0x1
"""Bit of ``get_throttled``: under-voltage right now (bit 16: has occurred since boot)."""

_CHANNELS = {"MCP3002": 2, "MCP3202": 2, "MCP3004": 4, "MCP3204": 4, "MCP3008": 8, "MCP3208": 8}
Volts = Annotated[float, msgspec.Meta(gt=0, le=1000)]


class AdcConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """An MCP3xxx channel measuring the supply through a divider.

    Attributes:
        chip: ADC model.
        channel: Its input channel.
        device: SPI chip select on port 0 (0: CE0, GPIO8; 1: CE1, GPIO7).
        vref: The chip's reference voltage (3.3 V when fed from the Pi's 3.3 V rail).
        scale: Supply voltage per volt at the ADC pin: 2.0 for two equal resistors.
    """

    chip: _hw.AdcChip = "MCP3008"
    channel: Annotated[int, msgspec.Meta(ge=0, le=7)] = 0
    device: Annotated[int, msgspec.Meta(ge=0, le=1)] = 0
    vref: Annotated[float, msgspec.Meta(gt=0, le=5.5)] = 3.3
    scale: Volts = 2.0

    def __post_init__(self) -> None:
        if self.channel >= _CHANNELS[self.chip]:
            raise ValueError(
                f"channel {self.channel} does not exist on a {self.chip} "
                f"(channels 0-{_CHANNELS[self.chip] - 1})"
            )


class VoltageConfig(UnitConfigBase, frozen=True, tag="voltage"):
    """Supply monitoring.

    Attributes:
        adc: The ADC channel; None: only the under-voltage flag.
        low: At or below, ``voltage.low`` (None: unchecked).
        high: At or above, ``voltage.high`` (None: unchecked).
        hysteresis: How far back inside a limit counts as normal again.
        under_voltage: Watch the Pi firmware's under-voltage flag (where it exists).
        sample_s: Time between reads.
        report_s: Longest time between two telemetry values.
        deadband: Smallest change in volts sent before ``report_s`` is up.
    """

    adc: AdcConfig | None = None
    low: Volts | None = 4.75
    high: Volts | None = 5.25
    hysteresis: Annotated[float, msgspec.Meta(ge=0)] = 0.05
    under_voltage: bool = True
    sample_s: Annotated[float, msgspec.Meta(ge=0.05, le=3600)] = 5.0
    report_s: Annotated[float, msgspec.Meta(gt=0)] = 300.0
    deadband: Annotated[float, msgspec.Meta(ge=0)] = 0.05

    def __post_init__(self) -> None:
        if self.high is not None and self.low is not None and self.low >= self.high:
            raise ValueError(f"low ({self.low}) must be below high ({self.high})")


def read_throttled(path: Path) -> int | None:
    """The firmware's throttling bits, or None where the file does not exist (blocking).

    The file holds hex digits (``50005``); ``vcgencmd get_throttled``'s ``throttled=0x50005``
    is accepted too, for a file written by hand.
    """
    try:
        text = path.read_text(encoding="ascii").strip()
    except FileNotFoundError:
        return None
    try:
        return int(text.removeprefix("throttled="), 16)
    except ValueError:
        log.warning("Unexpected content in %s: %r", path, text[:40])
        return None


@dataclass(frozen=True)
class _Sample:
    volts: float | None
    throttled: int | None
    error: str = ""


class VoltageUnit(Unit):
    """Reports telemetry ``<name>`` (supply volts), state ``<name>: normal|low|high`` and
    ``<name>.under_voltage: true|false``, and the events ``voltage.low``, ``voltage.high``,
    ``voltage.normal``, ``voltage.under_voltage`` and ``voltage.under_voltage_cleared``."""

    kind = "voltage"

    def __init__(self, config: VoltageConfig, drivers: Drivers, reporter: Reporter) -> None:
        super().__init__(config.name, reporter, drivers.clock)
        self._config = config
        self._factory = drivers.pin_factory
        self._throttled_path = drivers.throttled_path
        self._adc: _hw.AnalogInput | None = None
        self._band = Band(config.high, config.low, config.hysteresis)
        self._policy = TelemetryPolicy(config.report_s, config.deadband)
        self._volts: float | None = None
        self._under_voltage: bool | None = None
        self._error = ""

    async def start(self) -> None:
        await super().start()
        adc = self._config.adc
        if adc is not None:
            try:
                self._adc = _hw.AnalogInput(
                    self._factory, adc.chip, adc.channel, adc.device, adc.vref
                )
            except _hw.HardwareError as exc:
                raise UnitStartError(
                    f"Voltage {self.name!r}: {adc.chip} on SPI CE{adc.device}: {exc}"
                ) from exc
        self.spawn(self._run(), "sample")

    async def stop(self) -> None:
        await super().stop()
        if self._adc is not None:
            self._adc.close()
            self._adc = None

    def _read(self) -> _Sample:
        volts: float | None = None
        error = ""
        if self._adc is not None and self._config.adc is not None:
            try:
                volts = round(self._adc.read_volts() * self._config.adc.scale, 3)
            except (_hw.HardwareError, OSError) as exc:
                error = f"ADC: {exc}"
        throttled = read_throttled(self._throttled_path) if self._config.under_voltage else None
        return _Sample(volts, throttled, error)

    async def sample(self) -> None:
        """Read once and report what follows (the loop's body; tests call it)."""
        sample = await asyncio.to_thread(self._read)
        if sample.error != self._error:
            if sample.error:
                log.warning("Voltage %r: %s", self.name, sample.error)
            self._error = sample.error
        if sample.volts is not None:
            self._volts = sample.volts
            level = self._band.update(sample.volts)
            if level is not None:
                self._level_changed(level, sample.volts)
            self.set_state(self.name, self._band.level)
            chosen = self._policy.select({self.name: sample.volts}, self._clock.monotonic())
            if chosen:
                self._reporter.telemetry(chosen, self.now_ms())
        if sample.throttled is not None:
            self._flag(bool(sample.throttled & UNDER_VOLTAGE_NOW), sample.throttled)

    async def _run(self) -> None:
        if self._adc is None and (
            not self._config.under_voltage
            or await asyncio.to_thread(read_throttled, self._throttled_path) is None
        ):
            log.info("Voltage %r: no ADC, no under-voltage flag here: nothing to watch", self.name)
            return
        while True:
            started = self._clock.monotonic()
            await self.sample()
            elapsed = self._clock.monotonic() - started
            await asyncio.sleep(max(0.0, self._config.sample_s - elapsed))

    def _level_changed(self, level: Level, volts: float) -> None:
        if level == "normal":
            self.emit("voltage.normal", "info", f"Supply back to normal: {volts:g} V", value=volts)
            return
        limit = self._band.high if level == "high" else self._band.low
        where = "above" if level == "high" else "below"
        self.emit(
            f"voltage.{level}",
            "warning",
            f"Supply {volts:g} V, {where} {limit} V",
            value=volts,
            limit=limit,
        )

    def _flag(self, under: bool, bits: int) -> None:
        first = self._under_voltage is None
        if under == self._under_voltage:
            return
        self._under_voltage = under
        if under:
            message = "The Pi reports under-voltage: the supply sags below 4.63 V"
            self.emit("voltage.under_voltage", "warning", message, throttled=hex(bits))
        elif not first:
            message = "Under-voltage is over"
            self.emit("voltage.under_voltage_cleared", "info", message, throttled=hex(bits))
        self.set_state(f"{self.name}.under_voltage", under)

    def status(self) -> dict[str, Value | None]:
        return {
            "volts": self._volts,
            "level": self._band.level if self._volts is not None else None,
            "under_voltage": self._under_voltage,
            "error": self._error or None,
        }
