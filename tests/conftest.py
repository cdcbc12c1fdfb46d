"""Fixtures: real brokers (embedded amqtt, Mosquitto), real databases (SQLite, PostgreSQL),
a running hub, its API over HTTP semantics (ASGI), and test devices on real MQTT."""

from __future__ import annotations

import asyncio
import os
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from fieldhub.hub.app import Hub
from fieldhub.hub.config import HubSettings
from fieldhub.hub.ingest.pipeline import IngestSettings
from fieldhub.hub.store.database import create_engine, sqlite_url
from fieldhub.mqtt import MqttClient
from fieldhub.protocol import Channel, topic_for
from tests.device_client import TestDevice
from tests.fleet import Fleet
from tests.hub_client import HubClient
from tests.support.s3_server import SeaweedS3
from tests.support.servers import Mosquitto, Owserver, Postgres, ServerUnavailable

HubFactory = Callable[..., AbstractAsyncContextManager[Hub]]

# A hub without --broker runs its own Mosquitto where one is installed. Tests choose their
# broker (make_hub's broker=, the session's Mosquitto): the hubs they start in-process or as
# ``fieldhub`` processes get the embedded one unless they ask for the managed one
# (tests/test_managed_broker.py, local_broker=...).
os.environ["FIELDHUB_LOCAL_BROKER"] = "embedded"


def _unavailable(exc: ServerUnavailable) -> None:
    # On a developer machine a missing server skips; in CI it is a failure (CI installs them).
    if os.environ.get("CI"):
        raise exc
    pytest.skip(str(exc))


@pytest.fixture(scope="session")
def mosquitto(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mosquitto]:
    """One Mosquitto for the session; tests keep apart by unique device and hub ids."""
    try:
        with Mosquitto(tmp_path_factory.mktemp("mosquitto")) as broker:
            yield broker
    except ServerUnavailable as exc:
        _unavailable(exc)


@pytest.fixture(scope="session")
def postgres(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Postgres]:
    """One PostgreSQL server for the session; each test gets its own database."""
    try:
        with Postgres(tmp_path_factory.mktemp("postgres")) as server:
            yield server
    except ServerUnavailable as exc:
        _unavailable(exc)


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SeaweedS3]:
    """One S3-compatible server (SeaweedFS) for the session; each test uses a bucket of its own."""
    try:
        with SeaweedS3(tmp_path_factory.mktemp("s3")) as server:
            yield server
    except ServerUnavailable as exc:
        _unavailable(exc)


@pytest.fixture(params=["folder", pytest.param("s3", marks=pytest.mark.s3)])
def media_store(request: pytest.FixtureRequest, uid: str) -> dict[str, Any]:
    """Hub settings for each media store: the data folder (none needed) and an S3 bucket."""
    if request.param == "folder":
        return {}
    server: SeaweedS3 = request.getfixturevalue("s3_server")
    return server.settings(f"t{uid}")


OWSERVER_SENSORS = ("28.0000000000A1", "28.0000000000A2")
"""The fake DS18B20s of the session's owserver; they read 20-25 °C."""


@pytest.fixture(scope="session")
def owserver(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Owserver]:
    """One owserver with fake thermometers (``OWSERVER_SENSORS``) for the session; tests that
    unplug sensors or change temperatures start their own."""
    try:
        with Owserver(tmp_path_factory.mktemp("owserver"), sensors=OWSERVER_SENSORS) as server:
            yield server
    except ServerUnavailable as exc:
        _unavailable(exc)


@pytest.fixture
def uid() -> str:
    """A short id unique to this test, for device ids, hub instances and databases."""
    return secrets.token_hex(4)


@pytest.fixture(
    params=[
        pytest.param("sqlite", id="sqlite"),
        pytest.param("postgres", id="postgres", marks=pytest.mark.postgres),
    ]
)
async def empty_engine(
    request: pytest.FixtureRequest, tmp_path: Path, uid: str
) -> AsyncIterator[AsyncEngine]:
    """An engine on a new, empty database: a SQLite file, or a PostgreSQL database."""
    if request.param == "sqlite":
        url = sqlite_url(tmp_path / "fieldhub.db")
    else:
        server = request.getfixturevalue("postgres")
        url = await asyncio.to_thread(server.create_database, f"db_{uid}")
    engine = create_engine(url)
    yield engine
    await engine.dispose()


@pytest.fixture
def make_hub(request: pytest.FixtureRequest, tmp_path: Path, uid: str) -> HubFactory:
    """Start hubs on a chosen broker and database: ``async with make_hub(broker=..., db=...)``."""

    @asynccontextmanager
    async def factory(
        *,
        broker: str = "embedded",
        db: str = "sqlite",
        data: Path | None = None,
        ingest: IngestSettings | None = None,
        **settings: Any,
    ) -> AsyncIterator[Hub]:
        options: dict[str, Any] = {
            "data": data or tmp_path / "data",
            "instance": f"t{uid}",
            "mqtt": "127.0.0.1:0",
            "http": "127.0.0.1:0",
        }
        if broker == "mosquitto":
            options["broker"] = request.getfixturevalue("mosquitto").url
        if db == "postgres":
            options["db"] = request.getfixturevalue("postgres").create_database(
                f"t{uid}_{secrets.token_hex(2)}"
            )
        options.update(settings)
        registered: list[str] = []
        try:
            async with Hub(HubSettings(**options), ingest) as hub:
                try:
                    yield hub
                finally:
                    if broker == "mosquitto":
                        registered = [device.id for device in await hub.registry.list()]
        finally:
            if registered:  # the session's Mosquitto outlives this hub: later ones must not
                await clear_retained(request.getfixturevalue("mosquitto"), registered)

    return factory


@pytest.fixture
async def hub(make_hub: HubFactory) -> AsyncIterator[Hub]:
    """A hub on the embedded broker and SQLite."""
    async with make_hub() as running:
        yield running


@pytest.fixture(
    params=[
        pytest.param(("embedded", "sqlite"), id="amqtt-sqlite"),
        pytest.param(("mosquitto", "sqlite"), id="mosquitto-sqlite", marks=pytest.mark.mosquitto),
        pytest.param(("embedded", "postgres"), id="amqtt-postgres", marks=pytest.mark.postgres),
        pytest.param(
            ("mosquitto", "postgres"),
            id="mosquitto-postgres",
            marks=[pytest.mark.mosquitto, pytest.mark.postgres],
        ),
    ]
)
async def any_hub(request: pytest.FixtureRequest, make_hub: HubFactory) -> AsyncIterator[Hub]:
    """The same hub on every broker and database fieldhub supports."""
    broker, db = request.param
    async with make_hub(broker=broker, db=db) as running:
        yield running


def api_client(hub: Hub, role: str | None = "admin", **options: Any) -> HubClient:
    """An HTTP client for ``hub``'s API, served in-process, signed in (when entered) as a new
    user of ``role`` (admin by default; None: anonymous); ``sites=[...]``, ``scopes=[...]``,
    ``via="session"`` as in ``tests.hub_client.HubClient``."""
    return HubClient(hub, role, **options)


@pytest.fixture
async def api(hub: Hub) -> AsyncIterator[httpx.AsyncClient]:
    """HTTP client of the default hub's API."""
    async with api_client(hub) as client:
        yield client


DeviceFactory = Callable[..., Awaitable[TestDevice]]


@pytest.fixture
async def connect_device(uid: str) -> AsyncIterator[DeviceFactory]:
    """Register (optionally) and connect test devices: ``await connect_device(hub, "d1")``.

    A device connects with the credentials it got when registered in this test, also to a
    later hub on the same (or a restored) store: ``register=False``.
    """
    devices: list[TestDevice] = []
    credentials: dict[str, tuple[str, str]] = {}

    async def connect(hub: Hub, name: str, *, register: bool = True, **labels: str) -> TestDevice:
        device_id = f"{name}-{uid}"
        if register:
            issued = (await hub.devices.create(device_id, labels=labels)).credentials
            credentials[device_id] = (issued.username, issued.secret)
        username, password = credentials.get(device_id, (None, None))
        device = await TestDevice.connect(
            hub.broker_url, device_id, username=username, password=password
        )
        devices.append(device)
        return device

    yield connect
    for device in devices:
        device.close()


@pytest.fixture
def fleet_of(tmp_path: Path, uid: str) -> Callable[[Hub], Fleet]:
    """``fleet_of(hub)``: a fleet of real agents (mock pins) registered on ``hub``."""
    return lambda hub: Fleet(hub, tmp_path, uid)


async def clear_retained(broker: Mosquitto, device_ids: list[str]) -> None:
    """Publish empty retained messages (MQTT's "delete") on every channel of ``device_ids``."""
    cleaner = MqttClient(
        broker.host,
        broker.port,
        client_id=f"cleaner-{os.getpid()}",
        username=broker.admin_username,
        password=broker.admin_password,
        on_message=lambda _topic, _payload: None,
    )
    await cleaner.connect()
    try:
        for device_id in device_ids:
            for channel in (Channel.STATUS, Channel.DESIRED):
                cleaner.publish(topic_for(device_id, channel), b"", qos=1, retain=True)
        await asyncio.wait_for(cleaner.flushed(), 10)
    finally:
        await cleaner.close()
