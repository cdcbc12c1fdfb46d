"""MQTT over TLS: hub and agent speak ``mqtts://`` to the embedded broker and to Mosquitto, the
device's secret is never on the wire in clear, and a broker whose certificate is expired,
untrusted, for another host or not the pinned one is refused with that reason, before the
secret is sent. Certificates are made by the ``openssl`` command (tests/support/certs.py)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from fieldhub.agent.config import AgentConfig, DeviceSection, HubSection, WebSection
from fieldhub.agent.service import Agent
from fieldhub.agent.units import DoorConfig, Drivers, mock_pin_factory
from fieldhub.agent.units.simulate import SwitchPin
from fieldhub.hub.app import Hub, HubStartError
from fieldhub.hub.config import HubSettings
from fieldhub.mqtt import MqttClient
from fieldhub.mqtt.tls import CertificateRefused, broker_context
from tests.support.certs import CertFiles, TestCa, public_key_pin, self_signed
from tests.support.proxy import TcpProxy
from tests.support.servers import Mosquitto, ServerUnavailable
from tests.waiting import eventually

DOOR_PIN = 27
LOCAL = ["127.0.0.1", "localhost"]


@dataclass(frozen=True)
class Certificates:
    ca: TestCa
    good: CertFiles
    expired: CertFiles
    wrong_host: CertFiles
    self_signed: CertFiles
    revoked: CertFiles
    crl: Path  # lists ``revoked``
    other_ca: TestCa  # trusted by nobody here: a hub told to trust it refuses the good one


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certificates:
    folder = tmp_path_factory.mktemp("certs")
    ca = TestCa(folder / "ca")
    revoked = ca.issue("revoked", hosts=LOCAL)
    ca.revoke(revoked)
    return Certificates(
        ca=ca,
        revoked=revoked,
        crl=ca.crl(),
        good=ca.issue("broker", hosts=LOCAL),
        expired=ca.issue(
            "expired", hosts=LOCAL, not_before="20200101000000Z", not_after="20200102000000Z"
        ),
        wrong_host=ca.issue("elsewhere", hosts=["broker.example.net"]),
        self_signed=self_signed(folder / "self", "self-signed", hosts=LOCAL),
        other_ca=TestCa(folder / "other", name="another CA"),
    )


@pytest.fixture(scope="module")
def mosquitto_tls(
    tmp_path_factory: pytest.TempPathFactory, certs: Certificates
) -> Iterator[Mosquitto]:
    """A Mosquitto of this module's own, with the TLS listener of deploy/mosquitto/tls.conf."""
    try:
        broker = Mosquitto(
            tmp_path_factory.mktemp("mosquitto-tls"), tls=(certs.good.cert, certs.good.key)
        )
    except ServerUnavailable as exc:
        pytest.skip(str(exc))
    with broker:
        yield broker


def _hub_settings(tmp_path: Path, uid: str, **options: Any) -> HubSettings:
    return HubSettings(
        data=tmp_path / "hub",
        instance=f"t{uid}",
        mqtt="127.0.0.1:0",
        http="127.0.0.1:0",
        **options,
    )


def _tls_listener(server: CertFiles) -> dict[str, Any]:
    """Hub settings for an embedded broker with a TLS listener showing ``server``."""
    return {"mqtts": "127.0.0.1:0", "mqtt_cert": server.cert, "mqtt_key": server.key}


@pytest.fixture
async def tls_hub(tmp_path: Path, uid: str, certs: Certificates) -> AsyncIterator[Hub]:
    """A hub whose embedded broker also listens for TLS with the good certificate."""
    async with Hub(_hub_settings(tmp_path, uid, **_tls_listener(certs.good))) as hub:
        yield hub


def _tls_url(hub: Hub) -> str:
    assert hub.broker is not None
    assert hub.broker.tls_url is not None
    return hub.broker.tls_url


def _agent_config(
    device_id: str, username: str, broker: str, data: Path, **tls: Any
) -> AgentConfig:
    return AgentConfig(
        device=DeviceSection(id=device_id),
        hub=HubSection(broker=broker, username=username, **tls),
        data_folder=str(data),
        units=[DoorConfig(name="door", pin=DOOR_PIN, debounce_s=0.02)],
        web=WebSection(enabled=False),
    )


def _agent(config: AgentConfig, secret: str) -> Agent:
    pins = mock_pin_factory(SwitchPin)
    pins.pin(DOOR_PIN).drive_low()  # closed
    return Agent(config, secret, drivers=Drivers(pin_factory=pins))


async def _door_reported(hub: Hub, device_id: str) -> bool:
    return (await hub.registry.get(device_id)).reported.get("door") == "closed"


async def _agent_reports_over(hub: Hub, broker: str, data: Path, uid: str, **tls: Any) -> None:
    """An agent on ``broker`` gets its door state stored by ``hub``."""
    device_id = f"atm-{uid}"
    issued = (await hub.devices.create(device_id)).credentials
    config = _agent_config(device_id, issued.username, broker, data, **tls)
    async with _agent(config, issued.secret):
        await eventually(lambda: _door_reported(hub, device_id), "the door state stored")
    await hub.devices.delete(device_id)


async def test_an_agent_reports_over_mqtts_to_the_embedded_broker(
    tls_hub: Hub, certs: Certificates, tmp_path: Path, uid: str
):
    assert _tls_url(tls_hub).startswith("mqtts://127.0.0.1:")
    await _agent_reports_over(
        tls_hub, _tls_url(tls_hub), tmp_path / "agent", uid, ca_file=str(certs.ca.cert)
    )


async def test_a_pinned_agent_accepts_the_pinned_key(
    tls_hub: Hub, certs: Certificates, tmp_path: Path, uid: str
):
    pin = public_key_pin(certs.good.cert)  # computed by openssl, as docs/agent.md says
    await _agent_reports_over(
        tls_hub,
        _tls_url(tls_hub),
        tmp_path / "agent",
        uid,
        ca_file=str(certs.ca.cert),
        pin_sha256=pin,
    )


@pytest.mark.mosquitto
async def test_hub_and_agent_speak_mqtts_to_mosquitto(
    mosquitto_tls: Mosquitto, certs: Certificates, tmp_path: Path, uid: str
):
    # The hub's bus and its dynamic-security admin connection go over TLS too, pinned.
    settings = _hub_settings(
        tmp_path,
        uid,
        broker=mosquitto_tls.tls_url,
        broker_ca=certs.ca.cert,
        broker_pin=public_key_pin(certs.good.cert),
    )
    async with Hub(settings) as hub:
        assert hub.broker_url == f"mqtts://127.0.0.1:{mosquitto_tls.tls_port}"
        await _agent_reports_over(
            hub, hub.broker_url, tmp_path / "agent", uid, ca_file=str(certs.ca.cert)
        )


@pytest.mark.parametrize("tls", [True, False], ids=["mqtts", "mqtt-control"])
async def test_the_device_secret_crosses_the_network_only_encrypted(
    tls: bool, tls_hub: Hub, certs: Certificates, tmp_path: Path, uid: str
):
    assert tls_hub.broker is not None
    target = tls_hub.broker.tls_url if tls else tls_hub.broker_url
    assert target is not None
    host, port = target.rsplit(":", 1)
    async with TcpProxy(
        host.removeprefix("mqtts://").removeprefix("mqtt://"), int(port), capture=True
    ) as wire:
        device_id = f"tap-{uid}"
        issued = (await tls_hub.devices.create(device_id)).credentials
        scheme = "mqtts" if tls else "mqtt"
        options = {"ca_file": str(certs.ca.cert)} if tls else {}
        config = _agent_config(
            device_id,
            issued.username,
            f"{scheme}://127.0.0.1:{wire.port}",
            tmp_path / "agent",
            **options,
        )
        async with _agent(config, issued.secret):
            await eventually(lambda: _door_reported(tls_hub, device_id), "the door state stored")
    assert wire.connections >= 1
    assert len(wire.captured) > 100
    seen = issued.secret.encode() in wire.captured
    assert seen is not tls  # in clear over mqtt:// (so this test can fail), never over mqtts://
    assert (b"closed" in wire.captured) is not tls  # nor the reports


BAD = ["expired", "self_signed", "wrong_host", "revoked", "pin"]
REASON = {
    "expired": "expired",
    "self_signed": "untrusted",
    "wrong_host": "wrong host",
    "revoked": "revoked",
    "pin": "pin mismatch",
}


def _bad_listener(certs: Certificates, case: str) -> CertFiles:
    return certs.good if case == "pin" else getattr(certs, case)


def _bad_client_tls(certs: Certificates, case: str) -> dict[str, Any]:
    """What the client trusts: the test CA, with its revocation list (so the revoked case can
    be told), and in the pin case a pin of another key."""
    options: dict[str, Any] = {"ca_file": str(certs.ca.cert), "crl_file": str(certs.crl)}
    if case == "pin":
        options["pin_sha256"] = public_key_pin(certs.expired.cert)
    return options


@pytest.mark.parametrize("case", BAD)
async def test_a_bad_broker_certificate_is_refused_with_its_reason_before_connect(
    case: str, certs: Certificates, tmp_path: Path, uid: str
):
    settings = _hub_settings(tmp_path, uid, **_tls_listener(_bad_listener(certs, case)))
    async with Hub(settings) as hub:
        assert hub.broker is not None
        assert hub.broker.tls_url is not None
        host, port = hub.broker.tls_url.removeprefix("mqtts://").rsplit(":", 1)
        async with TcpProxy(host, int(port), capture=True) as wire:
            client = MqttClient(
                "127.0.0.1",
                wire.port,
                client_id=f"probe-{uid}",
                username="probe",
                password="the-secret-that-must-stay-home",
                on_message=lambda _topic, _payload: None,
                tls=broker_context(**_bad_client_tls(certs, case)),
            )
            with pytest.raises(CertificateRefused) as refused:
                await client.connect(timeout_s=10)
            await client.close()
        assert refused.value.reason == REASON[case]
        assert REASON[case] in str(refused.value)
        assert client.stats.last_error == str(refused.value)
        assert b"the-secret-that-must-stay-home" not in wire.captured
        assert b"MQTT" not in wire.captured  # no CONNECT left, not even encrypted past TLS
        # The broker saw the client give up in the handshake: counted, as refusals are.
        await eventually(lambda: hub.broker and hub.broker.violations["TLS"] == 1, "counted")


async def test_the_agent_names_the_refusal_in_its_log_and_status(
    certs: Certificates, tmp_path: Path, uid: str, caplog: pytest.LogCaptureFixture
):
    settings = _hub_settings(tmp_path, uid, **_tls_listener(certs.expired))
    async with Hub(settings) as hub:
        device_id = f"atm-{uid}"
        issued = (await hub.devices.create(device_id)).credentials
        config = _agent_config(
            device_id,
            issued.username,
            _tls_url(hub),
            tmp_path / "agent",
            ca_file=str(certs.ca.cert),
        )
        with caplog.at_level(logging.WARNING, logger="fieldhub.agent.uplink"):
            async with _agent(config, issued.secret) as agent:
                status = await eventually(
                    lambda: agent.status().get("uplink", {}).get("last_error"), "the refusal"
                )
                assert "TLS: the broker's certificate is refused: expired" in status
                assert not agent.status()["uplink"]["connected"]
        assert any("refused: expired" in r.getMessage() for r in caplog.records)
        assert issued.secret not in caplog.text


@pytest.mark.mosquitto
async def test_a_hub_that_does_not_trust_the_brokers_ca_does_not_start(
    mosquitto_tls: Mosquitto, certs: Certificates, tmp_path: Path, uid: str
):
    settings = _hub_settings(
        tmp_path, uid, broker=mosquitto_tls.tls_url, broker_ca=certs.other_ca.cert
    )
    with pytest.raises(HubStartError) as refused:
        async with Hub(settings):
            pass
    message = str(refused.value)
    assert "untrusted" in message
    assert str(certs.other_ca.cert) in message
    assert mosquitto_tls.admin_password not in message


@pytest.mark.parametrize(
    ("options", "named"),
    [
        ({"broker_ca": "ca.pem"}, "broker_ca, broker_pin and broker_crl need an mqtts://"),
        ({"broker": "mqtts://a:b@h:8883", "broker_ca": "/nonexistent.pem"}, "cannot load"),
        ({"broker": "mqtts://a:b@h:8883", "broker_pin": "xyz"}, "SHA-256 in hex"),
        ({"mqtts": "127.0.0.1:8883"}, "mqtts (HOST:PORT of the TLS listener) goes with"),
        ({"mqtt_cert": "c.pem"}, "give mqtt_cert and mqtt_key together"),
    ],
)
def test_tls_settings_that_cannot_work_stop_the_hub_naming_them(
    tmp_path: Path, options: dict[str, Any], named: str
):
    with pytest.raises(ValidationError) as refused:
        HubSettings(data=tmp_path, **options)
    assert named in str(refused.value)
    assert ":b@" not in str(refused.value)  # the admin's password stays out


async def test_a_listener_key_that_does_not_load_stops_the_hub_naming_the_setting(
    certs: Certificates, tmp_path: Path, uid: str
):
    mismatched = {
        "mqtts": "127.0.0.1:0",
        "mqtt_cert": certs.good.cert,
        "mqtt_key": certs.expired.key,
    }
    with pytest.raises(HubStartError, match="mqtt_cert/mqtt_key: cannot load"):
        async with Hub(_hub_settings(tmp_path, uid, **mismatched)):
            pass


def test_the_pin_is_read_from_the_certificate_as_openssl_reads_it(certs: Certificates):
    import ssl

    der = ssl.PEM_cert_to_DER_cert(certs.good.cert.read_text())
    from fieldhub.mqtt.tls import public_key_sha256

    assert public_key_sha256(der) == public_key_pin(certs.good.cert)
    assert public_key_sha256(der) != public_key_pin(certs.expired.cert)
    with pytest.raises(ValueError, match=r"not an X\.509 certificate"):
        public_key_sha256(der[:40])


async def test_the_connection_attempt_times_out_without_tls_hanging(tmp_path: Path):
    # A TLS client against a listener that never answers the handshake: the connect timeout
    # holds (no hang in the handshake).
    hung_up = asyncio.Event()

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()  # until the client gives up
        writer.close()
        await writer.wait_closed()
        hung_up.set()

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    client = MqttClient(
        "127.0.0.1",
        port,
        client_id="probe",
        on_message=lambda _topic, _payload: None,
        tls=broker_context(),
    )
    try:
        with pytest.raises(TimeoutError):
            await client.connect(timeout_s=0.5)
        await asyncio.wait_for(hung_up.wait(), 10)  # and it hung up, not left the socket open
    finally:
        await client.close()
        server.close()
        await server.wait_closed()


async def test_the_agent_command_speaks_mqtts(
    tls_hub: Hub, certs: Certificates, tmp_path: Path, uid: str
):
    # `fieldhub agent` imports asyncio without ssl for a plain-TCP broker (fieldhub.cli.plain);
    # for an mqtts:// one it must not, or the uplink could never connect.
    import sys

    import yaml

    device_id = f"cli-{uid}"
    issued = (await tls_hub.devices.create(device_id)).credentials
    config = {
        "device": {"id": device_id},
        "hub": {
            "broker": _tls_url(tls_hub),
            "username": issued.username,
            "secret": issued.secret,
            "ca_file": str(certs.ca.cert),
        },
        "data_dir": str(tmp_path / "agent"),
        "units": [{"type": "door", "name": "door", "pin": DOOR_PIN}],
        "web": {"enabled": False},
    }
    path = tmp_path / "agent.yaml"
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    agent = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "fieldhub", "agent", "--config", str(path), "--simulate",
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    try:
        await eventually(
            lambda: _state_reported(tls_hub, device_id), "the agent's state stored", within_s=30
        )
    finally:
        agent.terminate()
        _out, err = await agent.communicate()
    assert b"Traceback" not in err, err.decode()


async def _state_reported(hub: Hub, device_id: str) -> bool:
    return "door" in (await hub.registry.get(device_id)).reported


async def test_with_a_revocation_list_a_current_certificate_still_connects(
    tls_hub: Hub, certs: Certificates, tmp_path: Path, uid: str
):
    # The control of the revoked case: the same CRL does not refuse what it does not list.
    await _agent_reports_over(
        tls_hub,
        _tls_url(tls_hub),
        tmp_path / "agent",
        uid,
        ca_file=str(certs.ca.cert),
        crl_file=str(certs.crl),
    )


async def test_a_crl_of_another_ca_refuses_the_broker_saying_so(
    tls_hub: Hub, certs: Certificates, uid: str
):
    # A revocation list must be that of the broker's own CA: with another one nothing passes,
    # and the reason says why rather than "untrusted".
    host, port = _tls_url(tls_hub).removeprefix("mqtts://").rsplit(":", 1)
    client = MqttClient(
        host,
        int(port),
        client_id=f"probe-{uid}",
        on_message=lambda _topic, _payload: None,
        tls=broker_context(ca_file=str(certs.ca.cert), crl_file=str(certs.other_ca.crl())),
    )
    with pytest.raises(CertificateRefused) as refused:
        await client.connect(timeout_s=10)
    await client.close()
    assert refused.value.reason == "no revocation list"
    assert "its CA has no revocation list in the CRL file" in str(refused.value)


def test_a_crl_file_holding_a_certificate_is_refused_not_trusted(certs: Certificates):
    # OpenSSL would load a CA from the CRL file and trust it: such a file is refused instead.
    from fieldhub.mqtt.tls import TlsSetupError

    with pytest.raises(TlsSetupError, match="must hold revocation lists"):
        broker_context(ca_file=str(certs.ca.cert), crl_file=str(certs.other_ca.cert))


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("mqtts://admin:pw@broker.example.net", "mqtts://broker.example.net:8883"),
        ("ssl://broker.example.net:9883", "mqtts://broker.example.net:9883"),
        ("mqtt://[::1]", "mqtt://[::1]:1883"),
        ("tcp://h:1884", "mqtt://h:1884"),
    ],
)
def test_broker_urls_are_read_with_the_iana_ports(url: str, expected: str):
    from fieldhub.mqtt.address import broker_address

    assert broker_address(url).url == expected


@pytest.mark.parametrize("url", ["http://h:1883", "mqtts://:8883", "mqtt://h:0", "mqtt://h:x"])
def test_a_broker_url_that_is_none_is_refused(url: str):
    from fieldhub.mqtt.address import broker_address

    with pytest.raises(ValueError, match="broker URL"):
        broker_address(url)


async def test_plain_mqtt_on_the_tls_listener_is_refused_and_counted(tls_hub: Hub, uid: str):
    host, port = _tls_url(tls_hub).removeprefix("mqtts://").rsplit(":", 1)
    client = MqttClient(
        host, int(port), client_id=f"plain-{uid}", on_message=lambda _topic, _payload: None
    )
    with pytest.raises((OSError, TimeoutError)):
        await client.connect(timeout_s=10)
    await client.close()
    assert tls_hub.broker is not None
    broker = tls_hub.broker
    await eventually(lambda: broker.violations["TLS"] == 1, "the refusal counted")
