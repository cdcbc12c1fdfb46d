"""What units get their hardware from, injected the way gpiozero injects a pin factory.

The same unit code runs on a Pi, in ``--simulate`` and in tests; only the :class:`Drivers`
differ: a real pin factory or gpiozero's ``MockFactory``, a real owserver or one with fake
sensors, the kernel's ``/sys`` or a tree in a temporary folder, the system clock.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

__all__ = [
    "OWSERVER_PORT",
    "THROTTLED_PATH",
    "W1_ROOT",
    "CameraSource",
    "Clock",
    "Drivers",
    "SystemClock",
    "TemperatureSource",
    "Unreadable",
    "mock_pin_factory",
]

OWSERVER_PORT = 4304
"""owserver's registered port."""
W1_ROOT = Path("/sys/bus/w1/devices")
"""Where the kernel's w1 driver lists 1-Wire devices (``28-…`` folders)."""
THROTTLED_PATH = Path("/sys/devices/platform/soc/soc:firmware/get_throttled")
"""The Pi firmware's throttling flags (Raspberry Pi OS kernels; absent elsewhere)."""


class Clock(Protocol):
    """Time as units see it: wall clock for report timestamps, monotonic for intervals."""

    def time(self) -> float:
        """Seconds since the epoch."""

    def monotonic(self) -> float:
        """Seconds from an arbitrary start; never jumps (NTP, DST)."""


class SystemClock:
    """The machine's clocks."""

    def time(self) -> float:
        """``time.time()``."""
        return time.time()

    def monotonic(self) -> float:
        """``time.monotonic()``, the same clock the event loop sleeps on."""
        return time.monotonic()


@dataclass(frozen=True)
class Unreadable:
    """A sensor that did not give a value this time, and why (for the ``sensor.missing``
    event and the technician page)."""

    reason: str


class TemperatureSource(Protocol):
    """Where thermometer readings come from (owserver, w1 sysfs, the simulation)."""

    def read(self, sensor_ids: Sequence[str]) -> dict[str, float | Unreadable]:
        """Read each sensor (owfs-style ids, ``28.AABBCCDDEEFF``) in °C. Blocking: units call it
        through ``asyncio.to_thread``. A sensor that cannot be read is ``Unreadable``; this
        method itself does not raise for a missing sensor or an unreachable server."""


class CameraSource(Protocol):
    """Where ``camera`` units get pictures when not from the Pi's camera (the simulation)."""

    def picture(self, width: int, height: int) -> tuple[bytes, str]:
        """A new picture of that size and its MIME type. Blocking: units call it through
        ``asyncio.to_thread``."""


@dataclass(frozen=True, kw_only=True)
class Drivers:
    """The hardware units talk to.

    Attributes:
        pin_factory: gpiozero pin factory for every GPIO and SPI device (``Any``: gpiozero
            has no types).
        owserver: ``(host, port)`` of the owserver for ``temperature`` units with
            ``source: owserver``.
        w1_root: The kernel's w1 device folder, for ``source: w1``.
        throttled_path: The Pi firmware's ``get_throttled`` file; missing means "not a Pi",
            and the under-voltage check is skipped.
        clock: Wall and monotonic time.
        temperatures: When set, every ``temperature`` unit reads from it whatever its
            ``source`` says (the simulation's thermometers).
        camera: When set, every ``camera`` unit takes its pictures from it instead of the
            system's camera program (the simulation's generated pictures).
    """

    pin_factory: Any
    owserver: tuple[str, int] = ("localhost", OWSERVER_PORT)
    w1_root: Path = W1_ROOT
    throttled_path: Path = THROTTLED_PATH
    clock: Clock = field(default_factory=SystemClock)
    temperatures: TemperatureSource | None = None
    camera: CameraSource | None = None

    @classmethod
    def hardware(cls, owserver: tuple[str, int] = ("localhost", OWSERVER_PORT)) -> Drivers:
        """Drivers of the Pi the agent runs on: gpiozero's default pin factory (lgpio).

        Raises:
            UnitStartError: No GPIO library works here; the message says to use ``--simulate``
                off the Pi.
        """
        from fieldhub.agent.units._hw import HardwareError, default_pin_factory
        from fieldhub.agent.units.base import UnitStartError

        try:
            factory = default_pin_factory()
        except HardwareError as exc:
            raise UnitStartError(
                f"No GPIO access on this machine ({exc}). On a Raspberry Pi install lgpio "
                "(Debian python3-lgpio, or pip install lgpio in the agent's venv); elsewhere "
                "run the agent with --simulate."
            ) from exc
        return cls(pin_factory=factory, owserver=owserver)


def mock_pin_factory(pin_class: type[Any] | None = None) -> Any:
    """A new gpiozero ``MockFactory`` (a Pi 3B+'s header) for tests and the simulation.

    Args:
        pin_class: Its pin class, a ``gpiozero.pins.mock.MockPin`` subclass (the simulation's
            switches); ``MockPin`` when None.
    """
    from fieldhub.agent.units._hw import mock_pin_factory as make

    return make(pin_class)
