"""``socket_check``: does the socket really deliver what its relay was told?

A sense input (an optocoupler or a mains-detect module on the socket's output) says whether
there is power. After every change of the relay or the sense line the check waits
``settle_s`` (relays, power supplies and detectors take time) and then compares: commanded on
but no power is a blown fuse or a welded-open contact; commanded off but power a welded relay.
Either is a ``socket.fault`` event; when they agree again, ``socket.recovered``.
"""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec

from fieldhub.agent.reporting import Reporter, Value
from fieldhub.agent.units import _hw
from fieldhub.agent.units.base import Pin, Unit, UnitConfigBase, UnitName, UnitStartError
from fieldhub.agent.units.drivers import Drivers
from fieldhub.agent.units.relay import SocketUnit

__all__ = ["SocketCheckConfig", "SocketCheckUnit"]


class SocketCheckConfig(UnitConfigBase, frozen=True, tag="socket_check"):
    """A sense input watching a ``socket`` unit's output.

    Attributes:
        socket: Name of the ``socket`` unit it checks.
        pin: GPIO pin of the sense input.
        pull: Internal pull resistor (``up`` for an optocoupler that pulls to ground).
        powered_when: Line level while the socket has power.
        settle_s: Time after a change before the two must agree.
    """

    socket: UnitName
    pin: Pin
    pull: _hw.Pull = "up"
    powered_when: Literal["low", "high"] = "low"
    settle_s: Annotated[float, msgspec.Meta(ge=0, le=600)] = 2.0


class SocketCheckUnit(Unit):
    """Reports state ``<name>: ok|fault`` and the events ``socket.fault`` (critical: the
    equipment behind it is without power, or cannot be switched off) and ``socket.recovered``.
    """

    kind = "socket_check"

    def __init__(
        self,
        config: SocketCheckConfig,
        drivers: Drivers,
        reporter: Reporter,
        socket: SocketUnit,
    ) -> None:
        super().__init__(config.name, reporter, drivers.clock)
        self._config = config
        self._factory = drivers.pin_factory
        self._socket = socket
        self._sense: _hw.DigitalInput | None = None
        self._fault: bool | None = None  # None until the first comparison
        self._socket.add_listener(self._commanded_changed)

    @property
    def powered(self) -> bool | None:
        """Whether the sense input sees power now (None before start)."""
        if self._sense is None:
            return None
        return self._sense.high == (self._config.powered_when == "high")

    @property
    def fault(self) -> bool | None:
        """Whether the last comparison found a mismatch (None before the first)."""
        return self._fault

    async def start(self) -> None:
        await super().start()
        try:
            self._sense = _hw.DigitalInput(self._factory, self._config.pin, self._config.pull)
        except _hw.HardwareError as exc:
            raise UnitStartError(
                f"Socket check {self.name!r} on pin {self._config.pin}: {exc}"
            ) from exc
        self._sense.on_change(self.from_thread(self._arm))
        self._arm()

    async def stop(self) -> None:
        await super().stop()
        if self._sense is not None:
            self._sense.close()
            self._sense = None

    def _commanded_changed(self, on: bool) -> None:
        if self._sense is not None:
            self._arm()

    def _arm(self) -> None:
        if self._sense is None:
            return
        if self._config.settle_s == 0:
            self._compare()
        else:
            self.call_later("settle", self._config.settle_s, self._compare)

    def _compare(self) -> None:
        powered = self.powered
        if powered is None:
            return
        commanded = self._socket.commanded
        fault = powered != commanded
        if fault == self._fault:
            return
        first = self._fault is None
        self._fault = fault
        detail: dict[str, Value | None] = {
            "socket": self._socket.name,
            "commanded": "on" if commanded else "off",
            "sensed": "on" if powered else "off",
        }
        if fault:
            what = "has no power" if commanded else "has power although switched off"
            message = f"Socket {self._socket.name!r} {what}"
            self.emit("socket.fault", "critical", message, **detail)
        elif not first:
            message = f"Socket {self._socket.name!r} delivers what it was told again"
            self.emit("socket.recovered", "info", message, **detail)
        self.set_state(self.name, "fault" if fault else "ok")

    def status(self) -> dict[str, Value | None]:
        powered = self.powered
        return {
            "commanded": "on" if self._socket.commanded else "off",
            "sensed": None if powered is None else "on" if powered else "off",
            "fault": self._fault,
        }
