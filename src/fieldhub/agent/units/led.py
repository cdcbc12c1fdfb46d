"""``led``: a status indicator that a technician reads at a glance.

Besides steady on and off, it shows named blink patterns: ``ok`` is a short flash every two
seconds (a heartbeat: steady light would look the same when the agent hangs), ``degraded`` a
slow blink, ``offline`` a fast one. The agent sets them from its health (:meth:`LedUnit.show`);
the ``<name>.set`` action lets a technician or the hub do it too (to find the box in a row).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated

import msgspec

from fieldhub.agent.reporting import Reporter, Value
from fieldhub.agent.units import _hw
from fieldhub.agent.units.base import (
    UNIT_NAME_PATTERN,
    ActionSpec,
    Pin,
    Unit,
    UnitConfigBase,
    UnitStartError,
)
from fieldhub.agent.units.drivers import Drivers

__all__ = ["DEFAULT_PATTERNS", "Blink", "LedConfig", "LedUnit"]

Seconds = Annotated[float, msgspec.Meta(gt=0, le=60)]


class Blink(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """A blink pattern: lit for ``on_s``, dark for ``off_s``, repeated."""

    on_s: Seconds
    off_s: Seconds


DEFAULT_PATTERNS: Mapping[str, Blink] = {
    "blink": Blink(0.5, 0.5),
    "ok": Blink(0.1, 1.9),
    "degraded": Blink(0.5, 0.5),
    "offline": Blink(0.1, 0.1),
}
"""Patterns every LED knows; a config's ``patterns`` adds to them or overrides them."""

STEADY = ("on", "off")


class LedConfig(UnitConfigBase, frozen=True, tag="led"):
    """An LED on a GPIO pin.

    Attributes:
        pin: GPIO pin.
        active_high: False when the pin sinks the LED's current (lit at low level).
        initial: What it shows from start: ``on``, ``off`` or a pattern name.
        patterns: Extra or changed patterns, by name.
    """

    pin: Pin
    active_high: bool = True
    initial: str = "off"
    patterns: dict[Annotated[str, msgspec.Meta(pattern=UNIT_NAME_PATTERN)], Blink] = {}

    def __post_init__(self) -> None:
        modes = (*STEADY, *DEFAULT_PATTERNS, *self.patterns)
        if self.initial not in modes:
            raise ValueError(f"initial {self.initial!r} is not one of {', '.join(modes)}")


class LedUnit(Unit):
    """Shows a mode on an LED; reports it as state ``<name>: <mode>``."""

    kind = "led"

    def __init__(self, config: LedConfig, drivers: Drivers, reporter: Reporter) -> None:
        super().__init__(config.name, reporter, drivers.clock)
        self._config = config
        self._factory = drivers.pin_factory
        self._patterns = {**DEFAULT_PATTERNS, **config.patterns}
        self._led: _hw.Indicator | None = None
        self._mode = "off"

    @property
    def modes(self) -> tuple[str, ...]:
        """Everything :meth:`show` accepts."""
        return (*STEADY, *self._patterns)

    @property
    def mode(self) -> str:
        """What the LED shows now."""
        return self._mode

    async def start(self) -> None:
        await super().start()
        try:
            self._led = _hw.Indicator(
                self._factory, self._config.pin, active_high=self._config.active_high
            )
        except _hw.HardwareError as exc:
            raise UnitStartError(f"LED {self.name!r} on pin {self._config.pin}: {exc}") from exc
        self.show(self._config.initial)

    async def stop(self) -> None:
        await super().stop()
        if self._led is not None:
            self._led.close()
            self._led = None

    def show(self, mode: str) -> None:
        """Show ``mode`` (``on``, ``off`` or a pattern name) until told otherwise.

        Raises:
            ValueError: ``mode`` is none of those; the message lists them.
        """
        if mode not in self.modes:
            raise ValueError(f"LED mode {mode!r} is not one of {', '.join(self.modes)}")
        if self._led is None:
            raise UnitStartError(f"LED {self.name!r} is not started")
        if mode in STEADY:
            self._led.steady(mode == "on")
        else:
            pattern = self._patterns[mode]
            self._led.blink(pattern.on_s, pattern.off_s)
        self._mode = mode
        self.set_state(self.name, mode)

    async def _set(self, state: str) -> Mapping[str, Value]:
        self.show(state)
        return {"state": state}

    def actions(self) -> Mapping[str, ActionSpec]:
        name = f"{self.name}.set"
        return {
            name: ActionSpec(
                name=name,
                handler=self._set,
                args={"state": str},
                description=f"Show on the LED: {', '.join(self.modes)}.",
            )
        }

    def status(self) -> dict[str, Value | None]:
        return {"mode": self._mode, "lit": self._led.lit if self._led else None}
