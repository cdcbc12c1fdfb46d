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
from dataclasses import dataclass
from types import TracebackType
from typing import Any

from sqlalchemy.exc import SQLAlchemyError

from fieldhub import __version__
from fieldhub.hub.auth import Auth
from fieldhub.hub.broker.embedded import EmbeddedBroker
from fieldhub.hub.broker.identities import BrokerAccess, DeviceIdentities
from fieldhub.hub.broker.keyring import hub_identity
from fieldhub.hub.broker.selection import BrokerStartError, start_broker
from fieldhub.hub.bus import HubBus
from fieldhub.hub.commands.service import CommandService
from fieldhub.hub.config import HubSettings
from fieldhub.hub.devices.directory import DeviceDirectory
from fieldhub.hub.devices.presence import DevicePresence, PresenceTracker
from fieldhub.hub.devices.provisioning import Provisioning
from fieldhub.hub.devices.twin import Twin
from fieldhub.hub.ingest.pipeline import Ingest, IngestSettings
from fieldhub.hub.ingest.stats import IngestStats
from fieldhub.hub.live.fanout import LiveHub
from fieldhub.hub.store.audit import AuditLog
from fieldhub.hub.store.claims import ClaimStore
from fieldhub.hub.store.commands import CommandStore
from fieldhub.hub.store.credentials import CredentialKey, DeviceCredentials, IssuedCredentials
from fieldhub.hub.store.database import create_engine, migrate
from fieldhub.hub.store.devices import DeviceNotFound, DeviceRecord, DeviceRegistry
from fieldhub.hub.store.ingest_writer import IngestWriter
from fieldhub.hub.store.queries import Queries
from fieldhub.hub.store.twin import TwinStore
from fieldhub.hub.store.writes import writes_for
from fieldhub.protocol import Channel, hub_subscriptions, topic_for

log = logging.getLogger(__name__)


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
        self.registry = DeviceRegistry(self.engine)
        # Labels and action catalogs in memory: a command request reads no device row.
        self.directory = DeviceDirectory()
        self.queries = Queries(self.engine)
        self.credentials = DeviceCredentials(self.engine)
        self.audit = AuditLog(self.engine)
        # Users, sessions, API tokens, login throttle, setup token; one audit log for all.
        self.auth = Auth(self.engine, self.audit)
        # Committed data, command and registry changes, pushed to WebSocket clients (/api/live).
        self.live = LiveHub(self.directory, self.engine, self.auth.authenticator)
        # Devices that claim with a token, approved by operators, fetch their own credentials.
        self.provisioning = Provisioning(
            ClaimStore(self.engine), self._register_claimed, self._issue_claimed, self.audit.record
        )
        # Desired state (the device twin), published retained through the bus.
        self.twin = Twin(TwinStore(self.engine), self.audit, self._publish_retained)
        # The hub's own MQTT identity, fresh each start (see keyring.hub_identity).
        self.mqtt_identity = hub_identity(settings.instance)
        self.broker: EmbeddedBroker | None = None
        self.broker_url = ""  # mqtt://host:port, no credentials: what devices connect to
        self._identities: DeviceIdentities | None = None
        self._bus: HubBus | None = None
        self._ingest: Ingest | None = None
        self._presence: PresenceTracker | None = None
        self._commands: CommandService | None = None

    # -- parts, available once started ------------------------------------------------------
    @property
    def bus(self) -> HubBus:
        """The MQTT connection."""
        if self._bus is None:
            raise RuntimeError("the hub is not started")
        return self._bus

    @property
    def ingest(self) -> Ingest:
        """The ingest pipeline."""
        if self._ingest is None:
            raise RuntimeError("the hub is not started")
        return self._ingest

    @property
    def presence(self) -> PresenceTracker:
        """Live presence of every device."""
        if self._presence is None:
            raise RuntimeError("the hub is not started")
        return self._presence

    @property
    def commands(self) -> CommandService:
        """Commands to devices: queued, sent, followed to their outcome."""
        if self._commands is None:
            raise RuntimeError("the hub is not started")
        return self._commands

    @property
    def identities(self) -> DeviceIdentities:
        """Device credentials: store, broker and audit log in step."""
        if self._identities is None:
            raise RuntimeError("the hub is not started")
        return self._identities

    # -- life cycle -------------------------------------------------------------------------
    async def __aenter__(self) -> Hub:
        try:
            await self._start()
        except BaseException:
            await self._stack.aclose()
            raise
        return self

    async def _start(self) -> None:
        settings = self.settings
        if self.engine.url.get_backend_name() == "sqlite" or settings.broker is None:
            settings.data.mkdir(parents=True, exist_ok=True)  # database file, broker state
        self._stack.push_async_callback(self.engine.dispose)
        try:
            await migrate(self.engine)
        except (SQLAlchemyError, OSError) as exc:
            where = self.engine.url.render_as_string(hide_password=True)
            raise HubStartError(f"cannot open the database {where}: {exc}") from exc
        await self.auth.start()  # with no user yet: the one-time setup token, logged once
        identity = self.mqtt_identity
        keys_seen = await self.credentials.fingerprint()  # the broker gets the keys as of now
        try:
            started = await start_broker(settings, self._stack, identity, self.credentials)
        except BrokerStartError as exc:
            raise HubStartError(str(exc)) from exc
        self.broker, self.broker_url = started.embedded, started.url
        self._identities = self._device_identities(started.access)
        self._identities.synced(keys_seen)
        # Ingest commits and command writes: one writer thread on SQLite (store/writes.py).
        writes = writes_for(self.engine)
        self._stack.push_async_callback(writes.close)  # after the last flush (unwound later)
        writer = IngestWriter(self.engine, writes)
        bus = HubBus(
            self.broker_url,
            client_id=identity.client_id,
            username=identity.username,
            password=identity.password,
            subscriptions=hub_subscriptions(settings.instance),
            on_message=self._on_message,
            qos=settings.qos,
            on_reconnect=self._bus_reconnected,
        )
        presence = PresenceTracker(self._record_presence, settings.stale_after_s)
        ingest = Ingest(writer, bus, presence, self.stats, self._ingest_settings)
        commands = CommandService(
            CommandStore(self.engine, writes), bus, presence, instance=settings.instance
        )
        ingest.on_reply(commands.on_reply)
        ingest.on_commit(lambda _batch: bus.healthy())  # data came through: reconnect fast
        ingest.on_commit(self.directory.committed)
        ingest.on_commit(self.live.committed)
        commands.on_change(self.live.command_changed)
        self._bus, self._presence, self._ingest = bus, presence, ingest
        self._commands = commands
        await ingest.load()
        for device in await self.registry.list():
            self.directory.put(device)
            self.live.load(device.id, device.last_seen)
            presence.load(
                device.id,
                DevicePresence(
                    device.presence, device.connected, device.presence_since, device.presence_reason
                ),
            )
        await self._stack.enter_async_context(bus)
        if not bus.session_present:  # what devices sent while no session kept it: again, now
            ingest.announce()
        await self.twin.republish()  # the embedded broker forgot its retained messages
        await commands.load()  # unfinished commands of this instance go out again
        # Messages that arrived while connecting wait in the open batch for the commit loop.
        self._tasks = [
            asyncio.create_task(ingest.run(), name="ingest-commit"),
            asyncio.create_task(presence.run(), name="presence-clock"),
            asyncio.create_task(commands.run(), name="commands"),
            asyncio.create_task(self.identities.run(), name="device-credentials-sync"),
            asyncio.create_task(self.live.run(), name="live"),
        ]
        # Unwound before the bus closes: the last commit's acks still reach the devices.
        self._stack.push_async_callback(self._stop_tasks)
        log.info(
            "hub %s started: broker %s, database %s",
            settings.instance,
            bus.address,
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
        ):
            for task in self._tasks:
                task.cancel()
            for task in self._tasks:
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        await self.ingest.flush()  # commit and acknowledge what was accepted
        await self.commands.flush()  # the last command states

    def _on_message(self, topic: str, payload: bytes) -> None:
        if self._ingest is not None:
            self._ingest.submit(topic, payload)

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
        return DeviceIdentities(self.credentials, self.audit, access, on_change=self._adopt)

    async def _adopt(self, keys: list[CredentialKey]) -> None:
        """Accept messages from devices another process (the CLI) registered meanwhile."""
        for device_id in sorted({key.device_id for key in keys}):
            if self.ingest.acked_seq(device_id) is not None:
                continue
            try:
                record = await self.registry.get(device_id)
            except DeviceNotFound:
                continue  # keys of a device being deleted right now
            self.ingest.add_device(device_id)
            self.directory.put(record)
            self.presence.load(
                device_id,
                DevicePresence(
                    record.presence, record.connected, record.presence_since, record.presence_reason
                ),
            )
            self.live.device_changed(device_id, "added")

    # -- registry operations that ingest and the broker must know about ---------------------
    async def create_device(
        self,
        device_id: str,
        *,
        name: str = "",
        labels: dict[str, str] | None = None,
        attributes: dict[str, Any] | None = None,
        actor: str = "hub",
        source: str = "",
    ) -> NewDevice:
        """Register a device with its first credentials, and start accepting its messages.

        The secret is in the result only: show it to whoever installs the device, once.

        Raises:
            DeviceExists: the id is taken.
            CredentialsError: the broker could not be told; the device was not registered.
        """
        record = await self.registry.create(
            device_id, name=name, labels=labels, attributes=attributes
        )
        try:
            issued = await self.identities.issue(device_id, actor=actor, source=source)
        except BaseException:
            await self.registry.delete(device_id)  # nothing half made
            raise
        self.ingest.add_device(device_id)
        self.directory.put(record)
        self.presence.load(device_id, DevicePresence())
        self.live.device_changed(device_id, "added")
        return NewDevice(record, issued)

    async def _register_claimed(self, device_id: str, labels: dict[str, str]) -> None:
        """Register an approved claim's device; its credentials come when it fetches them."""
        record = await self.registry.create(device_id, labels=labels)
        self.ingest.add_device(device_id)
        self.directory.put(record)
        self.presence.load(device_id, DevicePresence())
        self.live.device_changed(device_id, "added")

    async def _issue_claimed(self, device_id: str) -> IssuedCredentials:
        return await self.issue_device_credentials(device_id, actor=f"device:{device_id}")

    async def issue_device_credentials(
        self, device_id: str, *, actor: str = "hub", source: str = ""
    ) -> IssuedCredentials:
        """Another key for a registered device (its other keys stay valid).

        Raises:
            DeviceNotFound: no such device.
            CredentialsError: the broker could not be told; no key was kept.
        """
        await self.registry.get(device_id)
        return await self.identities.issue(device_id, actor=actor, source=source)

    async def rotate_device_credentials(
        self, device_id: str, grace_s: float, *, actor: str = "hub", source: str = ""
    ) -> IssuedCredentials:
        """A new key; the device's old keys keep working for ``grace_s`` seconds more.

        Raises:
            DeviceNotFound: no such device.
            CredentialsError: the broker could not be told; no new key was kept.
        """
        await self.registry.get(device_id)
        return await self.identities.rotate(device_id, grace_s, actor=actor, source=source)

    async def revoke_device_credentials(
        self, device_id: str, *, actor: str = "hub", source: str = ""
    ) -> list[str]:
        """Delete every key of the device; it is disconnected at once and cannot come back.

        Returns the user names revoked.

        Raises:
            DeviceNotFound: no such device.
        """
        await self.registry.get(device_id)
        return await self.identities.revoke(device_id, actor=actor, source=source)

    async def update_device(
        self,
        device_id: str,
        *,
        name: str | None = None,
        labels: dict[str, str] | None = None,
        attributes: dict[str, Any] | None = None,
    ) -> DeviceRecord:
        """Change what an operator may change (``None`` leaves a field as it is); the hub's
        in-memory view of the device follows.

        Raises:
            DeviceNotFound: no such device.
        """
        record = await self.registry.update(
            device_id, name=name, labels=labels, attributes=attributes
        )
        self.directory.put(record)
        self.live.device_changed(device_id, "changed")  # labels may move it in or out of view
        return record

    async def delete_device(self, device_id: str, *, actor: str = "hub", source: str = "") -> None:
        """Delete a device with its data and credentials; refuse its messages from now on."""
        usernames = await self.credentials.usernames(device_id)
        self.ingest.remove_device(device_id)
        self.directory.forget(device_id)
        self.presence.forget(device_id)
        self.commands.forget_device(device_id)
        async with self.ingest.writing:  # a commit in flight may hold the device's data
            await self.registry.delete(device_id)
        self.live.device_changed(device_id, "deleted")
        await self.provisioning.store.forget(device_id)  # the id may claim again
        # The broker would replay the device's last status to every future hub start.
        self.bus.publish(topic_for(device_id, Channel.STATUS), b"", qos=1, retain=True)
        self.twin.clear(device_id)  # and its desired state to a device later given the id
        if usernames:
            await self.identities.withdrawn(
                device_id, usernames, actor=actor, source=source, why="device deleted"
            )


@dataclass(frozen=True, slots=True)
class NewDevice:
    """A device just registered, with its first credentials (the only time they are shown)."""

    record: DeviceRecord
    credentials: IssuedCredentials
