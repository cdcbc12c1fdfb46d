"""The gateway bridged to the hub: children with a parent, their reports and commands through
the gateway's one connection, presence behind the gateway, on both brokers.

The LAN side is a stand-in (``tests.gateway_support.StandInLan``); the hub, its broker, the
uplink and its outboxes are real.
"""

from __future__ import annotations

import asyncio
import socket
import sys
from pathlib import Path

import pytest

from fieldhub.gateway.ports import ControllerInfo
from fieldhub.hub.app import Hub
from fieldhub.hub.store.alarms import AlarmFilter
from fieldhub.protocol import acl
from tests.conftest import HubFactory, api_client
from tests.gateway_support import StandInLan, gateway_on, register_gateway
from tests.waiting import eventually

ACTIONS = {"relay.toggle": {}}
T0 = 1_763_719_200_000


async def _presence(api, device_id: str) -> dict:
    return (await api.get(f"/api/devices/{device_id}")).json()["presence"]


@pytest.mark.parametrize(
    "broker", ["embedded", pytest.param("mosquitto", marks=pytest.mark.mosquitto)]
)
async def test_children_report_run_commands_and_read_unreachable_behind_a_stopped_gateway(
    broker: str, make_hub: HubFactory, tmp_path: Path, uid: str
) -> None:
    gw, c1, c2, c3 = (f"{name}-{uid}" for name in ("gw", "c1", "c2", "c3"))
    lan = StandInLan()
    async with make_hub(broker=broker) as hub, api_client(hub) as api:
        await hub.alarms.put_rule(
            {"id": "gone", "condition": {"kind": "presence", "presence": "offline"}},
            actor="test",
            create=True,
        )
        credentials = await register_gateway(hub, gw)
        for child in (c1, c2, c3):
            made = await api.post("/api/devices", json={"id": child, "parent": gw})
            assert made.status_code == 201, made.text
            assert made.json()["credentials"] is None  # the gateway speaks for it
            assert made.json()["parent"] == gw
        async with gateway_on(hub, gw, credentials, tmp_path / "gw", lan) as uplink:
            for child in (c1, c2, c3):
                await uplink.controller_online(ControllerInfo(child, "10.0.0.9:7070", ACTIONS))
            await uplink.report(c1, "telemetry", {"ts": T0, "values": {"t": 21.5}})

            async def latest() -> dict:
                return (await api.get(f"/api/devices/{c1}/latest")).json()

            assert (await eventually(latest, "c1's value in the hub"))["t"]["value"] == 21.5
            listed = (await api.get(f"/api/devices/{gw}/children")).json()
            assert [d["id"] for d in listed] == [c1, c2, c3]
            online = await eventually(
                lambda: _presence_is(api, c2, "online"), "c2 online through its gateway"
            )
            assert online["reason"] == f"linked to gateway {gw}"

            # A command to a child: the hub → the gateway → the controller → the hub.
            answer = await api.post(f"/api/devices/{c1}/commands", json={"action": "relay.toggle"})
            assert answer.status_code == 200, answer.text
            assert (answer.json()["status"], answer.json()["result"]) == ("succeeded", {"on": True})
            assert [run[:3] for run in lan.runs] == [(c1, answer.json()["id"], "relay.toggle")]

            # One link lost: that controller is offline, and the gateway says why.
            await uplink.controller_offline(c3, "no heartbeat for 15 s")
            lost = await eventually(lambda: _presence_is(api, c3, "offline"), "c3 offline")
            assert lost["reason"] == "link lost: no heartbeat for 15 s"
            [c3_alarm] = await eventually(lambda: _alarms(hub, c3), "c3's offline alarm")
        # The gateway stops: its children are unreachable, and only the gateway raises.
        for child in (c1, c2):
            gone = await eventually(
                lambda child=child: _presence_is(api, child, "unreachable"), f"{child} unreachable"
            )
            assert gone["reason"] == f"via {gw}: gateway offline"
        assert (await _presence(api, gw))["state"] == "offline"
        await eventually(lambda: _alarms(hub, gw), "the gateway's offline alarm")
        await hub.alarms.engine.evaluate(tick=False)
        raised = await hub.alarms.find(AlarmFilter(rule="gone"))
        assert sorted(a.device_id for a in raised) == sorted([gw, c3])  # none for c1, c2
        assert (await _presence(api, c3))["state"] == "unreachable"
        assert [a.state for a in await _alarms(hub, c3)] == [c3_alarm.state]  # left as it was


async def _presence_is(api, device_id: str, state: str) -> dict | None:
    presence = await _presence(api, device_id)
    return presence if presence["state"] == state else None


async def _alarms(hub: Hub, device_id: str) -> list:
    return await hub.alarms.find(AlarmFilter(rule="gone", device=device_id))


async def test_reports_wait_in_the_gateway_while_the_hub_is_down_and_none_is_lost(
    make_hub: HubFactory, tmp_path: Path, uid: str
) -> None:
    gw, child = f"gw-{uid}", f"ctrl-{uid}"
    lan = StandInLan()
    data, gateway_dir = tmp_path / "hub", tmp_path / "gw"
    with socket.socket() as probe:  # a port for the hub's broker, free when it starts
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    async with make_hub(data=data, mqtt=f"127.0.0.1:{port}") as hub:
        credentials = await register_gateway(hub, gw)
        await hub.devices.create_child(child, gw)
    # The hub (and its broker) are down; the controller keeps reporting to the gateway.
    async with gateway_on_port(port, gw, credentials, gateway_dir, lan) as uplink:
        await uplink.controller_online(ControllerInfo(child, "10.0.0.9:7070", ACTIONS))
        for n in range(20):
            await uplink.report(child, "telemetry", {"ts": T0 + n, "values": {"n": n}})
        assert uplink.backlog() >= 20  # durable in the child's outbox, nothing sent
    # The gateway restarted too; the hub comes back: everything arrives, once.
    async with make_hub(data=data, mqtt=f"127.0.0.1:{port}") as hub:
        async with gateway_on(hub, gw, credentials, gateway_dir, lan) as uplink:

            async def drained() -> bool:
                return uplink.backlog() == 0

            await eventually(drained, "the backlog acknowledged", 30)
        async with api_client(hub) as api:
            history = await api.get(
                f"/api/devices/{child}/telemetry",
                params={"keys": "n", "start": T0, "end": T0 + 100},
            )
            assert history.status_code == 200, history.text
            assert [value for _ts, value in history.json()["series"]["n"]] == list(range(20))


def gateway_on_port(port: int, gw: str, credentials, data_dir: Path, lan: StandInLan):
    """A gateway aimed at a broker that is not there (yet)."""

    class _Nowhere:
        broker_url = f"mqtt://127.0.0.1:{port}"

    return gateway_on(_Nowhere(), gw, credentials, data_dir, lan)  # type: ignore[arg-type]


async def test_a_child_needs_a_registered_gateway_and_a_gateway_keeps_its_children(
    hub: Hub, uid: str
) -> None:
    gw = f"gw-{uid}"
    await register_gateway(hub, gw)
    async with api_client(hub) as api:
        missing = await api.post("/api/devices", json={"id": f"c-{uid}", "parent": f"no-{uid}"})
        assert missing.status_code == 404  # a gateway one cannot see is not there
        made = await api.post(
            "/api/devices", json={"id": f"c-{uid}", "parent": gw, "labels": {"site": "x"}}
        )
        assert made.status_code == 201, made.text
        nested = await api.post("/api/devices", json={"id": f"n-{uid}", "parent": f"c-{uid}"})
        assert nested.status_code == 422
        assert nested.json()["detail"][0]["loc"][-1] == "parent"
        refused = await api.delete(f"/api/devices/{gw}")
        assert refused.status_code == 409
        assert f"c-{uid}" in refused.json()["detail"]
        assert (await api.delete(f"/api/devices/c-{uid}")).status_code == 204
        assert (await api.delete(f"/api/devices/{gw}")).status_code == 204


def test_a_gateway_may_use_its_childrens_topics_and_no_others() -> None:
    kids = frozenset({"c1", "c2"})
    assert acl.device_may_publish("gw", "fh/v1/c1/telemetry", kids)
    assert acl.device_may_publish("gw", "fh/v1/c2/reply/hub", kids)
    assert acl.device_may_subscribe("gw", "fh/v1/c1/cmd", kids)
    assert not acl.device_may_publish("gw", "fh/v1/c3/telemetry", kids)
    assert not acl.device_may_publish("c1", "fh/v1/gw/telemetry")
    assert not acl.device_may_subscribe("gw", "fh/v1/+/cmd", kids)
    assert not acl.device_may_publish("gw", "fh/v1/c1/cmd", kids)  # hub → device stays the hub's
    assert "fh/v1/c1/ack" in acl.device_subscribe_filters("gw", kids)


async def test_a_site_operator_adds_a_child_into_the_gateways_site(hub: Hub, uid: str) -> None:
    gw = f"gw-{uid}"
    await register_gateway(hub, gw, site="berlin")
    async with api_client(hub, "operator", sites=["berlin"]) as api:
        made = await api.post("/api/devices", json={"id": f"c-{uid}", "parent": gw})
        assert made.status_code == 201, made.text
        assert made.json()["labels"] == {"site": "berlin"}  # the gateway's
        elsewhere = await api.post(
            "/api/devices",
            json={"id": f"d-{uid}", "parent": gw, "labels": {"site": "madrid"}},
        )
        assert elsewhere.status_code == 403


@pytest.mark.slow
async def test_reports_of_a_controller_the_hub_does_not_list_yet_wait_for_its_registration(
    hub: Hub, tmp_path: Path, uid: str
) -> None:
    gw, late = f"gw-{uid}", f"late-{uid}"
    credentials = await register_gateway(hub, gw)
    async with gateway_on(hub, gw, credentials, tmp_path / "gw", StandInLan()) as uplink:
        await eventually(lambda: hub.presence.get(gw).presence == "online", "the gateway online")
        await uplink.controller_online(ControllerInfo(late, "10.0.0.9:7070", ACTIONS))
        for n in range(3):
            await uplink.report(late, "telemetry", {"ts": T0 + n, "values": {"n": n}})
        assert uplink.stats.refused_subscriptions >= 1  # the broker does not let it in yet
        assert uplink.backlog() >= 3
        await hub.devices.create_child(late, gw)

        async def stored() -> list:
            return [p for p in await hub.queries.latest(late) if p.key == "n"]

        [latest] = await eventually(stored, "the waiting reports stored", 20)
        assert latest.value == 2
        assert hub.presence.get(late).presence == "online"


@pytest.mark.slow
async def test_a_child_added_and_deleted_with_the_cli_reaches_the_running_hub(
    make_hub: HubFactory, tmp_path: Path, uid: str
) -> None:
    gw, child = f"gw-{uid}", f"c-{uid}"
    async with make_hub(data=tmp_path / "hub") as hub:
        await register_gateway(hub, gw)
        added = await asyncio.create_subprocess_exec(
            sys.executable,
            *("-m", "fieldhub", "device", "add", child, "--parent", gw),
            *("--data", str(tmp_path / "hub")),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        said = (await added.communicate())[0].decode()
        assert added.returncode == 0, said
        assert "secret" not in said  # a child has no credentials
        assert f"registered behind gateway {gw}" in said
        await eventually(lambda: child in hub.family.children(gw), "the hub adopting the child")
        assert hub.presence.get(child).presence == "unknown"

        deleted = await asyncio.create_subprocess_exec(
            sys.executable,
            *("-m", "fieldhub", "device", "delete", child),
            *("--data", str(tmp_path / "hub")),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        said = (await deleted.communicate())[0].decode()
        assert deleted.returncode == 0, said
        assert f"deleted device {child} (behind gateway {gw})" in said
        await eventually(
            lambda: child not in hub.family.children(gw), "the hub forgetting the child"
        )
        async with api_client(hub) as api:
            assert (await api.get(f"/api/devices/{child}")).status_code == 404
            assert (await api.delete(f"/api/devices/{gw}")).status_code == 204  # no child left


async def test_desired_state_reaches_the_controller_once_per_version(
    hub: Hub, tmp_path: Path, uid: str
) -> None:
    gw, child = f"gw-{uid}", f"c-{uid}"
    credentials = await register_gateway(hub, gw)
    await hub.devices.create_child(child, gw)
    lan = StandInLan()
    async with (
        gateway_on(hub, gw, credentials, tmp_path / "gw", lan) as uplink,
        api_client(hub) as api,
    ):
        await uplink.controller_online(ControllerInfo(child, "10.0.0.9:7070", ACTIONS))
        changed = await api.patch(
            f"/api/devices/{child}/state", json={"version": 0, "desired": {"relay": "closed"}}
        )
        assert changed.status_code == 200, changed.text

        async def in_sync() -> dict | None:
            twin = (await api.get(f"/api/devices/{child}/state")).json()
            return twin if twin["reported"].get("desired_version") == 1 else None

        twin = await eventually(in_sync, "the child reporting the desired version")
        assert twin["reported"].get("desired_errors") is None
        assert [run[2:] for run in lan.runs] == [("state.set", {"relay": "closed"})]
