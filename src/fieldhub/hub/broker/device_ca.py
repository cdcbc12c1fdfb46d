"""The hub's device CA: X.509 client certificates for devices, and their revocation.

Optional per device: a device that holds a certificate signed here proves, in the TLS
handshake, that it is the device its certificate names (CN = device id), on top of its MQTT
credentials; a broker told to require client certificates (``FIELDHUB_MQTT_CLIENT_CERTS``)
refuses a connection without one before a byte of MQTT. The key and certificate are made by
the hub and shown once, like device secrets (the hub keeps the certificate's serial, never the
device's key).

Everything lives in ``DATA/device-ca/`` (0700), files 0600:

- ``ca.key``, ``ca.pem``: the CA, made on first use (EC P-256, ten years);
- ``issued.json``: each certificate's serial, device, end and revocation time;
- ``crl.pem``: the revocation list, rewritten at each revocation (and made empty with the CA,
  so that a broker checking revocation always has one). Its next update is far ahead: the
  hub is its only publisher and rewrites it when something changes, and an expired list
  would make OpenSSL refuse every device.

Files rather than database rows: the CA's key must stay on the machine whose broker checks the
certificates, and the CLI (``fieldhub device cert``) works on the same folder while the hub
runs; the hub notices a new ``crl.pem`` within a second (``client_certs.py``).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from fieldhub.hub.store.audit import AuditLog
from fieldhub.private_files import private_dir, write_private

__all__ = ["DeviceCa", "DeviceCertificates", "IssuedCertificate"]

_CA_NAME: Final = "fieldhub device CA"
_CA_DAYS: Final = 3650
_CRL_DAYS: Final = 3650
_DEFAULT_DAYS: Final = 365


@dataclass(frozen=True, slots=True)
class IssuedCertificate:
    """A new device certificate with its private key, PEM: give both to the device once."""

    device_id: str
    serial: int
    not_after: dt.datetime
    certificate: str
    ca: str
    key: str = field(repr=False)  # never in logs or reprs


class DeviceCa:
    """The CA in ``folder`` (``DATA/device-ca``); made on first use."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    @property
    def ca_path(self) -> Path:
        return self.folder / "ca.pem"

    @property
    def crl_path(self) -> Path:
        return self.folder / "crl.pem"

    def exists(self) -> bool:
        return self.ca_path.is_file() and self.crl_path.is_file()

    def ensure(self) -> None:
        """Make the CA (key, certificate, empty revocation list) unless it exists."""
        if self.exists():
            return
        private_dir(self.folder)
        key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, _CA_NAME)])
        now = _now()
        certificate = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=_CA_DAYS))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(_usage(cert_sign=True), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
            .sign(key, hashes.SHA256())
        )
        write_private(self.folder / "ca.key", _key_pem(key))
        write_private(self.ca_path, certificate.public_bytes(serialization.Encoding.PEM))
        write_private(self.folder / "issued.json", b"{}")
        self._write_crl({})

    def issue(self, device_id: str, days: int = _DEFAULT_DAYS) -> IssuedCertificate:
        """A key and a certificate for ``device_id`` (CN), valid ``days`` from now."""
        self.ensure()
        ca_key, ca_cert = self._ca()
        key = ec.generate_private_key(ec.SECP256R1())
        now = _now()
        serial = x509.random_serial_number()
        not_after = now + dt.timedelta(days=days)
        certificate = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, device_id)]))
            .issuer_name(ca_cert.subject)
            .public_key(key.public_key())
            .serial_number(serial)
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(not_after)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(_usage(cert_sign=False), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), False
            )
            .sign(ca_key, hashes.SHA256())
        )
        issued = self._issued()
        issued[str(serial)] = {"device": device_id, "not_after": not_after.isoformat()}
        write_private(self.folder / "issued.json", json.dumps(issued, indent=1).encode())
        return IssuedCertificate(
            device_id,
            serial,
            not_after,
            certificate.public_bytes(serialization.Encoding.PEM).decode(),
            self.ca_path.read_text(encoding="ascii"),
            _key_pem(key).decode(),
        )

    def revoke(self, device_id: str) -> list[int]:
        """Put every certificate of ``device_id`` not yet revoked on the revocation list; their
        serials (none if it has none, or no CA was made yet)."""
        if not self.exists():
            return []
        issued = self._issued()
        revoked_at = _now().isoformat()
        serials = []
        for serial, entry in issued.items():
            if entry["device"] == device_id and "revoked_at" not in entry:
                entry["revoked_at"] = revoked_at
                serials.append(int(serial))
        if serials:
            write_private(self.folder / "issued.json", json.dumps(issued, indent=1).encode())
            self._write_crl(issued)
        return serials

    def revoked_serials(self) -> set[int]:
        """The serials on the revocation list."""
        if not self.exists():
            return set()
        return {int(s) for s, entry in self._issued().items() if "revoked_at" in entry}

    def _write_crl(self, issued: dict[str, Any]) -> None:
        ca_key, ca_cert = self._ca()
        now = _now()
        builder = (
            x509.CertificateRevocationListBuilder()
            .issuer_name(ca_cert.subject)
            .last_update(now - dt.timedelta(minutes=5))
            .next_update(now + dt.timedelta(days=_CRL_DAYS))
        )
        for serial, entry in issued.items():
            if "revoked_at" in entry:
                builder = builder.add_revoked_certificate(
                    x509.RevokedCertificateBuilder()
                    .serial_number(int(serial))
                    .revocation_date(dt.datetime.fromisoformat(entry["revoked_at"]))
                    .build()
                )
        crl = builder.sign(ca_key, hashes.SHA256())
        write_private(self.crl_path, crl.public_bytes(serialization.Encoding.PEM))

    def _ca(self) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
        key = serialization.load_pem_private_key((self.folder / "ca.key").read_bytes(), None)
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            raise ValueError(f"{self.folder / 'ca.key'} is not the device CA's EC key")
        return key, x509.load_pem_x509_certificate(self.ca_path.read_bytes())

    def _issued(self) -> dict[str, Any]:
        issued: dict[str, Any] = json.loads(
            (self.folder / "issued.json").read_text(encoding="utf-8")
        )
        return issued


def _usage(*, cert_sign: bool) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=not cert_sign,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=cert_sign,
        crl_sign=cert_sign,
        encipher_only=False,
        decipher_only=False,
    )


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC).replace(microsecond=0)


class DeviceCertificates:
    """Issuing and revoking device certificates, each with its audit entry: the one way the
    API and the CLI do it (the CA's files are written in a thread: key generation and fsync)."""

    def __init__(self, ca: DeviceCa, audit: AuditLog) -> None:
        self.ca = ca
        self._audit = audit

    async def issue(
        self, device_id: str, days: int, *, actor: str, source: str = ""
    ) -> IssuedCertificate:
        """A certificate for ``device_id`` (registered: the caller checked)."""
        issued = await asyncio.to_thread(self.ca.issue, device_id, days)
        detail = {"serial": f"{issued.serial:x}", "not_after": issued.not_after.isoformat()}
        await self._audit.record(
            actor, "device.certificate.issued", device_id, "ok", source, detail
        )
        return issued

    async def revoke(self, device_id: str, *, actor: str, source: str = "") -> list[int]:
        """Revoke every certificate of ``device_id``; their serials (an audit entry when there
        were any)."""
        serials = await asyncio.to_thread(self.ca.revoke, device_id)
        if serials:
            detail = {"serials": [f"{serial:x}" for serial in serials]}
            await self._audit.record(
                actor, "device.certificate.revoked", device_id, "ok", source, detail
            )
        return serials
