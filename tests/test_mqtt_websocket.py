"""MQTT over WebSocket: an agent with a ``ws://`` or ``wss://`` broker reaches the hub (reports
stored, a command run) on the embedded broker's WebSocket listeners, on the managed Mosquitto's,
and through nginx's ``/mqtt`` location (deploy/nginx/fieldhub.conf served for real); over
``wss://`` the device's secret never crosses the wire in clear; a handshake on the wrong path
is refused before CONNECT, with the reason, and counted. Also: the managed Mosquitto's TLS
listener, made from deploy/mosquitto/tls.conf."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from fieldhub.agent.config import HubSection
from fieldhub.hub.app import Hub
from fieldhub.hub.broker.managed import find_mosquitto
from fieldhub.hub.config import HubSettings
from fieldhub.mqtt import MqttClient
from fieldhub.mqtt.address import broker_address
from fieldhub.mqtt.websocket import WebSocketRefused
from tests.conftest import HubFactory, _unavailable
from tests.fleet import LOCK_PIN, Fleet
from tests.support.certs import CertFiles, TestCa
from tests.support.proxy import TcpProxy
from tests.support.servers import ServerUnavailable, free_port
from tests.test_nginx import SITE, _edit, _serving, _site
from tests.waiting import eventually

LOCAL = ["127.0.0.1", "localhost"]


@pytest.fixture(scope="module")
def ca(tmp_path_factory: pytest.TempPathFactory) -> TestCa:
    return TestCa(tmp_path_factory.mktemp("ws-certs") / "ca")


@pytest.fixture(scope="module")
def server_cert(ca: TestCa) -> CertFiles:
    return ca.issue("broker", hosts=LOCAL)


def _listeners(cert: CertFiles) -> dict[str, Any]:
    """Hub settings: a ws:// and a wss:// listener, ports picked by the OS."""
    return {
        "mqtt_ws": "127.0.0.1:0",
        "mqtt_wss": "127.0.0.1:0",
        "mqtt_cert": cert.cert,
        "mqtt_key": cert.key,
    }


def _websocket_url(hub: Hub, scheme: str) -> str:
    assert hub.broker is not None
    [url] = [u for u in hub.broker.websocket_urls if u.startswith(f"{scheme}://")]
    return url


async def _unlock_over(fleet: Fleet, broker: str, name: str = "door", **tls: Any) -> None:
    """An agent on ``broker`` comes online with its catalog (reports stored), and runs
    ``lock.unlock``: the pin moves and the hub records the success."""
    hub = fleet.hub
    device = await fleet.add(name)
    async with fleet.agent(device, broker=broker, **tls):
        await fleet.online(device)
        _batch, [command] = await hub.commands.submit(
            [device], "lock.unlock", {}, timeout_s=10, ttl_s=60, actor="test"
        )

        async def status() -> str | None:
            record = hub.commands.current(command.id) or await hub.commands.store.get(command.id)
            return record.status if record.finished else None

        assert await eventually(status, "the command's outcome") == "succeeded"
        assert fleet.level(device, LOCK_PIN) == 1


@pytest.mark.parametrize("scheme", ["ws", "wss"])
async def test_an_agent_reports_and_runs_a_command_over_websocket(
    scheme: str,
    make_hub: HubFactory,
    fleet_of: Callable[[Hub], Fleet],
    ca: TestCa,
    server_cert: CertFiles,
):
    async with make_hub(**_listeners(server_cert)) as hub:
        url = _websocket_url(hub, scheme)
        assert url.endswith("/mqtt")
        tls = {"ca_file": str(ca.cert)} if scheme == "wss" else {}
        await _unlock_over(fleet_of(hub), url, **tls)


@pytest.mark.parametrize("tls", [True, False], ids=["wss", "ws-control"])
async def test_over_wss_the_device_secret_never_crosses_in_clear(
    tls: bool,
    make_hub: HubFactory,
    fleet_of: Callable[[Hub], Fleet],
    ca: TestCa,
    server_cert: CertFiles,
):
    async with make_hub(**_listeners(server_cert)) as hub:
        target = broker_address(_websocket_url(hub, "wss" if tls else "ws"))
        fleet = fleet_of(hub)
        device = await fleet.add("tap")
        async with TcpProxy(target.host, target.port, capture=True) as wire:
            scheme = "wss" if tls else "ws"
            options = {"ca_file": str(ca.cert)} if tls else {}
            broker = f"{scheme}://127.0.0.1:{wire.port}/mqtt"
            async with fleet.agent(device, broker=broker, **options):
                await fleet.online(device)
    secret = fleet.issued[device].secret.encode()
    assert wire.connections >= 1
    assert len(wire.captured) > 100
    # ws:// only masks a client's frames, with the key in the frame: a wiretap reads the secret
    # (so this test can fail); wss:// shows it nothing, not even the handshake.
    assert (secret in _unmasked(wire.captured)) is not tls
    assert (b"Upgrade: websocket" in wire.captured) is not tls


def _unmasked(captured: bytearray) -> bytes:
    """What a wiretap reads in the masked binary frames of a client (RFC 6455 §5.2, §5.3): every
    place that looks like a masked frame's header (lengths up to 64 KiB), unmasked with the
    key that follows it."""
    found = []
    for at in range(len(captured) - 8):
        if captured[at] != 0x82 or captured[at + 1] < 0x80 or captured[at + 1] == 0xFF:
            continue
        length, start = captured[at + 1] & 0x7F, at + 2
        if length == 126:
            length, start = int.from_bytes(captured[start : start + 2], "big"), start + 2
        key, payload = captured[start : start + 4], captured[start + 4 : start + 4 + length]
        found.append(bytes(b ^ key[i % 4] for i, b in enumerate(payload)))
    return b"".join(found)


async def test_a_handshake_on_another_path_is_refused_before_connect_and_counted(
    make_hub: HubFactory, ca: TestCa, server_cert: CertFiles, uid: str
):
    async with make_hub(**_listeners(server_cert)) as hub:
        target = broker_address(_websocket_url(hub, "ws"))
        async with TcpProxy(target.host, target.port, capture=True) as wire:
            client = MqttClient(
                "127.0.0.1",
                wire.port,
                client_id=f"probe-{uid}",
                username="probe",
                password="the-secret-that-must-stay-home",
                on_message=lambda _topic, _payload: None,
                websocket_path="/elsewhere",
            )
            with pytest.raises(WebSocketRefused) as refused:
                await client.connect(timeout_s=10)
            await client.close()
        assert "404" in str(refused.value)
        assert b"the-secret-that-must-stay-home" not in wire.captured
        assert hub.broker is not None
        await eventually(lambda: hub.broker and hub.broker.violations["WebSocket"] == 1, "counted")


async def test_an_agent_reaches_the_hub_with_wss_through_nginx(
    make_hub: HubFactory, fleet_of: Callable[[Hub], Fleet], tmp_path: Path
):
    async with make_hub(mqtt_ws="127.0.0.1:0") as hub:
        ws = broker_address(_websocket_url(hub, "ws"))
        folder = tmp_path / "nginx"
        folder.mkdir()
        # The shipped site, its MQTT upstream moved to this hub's WebSocket listener.
        text = _edit(SITE.read_text(), "server 127.0.0.1:9001;", f"server 127.0.0.1:{ws.port};")
        site = _site(folder, hub_port=free_port(), site_text=text)
        with _serving(site):
            # nginx's certificate is self-signed: it is its own CA here.
            url = f"wss://localhost:{site.https}/mqtt"
            await _unlock_over(fleet_of(hub), url, ca_file=str(folder / "cert.pem"))


def _mosquitto_installed() -> None:
    found = find_mosquitto("mosquitto")
    if isinstance(found, str):
        _unavailable(ServerUnavailable(found))


@pytest.mark.mosquitto
async def test_the_managed_mosquitto_serves_mqtts_and_websocket_listeners(
    make_hub: HubFactory,
    fleet_of: Callable[[Hub], Fleet],
    ca: TestCa,
    server_cert: CertFiles,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
):
    _mosquitto_installed()
    mqtts, ws, wss = free_port(), free_port(), free_port()
    options = {
        "mqtts": f"127.0.0.1:{mqtts}",
        "mqtt_ws": f"127.0.0.1:{ws}",
        "mqtt_wss": f"127.0.0.1:{wss}",
        "mqtt_cert": server_cert.cert,
        "mqtt_key": server_cert.key,
    }
    with caplog.at_level(logging.INFO, logger="fieldhub.hub.broker.managed"):
        async with make_hub(local_broker="mosquitto", **options) as hub:
            assert hub.broker_kind == "managed-mosquitto"
            # The hub says where its Mosquitto listens.
            for url in (f"mqtts://127.0.0.1:{mqtts}", f"ws://127.0.0.1:{ws}/mqtt"):
                assert url in caplog.text
            config = (tmp_path / "data" / "mosquitto" / "mosquitto.conf").read_text()
            assert "tls_version tlsv1.2" in config  # deploy/mosquitto/tls.conf, as shipped
            assert config.count("protocol websockets") == 2
            fleet = fleet_of(hub)
            trust = {"ca_file": str(ca.cert)}
            await _unlock_over(fleet, f"mqtts://127.0.0.1:{mqtts}", "tls", **trust)
            await _unlock_over(fleet, f"ws://127.0.0.1:{ws}/mqtt", "ws")
            await _unlock_over(fleet, f"wss://localhost:{wss}/mqtt", "wss", **trust)


@pytest.mark.parametrize(
    ("options", "named"),
    [
        ({"mqtt_wss": "127.0.0.1:9002"}, "mqtt_wss (HOST:PORT of the TLS WebSocket listener)"),
        ({"mqtt_cert": "c.pem", "mqtt_key": "k.pem"}, "mqtt_cert and mqtt_key are for mqtts"),
        ({"mqtt_ws": "127.0.0.1:99999"}, "port from 0 to 65535"),
        ({"broker": "ws://a:b@h:9001/mqtt"}, "the hub speaks to its broker over TCP"),
        ({"mqtt_ws_path": "mqtt"}, "mqtt_ws_path"),
    ],
)
def test_websocket_settings_that_cannot_work_stop_the_hub_naming_them(
    tmp_path: Path, options: dict[str, Any], named: str
):
    with pytest.raises(ValidationError) as refused:
        HubSettings(data=tmp_path, **options)
    assert named in str(refused.value)
    assert ":b@" not in str(refused.value)


@pytest.mark.parametrize(
    ("broker", "host", "port", "path", "tls"),
    [
        ("ws://hub.example.net", "hub.example.net", 80, "/mqtt", False),
        ("wss://hub.example.net/mqtt", "hub.example.net", 443, "/mqtt", True),
        ("wss://10.0.0.5:8443/broker/mqtt", "10.0.0.5", 8443, "/broker/mqtt", True),
    ],
)
def test_the_agent_reads_websocket_broker_urls(
    broker: str, host: str, port: int, path: str, tls: bool
):
    HubSection(broker=broker, username="d.k")  # accepted by the agent's config
    address = broker_address(broker)
    assert (address.host, address.port, address.websocket_path, address.tls) == (
        host,
        port,
        path,
        tls,
    )
    assert address.url == f"{'wss' if tls else 'ws'}://{host}:{port}{path}"


def test_a_ca_file_with_a_plain_websocket_broker_is_refused():
    with pytest.raises(ValueError, match="ca_file needs an mqtts:// or wss:// broker"):
        HubSection(broker="ws://hub.example.net/mqtt", username="d.k", ca_file="/ca.pem")


async def test_a_server_that_never_answers_the_upgrade_is_given_up_and_hung_up_on(uid: str):
    """The client's attempt times out and its TCP connection is closed, not left open."""
    hung_up = asyncio.Event()
    received = bytearray()

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while chunk := await reader.read(4096):
            received.extend(chunk)
        hung_up.set()
        writer.close()

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    client = MqttClient(
        "127.0.0.1",
        port,
        client_id=f"probe-{uid}",
        username="probe",
        password="the-secret-that-must-stay-home",
        on_message=lambda _topic, _payload: None,
        websocket_path="/mqtt",
    )
    async with server:
        with pytest.raises(TimeoutError):
            await client.connect(timeout_s=0.5)
        await client.close()
        await eventually(hung_up.is_set, "the TCP connection closed")
    assert b"Upgrade: websocket" in received
    assert b"the-secret-that-must-stay-home" not in received  # no CONNECT before the upgrade
