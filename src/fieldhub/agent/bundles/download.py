"""Fetching a bundle from the URL the hub gave: bounded, hashed, nothing written to disk.

The hub's URL carries a short-lived token (``/api/bundles/{id}/download?token=...``); it is a
secret for a minute and never logged. The download stops at one byte more than announced
(``too_large``: a hostile or broken server cannot fill memory), must have exactly the
announced size and SHA-256, and stays in memory until verified. Over HTTPS the hub's
certificate is checked against ``bundles.ca_file`` (or the system's store) and, with
``bundles.pin_sha256``, its public key too. Plain HTTP is allowed: the bundle's signature,
checked next, is what protects it; TLS protects the token.
"""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING, Final
from urllib.parse import urlsplit

from fieldhub import __version__
from fieldhub.agent.config import BundlesSection
from fieldhub.bundles.refusal import BundleRefused, Reason

if TYPE_CHECKING:  # both load OpenSSL: a plain-TCP agent imports them only to download
    import http.client
    import ssl

__all__ = ["download"]

_CHUNK: Final = 64 * 1024
_TIMEOUT_S: Final = 30.0


def download(url: str, size: int, sha256: str, settings: BundlesSection) -> bytes:
    """The bundle's bytes, exactly as announced (blocking: run it in a thread).

    Raises:
        BundleRefused: ``download_failed`` (no connection, TLS refused, HTTP error, fewer
            bytes), ``too_large``, ``digest_mismatch``.
    """
    import http.client

    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise BundleRefused(Reason.DOWNLOAD_FAILED, "the URL is not http(s)://host/...")
    target = parts.path + (f"?{parts.query}" if parts.query else "")
    connection: http.client.HTTPConnection
    if parts.scheme == "https":
        connection = http.client.HTTPSConnection(
            parts.hostname, parts.port, timeout=_TIMEOUT_S, context=_context(settings)
        )
    else:
        connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=_TIMEOUT_S)
    where = f"{parts.scheme}://{parts.netloc}{parts.path}"  # without the token
    try:
        connection.connect()
        if settings.pin_sha256 is not None:
            _check_pin(connection, settings.pin_sha256)
        connection.request("GET", target, headers={"User-Agent": f"fieldhub-agent/{__version__}"})
        response = connection.getresponse()
        if response.status != 200:
            raise BundleRefused(Reason.DOWNLOAD_FAILED, f"{where}: HTTP {response.status}")
        data = _read_bounded(response, size)
    except (OSError, http.client.HTTPException) as exc:
        raise BundleRefused(Reason.DOWNLOAD_FAILED, f"{where}: {exc}") from None
    finally:
        connection.close()
    if len(data) != size:
        raise BundleRefused(
            Reason.DOWNLOAD_FAILED, f"{where}: received {len(data)} bytes of {size} announced"
        )
    if hashlib.sha256(data).hexdigest() != sha256:
        raise BundleRefused(Reason.DIGEST_MISMATCH, f"{where}: not the announced SHA-256")
    return data


def _read_bounded(response: http.client.HTTPResponse, size: int) -> bytes:
    chunks: list[bytes] = []
    received = 0
    while chunk := response.read(min(_CHUNK, size + 1 - received) or 1):
        received += len(chunk)
        if received > size:
            raise BundleRefused(Reason.TOO_LARGE, f"more than the {size} bytes announced")
        chunks.append(chunk)
    return b"".join(chunks)


def _context(settings: BundlesSection) -> ssl.SSLContext:
    import ssl

    try:
        return ssl.create_default_context(cafile=settings.ca_file)
    except OSError as exc:  # ssl.SSLError is one too
        raise BundleRefused(
            Reason.DOWNLOAD_FAILED, f"bundles.ca_file: cannot load {settings.ca_file}: {exc}"
        ) from None


def _check_pin(connection: http.client.HTTPConnection, pin: str) -> None:
    import ssl

    from fieldhub.mqtt.tls import normalize_pin, public_key_sha256

    sock = connection.sock
    der = sock.getpeercert(binary_form=True) if isinstance(sock, ssl.SSLSocket) else None
    if der is None or public_key_sha256(der) != normalize_pin(pin):
        raise BundleRefused(
            Reason.DOWNLOAD_FAILED, "the server's public key is not the pinned one (pin_sha256)"
        )
