"""One connection the embedded broker serves: amqtt's stream reader over checked packets, plus
what the broker's watchdog and revocations need to know of it (``embedded.py``)."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from amqtt.adapters import StreamReaderAdapter
from amqtt.session import Session

from fieldhub.hub.broker.admission import Admission
from fieldhub.hub.broker.keyring import BrokerPrincipal
from fieldhub.hub.broker.packets import Violation, check, read_packet

__all__ = ["BrokerConnection", "Refuse"]

log = logging.getLogger("fieldhub.hub.broker.embedded")  # one logger for the broker's lines

Refuse = Callable[["BrokerConnection", Violation], None]


class BrokerConnection(StreamReaderAdapter):  # type: ignore[misc]
    """One accepted TCP connection: amqtt's stream reader, plus what the watchdog needs.

    amqtt reads only whole packets that passed the protocol check (``packets``): on the first
    violation ``refuse`` is told, the connection is closed, and amqtt reads an end of stream
    (so it ends the session and sends the will, as MQTT-3.1.2-8 asks after a protocol error).
    The CONNECT packet is read and checked before amqtt takes over; amqtt then reads it from
    :meth:`admitted`.
    """

    def __init__(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, refuse: Refuse
    ) -> None:
        super().__init__(reader)
        self.writer = writer
        self.opened = self.last_read = time.monotonic()
        self.session: Session | None = None  # once amqtt has registered one for it
        self.client_id: str | None = None  # once admitted
        self.username: str | None = None
        self.principal: BrokerPrincipal | None = None  # as admitted, also after a revocation
        self.hushed = False  # its end says nothing about the client: no will, no lost status
        self._stream = reader
        self._refuse = refuse
        self._closed = False
        self._packet = b""  # checked bytes amqtt has not read yet, from _at on
        self._at = 0

    def admitted(self, connect: bytes, admission: Admission) -> None:
        """The client of CONNECT ``connect`` is in: amqtt reads that packet next."""
        self.client_id, self.username = admission.client_id, admission.username
        self.principal = admission.principal
        self._packet, self._at = connect, 0

    def hush(self) -> None:
        """Its end is not the device's failure: publish neither its will nor a lost status."""
        self.hushed = True
        if self.session is not None:
            self.session.will_flag = False

    async def read(self, n: int = -1) -> bytes:
        while len(self._packet) - self._at < max(n, 1):
            packet = await self._next()
            if not packet:
                return b""
            self._packet, self._at = self._packet[self._at :] + packet, 0
        end = len(self._packet) if n < 0 else self._at + n
        data, self._at = self._packet[self._at : end], end
        return data

    async def _next(self) -> bytes:
        """The next packet from the socket if it keeps the protocol; else b"", and closed."""
        if self._closed:
            return b""
        try:
            packet = await read_packet(self._stream)
        except ValueError as exc:
            violation: Violation | None = Violation("MQTT-2.2.3", str(exc))
        else:
            violation = check(packet)
        self.last_read = time.monotonic()
        if violation is None:
            return packet
        self._closed = True
        self._refuse(self, violation)
        self.writer.transport.abort()
        return b""

    def abort(self, why: str) -> None:
        log.info("MQTT client %s (%s): disconnecting, %s", self.client_id, self.peer, why)
        self.writer.transport.abort()  # the reader sees EOF; amqtt then ends the session

    @property
    def certificate(self) -> tuple[str, int] | None:
        """``(CN, serial)`` of the client certificate verified in the TLS handshake, if any."""
        seen = self.writer.get_extra_info("peercert")
        if not seen:
            return None
        names = [
            value for rdn in seen.get("subject", ()) for key, value in rdn if key == "commonName"
        ]
        return (names[0] if names else "", int(seen.get("serialNumber", "0"), 16))

    def certificate_mismatch(self, client_id: str) -> str | None:
        """Why the client certificate does not fit ``client_id``; None when it fits or there
        is none (the TLS handshake already checked its CA, dates and revocation)."""
        certificate = self.certificate
        if certificate is None or certificate[0] == client_id:
            return None
        return f"its client certificate is for {certificate[0]!r}, not {client_id!r}"

    @property
    def peer(self) -> str:
        peer = self.writer.get_extra_info("peername")
        return f"{peer[0]}:{peer[1]}" if peer else "?"
