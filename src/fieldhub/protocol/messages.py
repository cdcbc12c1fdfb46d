"""Message schemas of the wire contract and their JSON codec.

Schemas are ``msgspec`` structs: the decoder validates while it parses, which keeps the hub's
ingest path fast (one C pass per message, no intermediate dict). Unknown fields are ignored so
that newer devices can talk to older hubs; wrong types and missing fields are rejected with a
message that names the field.

Structs are not tracked by the garbage collector (``gc=False``): decoded JSON cannot form
reference cycles, and a batch of tens of thousands of tracked messages made every collection
measurably slower.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Annotated, Any, Final, Literal

import msgspec

from fieldhub.protocol.actions import ACTION_NAME_PATTERN
from fieldhub.protocol.errors import PayloadError
from fieldhub.protocol.media import MediaAnswer, MediaList, Upload
from fieldhub.protocol.nesting import MAX_NESTING, check_nesting
from fieldhub.protocol.topics import INSTANCE_PATTERN, Channel

MAX_PAYLOAD_BYTES: Final = 256 * 1024
"""Largest payload the hub accepts on any channel; larger ones are rejected unread."""
MAX_SAMPLES: Final = 1000
MAX_VALUES_PER_SAMPLE: Final = 64
MAX_EVENT_DATA_KEYS: Final = 64


MAX_MILLIS: Final = 2**53
"""Latest timestamp (epoch ms) and highest seq the contract allows: exact in a JSON double."""
Seq = Annotated[int, msgspec.Meta(ge=1, le=MAX_MILLIS)]
Millis = Annotated[int, msgspec.Meta(ge=0, le=MAX_MILLIS)]
KEY_PATTERN = r"^[A-Za-z_][A-Za-z0-9_.-]{0,63}$"
Key = Annotated[str, msgspec.Meta(pattern=KEY_PATTERN)]
# Telemetry keys are checked in __post_init__ against a cache of keys already seen: the same
# few keys arrive in every message, and a regex per key per message cost 70% of a decode.
_TelemetryKey = Annotated[str, msgspec.Meta(min_length=1, max_length=64)]
_KEY = re.compile(KEY_PATTERN)
_KNOWN_KEYS: set[str] = set()
_KNOWN_KEYS_MAX = 10_000
EventType = Annotated[str, msgspec.Meta(pattern=r"^[a-z][a-z0-9_.-]{0,63}$")]
Value = bool | int | float | Annotated[str, msgspec.Meta(max_length=256)]
Severity = Literal["info", "warning", "critical"]
Instance = Annotated[str, msgspec.Meta(pattern=INSTANCE_PATTERN)]


def check_keys(values: dict[str, Any]) -> None:
    """Raise ``ValueError`` naming the first key of ``values`` that is not a valid key."""
    for key in values:
        if key not in _KNOWN_KEYS:
            if not _KEY.match(key):
                raise ValueError(f"key {key!r} is not valid: use letters, digits, '_', '.', '-'")
            if len(_KNOWN_KEYS) < _KNOWN_KEYS_MAX:
                _KNOWN_KEYS.add(key)


class Sample(msgspec.Struct, frozen=True, kw_only=True, gc=False):
    """Values of one instant. ``ts`` is epoch milliseconds on the device's clock."""

    ts: Millis
    values: Annotated[
        dict[_TelemetryKey, Value], msgspec.Meta(min_length=1, max_length=MAX_VALUES_PER_SAMPLE)
    ]

    def __post_init__(self) -> None:
        check_keys(self.values)


class Sequenced(msgspec.Struct, frozen=True, kw_only=True, gc=False):
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


class Telemetry(Sequenced, frozen=True, kw_only=True, gc=False):
    """Named values: one instant (``ts`` + ``values``) or several (``samples``), not both."""

    ts: Millis | None = None
    values: (
        Annotated[dict[_TelemetryKey, Value], msgspec.Meta(max_length=MAX_VALUES_PER_SAMPLE)] | None
    ) = None
    samples: Annotated[list[Sample], msgspec.Meta(max_length=MAX_SAMPLES)] | None = None

    def __post_init__(self) -> None:
        single = self.ts is not None or self.values is not None
        if single and self.samples is not None:
            raise ValueError("give either `ts` and `values` or `samples`, not both")
        if self.samples is None and (self.ts is None or not self.values):
            raise ValueError("telemetry needs `ts` and non-empty `values`, or `samples`")
        if self.samples is not None and not self.samples:
            raise ValueError("`samples` is empty")
        if self.values is not None:
            check_keys(self.values)

    def point_count(self) -> int:
        """How many values the message carries."""
        if self.samples is None:
            return len(self.values or ())
        return sum(len(s.values) for s in self.samples)

    def instants(self) -> list[tuple[int, dict[str, Value]]]:
        """``(ts, values)`` of every instant, whichever form the message was sent in."""
        if self.samples is None:
            return [(self.ts or 0, self.values or {})]
        return [(s.ts, s.values) for s in self.samples]


class Event(Sequenced, frozen=True, kw_only=True, gc=False):
    """Something happened on the device (door opened, sensor missing, fault).

    ``media`` announces objects (a picture, a clip, a log) the device will upload for this
    event (``protocol/media.py``): the event is stored at once, its media follow.
    """

    ts: Millis
    type: EventType
    severity: Severity = "info"
    message: Annotated[str, msgspec.Meta(max_length=1024)] = ""
    data: Annotated[dict[Key, Any], msgspec.Meta(max_length=MAX_EVENT_DATA_KEYS)] = {}
    media: MediaList = []


class State(Sequenced, frozen=True, kw_only=True, gc=False):
    """Reported state, merged into what the hub holds: a key set to null is removed."""

    ts: Millis
    state: Annotated[dict[Key, Any], msgspec.Meta(min_length=1, max_length=256)]


class Status(msgspec.Struct, frozen=True, kw_only=True, gc=False):
    """Presence, published retained on connect and registered as the last will on disconnect."""

    online: bool
    ts: Millis | None = None
    reason: Annotated[str, msgspec.Meta(max_length=256)] = ""


class Ack(msgspec.Struct, frozen=True, kw_only=True, gc=False):
    """Hub → device: every message with seq ≤ ``seq`` is committed; drop them from the outbox.

    ``resend``: the hub has just (re)subscribed. A broker that restarted dropped what devices
    sent before the hub was back, so a device sends again at once what is not acknowledged,
    instead of waiting for its ack timeout.
    """

    seq: Annotated[int, msgspec.Meta(ge=0)]
    resend: bool = False


class Reject(msgspec.Struct, frozen=True, kw_only=True, gc=False):
    """Hub → device: a message was refused and will never be stored."""

    channel: str
    error: str
    seq: int | None = None


class Command(msgspec.Struct, frozen=True, kw_only=True, gc=False):
    """Hub → device: run ``action`` once; answer on ``reply/{reply}`` (commands issue)."""

    id: Annotated[str, msgspec.Meta(min_length=1, max_length=64)]
    action: Annotated[str, msgspec.Meta(pattern=ACTION_NAME_PATTERN)]
    expires: Millis
    reply: Instance
    args: dict[str, Any] = {}


class Reply(msgspec.Struct, frozen=True, kw_only=True, gc=False):
    """Device → hub: what became of a command.

    ``stage`` ``accepted``: the device recorded the command and is still running it (sent
    once, when the action has not ended 50 ms after its run was recorded; ``ok`` is true; a
    fast action gets only its outcome). ``done``: the outcome, ``ok`` with ``result`` or
    not ok with ``error``; answered once per id, and again from the device's log when the
    command is delivered again.
    """

    id: Annotated[str, msgspec.Meta(min_length=1, max_length=64)]
    ok: bool
    ts: Millis
    stage: Literal["accepted", "done"] = "done"
    result: Any = None
    error: Annotated[str, msgspec.Meta(max_length=1024)] = ""


class Desired(msgspec.Struct, frozen=True, kw_only=True, gc=False):
    """Hub → device, retained: the state the device should converge to, with its version.

    The device reports, through ``state``, the version it converged to
    (:data:`DESIRED_VERSION_KEY`) and the keys it could not apply with the reason for each
    (:data:`DESIRED_ERRORS_KEY`, an object; removed when there are none).
    """

    version: Annotated[int, msgspec.Meta(ge=0)]
    state: dict[Key, Any]


DESIRED_VERSION_KEY: Final = "desired_version"
"""Reported-state key: the desired version the device converged to."""
DESIRED_ERRORS_KEY: Final = "desired_errors"
"""Reported-state key: desired keys the device could not apply, each with the reason."""

DeviceMessage = Telemetry | Event | State | Status | Reply | Upload
HubMessage = Ack | Reject | Command | Desired | MediaAnswer

_DECODERS: dict[Channel, msgspec.json.Decoder[Any]] = {
    Channel.TELEMETRY: msgspec.json.Decoder(Telemetry),
    Channel.EVENT: msgspec.json.Decoder(Event),
    Channel.STATE: msgspec.json.Decoder(State),
    Channel.STATUS: msgspec.json.Decoder(Status),
    Channel.REPLY: msgspec.json.Decoder(Reply),
    Channel.UPLOAD: msgspec.json.Decoder(Upload),
    Channel.ACK: msgspec.json.Decoder(Ack),
    Channel.REJECT: msgspec.json.Decoder(Reject),
    Channel.CMD: msgspec.json.Decoder(Command),
    Channel.DESIRED: msgspec.json.Decoder(Desired),
    Channel.MEDIA: msgspec.json.Decoder(MediaAnswer),
}
_ENCODER = msgspec.json.Encoder()


Decoder = Callable[[bytes], Any]


FREE_FORM: Final[dict[Channel, tuple[str, ...]]] = {
    Channel.EVENT: ("data",),
    Channel.STATE: ("state",),
    Channel.REPLY: ("result",),
    Channel.CMD: ("args",),
    Channel.DESIRED: ("state",),
}
"""The fields of each channel that hold free-form JSON, held to ``MAX_NESTING`` on decoding.

Checked when a payload is decoded, not when a message is made: a message arriving is input,
while the hub making a command from a stored one (or an agent a reply from an action's
result) must not fail there; the receiver refuses it instead, like any invalid message."""


def decoder_for(channel: Channel) -> Decoder:
    """A function decoding payloads of ``channel`` (see :func:`decode`), for hot loops that
    would otherwise look the channel up per message."""
    decode_json = _DECODERS[channel].decode
    name = channel.value
    free_form = FREE_FORM.get(channel, ())

    def decode_payload(payload: bytes) -> Any:
        if len(payload) > MAX_PAYLOAD_BYTES:
            raise PayloadError(f"payload of {len(payload)} bytes exceeds {MAX_PAYLOAD_BYTES}")
        try:
            message = decode_json(payload)
            for field in free_form:
                check_nesting(getattr(message, field), field)
        except msgspec.ValidationError as exc:
            raise PayloadError(f"invalid {name} message: {exc}") from None
        except msgspec.DecodeError as exc:
            raise PayloadError(f"{name} payload is not valid JSON: {exc}") from None
        except ValueError as exc:  # check_nesting
            raise PayloadError(f"invalid {name} message: {exc}") from None
        except RecursionError:
            # msgspec recurses per level, also through fields it skips: a value far deeper
            # than the limit is refused by the parser before check_nesting sees it.
            raise PayloadError(f"{name} payload nests deeper than {MAX_NESTING} levels") from None
        return message

    return decode_payload


_DECODE = {channel: decoder_for(channel) for channel in Channel}


def decode(channel: Channel, payload: bytes) -> Any:
    """Decode and validate ``payload`` as the message type of ``channel``.

    Raises:
        PayloadError: too large, not JSON, nested too deep (``protocol/nesting.py``), or not
            matching the schema (the text names the field).
    """
    return _DECODE[channel](payload)


def encode(message: DeviceMessage | HubMessage) -> bytes:
    """Encode a message as compact UTF-8 JSON, omitting nothing (defaults included) but
    where a schema says otherwise (``MediaAnswer`` leaves out the fields of other answers)."""
    return _ENCODER.encode(message)
