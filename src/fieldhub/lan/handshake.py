"""The hello and the pairing exchange, in plain frames, before a link is authenticated.

The gateway always dials (a controller's TCP server waits for it), and speaks first::

    gateway → controller  {"t": "hello", "v": 1, "gateway": "gw-1", "nonce": "<16 bytes hex>"}
    controller → gateway  {"t": "hello", "v": 1, "controller": "ctrl-1", "paired": true,
                           "nonce": "<16 bytes hex>"}

Then an unpaired controller expects the pairing messages of ``lan.pairing``. Either way the
gateway then proves the key with its first authenticated frame, ``{"t": "auth"}``, and the
controller answers in kind (``lan.session``); only then is the link up, so a stranger who
connects cannot push the gateway's link aside. Nothing of a hello is believed: it only chooses
which key the next frames must prove.
"""

from __future__ import annotations

import asyncio
import secrets
from dataclasses import dataclass
from typing import Any

from fieldhub.lan import PROTOCOL_VERSION
from fieldhub.lan.discovery import AnnouncementError, check_controller_id
from fieldhub.lan.framing import FrameError, pack_frame, read_frame
from fieldhub.lan.link import read_plain, send_plain
from fieldhub.lan.pairing import (
    KeyExchange,
    PairingError,
    commitment,
    long_term_key,
    pairing_code,
)
from fieldhub.lan.session import NONCE_BYTES, AuthError, Session

__all__ = [
    "GatewayHello",
    "Pairing",
    "accept_hello",
    "answer_pairing",
    "check_key",
    "open_hello",
    "prove_key",
    "start_pairing",
]


@dataclass(frozen=True, slots=True)
class GatewayHello:
    """What the two hellos settled, as either side sees it."""

    gateway_id: str
    controller_id: str
    paired: bool
    gateway_nonce: bytes
    controller_nonce: bytes


@dataclass(frozen=True, slots=True)
class Pairing:
    """A finished key exchange, not yet approved: the key and the code a person compares."""

    key: bytes
    code: str


async def open_hello(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, gateway_id: str, timeout_s: float
) -> GatewayHello:
    """The gateway's side of the hello.

    Raises:
        FrameError: the controller's hello is malformed or of another version.
    """
    nonce = secrets.token_bytes(NONCE_BYTES)
    send_plain(writer, _hello(gateway=gateway_id, nonce=nonce.hex()))
    answer = await read_plain(reader, timeout_s)
    _check_hello(answer)
    try:
        controller_id = check_controller_id(answer.get("controller"))
    except AnnouncementError as exc:
        raise FrameError(f"hello: {exc}") from None
    paired = answer.get("paired")
    if not isinstance(paired, bool):
        raise FrameError("hello: `paired` must be true or false")
    return GatewayHello(gateway_id, controller_id, paired, nonce, _bytes(answer, "nonce"))


async def accept_hello(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    controller_id: str,
    paired: bool,
    timeout_s: float,
) -> GatewayHello:
    """The controller's side of the hello.

    Raises:
        FrameError: the gateway's hello is malformed or of another version.
    """
    hello = await read_plain(reader, timeout_s)
    _check_hello(hello)
    try:  # a gateway is a device of the hub too, and its id is printed on the console
        gateway_id = check_controller_id(hello.get("gateway"))
    except AnnouncementError as exc:
        raise FrameError(f"hello: `gateway`: {exc}") from None
    gateway_nonce = _bytes(hello, "nonce")
    nonce = secrets.token_bytes(NONCE_BYTES)
    send_plain(writer, _hello(controller=controller_id, paired=paired, nonce=nonce.hex()))
    return GatewayHello(gateway_id, controller_id, paired, gateway_nonce, nonce)


async def start_pairing(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    hello: GatewayHello,
    timeout_s: float,
) -> Pairing:
    """The gateway's side of the key exchange (``lan.pairing``, messages 1-4).

    Raises:
        PairingError: a malformed message, or a nonce that does not keep its commitment.
        FrameError: a frame that is not a plain JSON object.
    """
    exchange = KeyExchange.fresh()
    mine = exchange.public
    send_plain(writer, {"t": "pair1", "pk": mine.hex()})
    second = _expect(await read_plain(reader, timeout_s), "pair2")
    theirs, commit = _bytes(second, "pk"), _bytes(second, "commit")
    nonce = secrets.token_bytes(NONCE_BYTES)
    send_plain(writer, {"t": "pair3", "nonce": nonce.hex()})
    their_nonce = _bytes(_expect(await read_plain(reader, timeout_s), "pair4"), "nonce")
    if not secrets.compare_digest(commitment(their_nonce, mine, theirs), commit):
        raise PairingError("the controller's nonce does not match its commitment")
    transcript = (mine, theirs, nonce, their_nonce)
    key = long_term_key(exchange.shared(theirs), transcript, hello.gateway_id, hello.controller_id)
    return Pairing(key, pairing_code(*transcript))


async def answer_pairing(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    hello: GatewayHello,
    first: dict[str, Any],
    timeout_s: float,
) -> Pairing:
    """The controller's side of the key exchange, from the gateway's ``pair1`` (``first``).

    Raises:
        PairingError: a malformed message or public value.
        FrameError: a frame that is not a plain JSON object.
    """
    theirs = _bytes(_expect(first, "pair1"), "pk")
    exchange = KeyExchange.fresh()
    mine = exchange.public
    shared = exchange.shared(theirs)  # checks their value before we commit to anything
    nonce = secrets.token_bytes(NONCE_BYTES)
    send_plain(
        writer, {"t": "pair2", "pk": mine.hex(), "commit": commitment(nonce, theirs, mine).hex()}
    )
    their_nonce = _bytes(_expect(await read_plain(reader, timeout_s), "pair3"), "nonce")
    send_plain(writer, {"t": "pair4", "nonce": nonce.hex()})
    transcript = (theirs, mine, their_nonce, nonce)
    key = long_term_key(shared, transcript, hello.gateway_id, hello.controller_id)
    return Pairing(key, pairing_code(*transcript))


async def prove_key(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, session: Session, timeout_s: float
) -> None:
    """The gateway's proof of the key, and the check of the controller's answer.

    Raises:
        AuthError: the answer is not authentic (``bad_tag``), or the controller closed the
            connection instead of answering (``not_authenticated``: it refused our key).
    """
    writer.write(pack_frame(session.seal({"t": "auth"})))
    try:
        async with asyncio.timeout(timeout_s):
            payload = await read_frame(reader)
    except asyncio.IncompleteReadError:
        raise AuthError("not_authenticated", "the controller refused the key") from None
    if session.open(payload).get("t") != "auth":
        raise AuthError("not_authenticated", "`auth` is due")


async def check_key(reader: asyncio.StreamReader, session: Session, timeout_s: float) -> None:
    """The controller's check of the gateway's proof; the caller answers ``{"t": "auth"}``.

    Raises:
        AuthError: the proof is not authentic.
    """
    async with asyncio.timeout(timeout_s):
        payload = await read_frame(reader)
    if session.open(payload).get("t") != "auth":
        raise AuthError("not_authenticated", "`auth` is due")


def _hello(**fields: Any) -> dict[str, Any]:
    return {"t": "hello", "v": PROTOCOL_VERSION, **fields}


def _check_hello(body: dict[str, Any]) -> None:
    if body.get("t") != "hello":
        raise FrameError("a hello is due first")
    if body.get("v") != PROTOCOL_VERSION:
        raise FrameError(f"hello: protocol version {body.get('v')!r}, not {PROTOCOL_VERSION}")


def _expect(body: dict[str, Any], kind: str) -> dict[str, Any]:
    if body.get("t") != kind:
        raise PairingError(f"`{kind}` is due, not {str(body.get('t'))[:32]!r}")
    return body


def _bytes(body: dict[str, Any], name: str) -> bytes:
    value = body.get(name)
    try:
        if not isinstance(value, str) or len(value) > 1024:
            raise ValueError
        return bytes.fromhex(value)
    except ValueError:
        raise PairingError(f"`{name}` must be hex") from None
