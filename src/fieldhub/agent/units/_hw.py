"""The one place that calls gpiozero and pyownet, which ship no type information.

Everything they return is ``Any`` to mypy; here it is wrapped in small typed classes that offer
only what the units use, so the rest of the package is checked strictly. Nothing else imports
gpiozero or pyownet (apart from the simulation, which plays the hardware's side of gpiozero's
mock pins).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any, Literal

import gpiozero
from pyownet import protocol as ownet

from fieldhub.agent.units.drivers import Unreadable

__all__ = [
    "ADC_CHIPS",
    "AdcChip",
    "AnalogInput",
    "DigitalInput",
    "DigitalOutput",
    "HardwareError",
    "Indicator",
    "OwserverLink",
    "Pull",
    "default_pin_factory",
    "mock_pin_factory",
]

PinFactory = Any
"""A gpiozero pin factory (``gpiozero.pins.Factory``)."""

Pull = Literal["up", "down", "none"]
AdcChip = Literal["MCP3002", "MCP3004", "MCP3008", "MCP3202", "MCP3204", "MCP3208"]
ADC_CHIPS: tuple[AdcChip, ...] = ("MCP3002", "MCP3004", "MCP3008", "MCP3202", "MCP3204", "MCP3208")

HardwareError = gpiozero.GPIOZeroError
"""Root of gpiozero's errors (pin in use, bad pin name, no pin factory, SPI problems)."""

_PULL_UP: dict[Pull, bool | None] = {"up": True, "down": False, "none": None}


def default_pin_factory() -> PinFactory:
    """gpiozero's own choice of pin factory on this machine (lgpio on a current Pi OS).

    gpiozero warns once per library it tries and fails; those warnings are collected into the
    error instead, which then says why each one failed.

    Raises:
        gpiozero.BadPinFactory: No GPIO library works here (not a Pi); use a mock factory.
    """
    with warnings.catch_warnings(record=True) as tried:
        warnings.simplefilter("always", gpiozero.PinFactoryFallback)
        try:
            gpiozero.Device.ensure_pin_factory()
        except gpiozero.BadPinFactory as exc:
            reasons = "; ".join(str(w.message) for w in tried)
            raise gpiozero.BadPinFactory(f"{exc} ({reasons})") from exc
    return gpiozero.Device.pin_factory


def mock_pin_factory(pin_class: type[Any] | None = None) -> PinFactory:
    """A new gpiozero ``MockFactory``, optionally with its own pin class."""
    from gpiozero.pins.mock import MockFactory

    return MockFactory(revision="a020d3", pin_class=pin_class)  # a Pi 3B+, the seed's board


class DigitalInput:
    """A digital input (switch, sense line) on a gpiozero input device, read as a level.

    Units think in wire levels (``closed_when: low``), gpiozero in "active" with the pull
    deciding which level is active; this class translates once.

    Switches use ``DigitalInputDevice`` too, not ``Button``: a ``Button`` runs a thread for
    its "held" events that wakes ten times a second for ever (idle CPU on a Pi) and makes
    ``close()`` wait up to its ``hold_time`` (1 s) while the switch is pressed, i.e. block the
    event loop whenever the agent stops with the door closed.

    Args:
        factory: Pin factory.
        pin: GPIO pin.
        pull: Internal pull resistor: ``up``, ``down`` or ``none`` (an external one).
    """

    def __init__(self, factory: PinFactory, pin: int | str, pull: Pull) -> None:
        pull_up = _PULL_UP[pull]
        # Debouncing is the unit's job (see DoorUnit), so bounce_time stays None here.
        self._device: Any = gpiozero.DigitalInputDevice(
            pin,
            pull_up=pull_up,
            active_state=True if pull_up is None else None,
            bounce_time=None,
            pin_factory=factory,
        )
        self._active_low = pull == "up"

    @property
    def high(self) -> bool:
        """Whether the line is at the high level now."""
        return bool(self._device.is_active) != self._active_low

    def on_change(self, callback: Callable[[], None] | None) -> None:
        """Call ``callback`` (on a gpiozero thread) on every edge; None stops it."""
        self._device.when_activated = callback
        self._device.when_deactivated = callback

    def close(self) -> None:
        """Stop callbacks and release the pin."""
        self.on_change(None)
        self._device.close()


class DigitalOutput:
    """A relay driver output (gpiozero ``DigitalOutputDevice``); ``on`` means energized."""

    def __init__(
        self, factory: PinFactory, pin: int | str, *, active_high: bool, initial: bool
    ) -> None:
        self._device: Any = gpiozero.DigitalOutputDevice(
            pin, active_high=active_high, initial_value=initial, pin_factory=factory
        )

    @property
    def on(self) -> bool:
        """Whether the output is driven on now."""
        return bool(self._device.is_active)

    def set(self, on: bool) -> None:
        """Drive the output on or off."""
        if on:
            self._device.on()
        else:
            self._device.off()

    def close(self) -> None:
        """Release the pin (gpiozero leaves it as an input)."""
        self._device.close()


class Indicator:
    """An LED (gpiozero ``LED``): steady on/off or blinking in a background thread."""

    def __init__(self, factory: PinFactory, pin: int | str, *, active_high: bool) -> None:
        self._device: Any = gpiozero.LED(
            pin, active_high=active_high, initial_value=False, pin_factory=factory
        )

    @property
    def lit(self) -> bool:
        """Whether the LED is lit at this instant."""
        return bool(self._device.is_lit)

    def steady(self, on: bool) -> None:
        """Stop any blinking and stay on or off."""
        if on:
            self._device.on()
        else:
            self._device.off()

    def blink(self, on_s: float, off_s: float) -> None:
        """Blink forever (gpiozero's background thread) until the next call."""
        self._device.blink(on_time=on_s, off_time=off_s, n=None, background=True)

    def close(self) -> None:
        """Stop blinking and release the pin."""
        self._device.close()


class AnalogInput:
    """One channel of an MCP3xxx ADC on SPI (gpiozero), read as a voltage at the ADC pin.

    gpiozero 2.0's software SPI (what a ``MockFactory`` provides) builds its bus without the
    pin factory it was given and asks for the process-wide default factory, which off the Pi
    does not exist. When no default is set, this factory stands in as the default while the
    device is built, and only then; on a Pi the default is the real one anyway.

    Args:
        factory: Pin factory.
        chip: ADC model.
        channel: Input channel of the chip.
        device: SPI chip select (0: CE0, 1: CE1) on SPI port 0.
        vref: The chip's reference voltage (its full-scale reading).
    """

    def __init__(
        self, factory: PinFactory, chip: AdcChip, channel: int, device: int, vref: float
    ) -> None:
        stand_in = gpiozero.Device.pin_factory is None
        if stand_in:
            gpiozero.Device.pin_factory = factory
        try:
            cls = getattr(gpiozero, chip)
            self._device: Any = cls(
                channel=channel, max_voltage=vref, port=0, device=device, pin_factory=factory
            )
        finally:
            if stand_in:
                gpiozero.Device.pin_factory = None

    def read_volts(self) -> float:
        """Read the channel (blocking: an SPI transfer)."""
        return float(self._device.voltage)

    def close(self) -> None:
        """Release the SPI device."""
        self._device.close()


class OwserverLink:
    """Reads through an owserver (pyownet), reconnecting when the server went away.

    pyownet's non-persistent proxy opens one TCP connection per request, so a restarted
    owserver needs nothing from us but a new proxy if the first contact failed.
    """

    def __init__(self, host: str, port: int) -> None:
        self._host = host
        self._port = port
        self._proxy: Any = None

    def read_temperature(self, owfs_id: str) -> float | Unreadable:
        """Read a fresh (uncached) temperature in °C of sensor ``owfs_id`` (blocking)."""
        try:
            if self._proxy is None:
                # FLG_TEMP_C: Celsius whatever the server's configured scale.
                self._proxy = ownet.proxy(self._host, self._port, flags=ownet.FLG_TEMP_C)
            raw = self._proxy.read(f"/uncached/{owfs_id}/temperature")
        except ownet.OwnetError as exc:
            return self._explain(owfs_id, exc)
        except ownet.ConnError as exc:
            self._proxy = None
            return Unreadable(f"owserver at {self._host}:{self._port} unreachable: {exc}")
        except ownet.Error as exc:
            self._proxy = None
            return Unreadable(f"owserver at {self._host}:{self._port}: {exc}")
        try:
            return float(raw.decode("ascii"))
        except (UnicodeDecodeError, ValueError):
            return Unreadable(f"owserver sent {raw!r}, not a temperature")

    def _explain(self, owfs_id: str, exc: Any) -> Unreadable:
        # owserver 3.2 answers "errno 1" for a missing device as for most failures, and
        # pyownet's text for it is misleading; asking whether the device is there tells more.
        try:
            present = bool(self._proxy.present(f"/{owfs_id}"))
        except ownet.Error:
            present = True
        if not present:
            return Unreadable("not on the 1-Wire bus (owserver does not list it)")
        return Unreadable(f"owserver error {exc.errno}: {exc.strerror}")
