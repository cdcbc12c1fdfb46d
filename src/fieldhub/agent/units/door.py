"""``door``: a limit switch on a door, reported as open or closed.

A mechanical switch bounces: one push of the door gives a burst of edges over a few
milliseconds. The unit accepts a new position only once the line has kept it for
``debounce_s``, so one opening is one ``door.opened`` event. The debouncing is done here, not
by gpiozero's ``bounce_time``: that is not simulated on mock pins, and with the RPi.GPIO
backend it ignores edges for a while after the first, which can drop the final one and leave
the door "open" for good.
"""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec

from fieldhub.agent.reporting import Reporter, Value
from fieldhub.agent.units import _hw
from fieldhub.agent.units.base import Pin, Unit, UnitConfigBase, UnitStartError
from fieldhub.agent.units.drivers import Drivers

__all__ = ["DoorConfig", "DoorUnit"]

DoorState = Literal["open", "closed"]


class DoorConfig(UnitConfigBase, frozen=True, tag="door"):
    """A door's limit switch.

    Attributes:
        pin: GPIO pin of the switch.
        pull: Internal pull resistor: ``up`` (switch to ground, the usual wiring), ``down``
            or ``none`` (an external resistor).
        closed_when: Line level while the door is closed: ``low`` for a switch to ground that
            the closed door holds pressed.
        debounce_s: How long the line must keep a new level before it counts.
        open_too_long_s: After this long open, a ``door.open_too_long`` event (once per
            opening); None: never.
    """

    pin: Pin
    pull: _hw.Pull = "up"
    closed_when: Literal["low", "high"] = "low"
    debounce_s: Annotated[float, msgspec.Meta(ge=0, le=5)] = 0.05
    open_too_long_s: Annotated[float, msgspec.Meta(gt=0)] | None = None


class DoorUnit(Unit):
    """Reports state ``<name>: open|closed`` and the events ``door.opened``, ``door.closed``
    (with how long it was open) and ``door.open_too_long``."""

    kind = "door"

    def __init__(self, config: DoorConfig, drivers: Drivers, reporter: Reporter) -> None:
        super().__init__(config.name, reporter, drivers.clock)
        self._config = config
        self._factory = drivers.pin_factory
        self._switch: _hw.DigitalInput | None = None
        self._door: DoorState | None = None
        self._since = 0.0  # monotonic time of the last accepted change
        self._since_ms = 0  # the same, wall clock, for the technician page
        self._too_long = False

    @property
    def door(self) -> DoorState | None:
        """Open or closed, as last accepted (None before start)."""
        return self._door

    async def start(self) -> None:
        await super().start()
        try:
            self._switch = _hw.DigitalInput(self._factory, self._config.pin, self._config.pull)
        except _hw.HardwareError as exc:
            raise UnitStartError(f"Door {self.name!r} on pin {self._config.pin}: {exc}") from exc
        self._accept(self._read(), initial=True)
        self._switch.on_change(self.from_thread(self._edge))

    async def stop(self) -> None:
        await super().stop()
        if self._switch is not None:
            self._switch.close()
            self._switch = None

    def _read(self) -> DoorState:
        if self._switch is None:
            raise UnitStartError(f"Door {self.name!r} is not started")
        closed = self._switch.high == (self._config.closed_when == "high")
        return "closed" if closed else "open"

    def _edge(self) -> None:
        if self._switch is None:  # an edge that was on its way when the unit stopped
            return
        if self._config.debounce_s == 0:
            self._settle()
        else:
            self.call_later("debounce", self._config.debounce_s, self._settle)

    def _settle(self) -> None:
        if self._switch is not None:
            self._accept(self._read(), initial=False)

    def _accept(self, door: DoorState, *, initial: bool) -> None:
        if door == self._door:
            return  # bounced back to where it was
        now = self._clock.monotonic()
        open_s = round(now - self._since, 3)
        self._door, self._since, self._since_ms = door, now, self.now_ms()
        if door == "open":
            self._too_long = False
            if self._config.open_too_long_s is not None:
                self.call_later("too_long", self._config.open_too_long_s, self._open_too_long)
            if not initial:
                self.emit("door.opened", "info", f"Door {self.name!r} opened")
        else:
            self.cancel_timer("too_long")
            if not initial:
                message = f"Door {self.name!r} closed after {open_s:g} s"
                self.emit("door.closed", "info", message, open_s=open_s)
        self.set_state(self.name, door)

    def _open_too_long(self) -> None:
        self._too_long = True
        open_s = round(self._clock.monotonic() - self._since, 3)
        self.emit(
            "door.open_too_long",
            "warning",
            f"Door {self.name!r} open for {open_s:g} s",
            open_s=open_s,
            limit_s=self._config.open_too_long_s,
        )

    def status(self) -> dict[str, Value | None]:
        return {"door": self._door, "since": self._since_ms, "open_too_long": self._too_long}
