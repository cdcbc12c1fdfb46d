"""The hub process: broker (embedded or external), store, ingest, presence and the bus, wired.

``Hub`` is an async context manager: entering starts everything in order (store and migrations,
broker, ingest state, MQTT connection, background loops), leaving stops it in reverse and
commits what ingest still holds. The REST API (``fieldhub.hub.api``) reaches the hub through
``app.state.hub``; nothing here is a global.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from contextlib import AsyncExitStack
from types import TracebackType
from typing import Any, TypeVar

from sqlalchemy.exc import SQLAlchemyError

from fieldhub import __version__
from fieldhub.hub.alarms import AlarmEngine, AlarmService
from fieldhub.hub.alarms.sweeper import AlarmSweeper
from fieldhub.hub.alarms.windows import MaintenanceService
from fieldhub.hub.auth import Auth
from fieldhub.hub.auth.links import load_link_key, share_link_key
from fieldhub.hub.broker.device_ca import DeviceCa, DeviceCertificates
from fieldhub.hub.broker.dynsec import DynSecError
from fieldhub.hub.broker.embedded import EmbeddedBroker
from fieldhub.hub.broker.identities import BrokerAccess, DeviceIdentities
from fieldhub.hub.broker.keyring import hub_identity
from fieldhub.hub.broker.managed import ManagedMosquitto
from fieldhub.hub.broker.selection import BrokerKind, BrokerStartError, start_broker
from fieldhub.hub.bus import HubBus
from fieldhub.hub.cluster.arrivals import Arrivals
from fieldhub.hub.cluster.feed import ClusterFeed
from fieldhub.hub.cluster.lease import Lease
from fieldhub.hub.cluster.singletons import Singletons
from fieldhub.hub.commands.service import CommandService
from fieldhub.hub.config import HubSettings
from fieldhub.hub.devices.directory import DeviceDirectory
from fieldhub.hub.devices.events import DeviceEvent, DeviceRemoved
from fieldhub.hub.devices.family import Family
from fieldhub.hub.devices.lifecycle import DeviceLifecycle
from fieldhub.hub.devices.presence import PresenceTracker
from fieldhub.hub.devices.provisioning import Provisioning
from fieldhub.hub.devices.twin import TwinService
from fieldhub.hub.inbound import Inbound
from fieldhub.hub.ingest.pipeline import Ingest, IngestSettings
from fieldhub.hub.ingest.stats import IngestStats
from fieldhub.hub.ingest.writer import IngestWriter
from fieldhub.hub.live.fanout import LiveHub
from fieldhub.hub.media.service import MediaService, media_service
from fieldhub.hub.notify.ack_links import AckLinks
from fieldhub.hub.notify.escalation import escalate, screen
from fieldhub.hub.notify.escalation_policies import EscalationPolicies
from fieldhub.hub.notify.media_links import MediaLinks
from fieldhub.hub.notify.routing import AlarmRouter
from fieldhub.hub.notify.service import NotificationService, notification_service
from fieldhub.hub.notify.worker import chained
from fieldhub.hub.retention import RetentionService
from fieldhub.hub.retention.service import retention_service
from fieldhub.hub.rollouts.bundles import Bundles
from fieldhub.hub.rollouts.engine import Rollouts
from fieldhub.hub.rollouts.links import DownloadLinks
from fieldhub.hub.store.alarms import AlarmStore
from fieldhub.hub.store.audit import AuditLog
from fieldhub.hub.store.claims import ClaimStore
from fieldhub.hub.store.commands import CommandStore
from fieldhub.hub.store.credentials import CredentialStore, IssuedCredentials
from fieldhub.hub.store.database import SchemaTooNew, create_engine, migrate
from fieldhub.hub.store.devices import DeviceRegistry
from fieldhub.hub.store.exclusive import AnotherHubRuns, sole_hub
from fieldhub.hub.store.fleet import FleetQueries
from fieldhub.hub.store.health import StorageHealth
from fieldhub.hub.store.queries import Queries
from fieldhub.hub.store.twin import TwinStore
from fieldhub.hub.store.writes import Writes, writes_for
from fieldhub.mqtt import MqttError
from fieldhub.private_files import private_dir
from fieldhub.protocol import Channel, hub_subscriptions, topic_for

log = logging.getLogger(__name__)


_Part = TypeVar("_Part")


def _started(part: _Part | None) -> _Part:
    """A part the hub makes when it starts; asked for before that, a clear error, not None."""
    if part is None:
        raise RuntimeError("the hub is not started")
    return part


class HubStartError(RuntimeError):
    """The hub cannot start; the text says what failed and what to change."""


class Hub:
    """One running hub process."""

    def __init__(self, settings: HubSettings, ingest_settings: IngestSettings | None = None):
        self.settings = settings
        self.started_at = time.time()
        self.version = __version__
        self._ingest_settings = ingest_settings
        self._stack = AsyncExitStack()
        self._tasks: list[asyncio.Task[None]] = []
        self.stats = IngestStats()
        self.engine = create_engine(settings.db_url)
        # Whether the store can be written, as its writers find it (health, the outage log).
        self.storage = StorageHealth()
        self.registry = DeviceRegistry(self.engine)
        # Labels and action catalogs in memory: a command request reads no device row.
        self.directory = DeviceDirectory()
        self.queries = Queries(self.engine)
        # The fleet page's reads: pages of devices and the fleet's counts, in the database.
        self.fleet = FleetQueries(self.engine)
        self.credentials = CredentialStore(self.engine)
        self.audit = AuditLog(self.engine)
        # Users, sessions, API tokens, login throttle, setup token; one audit log for all.
        self.auth = Auth(self.engine, self.audit, storage=self.storage)
        # Committed data, command and registry changes, pushed to WebSocket clients (/api/live).
        self.live = LiveHub(self.directory, self.engine, self.auth.authenticator)
        claims = ClaimStore(self.engine)
        # Create, change, delete and adopt devices; every part hears of it (devices/events.py).
        self.devices = DeviceLifecycle(self.registry, self.credentials, claims)
        # Gateways and their children: the broker's ACL and presence follow it.
        self.family = Family(self._family_changed)
        self._access: BrokerAccess | None = None
        self._family_tasks: set[asyncio.Task[None]] = set()
        # Devices that claim with a token, approved by operators, fetch their own credentials.
        self.provisioning = Provisioning(
            claims, self.devices.register, self._issue_claimed, self.audit.record
        )
        # Device client certificates from the hub's own CA (issued and revoked, audited).
        self.certificates = DeviceCertificates(DeviceCa(settings.device_ca_folder), self.audit)
        # Desired state (the device twin), published retained through the bus.
        self.twin = TwinService(TwinStore(self.engine), self.audit, self._publish_retained)
        # The hub's own MQTT identity, fresh each start (see keyring.hub_identity).
        self.mqtt_identity = hub_identity(settings.instance)
        self.broker: EmbeddedBroker | None = None
        self.managed_broker: ManagedMosquitto | None = None  # the hub's Mosquitto child
        self.broker_kind: BrokerKind = "embedded"  # which of the two, or an external one
        self.broker_url = ""  # mqtt://host:port, no credentials: what devices connect to
        self._identities: DeviceIdentities | None = None
        self._bus: HubBus | None = None
        self._ingest: Ingest | None = None
        self._inbound: Inbound | None = None  # topic → ingest, presence or commands
        self._presence: PresenceTracker | None = None
        self._commands: CommandService | None = None
        self._notifications: NotificationService | None = None
        self._alarms: AlarmService | None = None
        self._escalation: EscalationPolicies | None = None
        # Acknowledge links in alarm notifications: only when the hub knows its public address.
        self.ack_links: AckLinks | None = None
        self.routing = AlarmRouter()  # counts what it decides: /metrics
        self._maintenance: MaintenanceService | None = None
        self._sweeper: AlarmSweeper | None = None
        self._bundles: Bundles | None = None
        self._rollouts: Rollouts | None = None
        self._media: MediaService | None = None
        self._retention: RetentionService | None = None
        # Work that runs in one hub process at a time, while it holds the lease (docs/scaling.md).
        self.singletons = Singletons(Lease(self.engine.url))
        self.feed: ClusterFeed | None = None  # commits to and from other hub processes

    # -- parts, available once started ------------------------------------------------------
    @property
    def bus(self) -> HubBus:
        """The MQTT connection."""
        return _started(self._bus)

    @property
    def ingest(self) -> Ingest:
        """The ingest pipeline."""
        return _started(self._ingest)

    @property
    def inbound(self) -> Inbound:
        """Every device message, routed by its topic (and refused here when bad)."""
        return _started(self._inbound)

    @property
    def presence(self) -> PresenceTracker:
        """Live presence of every device."""
        return _started(self._presence)

    @property
    def commands(self) -> CommandService:
        """Commands to devices: queued, sent, followed to their outcome."""
        return _started(self._commands)

    @property
    def notifications(self) -> NotificationService:
        """Notification channels, the outbox and its delivery worker."""
        return _started(self._notifications)

    @property
    def maintenance(self) -> MaintenanceService:
        """Maintenance windows (docs/alarms.md)."""
        return _started(self._maintenance)

    @property
    def sweeper(self) -> AlarmSweeper:
        """The alarms' clock for shelving, flapping and maintenance marks that end."""
        return _started(self._sweeper)

    @property
    def alarms(self) -> AlarmService:
        """Alarm rules and alarms (the engine is ``alarms.engine``: hooks go there)."""
        return _started(self._alarms)

    @property
    def escalation(self) -> EscalationPolicies:
        """Escalation policies (what alarm rules name in ``escalation``)."""
        return _started(self._escalation)

    @property
    def bundles(self) -> Bundles:
        """Signed bundles and the public keys they are checked against (docs/rollouts.md)."""
        return _started(self._bundles)

    @property
    def rollouts(self) -> Rollouts:
        """Bundles sent to devices in waves (docs/rollouts.md)."""
        return _started(self._rollouts)

    @property
    def media(self) -> MediaService:
        """Media attached to events: uploads, files, retention (docs/media.md)."""
        return _started(self._media)

    @property
    def retention(self) -> RetentionService:
        """What is kept how long, the trimmer and the disk budget (docs/retention.md)."""
        return _started(self._retention)

    @property
    def identities(self) -> DeviceIdentities:
        """Device credentials: store, broker and audit log in step."""
        return _started(self._identities)

    # -- life cycle -------------------------------------------------------------------------
    async def __aenter__(self) -> Hub:
        try:
            await self._start()
        except BaseException:
            await self._stack.aclose()
            raise
        return self

    async def _open_store(self) -> None:
        """Take the database (a SQLite one for this hub alone), bring its schema up, and
        share the cluster's link key (before any link is signed)."""
        self._stack.push_async_callback(self.engine.dispose)
        try:
            self._stack.enter_context(sole_hub(self.engine.url))
            await migrate(self.engine)
            await share_link_key(self.engine, self.settings.data)
        except (SQLAlchemyError, OSError, SchemaTooNew, AnotherHubRuns, ValueError) as exc:
            where = self.engine.url.render_as_string(hide_password=True)
            raise HubStartError(f"cannot open the database {where}: {exc}") from exc

    async def _start(self) -> None:
        settings = self.settings
        if self.engine.url.get_backend_name() == "sqlite" or settings.broker is None:
            private_dir(settings.data)  # database file, broker state: 0700
        await self._open_store()
        await self.auth.start()  # with no user yet: the one-time setup token, logged once
        identity = self.mqtt_identity
        keys_seen = await self.credentials.fingerprint()  # the broker gets the keys as of now
        try:
            started = await start_broker(settings, self._stack, identity, self.credentials)
        except BrokerStartError as exc:
            raise HubStartError(str(exc)) from exc
        self.broker, self.managed_broker = started.embedded, started.managed
        self.broker_kind, self.broker_url = started.kind, started.url
        self._access = started.access
        self._identities = self._device_identities(started.access)
        self._identities.synced(keys_seen)
        # Ingest commits and command writes: one writer thread on SQLite (store/writes.py).
        writes = writes_for(self.engine, self.storage)
        self._stack.push_async_callback(writes.close)  # after the last flush (unwound later)
        writer = IngestWriter(self.engine, writes)
        presence = PresenceTracker(
            self._record_presence,
            settings.stale_after_s,
            settings.confirm_presence_s,
            self.family,
        )
        bus = HubBus(
            self.broker_url,
            client_id=identity.client_id,
            username=identity.username,
            password=identity.password,
            subscriptions=hub_subscriptions(settings.instance, settings.cluster_group),
            on_message=self._on_message,
            # Presence is only as good as the broker connection: each new one re-checks it.
            on_subscribed=presence.subscribed,
            on_lost=lambda: presence.doubt("not seen since the hub reconnected to the broker"),
            qos=settings.qos,
            on_reconnect=self._bus_reconnected,
            tls=settings.broker_tls(),  # None for the embedded broker: loopback, in-process
            keep_session=settings.cluster_group is None,
        )
        ingest = Ingest(writer, bus, presence, self.stats, self._ingest_settings)
        commands = CommandService(
            CommandStore(self.engine, writes), bus, presence, instance=settings.instance
        )
        media = self._start_media(writes, bus, ingest)
        self._retention = retention = retention_service(
            self.engine, writes, self.audit, self.directory, settings.data
        )
        self._inbound = Inbound(
            ingest,
            presence,
            commands.on_reply,
            bus,
            self.stats,
            uploads=media.on_upload,
            replies_per_s=(self._ingest_settings or IngestSettings()).reject_replies_per_s,
        )
        ingest.on_commit(lambda _batch: bus.healthy())  # data came through: reconnect fast
        ingest.on_commit(self.directory.committed)
        ingest.on_commit(self.live.committed)
        alarm_engine = self._start_alarms(writes, ingest)
        self._start_cluster(ingest, presence, commands, media, retention)
        commands.on_change(self.live.command_changed)
        self._bus, self._presence, self._ingest, self._commands = bus, presence, ingest, commands
        self._start_notifications(writes, bus, alarm_engine)
        rollouts = self._start_rollouts(writes, ingest, commands)
        self._follow_devices(ingest, presence, commands, alarm_engine)
        await self._load_state(ingest, alarm_engine, presence)
        await self._stack.enter_async_context(bus)
        if not bus.session_present:  # what devices sent while no session kept it: again, now
            ingest.announce()
        await self.twin.republish()  # the embedded broker forgot its retained messages
        # This instance's unfinished commands go again; then rollouts read what became of them.
        await commands.load()
        await rollouts.load()
        # Messages that arrived while connecting wait in the open batch for the commit loop.
        self._tasks = [
            asyncio.create_task(ingest.run(), name="ingest-commit"),
            asyncio.create_task(presence.run(sweeps=self.singletons.here), name="presence-clock"),
            asyncio.create_task(commands.run(), name="commands"),
            asyncio.create_task(self.identities.run(), name="device-credentials-sync"),
            asyncio.create_task(self.devices.follow_registry(), name="device-registry"),
            asyncio.create_task(self.live.run(), name="live"),
            asyncio.create_task(self.auth.token_use.run(), name="token-use"),
            asyncio.create_task(self.notifications.run(), name="notifications"),
            asyncio.create_task(alarm_engine.run(), name="alarms"),
            asyncio.create_task(rollouts.run(), name="rollouts"),
            asyncio.create_task(self.singletons.run(), name="singletons"),
            *([asyncio.create_task(self.feed.run(), name="cluster-feed")] if self.feed else []),
        ]
        # Unwound before the bus closes: the last commit's acks still reach the devices.
        self._stack.push_async_callback(self._stop_tasks)
        log.info(
            "hub %s started: broker %s (%s), database %s",
            settings.instance,
            bus.address,
            self.broker_kind,
            self.engine.url.render_as_string(hide_password=True),
        )

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self._stack.aclose()

    async def _stop_tasks(self) -> None:
        self.bus.pause_reading()  # what the broker still holds waits for the next start
        # Notifications first, while the bus still runs: an MQTT notification under way can
        # still be acknowledged; the worker ends between its writes, never inside one.
        await self.notifications.stop()
        await self.media.stop()  # answers to uploads under way still reach their devices
        await self.singletons.stop()  # outside the locks below: it takes its loops' own
        # Cancel only between commits: a commit cancelled while the database finishes it in
        # its own thread would leave ingest's sequence state behind the store, and the final
        # flush would then write that stale state back (a resent message stored twice). The
        # same for command writes and credential syncs: a query cut off by cancellation
        # leaves its pooled connection checked out, never closed.
        async with (
            self.ingest.writing,
            self.commands.writing,
            self.identities.syncing,
            self.live.reading,
            self.auth.token_use.writing,
            self.alarms.engine.lock,
            self.rollouts.lock,
            self.retention.trimmer.writing,
        ):
            for task in self._tasks:
                task.cancel()
            for task in self._tasks:
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        await self.ingest.flush()  # commit and acknowledge what was accepted
        await self.commands.flush()  # the last command states
        await self.rollouts.release()  # the next hub takes them up at once
        await self.auth.token_use.flush()  # when API tokens were last used
        await self.alarms.engine.evaluate(tick=False)  # what the last commits raised

    def _follow_devices(
        self,
        ingest: Ingest,
        presence: PresenceTracker,
        commands: CommandService,
        engine: AlarmEngine,
    ) -> None:
        """Every part that keeps something per device hears of registry changes."""
        self.devices.use_identities(self.identities)
        self.devices.guard_deletes_with(lambda: ingest.writing)  # no commit holds its rows
        for listener in (
            self.family.on_device,
            ingest.on_device,
            self.directory.on_device,
            presence.on_device,
            commands.on_device,
            self.live.on_device,
            self.twin.on_device,
            engine.on_device,
            self._forget_retained_status,
            self.inbound.on_device,  # last: a status heard before the device was known
        ):
            self.devices.subscribe(listener)

    def _start_alarms(self, writes: Writes, ingest: Ingest) -> AlarmEngine:
        """Alarms from committed data only: the callback queues, the engine's task evaluates;
        its writes share the hub's writer (timers and transitions in the database)."""
        engine = AlarmEngine(AlarmStore(self.engine), writes, self.directory)
        # Hooks run in the write job of each alarm change (engine.on_change): register them
        # here, before load() and the engine's task, so that no change goes by unheard.
        ingest.on_commit(engine.committed)
        engine.on_changed(self.live.alarms_changed)  # after the commit: /api/live
        self._alarms = AlarmService(engine, writes, self.directory)
        self._maintenance = MaintenanceService(self.engine, writes)
        self._sweeper = AlarmSweeper(engine, writes, self.directory)
        return engine

    def _start_cluster(
        self,
        ingest: Ingest,
        presence: PresenceTracker,
        commands: CommandService,
        media: MediaService,
        retention: RetentionService,
    ) -> None:
        """Several hubs (docs/scaling.md): singletons under the lease; a cluster shares commits."""
        work = self.singletons
        work.add("alarm-sweeper", self.sweeper.run)
        work.add("media-retention", media.run)
        work.add("retention", retention.run, guard=retention.trimmer.writing)
        if self.settings.cluster_group is not None and self.singletons.lease.shared:
            arrivals = Arrivals(
                presence, commands, self.directory, self.live, self.devices.adopt_ids
            )
            self.feed = feed = ClusterFeed(self.engine.url, self.settings.instance, arrivals)
            ingest.on_commit(feed.committed)

    def _start_media(self, writes: Writes, bus: HubBus, ingest: Ingest) -> MediaService:
        """Media of events: uploads answered on the bus, arrivals pushed live, an object
        announced again (already stored) complete as soon as its event is committed."""
        media = media_service(
            self.settings, self.engine, writes, lambda topic, data: bus.publish(topic, data, qos=1)
        )
        ingest.on_commit(media.committed)
        media.on_complete(self.live.media_changed)
        self._media = media
        return media

    def _start_notifications(self, writes: Writes, bus: HubBus, alarms: AlarmEngine) -> None:
        """Notifications: the outbox in the store, delivered by a task of its own (never on
        ingest's path); what this instance had claimed before a stop is due again. Alarm
        raises and clears are enqueued with the change itself, delivered after its commit, and
        so are escalation steps (held until their time, cancelled by an acknowledgement)."""
        if self.settings.public_url is not None:
            key = load_link_key(self.settings.data)
            self.ack_links = AckLinks(
                key,
                self.settings.public_url,
                self.settings.ack_link_ttl_s,
                engine=self.engine,
                writes=writes,
            )
        self._notifications = self._notification_service(writes, bus)
        self._stack.push_async_callback(self._notifications.close)  # after the worker stops
        self._escalation = EscalationPolicies(self.engine, writes)
        self.routing.hand_to(self._notifications.worker.lease)  # sent without a claim
        alarms.on_change(self.routing.route)
        alarms.on_change(escalate)
        alarms.on_changed(lambda _changes: self.notifications.wake())

    async def _load_state(
        self, ingest: Ingest, alarm_engine: AlarmEngine, presence: PresenceTracker
    ) -> None:
        """What the last hub left in the store, before the broker connection opens."""
        await ingest.load()
        await self.devices.load()
        await alarm_engine.load()  # open alarms and pending timers as the last hub left them
        await self.retention.load()
        # The store remembers who was connected when the last hub stopped (or when the backup
        # was taken); only the broker knows who still is.
        presence.doubt("not seen since the hub started")

    def _start_rollouts(self, writes: Writes, ingest: Ingest, commands: CommandService) -> Rollouts:
        """Bundles and rollouts: install outcomes from the commands, ``bundle.*`` events from
        committed batches; download links signed with the hub's link key."""
        settings = self.settings
        host, port = settings.http_address
        base_url = settings.public_url or f"http://{host}:{port}"
        links = DownloadLinks(load_link_key(settings.data), base_url)
        self._bundles = Bundles(self.engine, writes, settings.data)
        rollouts = Rollouts(
            self.engine, writes, commands, self.directory, links, self._bundles,
            instance=settings.instance,
        )  # fmt: skip
        commands.on_change(rollouts.command_changed)
        ingest.on_commit(rollouts.committed)
        self._rollouts = rollouts
        return rollouts

    def _notification_service(self, writes: Writes, bus: HubBus) -> NotificationService:
        acknowledge = [self.ack_links.prepare] if self.ack_links is not None else []

        async def publish(topic: str, payload: bytes) -> None:
            bus.publish(topic, payload, qos=1)
            await bus.flushed()

        media = MediaLinks(self.media.links, self.settings.ack_link_ttl_s)  # as every link's
        return notification_service(
            self.settings,
            self.engine,
            writes,
            publish=publish,
            connected=lambda: bus.connected,
            audit=self.audit.record,
            screen=screen,
            prepare=chained(*acknowledge, media.prepare),
        )

    def _on_message(self, topic: str, payload: bytes) -> None:
        if self._inbound is not None:
            self._inbound.submit(topic, payload)

    def _bus_reconnected(self) -> None:
        # The broker may have restarted: what it held for devices, and (if our session went
        # with it) what devices sent before the hub subscribed again, is gone.
        if self._ingest is not None and not self.bus.session_present:
            self._ingest.announce()
        if self._commands is not None:
            self._commands.redeliver()

    def _publish_retained(self, topic: str, payload: bytes) -> None:
        self.bus.publish(topic, payload, qos=1, retain=True)

    def _record_presence(self, change: Any) -> None:
        if self._ingest is not None:
            self._ingest.record_presence(change)
        if self._commands is not None:
            self._commands.on_presence(change)

    def _device_identities(self, access: BrokerAccess) -> DeviceIdentities:
        # Devices another process (the CLI) registered or deleted meanwhile are announced by
        # DeviceLifecycle.follow_registry; their keys reach the broker through this one's sync.
        return DeviceIdentities(self.credentials, self.audit, access)

    def _family_changed(self, gateway_id: str, children: frozenset[str]) -> None:
        """A gateway's children changed: its broker ACL follows (devices/family.py)."""
        if self._access is None:
            return
        task = asyncio.get_running_loop().create_task(
            self._tell_broker_children(self._access, gateway_id, children),
            name="gateway-children-acl",
        )
        self._family_tasks.add(task)
        task.add_done_callback(self._family_tasks.discard)

    @staticmethod
    async def _tell_broker_children(
        access: BrokerAccess, gateway_id: str, children: frozenset[str]
    ) -> None:
        try:
            await access.set_children(gateway_id, children)
        except (DynSecError, MqttError, OSError, TimeoutError) as exc:
            # The next reconciliation (a minute at most) grants what this could not.
            log.warning("the broker was not told the children of gateway %s: %s", gateway_id, exc)

    async def _issue_claimed(self, device_id: str) -> IssuedCredentials:
        return await self.devices.issue_credentials(device_id, actor=f"device:{device_id}")

    def _forget_retained_status(self, event: DeviceEvent) -> None:
        """The broker would replay a deleted device's last status to every future hub start."""
        if isinstance(event, DeviceRemoved):
            self.bus.publish(topic_for(event.device_id, Channel.STATUS), b"", qos=1, retain=True)
