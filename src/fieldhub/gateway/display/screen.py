"""The one object the gateway feeds: it keeps what the screen should say, and keeps saying it.

The gateway calls :meth:`Display.value`, :meth:`Display.presence`, :meth:`Display.hub`,
:meth:`Display.alarms` and :meth:`Display.message` from its event loop as things happen; they
only note the fact (when the template shows it) and wake the sinks, so feeding the display
never waits for a display.
:meth:`Display.run` keeps every sink showing the newest screen, each at its own pace (at most
``refresh_hz`` renders a second, a write only when its text changed); a sink that goes away is
retried by its :class:`~fieldhub.gateway.display.driver.SinkDriver` and never stops the
others or the gateway.
"""

from __future__ import annotations

import asyncio
import contextlib
import textwrap
import time
from collections.abc import Callable

from fieldhub.gateway.display.config import DisplayConfig, LcdSinkConfig, SinkConfig
from fieldhub.gateway.display.driver import Sink, SinkDriver, SinkStats
from fieldhub.gateway.display.lcd import I2cBus, LcdSink
from fieldhub.gateway.display.serial_sink import SerialSink
from fieldhub.gateway.display.template import Facts, Value, fit

__all__ = ["Display"]


class Display:
    """Status on every configured sink (see the module doc)."""

    def __init__(
        self, config: DisplayConfig, open_i2c: Callable[[int], I2cBus] | None = None
    ) -> None:
        """``open_i2c`` opens an I2C bus by number (``smbus2.SMBus`` unless given)."""
        self._config = config
        self._template = config.parsed_template()
        self._facts = Facts(values={}, presence={})
        self._message: list[str] = []
        self._message_until = 0.0
        self._drivers = [
            SinkDriver(_sink(sink_config, open_i2c), config.reconnect_max_s)
            for sink_config in config.sinks
        ]
        self._wake = [asyncio.Event() for _ in self._drivers]
        self._tasks: list[asyncio.Task[None]] = []
        self._closed = False

    def value(self, controller_id: str, key: str, value: Value) -> None:
        """A controller reported ``key``; shown where the template names it."""
        place = (controller_id, key)
        if place in self._template.value_keys and self._facts.values.get(place) != value:
            self._facts.values[place] = value
            self._changed()

    def presence(self, controller_id: str, state: str) -> None:
        """A controller's link is now ``state`` (``linked``, ``offline``, ``pairing``…)."""
        if (
            controller_id in self._template.controllers
            and self._facts.presence.get(controller_id) != state
        ):
            self._facts.presence[controller_id] = state
            self._changed()

    def hub(self, online: bool) -> None:
        """The gateway's connection to the hub is up (or lost)."""
        state = "online" if online else "offline"
        if self._facts.hub != state:
            self._facts.hub = state
            self._changed()

    def alarms(self, open_count: int, newest: str | None) -> None:
        """The hub's open alarms for this gateway: how many, and the newest one's title."""
        if (self._facts.open_alarms, self._facts.newest_alarm) != (open_count, newest):
            self._facts.open_alarms, self._facts.newest_alarm = open_count, newest
            self._changed()

    def message(self, text: str, seconds: float) -> None:
        """Show ``text`` instead of the template for ``seconds`` (a pairing PIN, say), words
        wrapped to each sink's width; a newer message replaces it, ``seconds <= 0`` ends it."""
        self._message = text.splitlines() if seconds > 0 else []
        self._message_until = time.monotonic() + max(seconds, 0.0)
        self._changed()

    def stats(self) -> dict[str, SinkStats]:
        """Each sink's writes, failures, outages and recoveries, by its name."""
        return {driver.sink.name: driver.stats for driver in self._drivers}

    async def run(self) -> None:
        """Keep every sink up to date until :meth:`aclose` (or until cancelled)."""
        self._tasks = [
            asyncio.create_task(self._drive(driver, wake), name=f"display {driver.sink.name}")
            for driver, wake in zip(self._drivers, self._wake, strict=True)
        ]
        try:
            await asyncio.gather(*self._tasks)
        except asyncio.CancelledError:
            if not self._closed:
                raise
        finally:
            await self.aclose()

    async def aclose(self) -> None:
        """Stop showing, and let go of every sink (after any write in flight)."""
        if self._closed:
            return
        self._closed = True
        for task in self._tasks:
            task.cancel()
        if self._tasks:
            await asyncio.wait(self._tasks)
        for driver in self._drivers:
            await driver.close()

    def _changed(self) -> None:
        for wake in self._wake:
            wake.set()

    async def _drive(self, driver: SinkDriver, wake: asyncio.Event) -> None:
        pause = 1.0 / self._config.refresh_hz
        redraw_s = self._config.redraw_s
        while True:
            wake.clear()
            started = time.monotonic()
            await driver.update(self._screen(driver.sink), redraw_s)
            wait = driver.due_in(redraw_s)
            if self._message:
                wait = min(wait, max(0.0, self._message_until - time.monotonic()))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(wake.wait(), wait)
            await asyncio.sleep(max(0.0, started + pause - time.monotonic()))

    def _screen(self, sink: Sink) -> list[str]:
        if self._message and time.monotonic() < self._message_until:
            wrapped = [
                row for line in self._message for row in (textwrap.wrap(line, sink.width) or [""])
            ]
            return fit(wrapped, sink.width, sink.rows)
        self._message = []
        return self._template.render(self._facts, sink.width, sink.rows)


def _sink(config: SinkConfig, open_i2c: Callable[[int], I2cBus] | None) -> Sink:
    if isinstance(config, LcdSinkConfig):
        return LcdSink(config) if open_i2c is None else LcdSink(config, open_i2c)
    return SerialSink(config)
