"""Message schemas of the wire contract and their JSON codec.

Schemas are ``msgspec`` structs: the decoder validates while it parses, which keeps the hub's
ingest path fast (one C pass per message, no intermediate dict). Unknown fields are ignored so
that newer devices can talk to older hubs; wrong types and missing fields are rejected with a
message that names the field.
"""

from __future__ import annotations

from typing import Annotated, Any, Final, Literal

import msgspec

from fieldhub.protocol.errors import PayloadError
from fieldhub.protocol.topics import INSTANCE_PATTERN, Channel

MAX_PAYLOAD_BYTES: Final = 256 * 1024
"""Largest payload the hub accepts on any channel; larger ones are rejected unread."""
MAX_SAMPLES: Final = 1000
MAX_VALUES_PER_SAMPLE: Final = 64
MAX_EVENT_DATA_KEYS: Final = 64

Seq = Annotated[int, msgspec.Meta(ge=1, le=2**53)]
Millis = Annotated[int, msgspec.Meta(ge=0, le=2**53)]
Key = Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z_][A-Za-z0-9_.-]{0,63}$")]
EventType = Annotated[str, msgspec.Meta(pattern=r"^[a-z][a-z0-9_.-]{0,63}$")]
Value = bool | int | float | Annotated[str, msgspec.Meta(max_length=256)]
Severity = Literal["info", "warning", "critical"]
Instance = Annotated[str, msgspec.Meta(pattern=INSTANCE_PATTERN)]


class Sample(msgspec.Struct, frozen=True, kw_only=True):
    """Values of one instant. ``ts`` is epoch milliseconds on the device's clock."""

    ts: Millis
    values: Annotated[
        dict[Key, Value], msgspec.Meta(min_length=1, max_length=MAX_VALUES_PER_SAMPLE)
    ]


class Sequenced(msgspec.Struct, frozen=True, kw_only=True):
    """Fields of every device→hub message that the hub stores and acknowledges.

    ``seq`` increases by one per message per device, across channels. ``oldest`` is the lowest
    seq the device still holds unacknowledged (its outbox tail); everything below it will never
    be sent again, so the hub's acknowledgement may move past gaps below it. A device that keeps
    no backlog omits it (it then equals ``seq``).
    """

    seq: Seq
    oldest: Seq | None = None

    def floor(self) -> int:
        """The lowest seq that may still arrive: ``oldest``, or ``seq`` when absent."""
        return self.seq if self.oldest is None else min(self.oldest, self.seq)


class Telemetry(Sequenced, frozen=True, kw_only=True):
    """Named values: one instant (``ts`` + ``values``) or several (``samples``), not both."""

    ts: Millis | None = None
    values: Annotated[dict[Key, Value], msgspec.Meta(max_length=MAX_VALUES_PER_SAMPLE)] | None = (
        None
    )
    samples: Annotated[list[Sample], msgspec.Meta(max_length=MAX_SAMPLES)] | None = None

    def __post_init__(self) -> None:
        single = self.ts is not None or self.values is not None
        if single and self.samples is not None:
            raise ValueError("give either `ts` and `values` or `samples`, not both")
        if self.samples is None and (self.ts is None or not self.values):
            raise ValueError("telemetry needs `ts` and non-empty `values`, or `samples`")
        if self.samples is not None and not self.samples:
            raise ValueError("`samples` is empty")

    def all_samples(self) -> list[Sample]:
        """The samples of this message, whichever form it was sent in."""
        if self.samples is not None:
            return self.samples
        return [Sample(ts=self.ts or 0, values=self.values or {})]


class Event(Sequenced, frozen=True, kw_only=True):
    """Something happened on the device (door opened, sensor missing, fault)."""

    ts: Millis
    type: EventType
    severity: Severity = "info"
    message: Annotated[str, msgspec.Meta(max_length=1024)] = ""
    data: Annotated[dict[Key, Any], msgspec.Meta(max_length=MAX_EVENT_DATA_KEYS)] = {}


class State(Sequenced, frozen=True, kw_only=True):
    """Reported state, merged into what the hub holds: a key set to null is removed."""

    ts: Millis
    state: Annotated[dict[Key, Any], msgspec.Meta(min_length=1, max_length=256)]


class Status(msgspec.Struct, frozen=True, kw_only=True):
    """Presence, published retained on connect and registered as the last will on disconnect."""

    online: bool
    ts: Millis | None = None
    reason: Annotated[str, msgspec.Meta(max_length=256)] = ""


class Ack(msgspec.Struct, frozen=True, kw_only=True):
    """Hub → device: every message with seq ≤ ``seq`` is committed; drop them from the outbox."""

    seq: Annotated[int, msgspec.Meta(ge=0)]


class Reject(msgspec.Struct, frozen=True, kw_only=True):
    """Hub → device: a message was refused and will never be stored."""

    channel: str
    error: str
    seq: int | None = None


class Command(msgspec.Struct, frozen=True, kw_only=True):
    """Hub → device: run ``action`` once; answer on ``reply/{reply}`` (commands issue)."""

    id: Annotated[str, msgspec.Meta(min_length=1, max_length=64)]
    action: Annotated[str, msgspec.Meta(pattern=r"^[a-z][a-z0-9_.-]{0,63}$")]
    expires: Millis
    reply: Instance
    args: dict[str, Any] = {}


class Reply(msgspec.Struct, frozen=True, kw_only=True):
    """Device → hub: the outcome of a command (``ok`` or ``error``), answered once per id."""

    id: Annotated[str, msgspec.Meta(min_length=1, max_length=64)]
    ok: bool
    ts: Millis
    result: Any = None
    error: Annotated[str, msgspec.Meta(max_length=1024)] = ""


class Desired(msgspec.Struct, frozen=True, kw_only=True):
    """Hub → device, retained: the state the device should converge to, with its version."""

    version: Annotated[int, msgspec.Meta(ge=0)]
    state: dict[Key, Any]


DeviceMessage = Telemetry | Event | State | Status | Reply
HubMessage = Ack | Reject | Command | Desired

_DECODERS: dict[Channel, msgspec.json.Decoder[Any]] = {
    Channel.TELEMETRY: msgspec.json.Decoder(Telemetry),
    Channel.EVENT: msgspec.json.Decoder(Event),
    Channel.STATE: msgspec.json.Decoder(State),
    Channel.STATUS: msgspec.json.Decoder(Status),
    Channel.REPLY: msgspec.json.Decoder(Reply),
    Channel.ACK: msgspec.json.Decoder(Ack),
    Channel.REJECT: msgspec.json.Decoder(Reject),
    Channel.CMD: msgspec.json.Decoder(Command),
    Channel.DESIRED: msgspec.json.Decoder(Desired),
}
_ENCODER = msgspec.json.Encoder()


def decode(channel: Channel, payload: bytes) -> Any:
    """Decode and validate ``payload`` as the message type of ``channel``.

    Raises:
        PayloadError: too large, not JSON, or not matching the schema (the text names the field).
    """
    if len(payload) > MAX_PAYLOAD_BYTES:
        raise PayloadError(f"payload of {len(payload)} bytes exceeds {MAX_PAYLOAD_BYTES}")
    try:
        return _DECODERS[channel].decode(payload)
    except msgspec.ValidationError as exc:
        raise PayloadError(f"invalid {channel.value} message: {exc}") from None
    except msgspec.DecodeError as exc:
        raise PayloadError(f"{channel.value} payload is not valid JSON: {exc}") from None


def encode(message: DeviceMessage | HubMessage) -> bytes:
    """Encode a message as compact UTF-8 JSON, omitting nothing (defaults included)."""
    return _ENCODER.encode(message)
