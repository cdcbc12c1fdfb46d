"""The real broker and database that other tests run against behave as those tests assume.

Every check uses an independent client (paho-mqtt, asyncpg), not fieldhub's own code, so a
failure here points at the server setup and not at the hub.
"""

from __future__ import annotations

import asyncio
import re
import shutil
import socket
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import asyncpg
import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from tests.support.servers import (
    Mosquitto,
    Postgres,
    ServerStartError,
    ServerUnavailable,
    free_port,
)

WAIT_S = 10.0


# --- Mosquitto -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mosquitto]:
    with Mosquitto(tmp_path_factory.mktemp("mosquitto")) as broker:
        yield broker


class Client:
    """A paho client on its own network thread, with what it saw kept for the test to check."""

    def __init__(self, client_id: str = "", clean_session: bool = True) -> None:
        self.paho = mqtt.Client(
            callback_api_version=CallbackAPIVersion.VERSION2,
            client_id=client_id,
            clean_session=clean_session,
        )
        self.connected = threading.Event()
        self.subscribed = threading.Event()
        self._lock = threading.Condition()
        self._payloads: list[bytes] = []
        self.paho.on_connect = self._on_connect
        self.paho.on_subscribe = self._on_subscribe
        self.paho.on_message = self._on_message

    def _on_connect(
        self,
        client: mqtt.Client,
        userdata: Any,
        flags: mqtt.ConnectFlags,
        reason_code: ReasonCode,
        properties: Properties | None,
    ) -> None:
        if not reason_code.is_failure:
            self.connected.set()

    def _on_subscribe(
        self,
        client: mqtt.Client,
        userdata: Any,
        mid: int,
        reason_codes: list[ReasonCode],
        properties: Properties | None,
    ) -> None:
        if not any(code.is_failure for code in reason_codes):
            self.subscribed.set()

    def _on_message(self, client: mqtt.Client, userdata: Any, message: mqtt.MQTTMessage) -> None:
        with self._lock:
            self._payloads.append(message.payload)
            self._lock.notify_all()

    def subscribe(self, topic: str) -> None:
        self.subscribed.clear()
        self.paho.subscribe(topic, qos=1)
        assert self.subscribed.wait(WAIT_S), f"no SUBACK for {topic}"

    def publish_all(self, topic: str, payloads: list[bytes]) -> None:
        """Publish at QoS 1 and return once the broker has acknowledged every message."""
        infos = [self.paho.publish(topic, payload, qos=1) for payload in payloads]
        for info in infos:
            info.wait_for_publish(WAIT_S)
            assert info.is_published()

    def wait_for(self, count: int, timeout: float = WAIT_S) -> list[bytes]:
        """Wait until ``count`` messages arrived (or the timeout passed); return all so far."""
        with self._lock:
            self._lock.wait_for(lambda: len(self._payloads) >= count, timeout)
            return list(self._payloads)


@contextmanager
def connected(
    broker: Mosquitto, client_id: str = "", clean_session: bool = True
) -> Iterator[Client]:
    """A client logged in as the broker's admin, who may use every topic."""
    client = Client(client_id, clean_session)
    client.paho.username_pw_set(broker.admin_username, broker.admin_password)
    client.paho.connect(broker.host, broker.port)
    client.paho.loop_start()
    try:
        assert client.connected.wait(WAIT_S), f"could not connect to {broker.url}"
        yield client
    finally:
        client.paho.disconnect()
        client.paho.loop_stop()


def offline_backlog(broker: Mosquitto, count: int) -> tuple[list[bytes], int]:
    """A subscriber with a persistent session goes away while ``count`` messages are sent.

    Returns what it receives when it comes back, and how many messages the broker counted as
    dropped meanwhile: its queue limit for the absent subscriber decides both.
    """
    client_id = f"slow-{uuid.uuid4().hex[:8]}"
    with connected(broker, client_id, clean_session=False) as subscriber:
        subscriber.subscribe("backlog/#")
    with connected(broker) as publisher:
        publisher.publish_all("backlog/x", [str(i).encode() for i in range(count)])
    dropped = broker.dropped_messages()
    with connected(broker, client_id, clean_session=False) as subscriber:
        return subscriber.wait_for(count - dropped), dropped


@pytest.mark.mosquitto
def test_a_subscriber_receives_what_another_client_publishes(broker: Mosquitto) -> None:
    assert broker.url == f"mqtt://admin:{broker.admin_password}@127.0.0.1:{broker.port}"
    with connected(broker) as subscriber, connected(broker) as publisher:
        subscriber.subscribe("fieldhub/test/#")
        publisher.publish_all("fieldhub/test/hello", [b"hello"])
        assert subscriber.wait_for(1) == [b"hello"]


@pytest.mark.mosquitto
def test_anonymous_clients_and_wrong_passwords_are_refused(broker: Mosquitto) -> None:
    for password in (None, "wrong"):
        client = Client()
        refused = threading.Event()
        client.paho.on_connect_fail = lambda *_, refused=refused: refused.set()
        client.paho.on_disconnect = lambda *_, refused=refused: refused.set()
        if password is not None:
            client.paho.username_pw_set(broker.admin_username, password)
        client.paho.connect(broker.host, broker.port)
        client.paho.loop_start()
        try:
            assert refused.wait(WAIT_S)
            assert not client.connected.is_set()
        finally:
            client.paho.loop_stop()


@pytest.mark.mosquitto
def test_an_offline_subscriber_gets_its_whole_backlog_and_nothing_is_dropped(
    broker: Mosquitto,
) -> None:
    # 1500 is above Mosquitto's default queue of 1000, which would drop the rest.
    received, dropped = offline_backlog(broker, 1500)
    assert dropped == 0
    assert received == [str(i).encode() for i in range(1500)]


@pytest.mark.mosquitto
def test_a_small_queue_drops_messages_and_the_drops_are_counted(tmp_path: Path) -> None:
    with Mosquitto(tmp_path, extra_config="max_queued_messages 100") as small:
        received, dropped = offline_backlog(small, 500)
    assert dropped > 0
    # The oldest messages are kept, in order; the newest are the ones lost.
    assert received == [str(i).encode() for i in range(500 - dropped)]


@pytest.mark.mosquitto
def test_clients_connect_again_after_a_restart(broker: Mosquitto) -> None:
    url = broker.url
    broker.restart()
    assert broker.url == url
    with connected(broker) as subscriber, connected(broker) as publisher:
        subscriber.subscribe("after/restart")
        publisher.publish_all("after/restart", [b"back"])
        assert subscriber.wait_for(1) == [b"back"]


@pytest.mark.mosquitto
def test_stop_frees_the_port_and_can_be_repeated(tmp_path: Path) -> None:
    broker = Mosquitto(tmp_path)
    broker.start()
    assert broker.running
    broker.stop()
    broker.stop()
    assert not broker.running
    with (
        pytest.raises(ConnectionRefusedError),
        socket.create_connection((broker.host, broker.port), 1),
    ):
        pass


@pytest.mark.mosquitto
def test_a_bad_config_line_fails_start_with_the_reason(tmp_path: Path) -> None:
    with pytest.raises(ServerStartError, match="no_such_option"):
        Mosquitto(tmp_path, extra_config="no_such_option true").start()


def test_a_missing_program_names_the_debian_package(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(shutil, "which", lambda *args, **kwargs: None)
    with pytest.raises(ServerUnavailable, match="apt-get install mosquitto"):
        Mosquitto(tmp_path)


def test_free_port_can_be_bound() -> None:
    port = free_port()
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", port))


# --- PostgreSQL ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def postgres(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Postgres]:
    with Postgres(tmp_path_factory.mktemp("postgres")) as server:
        yield server


@pytest.fixture
def database_url(postgres: Postgres, request: pytest.FixtureRequest) -> str:
    """A new, empty database for each test, named after it for reading the server log."""
    name = re.sub(r"[^a-z0-9_]", "_", request.node.name.lower())[:50]
    return postgres.create_database(f"{name}_{uuid.uuid4().hex[:8]}")


def dsn(url: str) -> str:
    """asyncpg takes the plain scheme; SQLAlchemy's URL names the driver."""
    return url.replace("postgresql+asyncpg://", "postgresql://", 1)


@pytest.mark.postgres
async def test_a_table_round_trips_rows(database_url: str) -> None:
    conn = await asyncpg.connect(dsn(database_url))
    try:
        await conn.execute("CREATE TABLE reading (device text, value double precision)")
        await conn.executemany(
            "INSERT INTO reading VALUES ($1, $2)", [("pump-1", 1.5), ("pump-2", -3.0)]
        )
        rows = await conn.fetch("SELECT device, value FROM reading ORDER BY device")
    finally:
        await conn.close()
    assert [tuple(row) for row in rows] == [("pump-1", 1.5), ("pump-2", -3.0)]


@pytest.mark.postgres
async def test_each_database_starts_empty(postgres: Postgres, database_url: str) -> None:
    conn = await asyncpg.connect(dsn(database_url))
    try:
        await conn.execute("CREATE TABLE only_here (id int)")
    finally:
        await conn.close()
    other_url = await asyncio.to_thread(postgres.create_database, "other_db")
    other = await asyncpg.connect(dsn(other_url))
    try:
        found = await other.fetchval("SELECT to_regclass('only_here')")
    finally:
        await other.close()
    assert found is None


@pytest.mark.postgres
async def test_the_default_database_exists(postgres: Postgres) -> None:
    assert postgres.url == f"postgresql+asyncpg://fieldhub@127.0.0.1:{postgres.port}/fieldhub"
    conn = await asyncpg.connect(dsn(postgres.url))
    try:
        assert await conn.fetchval("SELECT current_database()") == "fieldhub"
    finally:
        await conn.close()


@pytest.mark.postgres
def test_database_names_that_are_not_plain_identifiers_are_refused(postgres: Postgres) -> None:
    with pytest.raises(ValueError, match="lower-case identifier"):
        postgres.create_database("x; DROP DATABASE fieldhub")
