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
from typing import Any

from sqlalchemy.exc import SQLAlchemyError

from fieldhub import __version__
from fieldhub.hub.broker import EmbeddedBroker
from fieldhub.hub.bus import HubBus
from fieldhub.hub.config import HubSettings
from fieldhub.hub.ingest import Ingest, IngestSettings
from fieldhub.hub.presence import DevicePresence, PresenceTracker
from fieldhub.hub.stats import IngestStats
from fieldhub.hub.store.database import create_engine, migrate
from fieldhub.hub.store.devices import DeviceRecord, DeviceRegistry
from fieldhub.hub.store.ingest_writer import IngestWriter
from fieldhub.hub.store.queries import Queries
from fieldhub.protocol import hub_subscriptions

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
        self.queries = Queries(self.engine)
        self.broker: EmbeddedBroker | None = None
        self.broker_url = settings.broker or ""
        self._bus: HubBus | None = None
        self._ingest: Ingest | None = None
        self._presence: PresenceTracker | None = None

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
        if settings.broker is None:
            host, port = settings.mqtt_address
            broker = EmbeddedBroker(host, port, data_dir=settings.data)
            try:
                self.broker = await self._stack.enter_async_context(broker)
            except OSError as exc:
                raise HubStartError(
                    f"the embedded MQTT broker cannot listen on {host}:{port} "
                    f"({exc.strerror or exc}): choose another --mqtt HOST:PORT, or use an "
                    "external broker with --broker"
                ) from exc
            self.broker_url = self.broker.url
        writer = IngestWriter(self.engine)
        bus = HubBus(
            self.broker_url,
            client_id=f"fieldhub-hub-{settings.instance}",
            subscriptions=hub_subscriptions(settings.instance),
            on_message=self._on_message,
            qos=settings.qos,
        )
        presence = PresenceTracker(self._record_presence, settings.stale_after_s)
        ingest = Ingest(writer, bus, presence, self.stats, self._ingest_settings)
        self._bus, self._presence, self._ingest = bus, presence, ingest
        await ingest.load()
        for device in await self.registry.list():
            presence.load(
                device.id,
                DevicePresence(
                    device.presence, device.connected, device.presence_since, device.presence_reason
                ),
            )
        await self._stack.enter_async_context(bus)
        # Messages that arrived while connecting wait in the open batch for the commit loop.
        self._tasks = [
            asyncio.create_task(ingest.run(), name="ingest-commit"),
            asyncio.create_task(presence.run(), name="presence-clock"),
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
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self.ingest.flush()  # commit and acknowledge what was accepted

    def _on_message(self, topic: str, payload: bytes) -> None:
        if self._ingest is not None:
            self._ingest.submit(topic, payload)

    def _record_presence(self, change: Any) -> None:
        if self._ingest is not None:
            self._ingest.record_presence(change)

    # -- registry operations that ingest must know about ------------------------------------
    async def create_device(
        self,
        device_id: str,
        *,
        name: str = "",
        labels: dict[str, str] | None = None,
        attributes: dict[str, Any] | None = None,
    ) -> DeviceRecord:
        """Register a device and start accepting its messages."""
        record = await self.registry.create(
            device_id, name=name, labels=labels, attributes=attributes
        )
        self.ingest.add_device(device_id)
        self.presence.load(device_id, DevicePresence())
        return record

    async def delete_device(self, device_id: str) -> None:
        """Delete a device with its data and refuse its messages from now on."""
        self.ingest.remove_device(device_id)
        self.presence.forget(device_id)
        async with self.ingest.writing:  # a commit in flight may hold the device's data
            await self.registry.delete(device_id)
