"""What every hardware unit is: a name, a life (start/stop), a status, its actions, its config.

A unit is a small class with one job (a door switch, a relay, a set of thermometers). It
observes hardware through injected drivers (:mod:`fieldhub.agent.units.drivers`) and tells a
:class:`~fieldhub.agent.reporting.Reporter` what it saw. It does not know about MQTT, the
outbox or the technician page; the agent composes those around it.

Threading: every unit's logic runs on the event loop thread. gpiozero calls back from its own
threads; those callbacks only hand over to the loop (:meth:`Unit.from_thread`), so a unit's
state is never touched by two threads at once. Blocking reads (1-Wire, SPI, sysfs) go through
``asyncio.to_thread``.

The helpers at the end are the policies the issue asks every sampling unit to share:
telemetry on an interval and on change beyond a deadband (:class:`TelemetryPolicy`), and
threshold events with hysteresis (:class:`Band`).
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Coroutine, Mapping
from dataclasses import dataclass, field
from typing import Annotated, Any, ClassVar, Literal

import msgspec

from fieldhub.agent.reporting import Reporter, Value
from fieldhub.agent.units.drivers import Clock
from fieldhub.protocol.actions import ArgDetails
from fieldhub.protocol.messages import Severity

__all__ = [
    "ActionHandler",
    "ActionResult",
    "ActionSpec",
    "Band",
    "Level",
    "Pin",
    "TelemetryPolicy",
    "Unit",
    "UnitConfigBase",
    "UnitConfigError",
    "UnitError",
    "UnitName",
    "UnitStartError",
]

log = logging.getLogger(__name__)

UNIT_NAME_PATTERN = r"^[a-z][a-z0-9_-]{0,31}$"
UnitName = Annotated[str, msgspec.Meta(pattern=UNIT_NAME_PATTERN)]
"""A unit's (or a sensor's) name: lower case, no dots. It is the prefix of the unit's state and
telemetry keys and of its action names (``socket.set``), so a dot would make them ambiguous."""

Pin = int | str
"""A GPIO pin as gpiozero names it: a BCM number (17) or a name ("GPIO17", "BOARD11")."""


class UnitError(Exception):
    """Root of the units' errors."""


class UnitConfigError(UnitError, ValueError):
    """Unit configs that are fine one by one but not together (duplicate names, a
    ``socket_check`` naming no socket). The message names the units."""


class UnitStartError(UnitError, RuntimeError):
    """A unit could not take its hardware (pin in use, no pin factory, no SPI); the message
    names the unit and the pin or device."""


class UnitConfigBase(
    msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True, tag_field="type"
):
    """Fields every unit config has; each unit's config subclasses it with its ``type`` tag.

    Frozen (config is validated at start and never changes after) and strict (an unknown field
    is a typo the owner wants to hear about, not something to ignore).
    """

    name: UnitName


ActionResult = Mapping[str, Value | Mapping[str, Any]] | None
"""What an action returns for the command's reply: a few values (and the arguments it
changed, ``protocol.actions.ADJUSTED_KEY``), or nothing."""

ActionHandler = Callable[..., Awaitable[ActionResult]]
"""An action's coroutine function, called with keyword arguments as its ``ActionSpec.args``
describes them."""


@dataclass(frozen=True, kw_only=True)
class ActionSpec:
    """A built-in action a unit offers (``socket.cycle``), for the agent's action registry.

    The spec is deliberately flat: every argument named in ``args`` is required unless
    ``details`` gives it a default, and its type is one of ``bool``, ``int``, ``float``,
    ``str``. The registry checks a command's arguments against ``args`` and the ranges in
    ``details`` (no missing, no extra, right types and within range; an ``int`` is accepted
    for a ``float``) and then awaits ``handler(**arguments)``. The handler checks what the
    catalog cannot say (choices) itself and raises ``ValueError`` with a message for the
    caller when one is wrong.

    Attributes:
        name: Action name, ``<unit name>.<verb>``.
        handler: Coroutine function doing it; returns values for the reply, or None.
        args: Argument name to type.
        details: Argument name to its default, range and unit, reported to the hub.
        duration_s: How long it takes, at least; the hub waits for its outcome that long and
            a margin (``hub/commands/check.py``).
        duration_arg: An argument in seconds that the action lasts at least as long as.
        description: One line for the technician page and the hub.
    """

    name: str
    handler: ActionHandler
    args: dict[str, type] = field(default_factory=dict)
    details: dict[str, ArgDetails] = field(default_factory=dict)
    duration_s: float = 0.0
    duration_arg: str | None = None
    description: str = ""


class Unit(abc.ABC):
    """Base of every hardware unit.

    Subclasses open their devices in :meth:`start` (calling ``super().start()`` first) and close
    them in :meth:`stop` (calling ``super().stop()`` first, which cancels the unit's timers and
    tasks so nothing runs against a closed device). State goes through :meth:`set_state`, which
    reports only changes; events through :meth:`emit`, which adds the unit's name.

    Args:
        name: The unit's name from its config.
        reporter: Where observations go.
        clock: Wall clock for timestamps, monotonic clock for intervals.
    """

    kind: ClassVar[str]
    """The config ``type`` tag of the unit (``door``); also the prefix of its event types."""

    def __init__(self, name: str, reporter: Reporter, clock: Clock) -> None:
        self._name = name
        self._reporter = reporter
        self._clock = clock
        self._state: dict[str, Value] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._timers: dict[str, asyncio.TimerHandle] = {}

    @property
    def name(self) -> str:
        """The unit's name from its config."""
        return self._name

    @property
    def state(self) -> Mapping[str, Value]:
        """Reported state of this unit as last reported (key to value)."""
        return dict(self._state)

    async def start(self) -> None:
        """Take the hardware and begin observing. Subclasses call this first."""
        self._loop = asyncio.get_running_loop()

    async def stop(self) -> None:
        """Cancel the unit's timers and background tasks and wait for them. Subclasses call
        this first, then close their devices."""
        for handle in self._timers.values():
            handle.cancel()
        self._timers.clear()
        tasks, self._tasks = self._tasks, set()
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task

    @abc.abstractmethod
    def status(self) -> dict[str, Value | None]:
        """What the technician page shows of this unit now (readings, mode, since when)."""

    def actions(self) -> Mapping[str, ActionSpec]:
        """Built-in actions of this unit, by name (see :class:`ActionSpec`); none by default."""
        return {}

    # -- helpers for subclasses ------------------------------------------------------------

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        """The loop the unit was started on."""
        if self._loop is None:
            raise UnitError(f"Unit {self._name!r} is not started.")
        return self._loop

    def from_thread(self, callback: Callable[[], None]) -> Callable[[], None]:
        """Wrap ``callback`` for gpiozero: called on any thread, it runs on the unit's loop.

        After the loop has closed (the agent is shutting down), late edges are dropped: there is
        nobody left to report them to.
        """
        loop = self.loop

        def hand_over() -> None:
            with contextlib.suppress(RuntimeError):  # loop closed
                loop.call_soon_threadsafe(callback)

        return hand_over

    def spawn(self, coro: Coroutine[Any, Any, None], what: str) -> None:
        """Run ``coro`` as a task owned by the unit: named, cancelled and awaited by stop(); a
        crash is logged with its traceback at once rather than found at shutdown."""
        task = self.loop.create_task(coro, name=f"unit:{self._name}:{what}")
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and (exc := task.exception()) is not None:
            log.error("Unit %r: %s stopped", self._name, task.get_name(), exc_info=exc)

    def call_later(self, key: str, delay: float, callback: Callable[[], None]) -> None:
        """(Re)arm the timer ``key``: a pending one of the same key is cancelled first, which is
        what debouncing and settle times need."""
        self.cancel_timer(key)

        def fire() -> None:
            self._timers.pop(key, None)
            callback()

        self._timers[key] = self.loop.call_later(delay, fire)

    def cancel_timer(self, key: str) -> None:
        """Cancel the timer ``key`` if it is pending."""
        handle = self._timers.pop(key, None)
        if handle is not None:
            handle.cancel()

    def set_state(self, key: str, value: Value) -> None:
        """Report ``value`` for the state ``key`` if it differs from the last one reported."""
        if self._state.get(key) != value:
            self._state[key] = value
            self._reporter.state({key: value})

    def emit(
        self,
        type: str,
        severity: Severity = "info",
        message: str = "",
        **data: Value | None,
    ) -> None:
        """Report an event of this unit; ``data`` gets the unit's name as ``unit``."""
        self._reporter.event(type, severity, message, {"unit": self._name, **data})

    def now_ms(self) -> int:
        """Wall-clock time in epoch milliseconds, for telemetry timestamps."""
        return int(self._clock.time() * 1000)


class TelemetryPolicy:
    """Which sampled values are worth sending: on change beyond a deadband, and at least every
    ``interval_s`` so the hub sees a live series even when nothing moves.

    A thermometer sampled every 10 s that sits at 21.3 °C then sends one value every
    ``interval_s`` instead of 360 an hour; a step of ``deadband`` or more goes out at once.
    Keyed per value, so each sensor of a unit keeps its own rhythm.

    Args:
        interval_s: Longest time between two reports of a key.
        deadband: Smallest change (absolute) reported before the interval is up; 0 reports
            every change.
    """

    def __init__(self, interval_s: float, deadband: float) -> None:
        self.interval_s = interval_s
        self.deadband = deadband
        self._last: dict[str, tuple[float, float]] = {}  # key: (value, monotonic time)

    def select(self, values: Mapping[str, float], now: float) -> dict[str, float]:
        """Return the values of ``values`` to report at monotonic time ``now``, and remember
        them as reported."""
        chosen: dict[str, float] = {}
        for key, value in values.items():
            last = self._last.get(key)
            if last is None or now - last[1] >= self.interval_s or self._moved(value, last[0]):
                chosen[key] = value
                self._last[key] = (value, now)
        return chosen

    def _moved(self, value: float, last: float) -> bool:
        return value != last and abs(value - last) >= self.deadband

    def forget(self, key: str) -> None:
        """Treat ``key`` as never reported: its next value goes out whatever it is (after a
        sensor was missing, say)."""
        self._last.pop(key, None)


Level = Literal["normal", "high", "low"]


@dataclass
class Band:
    """Where a value stands against its limits, with hysteresis so it does not chatter.

    The value goes ``high`` at or above ``high`` and back to ``normal`` only below
    ``high - hysteresis``; likewise ``low`` at or below ``low`` and back above
    ``low + hysteresis``. A limit of None is not checked.
    """

    high: float | None
    low: float | None
    hysteresis: float
    level: Level = "normal"

    def update(self, value: float) -> Level | None:
        """Feed a value; return the new level if it changed, else None."""
        new = self._classify(value)
        if new == self.level:
            return None
        self.level = new
        return new

    def _classify(self, value: float) -> Level:
        if self.high is not None and value >= self.high:
            return "high"
        if self.low is not None and value <= self.low:
            return "low"
        # Inside the limits, but not yet back by the hysteresis: stay where it was.
        if self.level == "high" and self.high is not None:
            return "high" if value >= self.high - self.hysteresis else "normal"
        if self.level == "low" and self.low is not None:
            return "low" if value <= self.low + self.hysteresis else "normal"
        return "normal"
