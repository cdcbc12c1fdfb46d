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
from collections.abc import Callable, Mapping, Sequence
from contextlib import AsyncExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fieldhub.agent import bundles as bundle_parts
from fieldhub.agent import media as media_parts
from fieldhub.agent._tasks import log_if_failed
from fieldhub.agent.actions import (
    ActionDefinitionError,
    ActionInfo,
    ActionOutcome,
    ActionRegistry,
)
from fieldhub.agent.claim import (
    Claimer,
    ClaimError,
    ClaimSettings,
    DeviceCredentials,
    stored_credentials,
)
from fieldhub.agent.commands import CommandHandler
from fieldhub.agent.config import AgentConfig, ConfigError, HubSection
from fieldhub.agent.eventlog import LoggedEvent, RecentEvents
from fieldhub.agent.outbox import Outbox, OutboxReporter
from fieldhub.agent.reporting import Reporter, StateValue, Value
from fieldhub.agent.twin import TWIN_FILE, Twin
from fieldhub.agent.units import CameraConfig, Drivers, LedUnit, Unit, UnitError, build_units
from fieldhub.agent.uplink import Uplink
from fieldhub.agent.web import TechnicianPage, parse_listen
from fieldhub.agent.web.view import UnitView
from fieldhub.mqtt.address import broker_address
from fieldhub.private_files import private_dir
from fieldhub.protocol import MediaRef, Reply
from fieldhub.protocol.actions import ACTION_CATALOG_KEY, ACTION_DETAILS_KEY
from fieldhub.protocol.messages import Severity
from fieldhub.systemd import notify, pet_watchdog, watchdog_interval_s

if TYPE_CHECKING:
    import ssl  # loads OpenSSL: a plain-TCP agent does without (fieldhub.cli.plain)

    # Imported when configured or asked for: docs/agent.md, "Memory".
    from fieldhub.agent.bundles.host import BundleHost
    from fieldhub.agent.media.spool import MediaSpool
    from fieldhub.agent.media.uploader import Uploader
    from fieldhub.agent.units.simulate import Simulation

log = logging.getLogger(__name__)

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
        *,
        media: Sequence[MediaRef] = (),
        ts: int | None = None,
    ) -> None:
        self._events.record(type, severity, message, data)
        self._outbox.event(type, severity, message, data, media=media, ts=ts)

    def state(self, changes: Mapping[str, StateValue]) -> None:
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
    """One running agent. Use ``async with Agent(...)``, then ``await agent.serve()``.

    Args:
        config: the checked ``agent.yaml``.
        secret: the device's MQTT secret (read by the caller from the file or the config);
            None when the device claims its credentials (``hub.claim``).
        simulate: made-up hardware with plausible physics instead of the Pi's (demo, tests).
        drivers: the hardware to use instead of the Pi's own (tests inject mock pins).
        claim_settings: how often to poll a claim (tests poll faster).
        bundles: the installed bundles' actions, ``bundle.install`` and the trial of a new
            version (``agent/bundles/host.py``); none without it.
    """

    def __init__(
        self,
        config: AgentConfig,
        secret: str | None,
        *,
        simulate: bool = False,
        drivers: Drivers | None = None,
        claim_settings: ClaimSettings | None = None,
        bundles: BundleHost | None = None,
    ) -> None:
        self.config = config
        self._bundles = bundles
        self._secret = secret
        self._claim_settings = claim_settings
        self._claimer: Claimer | None = None
        self._started = asyncio.Event()
        self._failed = asyncio.Event()
        self._failure: AgentStartError | None = None
        self._simulate = simulate
        self._drivers = drivers
        self.events = RecentEvents()
        self.registry = ActionRegistry()
        self.units: list[Unit] = []
        self.outbox: Outbox | None = None
        self.uplink: Uplink | None = None
        self._tls: ssl.SSLContext | None = None
        self.commands: CommandHandler | None = None
        self.twin: Twin | None = None
        self.spool: MediaSpool | None = None
        self.uploader: Uploader | None = None
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

    async def _start_page(self) -> None:
        """The technician page, when it is on and has a password."""
        web = self.config.web
        if web.enabled and web.password_hash:
            host, port = parse_listen(web.listen)
            try:
                self.page = await self._stack.enter_async_context(
                    TechnicianPage(_View(self), web.password_hash, host=host, port=port)
                )
            except OSError as exc:
                raise AgentStartError(
                    f"the technician page cannot listen on {web.listen}: {exc.strerror}"
                    " (change web.listen, or stop what uses the port)"
                ) from None
        elif web.enabled:
            log.warning("technician page off: set web.password_hash (fieldhub agent hash-password)")

    async def _start(self) -> None:
        config = self.config
        data_dir = config.data_dir
        private_dir(data_dir)  # outbox, command memory, credentials: the agent's user's alone
        self.outbox = await self._stack.enter_async_context(
            Outbox(data_dir / "outbox.db", max_messages=config.outbox.max_messages)
        )
        await self._start_media(self.outbox)
        await self._start_uplink(self.outbox)
        # Listening before the first connection: the retained desired state comes right after.
        self.twin = Twin(data_dir / TWIN_FILE)
        if self.uplink is not None:  # else once a claim delivered (``_attach_uplink``)
            self.uplink.on_desired(self.twin.on_desired)
        reporter = _TeeReporter(OutboxReporter(self.outbox), self.events)
        drivers = self._drivers
        simulation: Simulation | None = None
        if drivers is None and self._simulate:
            from fieldhub.agent.units.simulate import Simulation  # never on a Pi

            simulation = Simulation(
                config.units, data_dir / "simulated-hardware", label=config.device.id
            )
            drivers = simulation.drivers
        elif drivers is None:
            drivers = Drivers.hardware()
        self.units = build_units(config.units, drivers, reporter, self.spool)
        for unit in self.units:
            await unit.start()
            self._stack.push_async_callback(unit.stop)
        self._register_actions()
        # The hub checks commands against this list before it queues one (wrong ones: 422).
        # The details (durations, defaults, ranges) under a key of their own: an older hub
        # reads the catalog's shape it knows and ignores them (protocol/actions.py).
        described = self.registry.describe()
        reporter.state(
            {
                ACTION_CATALOG_KEY: {a.name: dict(a.args) for a in described},
                ACTION_DETAILS_KEY: {a.name: dict(a.details) for a in described if a.details},
            }
        )
        self.commands = await self._stack.enter_async_context(
            CommandHandler(self.registry, data_dir / "commands.db", self._publish_reply)
        )
        if self.uplink is not None:
            self._attach_uplink(self.uplink)
        await self._stack.enter_async_context(
            self.twin.applying(self.registry, self.units, reporter)
        )
        await self._start_page()
        if simulation is not None:
            self._spawn(simulation.run(), "simulation")
        self._spawn(self._show_health(), "status-led")
        if self.uploader is not None:
            self._spawn(self.uploader.run(), "media-uploader")
        interval = watchdog_interval_s()
        if interval is not None:
            self._spawn(pet_watchdog(interval), "systemd-watchdog")
        self._stack.push_async_callback(self._stop_background)
        if self._bundles is not None:
            self._bundles.attach(reporter, self.registry, self._connected, self._spawn)
            self._stack.callback(self._bundles.detach)
        else:
            reporter.state({bundle_parts.SOFTWARE_KEY: bundle_parts.software_state({})})
        self._started.set()
        notify("READY=1")
        log.info(
            "agent %s started: %d units, %d actions, hub %s",
            config.device.id,
            len(self.units),
            len(self.registry.describe()),
            self.uplink.address if self.uplink is not None else f"{config.hub.broker} (claiming)",
        )

    async def _start_media(self, outbox: Outbox) -> None:
        """The media spool and its uploader, when a camera fills it or it still holds
        pictures for the hub; a plain agent does without both (``agent/media/__init__.py``)."""
        config = self.config
        folder = config.data_dir / "media"
        camera = any(isinstance(unit, CameraConfig) for unit in config.units)
        if not await asyncio.to_thread(media_parts.in_use, folder, camera):
            return
        from fieldhub.agent.media.spool import MediaSpool
        from fieldhub.agent.media.uploader import Uploader, UploaderSettings

        self.spool = MediaSpool(folder, int(config.media.max_mb * 2**20))
        await self.spool.open()
        self.uploader = Uploader(
            self.spool,
            outbox,
            tls=self._upload_tls,
            settings=UploaderSettings(chunks=config.media.upload == "mqtt"),
        )

    def _register_actions(self) -> None:
        """The units' built-ins, the site actions of agent.yaml, and those of bundles."""
        for unit in self.units:
            for spec in unit.actions().values():
                self.registry.add_builtin(spec)
        for action in self.config.actions:
            self.registry.add_site(action)
        if self._bundles is not None:
            for spec in self._bundles.builtin_actions():
                self.registry.add_builtin(spec)
            for action in self._bundles.site_actions():
                self.registry.add_site(action)

    async def _start_uplink(self, outbox: Outbox) -> None:
        """Connect with the configured credentials, or with those a claim delivered on an
        earlier start; else claim them in the background (``hub.claim``): the units run and
        report into the outbox meanwhile, and the uplink drains it once the claim delivers.
        The claim is cancelled here in the stop order, where the uplink would be closed."""
        hub, device_id, data_dir = self.config.hub, self.config.device.id, self.config.data_dir
        self._tls = _broker_tls(hub)
        if hub.username is not None and self._secret is not None:
            credentials = DeviceCredentials(hub.username, self._secret, device_id)
        elif hub.claim is None:
            raise AgentStartError("hub: give username and a secret, or claim (see agent.yaml)")
        else:
            try:
                stored = await asyncio.to_thread(stored_credentials, data_dir, device_id)
            except ClaimError as exc:
                raise AgentStartError(str(exc)) from None
            if stored is None:
                self._claimer = Claimer(hub.claim, device_id, data_dir, self._claim_settings)
                claiming = asyncio.create_task(
                    self._claim_then_connect(self._claimer, outbox), name="claim"
                )
                claiming.add_done_callback(log_if_failed)
                self._stack.push_async_callback(_cancel, claiming)
                return
            credentials = stored
        self.uplink = await self._stack.enter_async_context(self._new_uplink(outbox, credentials))

    def _new_uplink(self, outbox: Outbox, credentials: DeviceCredentials) -> Uplink:
        broker = broker_address(self.config.hub.broker)
        return Uplink(
            outbox,
            device_id=self.config.device.id,
            host=broker.host,
            port=broker.port,
            websocket_path=broker.websocket_path,
            username=credentials.username,
            password=credentials.secret,
            tls=self._tls,
        )

    def _attach_uplink(self, uplink: Uplink) -> None:
        """Route what the hub sends to the rest of the agent: at start, or once a claim has
        delivered the credentials (then the agent connects without a restart)."""
        if self.commands is not None:
            uplink.on_command(self.commands.on_command)
        if self.twin is not None:
            uplink.on_desired(self.twin.on_desired)
        if self.uploader is not None:
            self.uploader.attach(uplink)

    def _upload_tls(self) -> ssl.SSLContext:
        """The context for ``https`` upload URLs, made at the first one (docs/agent-media.md)."""
        from fieldhub.mqtt.tls import broker_context  # ssl: only for TLS uploads

        media, hub = self.config.media, self.config.hub
        return broker_context(
            ca_file=media.ca_file or hub.ca_file, pin_sha256=media.pin_sha256 or hub.pin_sha256
        )

    def _publish_reply(self, instance: str, reply: Reply) -> None:
        # Commands arrive only through the uplink, so there is one to answer through.
        if self.uplink is not None:
            self.uplink.publish_reply(instance, reply)

    async def _claim_then_connect(self, claimer: Claimer, outbox: Outbox) -> None:
        """Claim the credentials, then keep the uplink for the rest of the agent's life."""
        try:
            credentials = await claimer.credentials()
        except ClaimError as exc:
            log.error("%s", exc)
            self._failure = AgentStartError(str(exc))
            self._failed.set()
            return
        await self._started.wait()
        async with self._new_uplink(outbox, credentials) as uplink:
            self.uplink = uplink
            self._attach_uplink(uplink)
            log.info("agent %s connects to %s", self.config.device.id, uplink.address)
            await asyncio.Event().wait()

    async def serve(self) -> bool:
        """Run until cancelled, or until the agent cannot go on; True when a bundle was
        installed or rolled back and the agent must start again to run it.

        Raises:
            AgentStartError: the hub will not provision this device (claim token refused,
                claim rejected, credentials delivered before and lost).
        """
        waits: list[asyncio.Task[Any]] = [asyncio.create_task(self._failed.wait())]
        if self._bundles is not None:
            waits.append(asyncio.create_task(self._bundles.restart_requested()))
        try:
            await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for wait in waits:
                wait.cancel()
        if self._failure is not None:
            raise self._failure
        return not self._failed.is_set()

    def _connected(self) -> bool:
        return self.uplink is not None and self.uplink.connected

    def health(self) -> str:
        """``offline`` (no hub), ``degraded`` (connected, but a backlog; or a claim waits for
        approval), or ``ok``."""
        if self.uplink is None and self._claimer is not None and self._claimer.waiting:
            return "degraded"
        if self.uplink is None or not self.uplink.connected:
            return "offline"
        if self.outbox is not None and self.outbox.stats.depth > BACKLOG_DEGRADED:
            return "degraded"
        return "ok"

    async def _show_health(self) -> None:
        """Status LEDs follow the agent's health with the LED's ``ok``, ``degraded`` and
        ``offline`` patterns (built in; a config's ``patterns:`` may redefine them)."""
        leds = [u for u in self.units if isinstance(u, LedUnit)]
        shown: dict[str, tuple[str, int]] = {}  # by LED: health shown, twin's releases then
        while leds:
            now = (self.health(), self.twin.releases if self.twin is not None else 0)
            for led in leds:
                if self.twin is not None and self.twin.holds(led.name):
                    continue  # the desired state sets it
                if shown.get(led.name) != now:
                    led.show(now[0])
                    shown[led.name] = now
            await asyncio.sleep(1.0)

    def _spawn(self, work: Any, name: str) -> None:
        task = asyncio.create_task(work, name=name)
        task.add_done_callback(log_if_failed)
        self._background.append(task)

    async def _stop_background(self) -> None:
        for task in self._background:
            task.cancel()
        await asyncio.gather(*self._background, return_exceptions=True)

    def status(self) -> dict[str, object]:
        """Connection, outbox, command and twin figures (technician page, logs)."""
        figures: dict[str, object] = {}
        if self.uplink is None and self._claimer is not None:
            doing = "waiting for approval" if self._claimer.waiting else "claiming credentials"
            figures["hub"] = f"{doing} at {self._claimer.hub}"
        if self.uplink is not None:
            figures.update(self.uplink.snapshot())
        if self.commands is not None:
            figures["commands"] = self.commands.stats
        if self.twin is not None:
            figures["twin"] = self.twin.stats
        if self._bundles is not None:
            figures["bundles"] = dict(self._bundles.stats)
        if self.spool is not None and self.uploader is not None:
            figures["media"] = {"spool": self.spool.stats, "uploads": self.uploader.stats}
        return figures


def _broker_tls(hub: HubSection) -> ssl.SSLContext | None:
    """The TLS context of an ``mqtts://`` broker, None for ``mqtt://``; made once at start, so
    that a CA or CRL file that does not load stops the agent with its name.

    Raises:
        AgentStartError: ``hub.ca_file`` or ``hub.crl_file`` cannot be loaded.
    """
    if not broker_address(hub.broker).tls:
        return None
    from fieldhub.mqtt.tls import TlsSetupError, broker_context  # ssl: only for TLS agents

    try:
        return broker_context(
            ca_file=hub.ca_file,
            pin_sha256=hub.pin_sha256,
            crl_file=hub.crl_file,
            client_cert=hub.client_cert,
            client_key=hub.client_key,
        )
    except TlsSetupError as exc:
        raise AgentStartError(f"hub: {exc}") from None


async def _cancel(task: asyncio.Task[None]) -> None:
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


async def run_agent(config: AgentConfig, config_path: Path, *, simulate: bool = False) -> None:
    """Run until cancelled (SIGTERM/SIGINT end the surrounding ``asyncio.run``)."""
    await run_with_bundles(
        config, lambda running: running.hub.read_secret(config_path), simulate=simulate
    )


async def run_with_bundles(
    config: AgentConfig, secret: Callable[[AgentConfig], str | None], **options: Any
) -> None:
    """Run an agent until cancelled, starting it again whenever a bundle changes what it runs.

    First an install a crash interrupted is finished or undone; then the agent runs, and
    starts again in this process after each install or rollback. A new version that cannot
    start is rolled back and the old one started (docs/bundles.md). An agent that uses no
    bundles (``agent/bundles/__init__.py``) runs once, without the bundle host.

    Args:
        config: the base ``agent.yaml`` (a bundle may bring another).
        secret: the MQTT secret for the configuration in force.
        options: for :class:`Agent` (``simulate``, ``drivers``, ...).
    """
    bundles: BundleHost | None = None
    if await asyncio.to_thread(bundle_parts.in_use, config):
        from fieldhub.agent.bundles.host import BundleHost

        bundles = BundleHost(config)
        await asyncio.to_thread(bundles.recover)
    while True:
        try:
            running = config if bundles is None else bundles.config()
            async with Agent(running, secret(running), bundles=bundles, **options) as agent:
                if not await agent.serve():
                    return
        except (ConfigError, UnitError, AgentStartError, ActionDefinitionError) as exc:
            if bundles is None or not await asyncio.to_thread(bundles.start_failed, str(exc)):
                raise
            log.error("the new bundle version failed to start, rolled back: %s", exc)
