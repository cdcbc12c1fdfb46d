"""TLS for the MQTT client (``mqtts://``): the broker's certificate checked, or no connection.

Device secrets travel in the MQTT CONNECT, so a client that speaks TLS must refuse a broker it
cannot verify before a byte of CONNECT leaves: the certificate must chain to a trusted CA (the
system's store, or a private CA file), name the host dialled, be valid now, and, when a pin is
given, carry the pinned public key. TLS 1.2 is the oldest version spoken.

Refusals say why in words an operator acts on (``expired``, ``untrusted``, ``wrong host``,
``pin mismatch``, ...) rather than OpenSSL's codes: :class:`CertificateRefused`. The checks run
inside the handshake (:class:`_CheckedObject`), so asyncio fails the connection attempt with
that error and the client never sends CONNECT.

This module imports ``ssl`` (OpenSSL, a few MB of RSS): only programs that speak TLS import it.

Example::

    context = broker_context(ca_file="/etc/fieldhub/hub-ca.pem", pin_sha256=None)
    MqttClient("hub.example.net", 8883, tls=context, client_id=..., on_message=...)
"""

from __future__ import annotations

import hashlib
import re
import ssl
from pathlib import Path
from typing import Final

__all__ = ["CertificateRefused", "TlsSetupError", "broker_context", "public_key_sha256"]

_PIN: Final = re.compile(r"^[0-9a-f]{64}$")

_UNTRUSTED: Final = ("untrusted", "issued by a CA that is not trusted here")
# OpenSSL's X509_V_ERR_* codes, as an operator would put them: (reason, what it means).
_REASONS: Final = {
    2: _UNTRUSTED,
    3: ("no revocation list", "its CA has no revocation list in the CRL file"),
    9: ("not yet valid", "not valid yet (is this machine's clock right?)"),
    10: ("expired", "expired"),
    12: ("revocation list expired", "the CRL file is out of date: fetch its CA's new one"),
    18: ("untrusted", "self-signed"),
    19: ("untrusted", "its chain ends in a CA that is not trusted here"),
    20: _UNTRUSTED,
    21: _UNTRUSTED,
    23: ("revoked", "revoked by its CA"),
    62: ("wrong host", "issued for another host"),
    64: ("wrong host", "issued for another host"),
}


class TlsSetupError(ValueError):
    """The TLS settings cannot be used (a CA file that does not load, a malformed pin)."""


class CertificateRefused(ssl.SSLCertVerificationError):
    """The broker's certificate was refused; ``reason`` is the short word for it
    (``expired``, ``untrusted``, ``wrong host``, ``pin mismatch``, ...)."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"TLS: the broker's certificate is refused: {detail}")
        self.reason = reason


class _BrokerContext(ssl.SSLContext):
    """A client context that also knows the pinned public key, read by :class:`_CheckedObject`
    (asyncio creates the SSL object from the context, so the pin has to travel with it)."""

    pin_sha256: str | None = None
    trust: str = "the system's trust store"


class _CheckedObject(ssl.SSLObject):
    """The handshake of a :class:`_BrokerContext`: OpenSSL's refusal put in words, then the pin."""

    def do_handshake(self) -> None:
        try:
            super().do_handshake()
        except ssl.SSLCertVerificationError as exc:
            raise _explain(exc, self.server_hostname, _trust(self.context)) from exc
        pin = getattr(self.context, "pin_sha256", None)
        if pin is None:
            return
        der = self.getpeercert(binary_form=True)
        seen = public_key_sha256(der) if der else "none"
        if seen != pin:
            raise CertificateRefused(
                "pin mismatch",
                f"pin mismatch: its public key has SHA-256 {seen}, the pin is {pin}",
            )


def broker_context(
    *,
    ca_file: str | None = None,
    pin_sha256: str | None = None,
    crl_file: str | None = None,
    client_cert: str | None = None,
    client_key: str | None = None,
) -> ssl.SSLContext:
    """A client context for ``mqtts://``: TLS 1.2 or newer, certificate and host name checked.

    Args:
        ca_file: PEM file of the CA(s) to trust instead of the system's store (a private CA).
        pin_sha256: hex SHA-256 of the broker certificate's public key (SubjectPublicKeyInfo,
            as ``openssl x509 -pubkey -noout | openssl pkey -pubin -outform der | openssl dgst
            -sha256`` prints it; colons allowed); checked in addition to the chain, so a
            certificate re-issued for the same key keeps working and any other is refused.
        crl_file: PEM revocation list(s) of the broker certificate's CA: a revoked broker
            certificate is refused. The list must be there and current for that CA, or every
            connection is refused (saying so): a private CA's operator publishes it.
        client_cert: PEM certificate this client shows the broker (X.509 client
            authentication, e.g. from the hub's device CA: ``fieldhub device cert``).
        client_key: PEM private key of ``client_cert``.

    Raises:
        TlsSetupError: the CA or CRL file cannot be read or holds nothing usable, the pin
            is not 64 hex digits, or the client certificate and key do not load together.
    """
    context = _BrokerContext(ssl.PROTOCOL_TLS_CLIENT)  # verifies chain and host name
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.sslobject_class = _CheckedObject
    if ca_file is None:
        context.load_default_certs()
    else:
        try:
            context.load_verify_locations(cafile=ca_file)
        except (OSError, ssl.SSLError) as exc:
            raise TlsSetupError(f"cannot load the CA file {ca_file}: {exc}") from None
        context.trust = f"the CA file {ca_file}"
    if crl_file is not None:
        _load_crl(context, crl_file)
    if pin_sha256 is not None:
        context.pin_sha256 = normalize_pin(pin_sha256)
    if client_cert is not None:
        try:
            context.load_cert_chain(client_cert, client_key)
        except (OSError, ssl.SSLError) as exc:
            raise TlsSetupError(
                f"cannot load the client certificate {client_cert} with {client_key}: {exc}"
            ) from None
    return context


def _load_crl(context: ssl.SSLContext, crl_file: str) -> None:
    """Check the broker's certificate against the revocation lists in ``crl_file``.

    OpenSSL loads certificates from the same file as readily as CRLs, and a certificate there
    would be trusted: a file with anything but CRLs is refused, so a CA given here by mistake
    widens nothing.
    """
    try:
        text = Path(crl_file).read_text(encoding="ascii")
    except (OSError, UnicodeDecodeError) as exc:
        raise TlsSetupError(f"cannot read the CRL file {crl_file}: {exc}") from None
    blocks = re.findall(r"-----BEGIN ([A-Z0-9 ]+)-----", text)
    if not blocks or set(blocks) != {"X509 CRL"}:
        raise TlsSetupError(f"the CRL file {crl_file} must hold revocation lists (PEM) only")
    try:
        context.load_verify_locations(cafile=crl_file)  # cadata= takes certificates only
    except (OSError, ssl.SSLError) as exc:
        raise TlsSetupError(f"cannot load the CRL file {crl_file}: {exc}") from None
    context.verify_flags |= ssl.VERIFY_CRL_CHECK_LEAF


def normalize_pin(pin: str) -> str:
    """``pin`` as 64 lower-case hex digits (colons and case as ``openssl dgst`` may print them).

    Raises:
        TlsSetupError: it is not a SHA-256 in hex.
    """
    normalized = pin.replace(":", "").strip().lower()
    if not _PIN.match(normalized):
        raise TlsSetupError("the pin must be a SHA-256 in hex (64 digits), e.g. from openssl dgst")
    return normalized


def public_key_sha256(der_certificate: bytes) -> str:
    """Hex SHA-256 of a DER certificate's SubjectPublicKeyInfo: what a pin names.

    Raises:
        ValueError: the bytes are not an X.509 certificate.
    """
    return hashlib.sha256(_subject_public_key_info(der_certificate)).hexdigest()


def _subject_public_key_info(der: bytes) -> bytes:
    """The SubjectPublicKeyInfo element, header included, of a DER certificate (RFC 5280
    §4.1: Certificate → tbsCertificate → [version], serial, signature, issuer, validity,
    subject, subjectPublicKeyInfo). A few lines of DER instead of a dependency."""
    _tag, start, _end = _element(der, 0)  # Certificate
    _tag, start, _end = _element(der, start)  # tbsCertificate
    position = start
    tag, _content, end = _element(der, position)
    if tag == 0xA0:  # explicit [0] version
        position = end
    for _ in range(5):  # serial, signature, issuer, validity, subject
        _tag, _content, position = _element(der, position)
    tag, _content, end = _element(der, position)
    if tag != 0x30:
        raise ValueError("not an X.509 certificate: no SubjectPublicKeyInfo")
    return der[position:end]


def _element(der: bytes, position: int) -> tuple[int, int, int]:
    """``(tag, content start, end)`` of the DER element at ``position``."""
    if position + 2 > len(der):
        raise ValueError("not an X.509 certificate: truncated")
    tag, length = der[position], der[position + 1]
    start = position + 2
    if length & 0x80:
        count = length & 0x7F
        length = int.from_bytes(der[start : start + count], "big")
        start += count
    if start + length > len(der):
        raise ValueError("not an X.509 certificate: truncated")
    return tag, start, start + length


def _trust(context: ssl.SSLContext) -> str:
    return getattr(context, "trust", "the system's trust store")


def _explain(exc: ssl.SSLCertVerificationError, host: str | None, trust: str) -> CertificateRefused:
    """OpenSSL's verification failure as the reason an operator acts on."""
    known = _REASONS.get(exc.verify_code)
    if known is None:
        return CertificateRefused("invalid", f"{exc.verify_message} (OpenSSL {exc.verify_code})")
    reason, detail = known
    if reason == "untrusted":
        detail = f"{detail} (trusted: {trust})"
    elif reason == "wrong host":
        detail = f"{detail} than {host}"
    return CertificateRefused(reason, f"{reason}: {detail}")
