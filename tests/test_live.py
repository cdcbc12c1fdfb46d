"""The live API (``/api/live``) over real HTTP, with real devices and agents on a real broker.

Each test serves the hub's app with uvicorn (``served``), connects WebSocket clients with the
``websockets`` library (an independent implementation of the protocol), and makes devices do
things over MQTT: what a subscribed client then receives is checked against what the REST API
says about the same objects.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.client import ClientProtocol
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.frames import Frame as WsFrame
from websockets.frames import Opcode
from websockets.protocol import State as ProtocolState
from websockets.uri import parse_uri

from fieldhub.clock import now_ms
from fieldhub.hub import secrets as tokens
from fieldhub.hub.api.security import SESSION_COOKIE
from fieldhub.hub.app import Hub
from fieldhub.hub.live.client import ClientQueue, frame
from fieldhub.protocol import Channel, Event, State, Status, Telemetry
from tests.conftest import DeviceFactory
from tests.fleet import Fleet
from tests.hub_client import add_user, served, user_token
from tests.waiting import HTTP_TIMEOUT_S, eventually

Frame = dict[str, Any]


class LiveSocket:
    """A client of ``/api/live``: sends requests, and waits for the frames it wants while
    keeping every frame it received (``seen``)."""

    def __init__(self, connection: ClientConnection) -> None:
        self.connection = connection
        self.seen: list[Frame] = []
        self._next = 0

    async def send(self, request: Frame | str) -> None:
        await self.connection.send(request if isinstance(request, str) else json.dumps(request))

    async def _receive(self, within_s: float) -> None:
        message = await asyncio.wait_for(self.connection.recv(), within_s)
        parsed = json.loads(message)
        self.seen.extend(parsed if isinstance(parsed, list) else [parsed])

    async def wait_for(
        self, match: Callable[[Frame], bool], what: str, within_s: float = 5.0
    ) -> Frame:
        """The next frame (after the last one waited for) that ``match`` accepts."""
        deadline = time.monotonic() + within_s
        while True:
            for index in range(self._next, len(self.seen)):
                if match(self.seen[index]):
                    self._next = index + 1
                    return self.seen[index]
            left = deadline - time.monotonic()
            if left <= 0:
                unmatched = self.seen[self._next :]
                pytest.fail(
                    f"no {what} within {within_s} s; {len(unmatched)} others: {unmatched[-3:]}"
                )
            try:
                await self._receive(left)
            except TimeoutError:
                continue

    async def next(self, kind: str, within_s: float = 5.0, **fields: Any) -> Frame:
        """The next frame of ``type`` ``kind`` whose fields include ``fields``."""
        return await self.wait_for(
            lambda f: f["type"] == kind and all(f.get(k) == v for k, v in fields.items()),
            f"{kind} frame {fields or ''}",
            within_s,
        )

    async def subscribe(self, **request: Any) -> Frame:
        await self.send({"op": "subscribe", **request})
        return await self.wait_for(
            lambda f: f["type"] in ("subscribed", "error"), "answer to subscribe"
        )

    async def barrier(self) -> list[Frame]:
        """Everything sent before a ping: the frames up to its pong (the hub answers in order,
        after whatever it had queued for this client)."""
        start = self._next
        await self.send({"op": "ping"})
        await self.next("pong")
        return self.seen[start : self._next - 1]


def ws_url(base: str, query: str = "") -> str:
    return base.replace("http://", "ws://") + "/api/live" + (f"?{query}" if query else "")


@asynccontextmanager
async def live(
    base: str,
    *,
    token: str | None = None,
    cookie: str | None = None,
    origin: str | None = None,
    query: str = "",
    **options: Any,
) -> AsyncIterator[LiveSocket]:
    headers = {}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    if cookie is not None:
        headers["Cookie"] = f"{SESSION_COOKIE}={cookie}"
    async with connect(
        ws_url(base, query), additional_headers=headers, origin=origin, **options
    ) as connection:
        yield LiveSocket(connection)


async def refused(base: str, **options: Any) -> tuple[int, str]:
    """The HTTP status and ``detail`` a refused handshake answered with."""
    with pytest.raises(InvalidStatus) as caught:
        async with live(base, **options):
            pass
    response = caught.value.response
    return response.status_code, json.loads(response.body or b"{}").get("detail", "")


async def token_of(hub: Hub, role: str = "admin", sites: tuple[str, ...] = (), **kw: Any) -> str:
    user = await add_user(hub, role, sites)
    return (await user_token(hub, user, **kw))[1]


@pytest.fixture
async def base(hub: Hub) -> AsyncIterator[str]:
    """The hub's HTTP address, served by uvicorn as ``fieldhub hub`` serves it."""
    async with served(hub) as url:
        yield url


@pytest.fixture
async def admin(hub: Hub) -> str:
    return await token_of(hub)


@pytest.fixture
async def rest(base: str, admin: str) -> AsyncIterator[httpx.AsyncClient]:
    """The REST API over the same HTTP server, as the admin."""
    headers = {"Authorization": f"Bearer {admin}"}
    async with httpx.AsyncClient(base_url=base, headers=headers, timeout=HTTP_TIMEOUT_S) as client:
        yield client


# -- data as it is committed -----------------------------------------------------------------
async def test_telemetry_arrives_within_a_second_of_publishing(
    hub: Hub, base: str, admin: str, connect_device: DeviceFactory
):
    device = await connect_device(hub, "atm", site="berlin")
    async with live(base, token=admin) as client:
        answer = await client.subscribe(devices=[device.device_id])
        assert answer == {"type": "subscribed", "sub": answer["sub"], "devices": [device.device_id]}
        sent_at = time.monotonic()
        ts = now_ms()
        device.telemetry(1, ts=ts, temp=21.5, door="closed")
        got = await client.next("telemetry", within_s=1.0)
        assert time.monotonic() - sent_at < 1.0
        assert got == {
            "type": "telemetry",
            "device": device.device_id,
            "ts": ts,
            "values": {"temp": 21.5, "door": "closed"},
        }


async def test_every_instant_of_a_batched_message_is_a_frame(
    hub: Hub, base: str, admin: str, connect_device: DeviceFactory
):
    device = await connect_device(hub, "atm")
    ts = now_ms()
    async with live(base, token=admin) as client:
        await client.subscribe(devices=[device.device_id], topics=["telemetry"])
        samples = [{"ts": ts + i, "values": {"v": i}} for i in range(3)]
        device.publish(Channel.TELEMETRY, Telemetry(seq=1, samples=samples))
        for i in range(3):
            got = await client.next("telemetry")
            assert (got["ts"], got["values"]) == (ts + i, {"v": i})


async def test_events_carry_the_ids_rest_lists_them_under(
    hub: Hub, base: str, admin: str, rest: httpx.AsyncClient, connect_device: DeviceFactory
):
    device = await connect_device(hub, "atm")
    ts = now_ms()
    async with live(base, token=admin) as client:
        await client.subscribe(devices=[device.device_id], topics=["event"])
        device.publish(
            Channel.EVENT,
            Event(seq=1, ts=ts, type="door.opened", severity="warning", data={"by": "key"}),
        )
        device.publish(Channel.EVENT, Event(seq=2, ts=ts + 5, type="door.closed"))
        first = await client.next("event")
        second = await client.next("event")
    listed = (await rest.get("/api/events", params={"device": device.device_id})).json()
    by_id = {event["id"]: event for event in listed["events"]}
    assert first["event"] == by_id[first["event"]["id"]]
    assert second["event"] == by_id[second["event"]["id"]]
    assert first["event"]["type"] == "door.opened"
    assert first["event"]["data"] == {"by": "key"}
    assert second["event"]["id"] > first["event"]["id"]


async def test_reported_state_changes_are_pushed(
    hub: Hub, base: str, admin: str, connect_device: DeviceFactory
):
    device = await connect_device(hub, "atm")
    ts = now_ms()
    async with live(base, token=admin) as client:
        await client.subscribe(devices=[device.device_id], topics=["state"])
        device.publish(Channel.STATE, State(seq=1, ts=ts, state={"lock": "locked", "fw": "1.2"}))
        got = await client.next("state")
    assert got == {
        "type": "state",
        "device": device.device_id,
        "ts": ts,
        "reported": {"lock": "locked", "fw": "1.2"},
    }


async def test_presence_online_then_offline_as_rest_shows_it(
    hub: Hub, base: str, admin: str, rest: httpx.AsyncClient, connect_device: DeviceFactory
):
    async with live(base, token=admin) as client:
        await client.subscribe(all=True, topics=["presence", "event"])
        device = await connect_device(hub, "atm")
        device.publish(Channel.STATUS, Status(online=True, ts=now_ms()), retain=True)
        online = await client.next("presence", device=device.device_id)
        assert online["presence"]["state"] == "online"
        shown = (await rest.get(f"/api/devices/{device.device_id}")).json()["presence"]
        assert online["presence"] == shown
        logged = await client.next("event", device=device.device_id)
        assert logged["event"]["type"] == "presence.online"
        device.vanish()  # no DISCONNECT: the broker publishes its last will
        offline = await client.next("presence", device=device.device_id, within_s=15)
        assert offline["presence"]["state"] == "offline"
        assert offline["presence"]["connected"] is False
        shown = (await rest.get(f"/api/devices/{device.device_id}")).json()["presence"]
        assert {k: v for k, v in offline["presence"].items() if k != "last_seen"} == {
            k: v for k, v in shown.items() if k != "last_seen"
        }


async def test_command_sent_over_rest_is_followed_to_its_result(
    hub: Hub, base: str, admin: str, rest: httpx.AsyncClient, fleet_of: Callable[[Hub], Fleet]
):
    fleet = fleet_of(hub)
    device_id = await fleet.add("atm")
    async with fleet.agent(device_id), live(base, token=admin) as client:
        await fleet.online(device_id)
        await client.subscribe(devices=[device_id], topics=["command"])
        answer = await rest.post(
            f"/api/devices/{device_id}/commands", json={"action": "lock.unlock"}
        )
        assert answer.status_code == 200, answer.text
        done = answer.json()
        statuses = []
        while not statuses or statuses[-1] != "succeeded":
            got = await client.next("command", device=device_id)
            assert got["command"]["id"] == done["id"]
            statuses.append(got["command"]["status"])
        # Unlocking ends within 50 ms: the agent sends its outcome without an "accepted" first.
        assert statuses == ["queued", "sent", "succeeded"]
        assert got["command"] == done
        assert (await rest.get(f"/api/commands/{done['id']}")).json() == got["command"]


async def test_alarm_changes_are_pushed_after_their_commit(
    hub: Hub, base: str, admin: str, rest: httpx.AsyncClient, connect_device: DeviceFactory
):
    rule = {
        "id": "hot",
        "severity": "major",
        "condition": {
            "kind": "threshold",
            "key": "temp",
            "direction": "above",
            "raise": 50,
            "clear": 45,
        },
    }
    assert (await rest.post("/api/alarm-rules", json=rule)).status_code == 201
    device = await connect_device(hub, "cab")
    async with live(base, token=admin) as client:
        await client.subscribe(devices=[device.device_id], topics=["alarm"])
        device.telemetry(1, temp=70)
        raised = (await client.next("alarm", device=device.device_id))["alarm"]
        assert (raised["change"], raised["state"], raised["value"]) == ("raised", "active", 70)
        stored = (await rest.get(f"/api/alarms/{raised['id']}")).json()
        assert stored["raised_at"] == raised["at"]  # committed before it was pushed
        await rest.post(f"/api/alarms/{raised['id']}/acknowledge", json={"comment": "mine"})
        acked = (await client.next("alarm", device=device.device_id))["alarm"]
        assert (acked["change"], acked["comment"]) == ("acknowledged", "mine")


async def test_the_sweeper_taking_off_maintenance_and_flapping_marks_is_pushed(
    hub: Hub, base: str, admin: str, rest: httpx.AsyncClient, connect_device: DeviceFactory
):
    condition = {"kind": "threshold", "key": "temp", "direction": "above", "raise": 50, "clear": 45}
    rule = {"id": "hot", "condition": condition, "flapping": {"changes": 2, "window_s": 2}}
    assert (await rest.post("/api/alarm-rules", json=rule)).status_code == 201
    worked_on = await connect_device(hub, "worked-on")
    flapping = await connect_device(hub, "flapping")
    window = {
        "name": "swap",
        "scope": {"devices": [worked_on.device_id]},
        "schedule": {"kind": "once", "start": now_ms() - 1000, "end": now_ms() + 3000},
    }
    await hub.maintenance.put(window, actor="test")
    async with live(base, token=admin) as client:
        await client.subscribe(devices=[worked_on.device_id, flapping.device_id], topics=["alarm"])
        worked_on.telemetry(1, temp=70)
        raised = (await client.next("alarm", device=worked_on.device_id))["alarm"]
        assert (await rest.get(f"/api/alarms/{raised['id']}")).json()["in_maintenance"] is True
        flapping.telemetry(1, temp=70)
        first = (await client.next("alarm", device=flapping.device_id))["alarm"]
        await rest.post(f"/api/alarms/{first['id']}/acknowledge", json={})
        await client.next("alarm", device=flapping.device_id)  # acknowledged: it may clear
        for seq, temp in [(2, 40), (3, 70)]:  # raised, cleared, raised again: it flaps
            flapping.telemetry(seq, temp=temp)
            again = (await client.next("alarm", device=flapping.device_id, within_s=10))["alarm"]
        assert (await rest.get(f"/api/alarms/{again['id']}")).json()["flapping"] is True

        taken_off = {}  # the two marks end in either order on a loaded machine
        for _ in range(2):
            frame = await client.wait_for(
                lambda f: (
                    f["type"] == "alarm" and f["alarm"]["change"] in ("maintenance", "settled")
                ),
                "a mark taken off",
                15,
            )
            taken_off[frame["device"]] = frame["alarm"]
        ended = taken_off[worked_on.device_id]
        assert (ended["id"], ended["change"]) == (raised["id"], "maintenance")
        assert (ended["actor"], ended["comment"]) == ("hub", "maintenance ended")
        assert (await rest.get(f"/api/alarms/{raised['id']}")).json()["in_maintenance"] is False
        settled = taken_off[flapping.device_id]
        assert (settled["change"], settled["actor"]) == ("settled", "hub")
        latest = (await rest.get(f"/api/alarms/{settled['id']}")).json()
        assert latest["flapping"] is False


# -- what a subscription covers ----------------------------------------------------------------
async def test_labels_cover_a_device_added_later_and_follow_label_changes(
    hub: Hub, base: str, admin: str, rest: httpx.AsyncClient, connect_device: DeviceFactory
):
    async with live(base, token=admin) as client:
        answer = await client.subscribe(labels={"group": "lobby"})
        assert answer["devices"] == []
        device = await connect_device(hub, "kiosk", group="lobby", site="berlin")
        added = await client.next("device", device=device.device_id)
        assert added == {
            "type": "device",
            "device": device.device_id,
            "change": "added",
            "watched": True,
        }
        device.telemetry(1, v=1)
        assert (await client.next("telemetry"))["device"] == device.device_id

        moved = await rest.patch(
            f"/api/devices/{device.device_id}", json={"labels": {"site": "berlin"}}
        )
        assert moved.status_code == 200
        changed = await client.next("device", device=device.device_id)
        assert (changed["change"], changed["watched"]) == ("changed", False)
        device.telemetry(2, v=2)
        await device.wait_acked(2)  # committed: a frame would be queued by now
        assert [f for f in await client.barrier() if f["type"] == "telemetry"] == []

        back = await rest.patch(
            f"/api/devices/{device.device_id}", json={"labels": {"group": "lobby"}}
        )
        assert back.status_code == 200
        changed = await client.next("device", device=device.device_id)
        assert (changed["change"], changed["watched"]) == ("changed", True)
        device.telemetry(3, v=3)
        assert (await client.next("telemetry"))["values"] == {"v": 3}

        assert (await rest.delete(f"/api/devices/{device.device_id}")).status_code == 204
        deleted = await client.next("device", device=device.device_id)
        assert (deleted["change"], deleted["watched"]) == ("deleted", False)


async def test_unsubscribe_stops_the_frames_of_that_subscription(
    hub: Hub, base: str, admin: str, connect_device: DeviceFactory
):
    device = await connect_device(hub, "atm")
    async with live(base, token=admin) as client:
        sub = (await client.subscribe(devices=[device.device_id]))["sub"]
        await client.send({"op": "unsubscribe", "sub": sub})
        assert await client.next("unsubscribed") == {"type": "unsubscribed", "sub": sub}
        device.telemetry(1, v=1)
        await device.wait_acked(1)
        assert [f for f in await client.barrier() if f["type"] == "telemetry"] == []


async def test_a_user_of_another_site_receives_nothing_of_devices_not_his(
    hub: Hub, base: str, connect_device: DeviceFactory
):
    berlin = await connect_device(hub, "atm-b", site="berlin")
    paris = await connect_device(hub, "atm-p", site="paris")
    viewer = await token_of(hub, "viewer", ("paris",))
    async with live(base, token=viewer) as client:
        assert (await client.subscribe(all=True))["devices"] == [paris.device_id]
        assert (await client.subscribe(devices=[berlin.device_id]))["devices"] == []
        assert (await client.subscribe(labels={"site": "berlin"}))["devices"] == []
        berlin.telemetry(1, v=1)
        berlin.publish(Channel.EVENT, Event(seq=2, ts=now_ms(), type="door.opened"))
        paris.telemetry(1, v=2)
        got = await client.next("telemetry")
        assert got["device"] == paris.device_id
        await berlin.wait_acked(2)
        assert not [f for f in await client.barrier() if f.get("device") == berlin.device_id]
        assert not [f for f in client.seen if f.get("device") == berlin.device_id]


async def test_frames_array_sends_what_waits_as_one_json_array(
    hub: Hub, base: str, admin: str, connect_device: DeviceFactory
):
    device = await connect_device(hub, "atm")
    async with live(base, token=admin, query="frames=array") as client:
        await client.send({"op": "subscribe", "devices": [device.device_id]})
        message = json.loads(await client.connection.recv())
        assert isinstance(message, list)
        assert message[0]["type"] == "subscribed"


# -- authentication ----------------------------------------------------------------------------
async def test_handshakes_without_valid_credentials_are_refused(hub: Hub, base: str):
    assert (await refused(base))[0] == 401
    assert (await refused(base, token="fht_forged"))[0] == 401
    user = await add_user(hub, "viewer")
    token_id, token = await user_token(hub, user)
    await hub.auth.accounts.revoke_token(token_id, owner=user, actor="test", source="")
    status, detail = await refused(base, token=token)
    assert (status, detail) == (401, "the token was revoked")
    metrics_only = await token_of(hub, "admin", scopes=["metrics"])
    assert (await refused(base, token=metrics_only))[0] == 403
    assert (await refused(base, token=await token_of(hub), query="frames=xml"))[0] == 400


async def test_session_cookie_needs_the_hubs_own_origin(hub: Hub, base: str):
    user = await add_user(hub, "viewer")
    session = await hub.auth.authenticator.open_session(user)
    status, detail = await refused(base, cookie=session.token, origin="http://evil.example")
    assert status == 403
    assert "own pages" in detail
    assert (await refused(base, cookie=session.token))[0] == 403  # no Origin at all
    assert (await refused(base, cookie="fhs_forged", origin=base))[0] == 401
    async with live(base, cookie=session.token, origin=base) as client:
        await client.send({"op": "ping"})
        assert await client.next("pong") == {"type": "pong"}


async def test_revoked_token_closes_the_connection_with_4401(hub: Hub, base: str):
    user = await add_user(hub, "viewer")
    token_id, token = await user_token(hub, user)
    async with live(base, token=token) as client:
        await client.subscribe(all=True)
        await hub.auth.accounts.revoke_token(token_id, owner=user, actor="test", source="")
        with pytest.raises(ConnectionClosed) as closed:
            await client.next("never", within_s=10)
    assert closed.value.rcvd is not None
    assert (closed.value.rcvd.code, closed.value.rcvd.reason) == (4401, "the token was revoked")


async def test_logout_closes_the_sessions_connection(hub: Hub, base: str):
    user = await add_user(hub, "viewer")
    session = await hub.auth.authenticator.open_session(user)
    async with live(base, cookie=session.token, origin=base) as client:
        await client.subscribe(all=True)
        await hub.auth.users.end_session(tokens.digest(session.token))
        with pytest.raises(ConnectionClosed) as closed:
            await client.next("never", within_s=10)
    assert closed.value.rcvd is not None
    assert closed.value.rcvd.code == 4401


async def test_a_user_losing_a_site_stops_receiving_its_devices(
    hub: Hub, base: str, connect_device: DeviceFactory
):
    device = await connect_device(hub, "atm", site="berlin")
    user = await add_user(hub, "viewer", ("berlin",))
    _, token = await user_token(hub, user)
    async with live(base, token=token) as client:
        assert (await client.subscribe(all=True))["devices"] == [device.device_id]
        await hub.auth.accounts.update_user(user.id, sites=["paris"], actor="test")
        seq = 0

        async def silent() -> bool:
            nonlocal seq
            seq += 1
            device.telemetry(seq, v=seq)
            await device.wait_acked(seq)
            return not [f for f in await client.barrier() if f["type"] == "telemetry"]

        await eventually(silent, "the device's telemetry to stop", within_s=10)


# -- a misbehaving client ----------------------------------------------------------------------
@pytest.mark.parametrize(
    ("request_text", "says"),
    [
        ("not json", "bad request"),
        ('{"op": "dance"}', "bad request"),
        ('{"devices": ["a"]}', "`op`"),
        ('{"op": "subscribe"}', "exactly one of"),
        ('{"op": "subscribe", "devices": ["a"], "all": true}', "exactly one of"),
        ('{"op": "subscribe", "devices": "atm"}', "$.devices"),
        ('{"op": "subscribe", "all": true, "topics": ["gossip"]}', "$.topics"),
        ('{"op": "unsubscribe", "sub": "s99"}', "no subscription 's99'"),
    ],
)
async def test_bad_requests_get_an_error_and_the_connection_stays(
    base: str, admin: str, request_text: str, says: str
):
    async with live(base, token=admin) as client:
        await client.send(request_text)
        error = await client.next("error")
        assert says in error["message"]
        await client.send({"op": "ping"})
        assert await client.next("pong") == {"type": "pong"}


async def test_binary_and_oversized_requests_get_an_error(base: str, admin: str):
    async with live(base, token=admin) as client:
        await client.connection.send(b'{"op": "ping"}')
        assert "text" in (await client.next("error"))["message"]
        await client.send(json.dumps({"op": "ping", "pad": "x" * 70_000}))
        assert "at most" in (await client.next("error"))["message"]
        await client.send({"op": "ping"})
        await client.next("pong")


class StalledClient:
    """A WebSocket client that reads only when told to: websockets' sans-I/O protocol over a
    plain asyncio stream, whose reader stops taking data from the socket once 128 kB wait in
    it. (The library's own clients keep reading into memory whatever the application does.)"""

    def __init__(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, protocol: ClientProtocol
    ) -> None:
        self.reader, self.writer, self.protocol = reader, writer, protocol
        self.frames: list[Frame] = []

    @classmethod
    async def open(cls, base: str, token: str) -> StalledClient:
        protocol = ClientProtocol(parse_uri(ws_url(base)), max_size=None)
        host, port = base.removeprefix("http://").split(":")
        reader, writer = await asyncio.open_connection(host, int(port))
        request = protocol.connect()
        request.headers["Authorization"] = f"Bearer {token}"
        protocol.send_request(request)
        client = cls(reader, writer, protocol)
        client._flush()
        while protocol.handshake_exc is None and protocol.state is not ProtocolState.OPEN:
            await client._read()
        if protocol.handshake_exc is not None:
            raise protocol.handshake_exc
        return client

    def send(self, request: Frame) -> None:
        self.protocol.send_text(json.dumps(request).encode())
        self._flush()

    def _flush(self) -> None:
        self.writer.write(b"".join(self.protocol.data_to_send()))

    async def _read(self) -> None:
        data = await self.reader.read(1 << 16)
        if not data:
            raise ConnectionError("the hub closed the connection")
        self.protocol.receive_data(data)
        for event in self.protocol.events_received():
            if isinstance(event, WsFrame) and event.opcode is Opcode.TEXT:
                self.frames.append(json.loads(event.data))
        self._flush()  # pongs, close answers

    async def read_until(self, match: Callable[[Frame], bool], within_s: float) -> None:
        async with asyncio.timeout(within_s):
            while not any(match(f) for f in self.frames):
                await self._read()

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(ConnectionError):
            await self.writer.wait_closed()


def _bulky(n: int) -> dict[str, Any]:
    """Values of one instant that make a frame of about 8 kB (``n`` counts them)."""
    return {"n": n, **{f"k{i:02d}": "x" * 250 for i in range(30)}}


async def test_slow_client_loses_oldest_telemetry_and_is_told_fast_one_gets_all(
    hub: Hub, base: str, admin: str, connect_device: DeviceFactory
):
    device = await connect_device(hub, "atm")
    per_message, messages = 25, 60  # 1,500 frames, 13 MB: more than the sockets hold
    total = per_message * messages
    ts = now_ms()
    hub.live.queue_size = 100  # for the slow one: its outbox overflows once the sockets are full
    slow = await StalledClient.open(base, admin)
    try:
        slow.send({"op": "subscribe", "devices": [device.device_id], "topics": ["telemetry"]})
        await slow.read_until(lambda f: f["type"] == "subscribed", 5)
        hub.live.queue_size = 2048
        async with live(base, token=admin, max_size=None) as fast:
            await fast.subscribe(devices=[device.device_id], topics=["telemetry"])
            for seq in range(1, messages + 1):
                first = (seq - 1) * per_message
                samples = [
                    {"ts": ts + n, "values": _bulky(n)} for n in range(first, first + per_message)
                ]
                device.publish(Channel.TELEMETRY, Telemetry(seq=seq, samples=samples))
                await device.wait_acked(seq)
            for n in range(total):  # every frame, in order
                assert (await fast.next("telemetry"))["values"]["n"] == n
            assert not [f for f in fast.seen if f["type"] == "dropped"]

        await slow.read_until(lambda f: f.get("values", {}).get("n") == total - 1, 30)
    finally:
        await slow.close()
    dropped = [f["count"] for f in slow.frames if f["type"] == "dropped"]
    values = [f["values"]["n"] for f in slow.frames if f["type"] == "telemetry"]
    assert dropped, "the slow client was never told it lost frames"
    assert sum(dropped) + len(values) == total
    assert values == sorted(values)  # what it got came in order, the newest last
    assert values[-100:] == list(range(total - 100, total))


# -- the documentation -------------------------------------------------------------------------
def _doc_example() -> str:
    text = (Path(__file__).parent.parent / "docs" / "live.md").read_text(encoding="utf-8")
    return text.split("## Example: a program", 1)[1].split("```python\n", 1)[1].split("```")[0]


async def test_the_example_in_docs_live_md_prints_what_a_device_does(
    hub: Hub, base: str, connect_device: DeviceFactory, capsys: pytest.CaptureFixture[str]
):
    namespace: dict[str, Any] = {"__name__": "docs_live_example"}
    exec(compile(_doc_example(), "docs/live.md", "exec"), namespace)
    device = await connect_device(hub, "atm", site="berlin")
    token = await token_of(hub, "viewer", ("berlin",))
    follower = asyncio.create_task(
        namespace["follow"](ws_url(base).removesuffix("/api/live"), token, "berlin")
    )
    try:
        printed, seq = "", 0

        async def printed_line() -> bool:
            nonlocal printed, seq
            seq += 1  # until the example has subscribed, a value may come too early for it
            device.telemetry(seq, temp=21.5)
            await asyncio.sleep(0.2)
            printed += capsys.readouterr().out
            return "'temp': 21.5" in printed or follower.done()

        await eventually(printed_line, "the example to print the telemetry")
        assert f"{device.device_id} " in printed
    finally:
        follower.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await follower


def test_outbox_drops_the_oldest_telemetry_before_anything_else():
    outbox = ClientQueue(capacity=3)
    outbox.put("t1", droppable=True)
    outbox.put("e1", droppable=False)
    outbox.put_many(["t2", "t3"], droppable=True)  # one too many: t1 goes
    outbox.put("e2", droppable=False)  # t2 goes
    assert outbox.take() == [frame({"type": "dropped", "count": 2}), "e1", "t3", "e2"]
    outbox.put_many(["e3", "e4", "e5", "e6"], droppable=False)  # nothing else left: e3 goes
    assert outbox.take() == [frame({"type": "dropped", "count": 1}), "e4", "e5", "e6"]
    assert outbox.take() == []
    assert outbox.dropped_total == 3
