"""``socket``: a relay that switches an output socket, or a lock.

As a socket (``role: socket``) it switches on and off and power-cycles the equipment behind it
(the ATM's modem, say). Power supplies and compressors do not like being switched back on at
once, so after every switch-off the relay stays off for at least ``min_off_s``: a command to
switch on waits for the rest of that time (and says so in its result). That holds across an
agent restart too: a relay that starts off counts as just switched off. A power cycle asked
shorter than that is lengthened, and its result says so (``adjusted``), never silently.

The actions declare how long they take (the minimum off time; a cycle's ``off_s``) and the
range, default and unit of ``off_s``, so the hub waits long enough for their outcome and
refuses an ``off_s`` out of range before it sends the command.

As a lock (``role: lock``) the same relay drives a door strike or magnet; its actions are
``<name>.lock`` and ``<name>.unlock`` and its state ``locked``/``unlocked``. Which relay
position locks depends on the hardware (``locked_when``); a lock always starts locked.

Commands on one relay run one at a time, in order: a ``set`` that arrives during a power
cycle waits for the cycle to finish.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from typing import Annotated, Any, Literal

import msgspec

from fieldhub.agent.reporting import Reporter, Value
from fieldhub.agent.units import _hw
from fieldhub.agent.units.base import ActionSpec, Pin, Unit, UnitConfigBase, UnitStartError
from fieldhub.agent.units.drivers import Drivers
from fieldhub.protocol.actions import ADJUSTED_KEY, ArgDetails, adjusted

__all__ = ["MAX_CYCLE_OFF_S", "MIN_CYCLE_OFF_S", "SWITCH_S", "SocketConfig", "SocketUnit"]

MAX_CYCLE_OFF_S = 3600.0
"""Longest off time of a power cycle; longer is switching off, which ``set`` is for."""
MIN_CYCLE_OFF_S = 0.1
"""Shortest: below it a relay module may not even have released."""
SWITCH_S = 0.1
"""How long a relay (or a door strike behind it) takes to move, declared as the duration of
the actions that only switch."""

OnOff = Literal["on", "off"]


class SocketConfig(UnitConfigBase, frozen=True, tag="socket"):
    """A relay on a GPIO pin.

    Attributes:
        pin: GPIO pin driving the relay (module).
        active_high: False for the common relay modules that switch on at low level.
        role: ``socket`` (on/off/cycle) or ``lock`` (lock/unlock).
        initial: Relay position at start for a socket; a lock starts locked.
        locked_when: For a lock: the relay position that locks (``off`` for a fail-secure
            strike, ``on`` for a magnet that holds while powered).
        min_off_s: Shortest time a socket stays off before it may be switched on again.
    """

    pin: Pin
    active_high: bool = True
    role: Literal["socket", "lock"] = "socket"
    initial: OnOff = "off"
    locked_when: OnOff = "off"
    min_off_s: Annotated[float, msgspec.Meta(ge=0, le=MAX_CYCLE_OFF_S)] = 5.0


class SocketUnit(Unit):
    """Switches a relay; reports state ``<name>: on|off`` (or ``locked|unlocked``).

    Other units (``socket_check``) follow what it was told through :meth:`add_listener`.
    """

    kind = "socket"

    def __init__(self, config: SocketConfig, drivers: Drivers, reporter: Reporter) -> None:
        super().__init__(config.name, reporter, drivers.clock)
        self._config = config
        self._factory = drivers.pin_factory
        self._relay: _hw.DigitalOutput | None = None
        self._lock = asyncio.Lock()
        self._on = False
        self._off_since: float | None = None  # monotonic, while off
        self._listeners: list[Callable[[bool], None]] = []
        self._since_ms = 0

    @property
    def role(self) -> Literal["socket", "lock"]:
        """``socket`` or ``lock``."""
        return self._config.role

    @property
    def commanded(self) -> bool:
        """Whether the relay was last told to be on (energized)."""
        return self._on

    def add_listener(self, listener: Callable[[bool], None]) -> None:
        """Call ``listener(on)`` on the loop after every change of the relay position."""
        self._listeners.append(listener)

    async def start(self) -> None:
        await super().start()
        cfg = self._config
        on = cfg.initial == "on" if cfg.role == "socket" else cfg.locked_when == "on"
        try:
            self._relay = _hw.DigitalOutput(
                self._factory, cfg.pin, active_high=cfg.active_high, initial=on
            )
        except _hw.HardwareError as exc:
            raise UnitStartError(f"Relay {self.name!r} on pin {cfg.pin}: {exc}") from exc
        self._on = on
        self._off_since = None if on else self._clock.monotonic()
        self._since_ms = self.now_ms()
        self.set_state(self.name, self._state_value(on))

    async def stop(self) -> None:
        await super().stop()
        if self._relay is not None:
            self._relay.close()
            self._relay = None

    def _state_value(self, on: bool) -> str:
        if self._config.role == "lock":
            return "locked" if on == (self._config.locked_when == "on") else "unlocked"
        return "on" if on else "off"

    def _switch(self, on: bool) -> None:
        if self._relay is None:
            raise UnitStartError(f"Relay {self.name!r} is not started")
        if on == self.commanded:
            return
        self._relay.set(on)
        self._on = on
        self._off_since = None if on else self._clock.monotonic()
        self._since_ms = self.now_ms()
        self.set_state(self.name, self._state_value(on))
        for listener in self._listeners:
            listener(on)

    async def _wait_min_off(self) -> float:
        """Sleep until the relay has been off for ``min_off_s``; return how long that took."""
        if self._off_since is None or self._config.role == "lock":
            return 0.0
        remaining = self._config.min_off_s - (self._clock.monotonic() - self._off_since)
        if remaining <= 0:
            return 0.0
        await asyncio.sleep(remaining)
        return remaining

    async def set(self, on: bool) -> Mapping[str, Value]:
        """Switch the relay on or off; switching on waits out the minimum off time."""
        async with self._lock:
            waited = await self._wait_min_off() if on else 0.0
            self._switch(on)
        return {"state": self._state_value(on), "waited_s": round(waited, 3)}

    async def cycle(self, off_s: float) -> Mapping[str, Any]:
        """Power-cycle: off for ``off_s`` (at least ``min_off_s``: a shorter one is lengthened
        and the result's ``adjusted`` says so), then on, whatever the socket was before.
        Cancelled half-way (the command timed out, the agent stops), the socket stays off: give
        the command a timeout longer than ``off_s``. The range of ``off_s`` is checked by the
        registry (the action's details), before this runs."""
        async with self._lock:
            self._switch(False)
            await asyncio.sleep(off_s)
            waited = await self._wait_min_off()
            self._switch(True)
        if waited <= 0:
            return {"state": "on", "off_s": round(off_s, 3)}
        used = round(max(off_s + waited, self._config.min_off_s), 3)  # slept at least that
        why = f"the socket stays off at least {self._config.min_off_s:g} s (min_off_s)"
        return {"state": "on", "off_s": used, ADJUSTED_KEY: {"off_s": adjusted(off_s, used, why)}}

    async def _set_action(self, on: bool) -> Mapping[str, Value]:
        return await self.set(on)

    async def _lock_action(self) -> Mapping[str, Value]:
        return await self.set(self._config.locked_when == "on")

    async def _unlock_action(self) -> Mapping[str, Value]:
        return await self.set(self._config.locked_when != "on")

    def actions(self) -> Mapping[str, ActionSpec]:
        n = self.name
        min_off_s = self._config.min_off_s
        if self._config.role == "lock":
            specs = [
                ActionSpec(
                    name=f"{n}.lock",
                    handler=self._lock_action,
                    duration_s=SWITCH_S,
                    description="Lock.",
                ),
                ActionSpec(
                    name=f"{n}.unlock",
                    handler=self._unlock_action,
                    duration_s=SWITCH_S,
                    description="Unlock.",
                ),
            ]
        else:
            off_s = ArgDetails(
                default=max(min_off_s, MIN_CYCLE_OFF_S),
                min=MIN_CYCLE_OFF_S,
                max=MAX_CYCLE_OFF_S,
                unit="s",
            )
            specs = [
                ActionSpec(
                    name=f"{n}.set",
                    handler=self._set_action,
                    args={"on": bool},
                    duration_s=max(min_off_s, SWITCH_S),
                    description=f"Switch the socket on or off (on waits until it has been "
                    f"off {min_off_s:g} s).",
                ),
                ActionSpec(
                    name=f"{n}.cycle",
                    handler=self.cycle,
                    args={"off_s": float},
                    details={"off_s": off_s},
                    duration_s=max(min_off_s, MIN_CYCLE_OFF_S),
                    duration_arg="off_s",
                    description=f"Power-cycle: off for off_s seconds (at least {min_off_s:g}), "
                    "then on.",
                ),
            ]
        return {spec.name: spec for spec in specs}

    def status(self) -> dict[str, Value | None]:
        on = self.commanded
        return {
            "state": self._state_value(on),
            "relay": "on" if on else "off",
            "since": self._since_ms,
            "busy": self._lock.locked(),
        }
