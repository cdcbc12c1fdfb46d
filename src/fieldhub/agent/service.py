"""The agent process, wired: config → outbox → uplink → units → actions → commands → page.

Start order follows what must be safe first: the outbox opens before any unit can report, the
uplink connects in the background (an agent that boots without network keeps storing), units
start once reports have somewhere to go, and the command handler is attached only when every
action it could be asked for is registered. Stop runs the same way backwards, so the last
reports of stopping units still reach the outbox.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping, Sequence
from contextlib import AsyncExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from fieldhub.agent.actions import ActionInfo, ActionOutcome, ActionRegistry
from fieldhub.agent.commands import CommandHandler
from fieldhub.agent.config import AgentConfig
from fieldhub.agent.eventlog import LoggedEvent, RecentEvents
from fieldhub.agent.outbox import Outbox, OutboxReporter
from fieldhub.agent.reporting import Reporter, Value
from fieldhub.agent.systemd import notify, pet_watchdog, watchdog_interval_s
from fieldhub.agent.units import Drivers, LedUnit, Unit, build_units
from fieldhub.agent.units.simulate import Simulation
from fieldhub.agent.uplink import Uplink
from fieldhub.agent.web import TechnicianPage, parse_listen
from fieldhub.agent.web.view import UnitView
from fieldhub.protocol.messages import Severity

log = logging.getLogger(__name__)

MQTT_PORT = 1883
BACKLOG_DEGRADED = 1000  # reports waiting for the hub beyond which the status LED says so


class AgentStartError(RuntimeError):
    """The agent cannot start; the text says what failed and what to change."""


class _TeeReporter:
    """Reports go to the outbox; events also to the page's recent-event list."""

    def __init__(self, outbox: Reporter, events: RecentEvents) -> None:
        self._outbox = outbox
        self._events = events

    def telemetry(self, values: Mapping[str, Value], ts: int | None = None) -> None:
        self._outbox.telemetry(values, ts)

    def event(
        self,
        type: str,
        severity: Severity = "info",
        message: str = "",
        data: Mapping[str, Any] | None = None,
    ) -> None:
        self._events.record(type, severity, message, data)
        self._outbox.event(type, severity, message, data)

    def state(self, changes: Mapping[str, Value | None]) -> None:
        self._outbox.state(changes)


@dataclass
class _View:
    """What the technician page shows, read from the running agent."""

    agent: Agent

    @property
    def device_id(self) -> str:
        return self.agent.config.device.id

    def units(self) -> Sequence[UnitView]:
        return [UnitView(u.name, u.kind, u.status()) for u in self.agent.units]

    def uplink_stats(self) -> Mapping[str, object]:
        return self.agent.status()

    def recent_events(self, limit: int) -> Sequence[LoggedEvent]:
        return self.agent.events.newest(limit)

    def actions(self) -> Sequence[ActionInfo]:
        return [a for a in self.agent.registry.describe() if a.kind == "builtin"]

    async def run_action(self, name: str, args: Mapping[str, Any]) -> ActionOutcome:
        return await self.agent.registry.run(self.agent.registry.bind(name, args))


class Agent:
    """One running agent. Use ``async with Agent(...)``; ``run_until(stop)`` to serve.

    Args:
        config: the checked ``agent.yaml``.
        secret: the device's MQTT secret (read by the caller from the file or the config).
        simulate: made-up hardware with plausible physics instead of the Pi's (demo, tests).
        drivers: the hardware to use instead of the Pi's own (tests inject mock pins).
    """

    def __init__(
        self,
        config: AgentConfig,
        secret: str,
        *,
        simulate: bool = False,
        drivers: Drivers | None = None,
    ) -> None:
        self.config = config
        self._secret = secret
        self._simulate = simulate
        self._drivers = drivers
        self.events = RecentEvents()
        self.registry = ActionRegistry()
        self.units: list[Unit] = []
        self.outbox: Outbox | None = None
        self.uplink: Uplink | None = None
        self.commands: CommandHandler | None = None
        self.page: TechnicianPage | None = None
        self._stack = AsyncExitStack()
        self._background: list[asyncio.Task[None]] = []

    async def __aenter__(self) -> Agent:
        try:
            await self._start()
        except BaseException:
            await self._stack.aclose()
            raise
        return self

    async def __aexit__(self, *exc: object) -> None:
        notify("STOPPING=1")
        await self._stack.aclose()

    async def _start(self) -> None:
        config = self.config
        data_dir = config.data_dir
        data_dir.mkdir(parents=True, exist_ok=True)
        self.outbox = await self._stack.enter_async_context(
            Outbox(data_dir / "outbox.db", max_messages=config.outbox.max_messages)
        )
        broker = urlsplit(config.hub.broker)
        self.uplink = await self._stack.enter_async_context(
            Uplink(
                self.outbox,
                device_id=config.device.id,
                host=broker.hostname or "localhost",
                port=broker.port or MQTT_PORT,
                username=config.hub.username,
                password=self._secret,
            )
        )
        reporter = _TeeReporter(OutboxReporter(self.outbox), self.events)
        drivers = self._drivers
        simulation: Simulation | None = None
        if drivers is None and self._simulate:
            simulation = Simulation(config.units, data_dir / "simulated-hardware")
            drivers = simulation.drivers
        elif drivers is None:
            drivers = Drivers.hardware()
        self.units = build_units(config.units, drivers, reporter)
        for unit in self.units:
            await unit.start()
            self._stack.push_async_callback(unit.stop)
        for unit in self.units:
            for spec in unit.actions().values():
                self.registry.add_builtin(spec)
        for action in config.actions:
            self.registry.add_site(action)
        self.commands = await self._stack.enter_async_context(
            CommandHandler(self.registry, data_dir / "commands.db", self.uplink.publish_reply)
        )
        self.uplink.on_command(self.commands.on_command)
        if config.web.enabled and config.web.password_hash:
            host, port = parse_listen(config.web.listen)
            try:
                self.page = await self._stack.enter_async_context(
                    TechnicianPage(_View(self), config.web.password_hash, host=host, port=port)
                )
            except OSError as exc:
                raise AgentStartError(
                    f"the technician page cannot listen on {config.web.listen}: {exc.strerror}"
                    " (change web.listen, or stop what uses the port)"
                ) from None
        elif config.web.enabled:
            log.warning("technician page off: set web.password_hash (fieldhub agent hash-password)")
        if simulation is not None:
            self._spawn(simulation.run(), "simulation")
        self._spawn(self._show_health(), "status-led")
        interval = watchdog_interval_s()
        if interval is not None:
            self._spawn(pet_watchdog(interval), "systemd-watchdog")
        self._stack.push_async_callback(self._stop_background)
        notify("READY=1")
        log.info(
            "agent %s started: %d units, %d actions, hub %s",
            config.device.id,
            len(self.units),
            len(self.registry.describe()),
            self.uplink.address,
        )

    def health(self) -> str:
        """``offline`` (no hub), ``degraded`` (connected, but a backlog), or ``ok``."""
        if self.uplink is None or not self.uplink.connected:
            return "offline"
        if self.outbox is not None and self.outbox.stats.depth > BACKLOG_DEGRADED:
            return "degraded"
        return "ok"

    async def _show_health(self) -> None:
        """Status LEDs follow the agent's health with the LED's ``ok``, ``degraded`` and
        ``offline`` patterns (built in; a config's ``patterns:`` may redefine them)."""
        leds = [u for u in self.units if isinstance(u, LedUnit)]
        shown = ""
        while leds:
            health = self.health()
            if health != shown:
                for led in leds:
                    led.show(health)
                shown = health
            await asyncio.sleep(1.0)

    def _spawn(self, work: Any, name: str) -> None:
        self._background.append(asyncio.create_task(work, name=name))

    async def _stop_background(self) -> None:
        for task in self._background:
            task.cancel()
        await asyncio.gather(*self._background, return_exceptions=True)

    def status(self) -> dict[str, object]:
        """Connection, outbox and command figures (technician page, logs)."""
        figures: dict[str, object] = {}
        if self.uplink is not None:
            figures.update(self.uplink.snapshot())
        if self.commands is not None:
            figures["commands"] = self.commands.stats
        return figures


async def run_agent(config: AgentConfig, config_path: Path, *, simulate: bool = False) -> None:
    """Run until cancelled (SIGTERM/SIGINT end the surrounding ``asyncio.run``)."""
    secret = config.hub.read_secret(config_path)
    async with Agent(config, secret, simulate=simulate):
        await asyncio.Event().wait()
