"""Device identity, enforced by both brokers: real paho clients against the embedded broker and
Mosquitto, with the credentials the hub issued (or wrong ones).

Every refusal is checked as a device sees it (the broker refuses the connection or the
subscription, or drops the publish) and as the hub sees it (nothing stored, nothing delivered).
"Nothing arrived" is never a bare sleep: a message that must come after the forbidden one, on
the same path, fences it.
"""

from __future__ import annotations

import asyncio
import getpass
import logging
import os
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest

from fieldhub.clock import now_ms
from fieldhub.hub.app import Hub
from fieldhub.hub.broker.dynsec import DynSec, MosquittoAccess, device_role
from fieldhub.hub.broker.keyring import MqttIdentity
from fieldhub.hub.store.credentials import CredentialStore, IssuedCredentials
from fieldhub.hub.store.database import create_engine, migrate, sqlite_url
from fieldhub.protocol import Channel, Status, Telemetry, acl, encode, topic_for
from tests.conftest import HubFactory, api_client, clear_retained
from tests.device_client import TestDevice
from tests.support.servers import Mosquitto, Postgres

FIELDHUB = [sys.executable, "-m", "fieldhub"]
REFUSED = 128  # SUBACK return code
Connect = Callable[..., Awaitable[TestDevice]]


@pytest.fixture(
    params=[
        pytest.param("embedded", id="amqtt"),
        pytest.param("mosquitto", id="mosquitto", marks=pytest.mark.mosquitto),
    ]
)
async def hub(request: pytest.FixtureRequest, make_hub: HubFactory) -> AsyncIterator[Hub]:
    """A hub (SQLite) on each broker (``make_hub`` clears what its devices left retained on
    the shared Mosquitto)."""
    async with make_hub(broker=request.param) as running:
        yield running


@pytest.fixture
async def connect(hub: Hub) -> AsyncIterator[Connect]:
    """``await connect(login)``: a paho device logged in with issued credentials, an
    ``MqttIdentity`` or nothing (None); ``username=``, ``password=``, ``client_id=`` replace
    parts of it. Raises ``ConnectionRefusedError`` when the broker refuses. Closed after."""
    made: list[TestDevice] = []

    async def connect_as(
        login: IssuedCredentials | MqttIdentity | None, subscribe: bool = True, **given: Any
    ) -> TestDevice:
        options: dict[str, Any] = {"username": None, "password": None, "client_id": "nobody"}
        if isinstance(login, IssuedCredentials):
            options = {"username": login.username, "password": login.secret}
            options["client_id"] = login.client_id
        elif isinstance(login, MqttIdentity):
            options = {"username": login.username, "password": login.password}
            options["client_id"] = login.client_id
        options.update(given)
        device = await TestDevice.connect(
            hub.broker_url, options["client_id"], subscribe=subscribe, **options
        )
        made.append(device)
        return device

    yield connect_as
    for device in made:
        device.close()


async def new_device(hub: Hub, name: str, uid: str) -> IssuedCredentials:
    return (await hub.devices.create(f"{name}-{uid}")).credentials


async def wait_until(predicate: Callable[[], Any], what: str, within_s: float = 10) -> None:
    """Wait for ``predicate()`` (a bool, or an awaitable of one) to come true."""
    deadline = time.monotonic() + within_s
    while True:
        result = predicate()
        if await result if asyncio.iscoroutine(result) else result:
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"no {what} within {within_s} s")
        await asyncio.sleep(0.02)


async def stored_keys(hub: Hub, device_id: str) -> list[str]:
    async with api_client(hub) as api:
        return sorted((await api.get(f"/api/devices/{device_id}/latest")).json())


def telemetry(seq: int, **values: Any) -> bytes:
    return encode(Telemetry(seq=seq, ts=now_ms(), values=values))


# --- who may connect -----------------------------------------------------------------------------


async def test_the_issued_credentials_connect_and_what_the_device_sends_is_stored(
    hub: Hub, connect: Connect, uid: str
) -> None:
    issued = await new_device(hub, "atm", uid)
    assert issued.client_id == f"atm-{uid}"
    assert issued.username.startswith(f"atm-{uid}.")
    assert issued.secret not in repr(issued)

    device = await connect(issued)
    device.telemetry(1, t=20.5)
    await device.wait_acked(1)
    assert await stored_keys(hub, issued.device_id) == ["t"]
    assert await hub.credentials.verify(issued.username, issued.secret, issued.client_id) == (
        issued.device_id
    )


async def test_the_rest_api_returns_working_credentials_once(hub: Hub, connect: Connect, uid: str):
    async with api_client(hub) as api:
        created = (await api.post("/api/devices", json={"id": f"rest-{uid}"})).json()
        again = (await api.get(f"/api/devices/rest-{uid}")).json()
    login = created["credentials"]
    assert "credentials" not in again
    device = await connect(
        None,
        client_id=login["client_id"],
        username=login["username"],
        password=login["secret"],
    )
    device.telemetry(1, t=1)
    await device.wait_acked(1)


async def test_anonymous_clients_are_refused(hub: Hub, connect: Connect, uid: str) -> None:
    issued = await new_device(hub, "atm", uid)
    with pytest.raises(ConnectionRefusedError):
        await connect(None, client_id=issued.client_id)
    with pytest.raises(ConnectionRefusedError):  # a user name without a password
        await connect(None, client_id=issued.client_id, username=issued.username)
    with pytest.raises(ConnectionRefusedError):  # an empty password
        await connect(issued, password="")


async def test_a_wrong_secret_is_refused(hub: Hub, connect: Connect, uid: str) -> None:
    issued = await new_device(hub, "atm", uid)
    other = await new_device(hub, "kiosk", uid)
    last = issued.secret[-1]
    with pytest.raises(ConnectionRefusedError):
        await connect(issued, password=issued.secret[:-1] + ("A" if last != "A" else "B"))
    with pytest.raises(ConnectionRefusedError):  # another device's secret
        await connect(issued, password=other.secret)
    with pytest.raises(ConnectionRefusedError):  # a key id nobody has
        await connect(issued, username=f"{issued.device_id}.00000000")


async def test_the_right_secret_with_another_client_id_is_refused(
    hub: Hub, connect: Connect, uid: str
) -> None:
    issued = await new_device(hub, "atm", uid)
    victim = await new_device(hub, "victim", uid)
    for client_id in (victim.client_id, f"other-{uid}", hub.mqtt_identity.client_id):
        with pytest.raises(ConnectionRefusedError):
            await connect(issued, client_id=client_id)
    with pytest.raises(ConnectionRefusedError):  # nor another device's key with ours
        await connect(victim, client_id=issued.client_id)


@pytest.mark.parametrize(
    "bad", ["+", "#", "/", "$", "\x00"], ids=["plus", "hash", "slash", "dollar", "nul"]
)
async def test_client_ids_and_user_names_with_wildcards_slash_dollar_or_nul_are_refused(
    hub: Hub, connect: Connect, uid: str, bad: str
) -> None:
    issued = await new_device(hub, "atm", uid)
    for client_id in (f"{bad}", f"atm{bad}{uid}", f"{issued.client_id}{bad}"):
        with pytest.raises(ConnectionRefusedError):
            await connect(issued, client_id=client_id)
    for username in (f"{bad}", f"{issued.username}{bad}", f"{bad}{issued.username}"):
        with pytest.raises(ConnectionRefusedError):
            await connect(issued, username=username)
    await connect(issued)  # and the real one still works


# --- what a device may do -------------------------------------------------------------------------


async def test_a_device_cannot_publish_into_another_devices_subtree(
    hub: Hub, connect: Connect, uid: str
) -> None:
    attacker = await connect(await new_device(hub, "attacker", uid))
    victim = (await new_device(hub, "victim", uid)).device_id
    for channel in (Channel.TELEMETRY, Channel.EVENT, Channel.STATE):
        attacker.publish_raw(topic_for(victim, channel), telemetry(1, t=666))
    attacker.publish_raw(topic_for(victim, Channel.STATUS), encode(Status(online=True)))
    attacker.publish_raw(topic_for(victim, Channel.REPLY, hub.settings.instance), b"{}")
    attacker.telemetry(1, t=1)  # the fence: it travels after the forged ones
    await attacker.wait_acked(1)

    assert await stored_keys(hub, victim) == []
    record = await hub.registry.get(victim)
    assert (record.acked_seq, record.presence, record.connected, record.reported) == (
        0,
        "unknown",
        None,
        {},
    )
    # The broker dropped them: the hub heard only the fence. (Status is not counted here: the
    # shared test Mosquitto replays retained statuses of other tests' devices.)
    received = hub.stats.received
    assert (received["telemetry"], received["event"], received["state"], received["reply"]) == (
        1,
        0,
        0,
        0,
    )


async def test_a_device_cannot_read_another_devices_channels_nor_everything(
    hub: Hub, connect: Connect, uid: str
) -> None:
    spy = await connect(await new_device(hub, "spy", uid), subscribe=False)
    victim_login = await new_device(hub, "victim", uid)
    victim_id = victim_login.device_id
    others = [Channel.ACK, Channel.CMD, Channel.REJECT, Channel.DESIRED, Channel.TELEMETRY]
    for topic_filter in [
        *(topic_for(victim_id, channel) for channel in others),
        "#",
        "fh/v1/#",
        "fh/v1/+/cmd",
        "fh/v1/+/ack",
        f"fh/v1/{victim_id}/#",
        f"fh/v1/{spy.device_id}/#",  # even its own subtree as a wildcard: it spans all channels
        "$SYS/#",
    ]:
        assert await spy.subscribe(topic_filter) == REFUSED, topic_filter

    victim = await connect(victim_login)
    assert await victim.subscribe(topic_for(victim_id, Channel.CMD)) == 1
    assert await victim.subscribe(topic_for(victim_id, Channel.DESIRED)) == 1
    victim.telemetry(1, t=1)
    await victim.wait_acked(1)  # an ack went to the victim, then a command and desired state
    command = (topic_for(victim_id, Channel.CMD), b'{"id":"c1"}')
    hub.bus.publish(*command, qos=1)
    hub.bus.publish(topic_for(victim_id, Channel.DESIRED), b'{"version":1}', qos=1, retain=True)
    await wait_until(lambda: command in victim.messages, "the command at the victim")
    await wait_until(
        lambda: any(t.endswith("/desired") for t, _p in victim.messages), "the desired state"
    )
    assert spy.messages == []  # subscribed before any of it, it received none


async def test_retained_messages_are_replayed_only_where_allowed(
    hub: Hub, connect: Connect, uid: str
) -> None:
    a_login, b_login = await new_device(hub, "a", uid), await new_device(hub, "b", uid)
    a = await connect(a_login)
    a.online()  # retained status: the hub subscribes to every device's status
    hub.bus.publish(topic_for(a.device_id, Channel.DESIRED), b'{"version":2}', qos=1, retain=True)
    await wait_until(lambda: hub.presence.get(a.device_id).presence == "online", "a online")

    b = await connect(b_login)  # connects after those were retained
    assert await b.subscribe(topic_for(b.device_id, Channel.DESIRED)) == 1
    hub.bus.publish(topic_for(b.device_id, Channel.DESIRED), b'{"version":1}', qos=1, retain=True)
    await wait_until(lambda: len(b.messages) >= 1, "b's desired state")
    assert [t for t, _p in b.messages] == [topic_for(b.device_id, Channel.DESIRED)]


async def test_a_device_cannot_publish_on_the_hubs_channels_even_its_own(
    hub: Hub, connect: Connect, uid: str
) -> None:
    device = await connect(await new_device(hub, "atm", uid))
    assert await device.subscribe(topic_for(device.device_id, Channel.CMD)) == 1
    device.publish_raw(Channel.ACK, b'{"seq":999}')  # a forged storage ack, to itself
    device.publish_raw(Channel.REJECT, b'{"error":"forged"}')
    device.publish_raw(Channel.CMD, b'{"id":"forged"}')
    device.publish_raw(Channel.DESIRED, b'{"version":9}')
    device.telemetry(1, t=1)
    await device.wait_acked(1)
    hub.bus.publish(topic_for(device.device_id, Channel.CMD), b'{"id":"real"}', qos=1)
    await wait_until(lambda: b'{"id":"real"}' in {p for _t, p in device.messages}, "command")

    assert device.acks == [1]
    assert device.rejects == []
    assert [p for t, p in device.messages if t.endswith("/cmd")] == [b'{"id":"real"}']


async def test_a_last_will_on_another_devices_topic_never_reaches_it(
    hub: Hub, connect: Connect, uid: str
) -> None:
    victim = (await new_device(hub, "victim", uid)).device_id
    attacker_login = await new_device(hub, "attacker", uid)
    witness = await connect(await new_device(hub, "witness", uid))
    witness.online()
    await wait_until(lambda: hub.presence.get(witness.device_id).presence == "online", "online")
    forged_will = topic_for(victim, Channel.STATUS)
    try:
        attacker = await connect(attacker_login, subscribe=False, will_topic=forged_will)
    except ConnectionRefusedError:
        pass  # the embedded broker refuses such a CONNECT outright
    else:
        attacker.vanish()  # Mosquitto checks the will when it would publish it
    witness.vanish()  # the fence: its own will follows
    await wait_until(lambda: hub.presence.get(witness.device_id).presence == "offline", "offline")
    assert hub.presence.get(victim).presence == "unknown"


# --- rotation and revocation ---------------------------------------------------------------------


async def test_after_a_rotation_both_secrets_work_until_the_grace_period_ends(
    hub: Hub, connect: Connect, uid: str
) -> None:
    old = await new_device(hub, "atm", uid)
    new = await hub.devices.rotate_credentials(old.device_id, grace_s=3)
    assert (new.device_id, new.client_id) == (old.device_id, old.client_id)
    assert new.username != old.username
    assert new.secret != old.secret

    (await connect(new)).close()
    still_old = await connect(old)  # stays connected into the end of the grace period
    still_old.telemetry(1, t=1)
    await still_old.wait_acked(1)

    await still_old.wait_disconnected(within_s=10)  # the old key ended: the broker hung up
    await still_old.wait_refused()  # and refuses its reconnection
    assert await hub.credentials.usernames(old.device_id) == [new.username]
    with pytest.raises(ConnectionRefusedError):
        await connect(old)
    device = await connect(new)
    device.telemetry(2, t=2)
    await device.wait_acked(2)


async def test_a_revoked_device_is_disconnected_within_seconds_and_cannot_come_back(
    hub: Hub, connect: Connect, uid: str
) -> None:
    issued = await new_device(hub, "atm", uid)
    device = await connect(issued)
    device.telemetry(1, t=1)
    await device.wait_acked(1)

    started = time.monotonic()
    assert await hub.devices.revoke_credentials(issued.device_id) == [issued.username]
    await device.wait_disconnected(within_s=5)
    assert time.monotonic() - started < 5
    await device.wait_refused()
    with pytest.raises(ConnectionRefusedError):
        await connect(issued)
    assert await hub.credentials.verify(issued.username, issued.secret, issued.client_id) is None


async def test_deleting_a_device_revokes_its_credentials(
    hub: Hub, connect: Connect, uid: str
) -> None:
    issued = await new_device(hub, "atm", uid)
    device = await connect(issued)
    await hub.devices.delete(issued.device_id)
    await device.wait_disconnected(within_s=5)
    assert await hub.credentials.usernames(issued.device_id) == []
    with pytest.raises(ConnectionRefusedError):
        await connect(issued)


async def test_credential_changes_are_audited_without_secrets(hub: Hub, uid: str) -> None:
    issued = await new_device(hub, "atm", uid)
    rotated = await hub.devices.rotate_credentials(issued.device_id, 60, actor="user:alice")
    await hub.devices.revoke_credentials(issued.device_id, actor="user:bob", source="10.0.0.9")

    entries = (await hub.audit.query(target=issued.device_id)).entries
    assert [(e.actor, e.action, e.outcome) for e in reversed(entries)] == [
        ("hub", "device.credentials.issued", "ok"),
        ("user:alice", "device.credentials.rotated", "ok"),
        ("user:bob", "device.credentials.revoked", "ok"),
    ]
    assert entries[0].source == "10.0.0.9"
    assert entries[0].detail["usernames"] == sorted([issued.username, rotated.username])
    assert entries[1].detail["ending"] == [issued.username]
    for entry in entries:
        assert issued.secret not in repr(entry)
        assert rotated.secret not in repr(entry)


@pytest.mark.parametrize(
    "broker",
    ["embedded", pytest.param("mosquitto", marks=pytest.mark.mosquitto)],
    ids=["amqtt", "mosquitto"],
)
async def test_no_secret_is_ever_logged_even_at_debug(
    broker: str,
    make_hub: HubFactory,
    caplog: pytest.LogCaptureFixture,
    request: pytest.FixtureRequest,
    uid: str,
) -> None:
    caplog.set_level(logging.DEBUG)  # every logger, amqtt's packet log included
    async with make_hub(broker=broker) as hub:
        issued = await new_device(hub, "atm", uid)
        device = await TestDevice.connect(
            hub.broker_url, issued.client_id, username=issued.username, password=issued.secret
        )
        device.telemetry(1, t=1)
        await device.wait_acked(1)
        with pytest.raises(ConnectionRefusedError):  # a refusal names the user, not the secret
            await TestDevice.connect(
                hub.broker_url, issued.client_id, username=issued.username, password="wrong-pw"
            )
        rotated = await hub.devices.rotate_credentials(issued.device_id, 0)
        await hub.devices.revoke_credentials(issued.device_id)
        await device.wait_disconnected()
        device.close()
        secrets_ = [issued.secret, rotated.secret, "wrong-pw", hub.mqtt_identity.password]
        if hub.settings.broker:
            mosquitto: Mosquitto = request.getfixturevalue("mosquitto")
            secrets_.append(mosquitto.admin_password)
            await clear_retained(mosquitto, [issued.device_id])  # its will, as it was kicked
    logged = caplog.text
    assert issued.username in logged  # the log does speak of the device ...
    for secret in secrets_:
        assert secret not in logged  # ... but never of its secrets


# --- the hub's own identity ----------------------------------------------------------------------


async def test_the_hubs_identity_is_its_own_and_no_device_can_use_it(
    hub: Hub, connect: Connect, uid: str
) -> None:
    identity = hub.mqtt_identity
    assert identity.username == identity.client_id == f"hub:{hub.settings.instance}"
    assert identity.password not in repr(identity)
    issued = await new_device(hub, "atm", uid)

    # The hub is connected with it, and is the one that may send commands to any device.
    device = await connect(issued)
    assert await device.subscribe(topic_for(issued.device_id, Channel.CMD)) == 1
    hub.bus.publish(topic_for(issued.device_id, Channel.CMD), b'{"id":"from-hub"}', qos=1)
    await wait_until(lambda: any(p == b'{"id":"from-hub"}' for _t, p in device.messages), "cmd")

    # Devices cannot borrow it: not its name, not its client id, not its password.
    with pytest.raises(ConnectionRefusedError):
        await connect(issued, username=identity.username)
    with pytest.raises(ConnectionRefusedError):
        await connect(identity, password=issued.secret)
    with pytest.raises(ConnectionRefusedError):
        await connect(identity, client_id=issued.client_id)
    assert hub.bus.connected  # none of that disturbed the hub's session


def test_the_topic_rules_come_from_the_channel_directions() -> None:
    assert acl.device_publish_filters("d") == [
        "fh/v1/d/event",
        "fh/v1/d/reply/+",
        "fh/v1/d/state",
        "fh/v1/d/status",
        "fh/v1/d/telemetry",
        "fh/v1/d/upload",
    ]
    assert acl.device_subscribe_filters("d") == [
        "fh/v1/d/ack",
        "fh/v1/d/cmd",
        "fh/v1/d/desired",
        "fh/v1/d/media",
        "fh/v1/d/reject",
    ]
    assert acl.hub_publish_filters() == [
        "fh/notify/#",  # MQTT notification channels (docs/notifications.md)
        "fh/v1/+/ack",
        "fh/v1/+/cmd",
        "fh/v1/+/desired",
        "fh/v1/+/media",
        "fh/v1/+/reject",
        "fh/v1/+/status",  # only to clear a deleted device's retained status
    ]
    assert acl.device_may_publish("d", "fh/v1/d/reply/hub-a")
    assert not acl.device_may_publish("d", "fh/v1/d/reply/a/b")
    assert not acl.device_may_publish("d", "fh/v1/d/ack")
    assert not acl.hub_may_publish("fh/v1/d/telemetry")
    assert acl.hub_may_publish("fh/notify/ops/alarms")
    assert not acl.hub_may_publish("fh/notify/ops/+")
    assert not acl.hub_may_publish("fh/notify/")
    assert acl.hub_may_subscribe("fh/v1/+/telemetry")
    assert not acl.hub_may_subscribe("#")


# --- Mosquitto: what the hub owns in dynamic security --------------------------------------------


@pytest.mark.mosquitto
async def test_at_start_the_hub_deletes_device_clients_it_does_not_know_and_only_those(
    mosquitto: Mosquitto, make_hub: HubFactory, uid: str
) -> None:
    admin = MqttIdentity(mosquitto.admin_username, mosquitto.admin_password, "")
    ghost = IssuedCredentials(f"ghost-{uid}", f"ghost-{uid}.0000abcd", "not-in-any-store")
    async with DynSec(mosquitto.host, mosquitto.port, admin) as dynsec:
        await MosquittoAccess(dynsec).grant(ghost, [])
        await dynsec.run(
            [
                {"command": "createClient", "username": f"operator-{uid}", "password": "pw"},
                {"command": "createClient", "username": f"look-{uid}.0000abcd", "password": "x"},
            ]
        )

    async with make_hub(broker="mosquitto") as hub:
        kept = await hub.devices.create(f"kept-{uid}")
        async with DynSec(mosquitto.host, mosquitto.port, admin) as dynsec:
            listed = await dynsec.run(
                [
                    {"command": "listClients", "verbose": False},
                    {"command": "listRoles", "verbose": False},
                    {"command": "getDefaultACLAccess"},
                    {"command": "getAnonymousGroup"},
                ]
            )
    clients, roles = set(listed[0]["data"]["clients"]), set(listed[1]["data"]["roles"])
    assert ghost.username not in clients
    assert device_role(ghost.device_id) not in roles
    assert {f"operator-{uid}", f"look-{uid}.0000abcd"} <= clients  # not the hub's: untouched
    assert kept.credentials.username in clients
    assert device_role(kept.record.id) in roles
    assert hub.mqtt_identity.username in clients
    defaults = {a["acltype"]: a["allow"] for a in listed[2]["data"]["acls"]}
    assert defaults == {
        "publishClientSend": False,
        "publishClientReceive": False,
        "subscribe": False,
        "unsubscribe": True,
    }
    assert not listed[3].get("data", {}).get("group", {}).get("groupname")


# --- the store, on both databases ----------------------------------------------------------------


@pytest.mark.parametrize("db", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
async def test_the_store_keeps_digests_and_verifies_rotates_expires_and_revokes(
    db: str, request: pytest.FixtureRequest, tmp_path: Any, uid: str
) -> None:
    if db == "postgres":
        postgres: Postgres = request.getfixturevalue("postgres")
        url = await asyncio.to_thread(postgres.create_database, f"creds_{uid}")
    else:
        url = sqlite_url(tmp_path / "creds.db")
    engine = create_engine(url)
    try:
        await migrate(engine)
        store = CredentialStore(engine)
        before = await store.fingerprint()
        first = await store.issue("atm-1")
        assert await store.fingerprint() != before
        (key,) = await store.keys("atm-1")
        assert key.secret_hash != first.secret
        assert len(key.secret_hash) == 64
        assert await store.verify(first.username, first.secret, "atm-1") == "atm-1"
        assert await store.verify(first.username, first.secret, "atm-2") is None
        assert await store.verify(first.username, first.secret + "x", "atm-1") is None
        assert await store.verify("atm-1.ffffffff", first.secret, "atm-1") is None

        second = await store.rotate("atm-1", grace_s=60)
        assert await store.verify(first.username, first.secret, "atm-1") == "atm-1"
        assert await store.expire_due(now_ms()) == []
        assert await store.expire_due(now_ms() + 61_000) == [first.username]
        assert await store.usernames("atm-1") == [second.username]

        third = await store.rotate("atm-1", grace_s=0)  # ends the others at once
        assert await store.verify(second.username, second.secret, "atm-1") is None
        assert await store.revoke("atm-1") == sorted([second.username, third.username])
        assert await store.keys() == []
    finally:
        await engine.dispose()


# --- the CLI, next to a running hub ---------------------------------------------------------------


async def fieldhub_cli(hub: Hub, *args: str) -> tuple[int, str, str]:
    """Run ``fieldhub ARGS`` on ``hub``'s database and broker (as FIELDHUB_* settings)."""
    env = {**os.environ, "FIELDHUB_DATA": str(hub.settings.data)}
    if hub.settings.broker:
        env["FIELDHUB_BROKER"] = hub.settings.broker
    process = await asyncio.create_subprocess_exec(
        *FIELDHUB,
        *args,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), 60)
    return process.returncode or 0, out.decode(), err.decode()


async def test_cli_device_add_prints_credentials_once_and_the_running_hub_takes_them(
    hub: Hub, connect: Connect, uid: str
) -> None:
    device_id = f"cli-{uid}"
    code, out, err = await fieldhub_cli(
        hub, "device", "add", device_id, "--name", "Door 7", "--label", "site=berlin"
    )
    assert code == 0, err
    printed = dict(line.split(": ", 1) for line in out.strip().splitlines())
    assert set(printed) == {"client_id", "username", "secret"}
    assert printed["client_id"] == device_id
    assert len(printed["secret"]) >= 43
    login = IssuedCredentials(device_id, printed["username"], printed["secret"])

    # The running hub picks it up (embedded: within a second; Mosquitto: the CLI told it).
    async def connected() -> TestDevice | None:
        try:
            return await connect(login)
        except ConnectionRefusedError:
            return None

    device = None
    deadline = time.monotonic() + 10
    while device is None and time.monotonic() < deadline:
        device = await connected()
    assert device is not None, "the CLI's device could not connect"
    # Mosquitto lets it in at once; the hub notices the new device within a second, and
    # acknowledges what the device sends (and, as agents do, sends again until acknowledged).
    deadline = time.monotonic() + 10
    while not device.acked and time.monotonic() < deadline:
        device.telemetry(1, t=7)
        await asyncio.sleep(0.5)
    await device.wait_acked(1)
    assert (await hub.registry.get(device_id)).labels == {"site": "berlin"}

    code, out, err = await fieldhub_cli(hub, "device", "list")
    assert code == 0, err
    assert device_id in out
    assert printed["username"] in out
    assert "Door 7" in out
    assert printed["secret"] not in out + err

    code, out, err = await fieldhub_cli(hub, "device", "revoke", device_id)
    assert code == 0, err
    await device.wait_disconnected(within_s=5)
    await device.wait_refused()
    entries = (await hub.audit.query(target=device_id)).entries
    assert {e.actor for e in entries} == {f"cli:{getpass.getuser()}"}
    assert [e.action for e in reversed(entries)] == [
        "device.credentials.issued",
        "device.credentials.revoked",
    ]


async def test_cli_refuses_bad_ids_and_unknown_devices_in_one_line(hub: Hub, uid: str) -> None:
    code, _out, err = await fieldhub_cli(hub, "device", "add", "bad#id")
    assert (code, "not valid" in err, "Traceback" in err) == (2, True, False)
    code, _out, err = await fieldhub_cli(hub, "device", "rotate", f"nope-{uid}")
    assert (code, "not registered" in err, "Traceback" in err) == (1, True, False)
