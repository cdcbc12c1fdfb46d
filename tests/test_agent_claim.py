"""The agent provisions itself with a claim token, against a real hub: its REST API served over
real HTTP (uvicorn on a free port), its embedded broker, its database.

Stories: a pre-authorized agent claims, connects and its telemetry is stored; a pending agent
waits (and says so on its LED and page) until an operator approves, then connects without a
restart, also when it was restarted while waiting; a provisioned agent starts from its stored
credentials without the HTTP API; a rejected claim and a bad token stop the agent with a clear
error, and ``fieldhub agent`` says so plainly; the credentials file is private and no secret is
ever logged.
"""

from __future__ import annotations

import asyncio
import logging
import stat
import sys
from pathlib import Path
from typing import Any

import msgspec
import pytest

from fieldhub.agent.claim import CREDENTIALS_FILE, POLL_FILE, Claimer, ClaimError, ClaimSettings
from fieldhub.agent.config import (
    AgentConfig,
    ClaimSection,
    ConfigError,
    DeviceSection,
    HubSection,
    WebSection,
    load_config,
)
from fieldhub.agent.service import Agent, AgentStartError
from fieldhub.agent.units import DoorConfig, Drivers, LedConfig, UnitConfig, mock_pin_factory
from fieldhub.agent.units.simulate import SwitchPin
from fieldhub.hub.app import Hub
from tests.conftest import OWSERVER_SENSORS, api_client
from tests.hub_client import served
from tests.support.servers import Owserver
from tests.waiting import eventually

FAST = ClaimSettings(poll_min_s=0.05, poll_max_s=0.2, timeout_s=5.0)
DOOR_PIN, LED_PIN = 27, 17


async def _claim_token(hub: Hub, **body: object) -> str:
    async with api_client(hub, "operator", sites=["berlin"]) as operator:
        response = await operator.post(
            "/api/claim-tokens",
            json={"name": "berlin installers", "labels": {"site": "berlin"}, **body},
        )
    assert response.status_code == 201, response.text
    return str(response.json()["token"])


async def _decide(hub: Hub, device_id: str, decision: str) -> None:
    async with api_client(hub, "operator", sites=["berlin"]) as operator:
        response = await operator.post(f"/api/claims/{device_id}/{decision}")
    assert response.status_code == 200, response.text


async def _audit(hub: Hub, device_id: str) -> list[tuple[str, str]]:
    """(action, outcome) of every audit entry about the device, oldest first."""
    async with api_client(hub) as admin:
        response = await admin.get("/api/audit", params={"target": device_id})
    assert response.status_code == 200, response.text
    return [(e["action"], e["outcome"]) for e in reversed(response.json()["entries"])]


def _one_claim_one_delivery(audit: list[tuple[str, str]]) -> None:
    """The device claimed once and fetched its credentials once: no second claim (409), no
    fetch after the delivery (410)."""
    device_calls = [a for a in audit if a[0] in ("device.claim", "device.credentials.fetch")]
    assert device_calls == [("device.claim", "ok")], audit
    assert audit.count(("device.credentials.delivered", "ok")) == 1, audit


def _config(
    hub: Hub, url: str, token: str, device_id: str, data: Path, *units: UnitConfig
) -> AgentConfig:
    return AgentConfig(
        device=DeviceSection(id=device_id),
        hub=HubSection(broker=hub.broker_url, claim=ClaimSection(url=url, token=token)),
        data_folder=str(data),
        units=list(units) or [DoorConfig(name="door", pin=DOOR_PIN, debounce_s=0.02)],
        web=WebSection(enabled=False),
    )


def _pins() -> Any:
    pins = mock_pin_factory(SwitchPin)
    pins.pin(DOOR_PIN).drive_low()  # the door is closed
    return pins


async def _door_reported(hub: Hub, device_id: str) -> bool:
    try:
        record = await hub.registry.get(device_id)
    except LookupError:  # not registered yet
        return False
    return record.reported.get("door") == "closed"


async def test_a_pre_authorized_agent_claims_connects_and_later_starts_without_the_api(
    hub: Hub, owserver: Owserver, tmp_path: Path, uid: str, caplog: pytest.LogCaptureFixture
):
    caplog.set_level(logging.DEBUG)
    device_id = f"atm-{uid}"
    token = await _claim_token(hub, auto_approve=[device_id])
    thermometer = msgspec.convert(
        {
            "type": "temperature",
            "name": "temperature",
            "sensors": {"inside": {"id": OWSERVER_SENSORS[0]}},
            "sample_s": 0.05,
            "deadband": 0,
        },
        UnitConfig,
    )
    data = tmp_path / "agent"
    drivers = Drivers(pin_factory=_pins(), owserver=owserver.address)

    async with served(hub) as url:
        config = _config(hub, url, token, device_id, data, thermometer)
        async with Agent(config, None, drivers=drivers, claim_settings=FAST) as agent:
            await eventually(lambda: agent.health() == "ok", "connected")
            latest = await eventually(
                lambda: hub.queries.latest(device_id), "telemetry stored by the hub"
            )
            assert [v.key for v in latest] == ["temperature.inside"]
        async with api_client(hub, "operator", sites=["berlin"]) as operator:
            claims = (await operator.get("/api/claims")).json()
            device = (await operator.get(f"/api/devices/{device_id}")).json()
        claim = next(c for c in claims if c["device_id"] == device_id)
        assert claim["info"]["agent"].startswith("fieldhub ")
        assert claim["info"]["hostname"]
        assert device["labels"] == {"site": "berlin"}

    credentials_file = data / CREDENTIALS_FILE
    assert stat.S_IMODE(credentials_file.stat().st_mode) == 0o600
    assert not (data / POLL_FILE).exists()
    credentials = msgspec.json.decode(credentials_file.read_bytes())
    assert credentials["client_id"] == device_id

    # The HTTP API is gone now; the agent starts from its stored credentials all the same.
    config = _config(hub, url, token, device_id, data, thermometer)
    async with Agent(config, None, drivers=drivers, claim_settings=FAST) as agent:
        await eventually(lambda: agent.health() == "ok", "connected again")
    _one_claim_one_delivery(await _audit(hub, device_id))
    for secret in (token, credentials["secret"]):
        assert secret not in caplog.text
    await hub.devices.delete(device_id)


async def test_a_pending_agent_waits_for_approval_also_across_a_restart(
    hub: Hub, tmp_path: Path, uid: str, caplog: pytest.LogCaptureFixture
):
    caplog.set_level(logging.DEBUG)
    device_id = f"atm-{uid}"
    token = await _claim_token(hub)
    data = tmp_path / "agent"
    led = LedConfig(name="status", pin=LED_PIN)
    door = DoorConfig(name="door", pin=DOOR_PIN, debounce_s=0.02)
    pins = _pins()

    async with served(hub) as url:
        config = _config(hub, url, token, device_id, data, led, door)
        async with Agent(config, None, drivers=Drivers(pin_factory=pins), claim_settings=FAST) as a:
            await eventually(lambda: a.health() == "degraded", "waiting for approval")
            assert a.status()["hub"] == f"waiting for approval at {url}"
            await eventually(lambda: a.units[0].status()["mode"] == "degraded", "the LED says so")
        poll_file = data / POLL_FILE
        assert stat.S_IMODE(poll_file.stat().st_mode) == 0o600
        poll_secret = msgspec.json.decode(poll_file.read_bytes())["poll_secret"]

        # Restarted while pending: it polls the same claim (claiming again would be refused).
        agent = Agent(config, None, drivers=Drivers(pin_factory=pins), claim_settings=FAST)
        async with agent:
            await eventually(lambda: agent.health() == "degraded", "waiting again")
            await asyncio.sleep(0.5)  # several polls, still pending
            assert agent.uplink is None
            assert not await _door_reported(hub, device_id)

            await _decide(hub, device_id, "approve")
            await eventually(lambda: agent.health() == "ok", "connected without a restart")
            # What the units reported while waiting reaches the hub.
            await eventually(lambda: _door_reported(hub, device_id), "the door's state stored")
            await eventually(lambda: agent.units[0].status()["mode"] == "ok", "LED ok")

    _one_claim_one_delivery(await _audit(hub, device_id))
    waiting = [r for r in caplog.records if r.getMessage().startswith("waiting for approval")]
    assert [r.getMessage() for r in waiting] == [
        f"waiting for approval at {url} (device {device_id})"
    ] * 2
    secret = msgspec.json.decode((data / CREDENTIALS_FILE).read_bytes())["secret"]
    for hidden in (token, poll_secret, secret):
        assert hidden not in caplog.text
    await hub.devices.delete(device_id)


async def test_a_rejected_claim_stops_the_agent_with_a_clear_error(
    hub: Hub, tmp_path: Path, uid: str, caplog: pytest.LogCaptureFixture
):
    caplog.set_level(logging.DEBUG)
    device_id = f"atm-{uid}"
    token = await _claim_token(hub)
    async with served(hub) as url:
        config = _config(hub, url, token, device_id, tmp_path / "agent")
        agent = Agent(config, None, drivers=Drivers(pin_factory=_pins()), claim_settings=FAST)
        async with agent:
            await eventually(lambda: agent.health() == "degraded", "waiting for approval")
            await _decide(hub, device_id, "reject")
            with pytest.raises(AgentStartError, match=r"claim of device '.*' was rejected at"):
                await asyncio.wait_for(agent.serve(), 15)
            assert agent.uplink is None
    assert not (tmp_path / "agent" / CREDENTIALS_FILE).exists()
    assert token not in caplog.text


async def test_a_bad_token_stops_the_agent_with_a_clear_error(
    hub: Hub, tmp_path: Path, uid: str, caplog: pytest.LogCaptureFixture
):
    caplog.set_level(logging.DEBUG)
    token = "fhclaim_" + "x" * 43  # looks like one, is none
    async with served(hub) as url:
        config = _config(hub, url, token, f"atm-{uid}", tmp_path / "agent")
        agent = Agent(config, None, drivers=Drivers(pin_factory=_pins()), claim_settings=FAST)
        async with agent:
            with pytest.raises(AgentStartError, match="refused the claim token"):
                await asyncio.wait_for(agent.serve(), 15)
    assert token not in caplog.text
    assert not (tmp_path / "agent" / POLL_FILE).exists()


async def test_an_unreachable_hub_is_waited_for(hub: Hub, tmp_path: Path, uid: str):
    device_id = f"atm-{uid}"
    token = await _claim_token(hub, auto_approve=[device_id])
    async with served(hub) as url:
        pass  # a port that was the hub's and is closed now
    config = _config(hub, url, token, device_id, tmp_path / "agent")
    agent = Agent(config, None, drivers=Drivers(pin_factory=_pins()), claim_settings=FAST)
    async with agent:
        await asyncio.sleep(0.5)  # several attempts
        assert agent.health() == "offline"
        assert agent.status()["hub"] == f"claiming credentials at {url}"


@pytest.mark.parametrize(
    ("hub_yaml", "line", "field", "problem"),
    [
        pytest.param(
            "  username: atm-1.0a1b2c3d\n  secret: s\n  claim: {url: 'http://h:8080', token: t}\n",
            3,  # where the hub's mapping starts
            "hub",
            "give either claim or username, secret, not both",
            id="claim-and-secret",
        ),
        pytest.param(
            "  claim: {url: 'http://h:8080'}\n",
            4,
            "hub.claim",
            "give exactly one of token, token_file",
            id="claim-without-token",
        ),
        pytest.param(
            "  claim: {url: 'ftp://h', token: t}\n",
            4,
            "hub.claim.url",
            "expected str matching",
            id="claim-url-not-http",
        ),
        pytest.param(
            "  secret: s\n",
            3,
            "hub",
            "give username with secret or secret_file, or claim",
            id="secret-without-username",
        ),
    ],
)
def test_a_wrong_way_to_log_in_fails_at_load_with_line_and_field(
    tmp_path: Path, hub_yaml: str, line: int, field: str, problem: str
):
    path = tmp_path / "agent.yaml"
    path.write_text("device: {id: atm-1}\nhub:\n  broker: 'mqtt://h:1883'\n" + hub_yaml)
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    error = caught.value
    assert (error.line, error.field) == (line, field), str(error)
    assert problem in error.problem


def test_a_claim_in_yaml_loads(tmp_path: Path):
    path = tmp_path / "agent.yaml"
    path.write_text(
        "device: {id: atm-1}\nhub:\n  broker: 'mqtt://hub.example.net:1883'\n"
        "  claim:\n    url: https://hub.example.net\n    token_file: /etc/fieldhub/claim.token\n"
    )
    hub = load_config(path).hub
    assert hub.claim == ClaimSection(
        url="https://hub.example.net", token_file="/etc/fieldhub/claim.token"
    )
    assert hub.read_secret(path) is None


async def test_fieldhub_agent_says_it_waits_and_why_it_stops(hub: Hub, tmp_path: Path, uid: str):
    device_id = f"atm-{uid}"
    token_file = tmp_path / "claim.token"
    token_file.write_text(await _claim_token(hub) + "\n")
    async with served(hub) as url:
        config = tmp_path / "agent.yaml"
        config.write_text(
            f"device: {{id: {device_id}}}\n"
            f"hub:\n  broker: '{hub.broker_url}'\n"
            f"  claim: {{url: '{url}', token_file: '{token_file}'}}\n"
            f"data_dir: '{tmp_path / 'agent'}'\n"
            "units:\n  - {type: door, name: door, pin: 27}\n"
            "web: {enabled: false}\n"
        )
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "fieldhub",
            "agent",
            "--config",
            str(config),
            "--simulate",
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        assert process.stdout is not None
        try:
            said = await asyncio.wait_for(_read_until(process.stdout, "waiting for approval"), 30)
            assert f"waiting for approval at {url}" in said
            await _decide(hub, device_id, "reject")
            rest = (await asyncio.wait_for(process.stdout.read(), 30)).decode()
            assert await process.wait() == 1
        finally:
            if process.returncode is None:
                process.kill()
                await process.wait()
    assert f"error: the claim of device '{device_id}' was rejected at {url}" in " ".join(
        rest.split()  # the console wraps long lines
    )


async def _read_until(stream: asyncio.StreamReader, text: str) -> str:
    seen = ""
    while text not in seen:
        line = await stream.readline()
        if not line:
            pytest.fail(f"the agent ended before saying {text!r}: {seen}")
        seen += line.decode()
    return seen


def test_the_examples_claim_alternative_loads(tmp_path: Path):
    example = (Path(__file__).parent.parent / "deploy" / "agent.example.yaml").read_text()
    lines = []
    for line in example.splitlines():
        if line.startswith(("  username:", "  secret_file:")):
            continue  # the claim replaces them
        commented = line.startswith(("  # claim:", "  #   "))
        lines.append("  " + line[4:] if commented else line)
    path = tmp_path / "agent.yaml"
    path.write_text("\n".join(lines) + "\n")
    claim = load_config(path).hub.claim
    assert claim is not None
    assert claim.url.startswith("https://")
    assert claim.token_file is not None


async def test_a_claim_the_hub_finds_invalid_says_what_the_hub_said(hub: Hub, tmp_path: Path):
    """A 422 carries a list of errors; the agent's message gives their texts (never the values
    sent, which the hub does not echo), not just the status."""
    token = await _claim_token(hub)
    async with served(hub) as url:
        claimer = Claimer(ClaimSection(url=url, token=token), "Not A Device Id", tmp_path, FAST)
        with pytest.raises(ClaimError, match=r"HTTP 422: device id must be") as refused:
            await asyncio.wait_for(claimer.credentials(), 15)
    assert token not in str(refused.value)
