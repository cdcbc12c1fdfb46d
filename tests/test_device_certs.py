"""Device certificates from the hub's own CA (``fieldhub device cert``): on an embedded broker
that requires them (``FIELDHUB_MQTT_CLIENT_CERTS=required``), a device with a good certificate
reports; one without, with an expired or revoked one, one of another CA, or another device's,
is refused with the reason named and counted; a revocation closes the live connection."""

from __future__ import annotations

import datetime as dt
import logging
import stat
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from pydantic import ValidationError
from typer.testing import CliRunner

from fieldhub.agent.config import HubSection
from fieldhub.cli import build_app
from fieldhub.hub.app import Hub
from fieldhub.hub.broker.device_ca import DeviceCa, IssuedCertificate
from fieldhub.hub.config import HubSettings
from fieldhub.mqtt import ConnectRefused, MqttClient
from fieldhub.mqtt.address import broker_address
from fieldhub.mqtt.tls import broker_context
from tests.conftest import HubFactory, api_client
from tests.fleet import Fleet
from tests.support.certs import CertFiles, TestCa
from tests.waiting import eventually

LOCAL = ["127.0.0.1", "localhost"]


@pytest.fixture(scope="module")
def server_ca(tmp_path_factory: pytest.TempPathFactory) -> TestCa:
    return TestCa(tmp_path_factory.mktemp("device-certs") / "ca")


@pytest.fixture(scope="module")
def server_cert(server_ca: TestCa) -> CertFiles:
    return server_ca.issue("broker", hosts=LOCAL)


def _requiring(server: CertFiles) -> dict[str, Any]:
    return {
        "mqtts": "127.0.0.1:0",
        "mqtt_cert": server.cert,
        "mqtt_key": server.key,
        "mqtt_client_certs": "required",
    }


def _ca(hub: Hub) -> DeviceCa:
    return DeviceCa(hub.settings.device_ca_folder)


def _files(folder: Path, issued: IssuedCertificate) -> dict[str, str]:
    """The agent's ``client_cert``/``client_key`` settings, the files written as a user would."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "device.pem").write_text(issued.certificate)
    (folder / "device.key").write_text(issued.key)
    return {"client_cert": str(folder / "device.pem"), "client_key": str(folder / "device.key")}


def _tls_url(hub: Hub) -> str:
    assert hub.broker is not None
    assert hub.broker.tls_url is not None
    return hub.broker.tls_url


async def test_a_device_with_its_certificate_reports_and_revoking_it_disconnects_it(
    make_hub: HubFactory,
    fleet_of: Callable[[Hub], Fleet],
    server_ca: TestCa,
    server_cert: CertFiles,
    tmp_path: Path,
):
    async with make_hub(**_requiring(server_cert)) as hub:
        key = hub.settings.device_ca_folder / "ca.key"
        assert stat.S_IMODE(key.stat().st_mode) == 0o600  # made at start, the hub's alone
        fleet = fleet_of(hub)
        device = await fleet.add("atm")
        files = _files(tmp_path / "certs", _ca(hub).issue(device))
        options = {"ca_file": str(server_ca.cert), **files}
        async with fleet.agent(device, broker=_tls_url(hub), **options) as agent:
            await fleet.online(device)
            assert _ca(hub).revoke(device)
            await eventually(lambda: hub.presence.get(device).presence == "offline", "disconnected")
            # It tries again and is refused in the handshake, counted.
            await eventually(lambda: hub.broker and hub.broker.violations["TLS"] >= 1, "refused")
            assert agent.uplink is not None
            assert not agent.uplink.snapshot()["uplink"]["connected"]


def _expired(ca: DeviceCa, device_id: str, folder: Path) -> dict[str, str]:
    """A certificate of the hub's CA for ``device_id`` that ended yesterday."""
    ca_key = serialization.load_pem_private_key((ca.folder / "ca.key").read_bytes(), None)
    assert isinstance(ca_key, ec.EllipticCurvePrivateKey)
    issuer = x509.load_pem_x509_certificate(ca.ca_path.read_bytes()).subject
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, device_id)]))
        .issuer_name(issuer)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=30))
        .not_valid_after(now - dt.timedelta(days=1))
        .sign(ca_key, hashes.SHA256())
    )
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "device.pem").write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    (folder / "device.key").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return {"client_cert": str(folder / "device.pem"), "client_key": str(folder / "device.key")}


CASES = {
    "none": ("TLS", "peer did not return a certificate"),
    "expired": ("TLS", "certificate has expired"),
    "revoked": ("TLS", "certificate revoked"),
    "other CA": ("TLS", "self-signed certificate in certificate chain"),
    "another device's": ("certificate", "its client certificate is for"),
}


@pytest.mark.parametrize("case", list(CASES))
async def test_a_bad_client_certificate_is_refused_with_its_reason_and_counted(
    case: str,
    make_hub: HubFactory,
    server_ca: TestCa,
    server_cert: CertFiles,
    tmp_path: Path,
    uid: str,
    caplog: pytest.LogCaptureFixture,
):
    rule, reason = CASES[case]
    async with make_hub(**_requiring(server_cert)) as hub:
        device = f"atm-{uid}"
        issued = (await hub.devices.create(device)).credentials
        ca, folder = _ca(hub), tmp_path / "certs"
        files: dict[str, str] = {}
        if case == "expired":
            files = _expired(ca, device, folder)
        elif case == "revoked":
            files = _files(folder, ca.issue(device))
            with caplog.at_level(logging.INFO, logger="fieldhub.hub.broker.client_certs"):
                ca.revoke(device)
                await eventually(lambda: _reloaded(caplog), "the revocation applied")
        elif case == "other CA":
            other = server_ca.issue(device, hosts=LOCAL)  # a CA the hub's broker does not trust
            files = {"client_cert": str(other.cert), "client_key": str(other.key)}
        elif case == "another device's":
            await hub.devices.create(f"other-{uid}")
            files = _files(folder, ca.issue(f"other-{uid}"))
        address = broker_address(_tls_url(hub))
        client = MqttClient(
            "localhost",
            address.port,
            client_id=device,
            username=issued.username,
            password=issued.secret,
            on_message=lambda _topic, _payload: None,
            tls=broker_context(ca_file=str(server_ca.cert), **files),
        )
        with caplog.at_level(logging.INFO, logger="fieldhub.hub.broker"):
            with pytest.raises((ConnectRefused, OSError)):
                await client.connect(timeout_s=10)
            await client.close()
            assert hub.broker is not None
            await eventually(lambda: hub.broker and hub.broker.violations[rule] == 1, "counted")
        assert reason in caplog.text
        assert issued.secret not in caplog.text


def _reloaded(caplog: pytest.LogCaptureFixture) -> bool:
    return "the revocation list changed" in caplog.text


def test_the_cli_issues_a_certificate_once_and_revokes_it(tmp_path: Path, uid: str):
    data, device = str(tmp_path / "data"), f"atm-{uid}"
    runner, cli_app = CliRunner(), build_app()
    added = runner.invoke(cli_app, ["device", "add", device, "--data", data])
    assert added.exit_code == 0, added.output
    issued = runner.invoke(cli_app, ["device", "cert", device, "--days", "30", "--data", data])
    assert issued.exit_code == 0, issued.output
    assert issued.output.count("-----BEGIN CERTIFICATE-----") == 2  # the device's and the CA
    assert "-----BEGIN PRIVATE KEY-----" in issued.output
    pem = issued.output[issued.output.index("-----BEGIN CERTIFICATE-----") :]
    certificate = x509.load_pem_x509_certificate(pem.encode())
    assert certificate.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == device
    assert f"{certificate.serial_number:x}" in issued.output
    revoked = runner.invoke(cli_app, ["device", "revoke", device, "--cert", "--data", data])
    assert revoked.exit_code == 0, revoked.output
    assert "revoked 1 client certificate(s)" in revoked.output
    assert "key(s)" not in revoked.output  # --cert: its keys stay
    assert DeviceCa(tmp_path / "data" / "device-ca").revoked_serials() == {
        certificate.serial_number
    }
    unknown = runner.invoke(cli_app, ["device", "cert", "nobody", "--data", data])
    assert unknown.exit_code == 1
    assert "'nobody' is not registered" in unknown.output


async def test_an_admin_issues_and_revokes_a_certificate_through_the_api(
    make_hub: HubFactory, server_cert: CertFiles, uid: str
):
    async with make_hub(**_requiring(server_cert)) as hub:
        device = f"atm-{uid}"
        await hub.devices.create(device)
        async with api_client(hub) as admin, api_client(hub, role="operator") as operator:
            refused = await operator.post(f"/api/devices/{device}/certificate")
            assert refused.status_code == 403  # a certificate lets a device in: admins only
            bad = await admin.post(f"/api/devices/{device}/certificate", json={"days": 0})
            assert bad.status_code == 422
            assert bad.json()["detail"][0]["loc"] == ["body", "days"]
            answer = await admin.post(f"/api/devices/{device}/certificate", json={"days": 7})
            assert answer.status_code == 201
            body = answer.json()
            certificate = x509.load_pem_x509_certificate(body["certificate"].encode())
            assert certificate.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == (
                device
            )
            assert f"{certificate.serial_number:x}" == body["serial"]
            assert "-----BEGIN PRIVATE KEY-----" in body["key"]
            assert body["ca"] == _ca(hub).ca_path.read_text()
            missing = await admin.post("/api/devices/nobody/certificate")
            assert missing.status_code == 404
            revoked = await admin.delete(f"/api/devices/{device}/certificate")
            assert revoked.status_code == 200
            assert revoked.json() == {"revoked": [body["serial"]]}
        entries = await hub.audit.query(target=device, action="device.certificate.*")
        assert [e.action for e in entries.entries] == [
            "device.certificate.revoked",
            "device.certificate.issued",
        ]
        assert body["key"] not in str(entries)  # the key is nobody's record


@pytest.mark.parametrize(
    ("options", "named"),
    [
        ({"mqtt_client_certs": "required"}, "mqtt_client_certs is checked on the mqtts listener"),
        ({"mqtt_client_certs": "sometimes"}, "mqtt_client_certs"),
    ],
)
def test_client_certificate_settings_that_cannot_work_stop_the_hub(
    tmp_path: Path, options: dict[str, Any], named: str
):
    with pytest.raises(ValidationError) as refused:
        HubSettings(data=tmp_path, **options)
    assert named in str(refused.value)


@pytest.mark.parametrize(
    ("tls", "problem"),
    [
        ({"client_cert": "/d.pem"}, "give client_cert and client_key together"),
        ({"client_cert": "/d.pem", "client_key": "/d.key"}, "needs an mqtts:// or wss://"),
    ],
)
def test_a_client_certificate_the_agent_cannot_use_stops_it_at_load(
    tls: dict[str, str], problem: str
):
    broker = "mqtts://hub.example.net" if "client_key" not in tls else "mqtt://hub.example.net"
    with pytest.raises(ValueError, match=problem):
        HubSection(broker=broker, username="d.k", **tls)
