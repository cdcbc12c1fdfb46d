"""The device twin, end to end: an operator changes the desired state over REST, a real agent
(gpiozero mock pins) on a real broker switches its relays, reports back, and the hub shows the
twin in sync; stale and racing changes are refused; a device that was away, or a hub that
restarted, still converges."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import httpx
import pytest

from fieldhub.agent.config import AgentConfig, DeviceSection, HubSection, WebSection
from fieldhub.agent.service import Agent
from fieldhub.agent.units import (
    DoorConfig,
    Drivers,
    LedConfig,
    LedUnit,
    SocketConfig,
    mock_pin_factory,
)
from fieldhub.agent.units.simulate import SwitchPin
from fieldhub.hub.app import Hub
from fieldhub.protocol import Channel, Desired, decode, encode, topic_for
from tests.conftest import DeviceFactory, HubFactory, api_client
from tests.device_client import TestDevice
from tests.waiting import eventually

SOCKET_PIN, LOCK_PIN, DOOR_PIN, LED_PIN = 22, 23, 27, 17
BROKERS = pytest.mark.parametrize(
    "broker", ["embedded", pytest.param("mosquitto", marks=pytest.mark.mosquitto)]
)


def _config(hub: Hub, device_id: str, username: str, data: Path) -> AgentConfig:
    return AgentConfig(
        device=DeviceSection(id=device_id),
        hub=HubSection(broker=hub.broker_url, username=username),
        data_folder=str(data),
        units=[
            SocketConfig(name="socket", pin=SOCKET_PIN, initial="on", min_off_s=0),
            SocketConfig(name="lock", pin=LOCK_PIN, role="lock"),
            DoorConfig(name="door", pin=DOOR_PIN, debounce_s=0.02),
            LedConfig(name="led", pin=LED_PIN),
        ],
        web=WebSection(enabled=False),
    )


class Site:
    """A hub with one device registered in site ``berlin``, an agent config for it, and the
    mock pins the agent's hardware is on."""

    def __init__(self, hub: Hub, device_id: str, username: str, secret: str, data: Path):
        self.hub = hub
        self.device_id = device_id
        self.username = username
        self.secret = secret
        self.config = _config(hub, device_id, username, data)
        self.pins = mock_pin_factory(SwitchPin)
        self.pins.pin(DOOR_PIN).drive_low()  # closed

    @classmethod
    async def make(cls, hub: Hub, device_id: str, data: Path) -> Site:
        issued = (await hub.devices.create(device_id, labels={"site": "berlin"})).credentials
        return cls(hub, device_id, issued.username, issued.secret, data)

    def agent(self) -> Agent:
        return Agent(self.config, self.secret, drivers=Drivers(pin_factory=self.pins))

    def level(self, pin: int) -> int:
        return int(self.pins.pin(pin).state)

    @property
    def url(self) -> str:
        return f"/api/devices/{self.device_id}/state"


async def _twin(api: httpx.AsyncClient, site: Site) -> dict[str, Any]:
    response = await api.get(site.url)
    assert response.status_code == 200, response.text
    twin: dict[str, Any] = response.json()
    return twin


async def _in_sync(api: httpx.AsyncClient, site: Site, version: int) -> dict[str, Any] | None:
    twin = await _twin(api, site)
    return twin if twin["in_sync"] and twin["version"] == version else None


async def _change(
    api: httpx.AsyncClient, site: Site, version: int, **desired: Any
) -> dict[str, Any]:
    response = await api.patch(site.url, json={"version": version, "desired": desired})
    assert response.status_code == 200, response.text
    twin: dict[str, Any] = response.json()
    return twin


async def _forget(hub: Hub, device_id: str) -> None:
    """Delete the device, which clears its retained status and desired state: the test
    Mosquitto is shared with other tests."""
    await hub.devices.delete(device_id)
    await asyncio.wait_for(hub.bus.flushed(), 5)


def _desired_messages(device: TestDevice) -> list[Desired]:
    return [
        decode(Channel.DESIRED, payload)
        for topic, payload in device.messages
        if topic.endswith("/desired") and payload
    ]


@BROKERS
async def test_switching_a_socket_off_through_the_desired_state(
    broker: str, make_hub: HubFactory, tmp_path: Path, uid: str
):
    async with make_hub(broker=broker) as hub, api_client(hub, "operator", sites=["berlin"]) as api:
        site = await Site.make(hub, f"atm-{uid}", tmp_path / "agent")
        async with site.agent() as agent:
            await eventually(lambda: _in_sync(api, site, 0), "the agent's first report")
            assert site.level(SOCKET_PIN) == 1

            changed = await _change(api, site, 0, socket="off")
            assert api.user is not None
            operator = f"user:{api.user.name}/token:{api.token_id}"
            assert changed["version"] == 1
            assert changed["desired"] == {"socket": "off"}
            assert changed["desired_by"] == operator

            twin = await eventually(lambda: _in_sync(api, site, 1), "the twin in sync")
            assert site.level(SOCKET_PIN) == 0
            assert twin["delta"] == {}
            assert twin["reported"]["socket"] == "off"
            assert twin["reported"]["desired_version"] == 1
            assert "desired_errors" not in twin["reported"]

            # The same desired state again (a reconnection's retained copy) changes nothing
            # and sends nothing: no unit acts, no report goes out.
            assert agent.twin is not None
            assert agent.outbox is not None
            changes, last_seq = agent.twin.stats.changed, agent.outbox.last_seq
            again = encode(Desired(version=1, state={"socket": "off"}))
            hub.bus.publish(topic_for(site.device_id, Channel.DESIRED), again, qos=1, retain=True)
            await eventually(lambda: agent.twin and agent.twin.stats.applied >= 2, "redelivery")
            assert agent.twin.stats.changed == changes
            assert agent.outbox.last_seq == last_seq
            assert site.level(SOCKET_PIN) == 0

        async with api_client(hub) as admin:
            page = (
                await admin.get(
                    "/api/audit",
                    params={"action": "device.desired.changed", "target": site.device_id},
                )
            ).json()
        [entry] = page["entries"]
        assert entry["actor"] == operator
        assert entry["detail"] == {"version": 1, "set": ["socket"], "removed": []}
        await _forget(hub, site.device_id)


async def test_keys_the_agent_cannot_apply_are_reported_and_the_rest_applied(
    make_hub: HubFactory, tmp_path: Path, uid: str
):
    async with make_hub() as hub, api_client(hub) as api:
        site = await Site.make(hub, f"atm-{uid}", tmp_path / "agent")
        async with site.agent() as agent:
            await eventually(lambda: _in_sync(api, site, 0), "the agent's first report")
            await _change(
                api,
                site,
                0,
                fan="on",  # no such unit
                door="closed",  # a unit that only reports
                socket="locked",  # not a socket's word
                lock="unlocked",
                led="blink",
            )

            async def errors_reported() -> dict[str, Any] | None:
                twin = await _twin(api, site)
                return twin if twin["reported"].get("desired_version") == 1 else None

            twin = await eventually(errors_reported, "the agent's answer to version 1")
            assert twin["in_sync"] is False
            errors = twin["reported"]["desired_errors"]
            assert set(errors) == {"fan", "door", "socket"}
            assert "no unit named 'fan'" in errors["fan"]
            assert "cannot be set" in errors["door"]
            assert "'on', 'off'" in errors["socket"]
            assert twin["delta"] == {
                "fan": {"desired": "on", "reported": None},
                "socket": {"desired": "locked", "reported": "on"},
            }  # the door is closed, as desired, but that was not the twin's doing: an error
            assert site.level(LOCK_PIN) == 1  # unlocked: the strike is powered
            assert site.level(SOCKET_PIN) == 1  # untouched
            led = next(u for u in agent.units if isinstance(u, LedUnit))
            assert led.mode == "blink"

            # Fixing the desired state clears the errors; the LED goes back to showing health.
            await _change(api, site, 1, fan=None, door=None, socket="off", led=None)
            twin = await eventually(lambda: _in_sync(api, site, 2), "the twin in sync")
            assert "desired_errors" not in twin["reported"]
            assert site.level(SOCKET_PIN) == 0
            await eventually(lambda: led.mode == "ok", "the LED showing health again")
        await _forget(hub, site.device_id)


@BROKERS
async def test_an_agent_that_was_away_converges_when_it_comes_back(
    broker: str, make_hub: HubFactory, tmp_path: Path, uid: str
):
    async with make_hub(broker=broker) as hub, api_client(hub) as api:
        site = await Site.make(hub, f"atm-{uid}", tmp_path / "agent")
        async with site.agent():
            await _change(api, site, 0, socket="off")
            await eventually(lambda: _in_sync(api, site, 1), "the twin in sync")

        await _change(api, site, 1, lock="unlocked")  # while the agent is stopped
        twin = await _twin(api, site)
        assert twin["in_sync"] is False
        assert twin["delta"] == {"lock": {"desired": "unlocked", "reported": "locked"}}

        site.pins = mock_pin_factory(SwitchPin)  # a rebooted box: the socket starts on again
        site.pins.pin(DOOR_PIN).drive_low()
        async with site.agent() as agent:
            await eventually(lambda: _in_sync(api, site, 2), "the twin in sync again")
            assert site.level(SOCKET_PIN) == 0
            assert site.level(LOCK_PIN) == 1

            # An older version (a second hub process republishing what it read before the
            # change) is not applied over the newer one.
            old = encode(Desired(version=1, state={"socket": "on", "lock": "locked"}))
            hub.bus.publish(topic_for(site.device_id, Channel.DESIRED), old, qos=1, retain=True)
            await eventually(lambda: agent.twin and agent.twin.stats.ignored == 1, "old version")
            assert (site.level(SOCKET_PIN), site.level(LOCK_PIN)) == (0, 1)
        await _forget(hub, site.device_id)


async def test_the_desired_state_survives_a_restart_of_the_hub_and_its_embedded_broker(
    make_hub: HubFactory, tmp_path: Path, uid: str
):
    async with make_hub() as hub, api_client(hub) as api:
        site = await Site.make(hub, f"atm-{uid}", tmp_path / "agent")
        await _change(api, site, 0, socket="off")
    # The embedded broker kept its retained messages in memory only: they are gone now.
    async with make_hub() as hub, api_client(hub) as api:
        site.config = _config(hub, site.device_id, site.username, site.config.data_dir)
        async with site.agent():
            await eventually(lambda: _in_sync(api, site, 1), "the twin in sync")
            assert site.level(SOCKET_PIN) == 0


async def _observer(hub: Hub, connect_device: DeviceFactory, name: str) -> TestDevice:
    """A device that only listens to its desired state."""
    device = await connect_device(hub, name, site="berlin")
    assert await device.subscribe(topic_for(device.device_id, Channel.DESIRED)) == 1
    return device


@BROKERS
async def test_a_change_from_a_stale_version_is_refused_and_not_published(
    broker: str, make_hub: HubFactory, connect_device: DeviceFactory
):
    async with make_hub(broker=broker) as hub, api_client(hub) as api:
        device = await _observer(hub, connect_device, "stale")
        url = f"/api/devices/{device.device_id}/state"
        first = await api.patch(url, json={"version": 0, "desired": {"socket": "off"}})
        assert first.status_code == 200

        stale = await api.patch(url, json={"version": 0, "desired": {"socket": "on"}})
        assert stale.status_code == 409
        assert "version 1" in stale.json()["detail"]

        await asyncio.wait_for(hub.bus.flushed(), 5)
        await asyncio.sleep(0.3)
        assert [(d.version, d.state) for d in _desired_messages(device)] == [(1, {"socket": "off"})]
        twin = (await api.get(url)).json()
        assert (twin["version"], twin["desired"]) == (1, {"socket": "off"})
        await _forget(hub, device.device_id)


async def test_of_racing_changes_exactly_one_wins(any_hub: Hub, connect_device: DeviceFactory):
    device = await _observer(any_hub, connect_device, "race")
    url = f"/api/devices/{device.device_id}/state"
    async with api_client(any_hub) as api:
        answers = await asyncio.gather(
            *(api.patch(url, json={"version": 0, "desired": {"socket": f"v{n}"}}) for n in range(6))
        )
        statuses = sorted(a.status_code for a in answers)
        assert statuses == [200, 409, 409, 409, 409, 409]
        [winner] = [a.json() for a in answers if a.status_code == 200]
        twin = (await api.get(url)).json()
        assert (twin["version"], twin["desired"]) == (1, winner["desired"])
        audit = (
            await api.get(
                "/api/audit",
                params={"action": "device.desired.changed", "target": device.device_id},
            )
        ).json()
        assert len(audit["entries"]) == 1

    async def published() -> list[Desired]:
        return _desired_messages(device)

    [message] = await eventually(published, "the winner's desired state")
    assert (message.version, message.state) == (1, winner["desired"])
    await _forget(any_hub, device.device_id)


@BROKERS
async def test_deleting_a_device_clears_its_retained_desired_state(
    broker: str, make_hub: HubFactory, connect_device: DeviceFactory
):
    async with make_hub(broker=broker) as hub, api_client(hub) as api:
        device = await _observer(hub, connect_device, "gone")
        url = f"/api/devices/{device.device_id}/state"
        assert (await api.patch(url, json={"version": 0, "desired": {"a": 1}})).status_code == 200
        await eventually(lambda: _desired_messages(device), "the desired state")
        assert (await api.delete(f"/api/devices/{device.device_id}")).status_code == 204
        await asyncio.wait_for(hub.bus.flushed(), 5)

        # The same id registered again starts with nothing desired, on the broker too.
        again = await _observer(hub, connect_device, "gone")
        await asyncio.sleep(0.3)
        assert _desired_messages(again) == []
        twin = (await api.get(url)).json()
        assert (twin["version"], twin["desired"], twin["in_sync"]) == (0, {}, True)
        await _forget(hub, again.device_id)


async def test_who_may_change_the_desired_state(hub: Hub, uid: str):
    device_id = f"perm-{uid}"
    await hub.devices.create(device_id, labels={"site": "berlin"})
    url = f"/api/devices/{device_id}/state"
    callers: list[tuple[str, dict[str, Any], int, int]] = [
        # role, options, GET, PATCH
        ("viewer", {"sites": ["berlin"]}, 200, 403),
        ("operator", {"sites": ["paris"]}, 404, 404),
        ("operator", {"sites": ["berlin"], "scopes": ["read", "write"]}, 200, 403),
        ("operator", {"sites": ["berlin"]}, 200, 200),
        ("admin", {}, 200, 200),
    ]
    version = 0
    for role, options, get_status, patch_status in callers:
        async with api_client(hub, role, **options) as api:
            assert (await api.get(url)).status_code == get_status, (role, options)
            body = {"version": version, "desired": {"socket": "off"}}
            answer = await api.patch(url, json=body)
            assert answer.status_code == patch_status, (role, options, answer.text)
            if answer.status_code == 200:
                version += 1


@pytest.mark.parametrize(
    ("desired", "message"),
    [
        ({}, "desired is empty"),
        ({"9lives": "on"}, "key '9lives' is not valid"),
        ({"a/b": "on"}, "key 'a/b' is not valid"),
        ({"desired_version": 3}, "key 'desired_version' is reserved"),
        ({"socket": "x" * 257}, "at most 256 characters"),
        ({"socket": {"state": "on"}}, "not dict"),
        ({"socket": [1]}, "not list"),
        ({f"k{n}": n for n in range(257)}, "257 keys given, at most 256"),
    ],
)
async def test_invalid_changes_are_refused_with_the_reason(
    hub: Hub, uid: str, desired: dict[str, Any], message: str
):
    device_id = f"bad-{uid}"
    await hub.devices.create(device_id)
    async with api_client(hub) as api:
        url = f"/api/devices/{device_id}/state"
        answer = await api.patch(url, json={"version": 0, "desired": desired})
        assert answer.status_code == 422
        assert message in answer.json()["detail"][0]["msg"]
        assert (await api.get(url)).json()["version"] == 0


async def test_the_merged_state_is_bounded_too(hub: Hub, uid: str):
    device_id = f"big-{uid}"
    await hub.devices.create(device_id)
    async with api_client(hub) as api:
        url = f"/api/devices/{device_id}/state"
        half = {f"a{n}": n for n in range(200)}
        assert (await api.patch(url, json={"version": 0, "desired": half})).status_code == 200
        more = {f"b{n}": n for n in range(100)}
        answer = await api.patch(url, json={"version": 1, "desired": more})
        assert answer.status_code == 422
        assert "would hold 300 keys, at most 256" in answer.json()["detail"][0]["msg"]
