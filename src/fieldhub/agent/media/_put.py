"""One HTTP(S) PUT of a spooled object from an offset, streamed from the file (blocking).

The standard library's ``http.client`` in a worker thread, as the claim does
(``agent/claim.py``): the agent lives in 30 MB on a Pi, so nothing heavier, and the file is
sent in 64 KiB blocks, never read whole (a clip may be larger than the agent's memory). It is
imported by the uploader only when an upload starts: an agent without a camera never loads it.

An ``https`` URL is checked with the agent's TLS settings (the CA file, and the pinned public
key checked right after the handshake, before a byte of the object leaves).
"""

from __future__ import annotations

import contextlib
import http.client
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final
from urllib.parse import urlsplit

import msgspec

from fieldhub import __version__

if TYPE_CHECKING:
    import ssl

__all__ = ["Abort", "PutResult", "put_object"]

_BLOCK: Final = 64 * 1024
_MAX_ANSWER: Final = 64 * 1024


@dataclass(frozen=True, slots=True)
class PutResult:
    """The hub's answer: its status and its JSON body (empty when there was none)."""

    status: int
    body: dict[str, Any]


class Abort:
    """Lets the event loop end a PUT that a worker thread is blocked in: a stopping agent
    cancels its uploader, and the thread must not go on sending (or wait out its timeout)."""

    def __init__(self) -> None:
        self._connection: http.client.HTTPConnection | None = None
        self._aborted = False

    def watch(self, connection: http.client.HTTPConnection) -> None:
        self._connection = connection
        if self._aborted:
            self.abort()

    def abort(self) -> None:
        """Shut the connection down: the thread's next send or read fails at once."""
        self._aborted = True
        sock = self._connection.sock if self._connection is not None else None
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)


def put_object(
    url: str,
    path: Path,
    *,
    start: int,
    size: int,
    media_type: str,
    context: ssl.SSLContext | None,
    timeout_s: float,
    abort: Abort,
) -> PutResult:
    """PUT bytes ``start``… of the file at ``path`` (``size`` bytes in all) to ``url``; with
    ``Content-Range`` when ``start`` is not 0 (a resumed upload, docs/agent-media.md).

    Raises:
        OSError: no connection, a TLS refusal (the pin included), a timeout, the connection
            dropped, or a broken answer.
    """
    parts = urlsplit(url)
    target = parts.path + (f"?{parts.query}" if parts.query else "")
    connection: http.client.HTTPConnection
    if parts.scheme == "https":
        connection = http.client.HTTPSConnection(
            parts.hostname or "", parts.port, timeout=timeout_s, context=context
        )
    else:
        connection = http.client.HTTPConnection(parts.hostname or "", parts.port, timeout=timeout_s)
    try:
        connection.connect()
        abort.watch(connection)
        if parts.scheme == "https":
            _check_pin(connection, context)
        connection.putrequest("PUT", target, skip_accept_encoding=True)
        connection.putheader("Content-Type", media_type)
        connection.putheader("Content-Length", str(size - start))
        connection.putheader("User-Agent", f"fieldhub-agent/{__version__}")
        if start:
            connection.putheader("Content-Range", f"bytes {start}-{size - 1}/{size}")
        connection.endheaders()
        with open(path, "rb") as file:
            file.seek(start)
            while block := file.read(_BLOCK):
                connection.send(block)
        response = connection.getresponse()
        return PutResult(response.status, _json(response.read(_MAX_ANSWER)))
    except http.client.HTTPException as exc:
        raise ConnectionError(f"broken answer ({type(exc).__name__})") from exc
    finally:
        connection.close()


def _check_pin(connection: http.client.HTTPConnection, context: ssl.SSLContext | None) -> None:
    """The pin of ``fieldhub.mqtt.tls.broker_context`` is checked inside asyncio's handshake
    only; on a blocking socket it is checked here, before anything is sent."""
    pin = getattr(context, "pin_sha256", None)
    if pin is None:
        return
    import ssl

    from fieldhub.mqtt.tls import public_key_sha256

    sock = connection.sock
    der = sock.getpeercert(binary_form=True) if isinstance(sock, ssl.SSLSocket) else None
    seen = public_key_sha256(der) if der else "none"
    if seen != pin:
        raise ConnectionRefusedError(
            f"TLS: the upload server's certificate is refused: pin mismatch: its public key "
            f"has SHA-256 {seen}, the pin is {pin}"
        )


def _json(data: bytes) -> dict[str, Any]:
    try:
        body = msgspec.json.decode(data) if data else {}
    except msgspec.DecodeError:
        return {}
    return body if isinstance(body, dict) else {}
