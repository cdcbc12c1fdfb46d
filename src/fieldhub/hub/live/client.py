"""One live connection as the fan-out sees it: who, what it subscribed to, what waits for it.

Why a bounded outbox with its own overflow rule: a browser on a bad link (or a program that
stopped reading) must never slow ingest or the other clients, and must never grow the hub's
memory. Frames wait here until the connection's sender takes them; when more than
``capacity`` wait, the oldest **telemetry** frame goes first (a newer value of the same key
follows anyway), and events, presence, state, command and registry frames are dropped only
when nothing else is left to drop. Every drop is counted, and the client is told
(``{"type": "dropped", "count": N}``) before the next frames it gets.
"""

from __future__ import annotations

import asyncio
import itertools
from collections import deque
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from enum import IntEnum
from typing import Final

import msgspec

from fieldhub.hub.auth import Permission, Principal
from fieldhub.hub.auth.authn import Credential

TELEMETRY: Final = "telemetry"
EVENT: Final = "event"
PRESENCE: Final = "presence"
STATE: Final = "state"
COMMAND: Final = "command"
DEVICE: Final = "device"
ALARM: Final = "alarm"
MEDIA: Final = "media"
"""A frame type, not a topic: media of an event that arrived, sent with the ``event`` topic."""
TOPICS: Final = frozenset({TELEMETRY, EVENT, PRESENCE, STATE, COMMAND, DEVICE, ALARM})
"""What a subscription may ask for (``topics``); all of them by default."""
NO_TOPICS: Final[frozenset[str]] = frozenset()

DEFAULT_QUEUE: Final = 2048
"""Frames that may wait for one client: two seconds of a fleet sending 1,000 messages/s."""

_ENCODE = msgspec.json.Encoder().encode


def frame(message: object) -> str:
    """One frame as the text every client gets (encoded once, sent to many)."""
    return _ENCODE(message).decode()


class CloseCode(IntEnum):
    """Close codes the hub ends a live connection with (docs/live.md)."""

    GOING_AWAY = 1001
    """The hub is stopping (uvicorn says 1012 when the HTTP server stops first)."""
    CREDENTIALS = 4401
    """The session or API token is no longer valid: logged out, expired, revoked, the user
    disabled or deleted."""
    FORBIDDEN = 4403
    """The user (or the token's scopes) no longer allows reading devices."""


@dataclass(frozen=True, slots=True)
class Subscription:
    """Devices by id, by labels (all must match) or all; for the topics asked."""

    id: str
    topics: frozenset[str]
    devices: frozenset[str] | None = None
    labels: Mapping[str, str] | None = None

    def matches(self, device_id: str, labels: Mapping[str, str]) -> bool:
        """True when the device is one this subscription is about (visibility aside)."""
        if self.devices is not None:
            return device_id in self.devices
        if self.labels is not None:
            return all(labels.get(key) == value for key, value in self.labels.items())
        return True

    @property
    def explicit(self) -> bool:
        """True for a list of ids: only those devices need looking at."""
        return self.devices is not None


class ClientQueue:
    """Frames waiting for one client, in order, at most ``capacity`` of them.

    Telemetry waits in a deque of its own, as plain strings (the hot path allocates nothing per
    frame); every other frame remembers how many telemetry frames had been queued before it,
    which is all :meth:`take` needs to put them back in order.
    """

    def __init__(self, capacity: int) -> None:
        if capacity < 1:
            raise ValueError(f"an outbox holds at least one frame, not {capacity}")
        self.capacity = capacity
        self.dropped = 0
        """Frames discarded and not yet reported to the client."""
        self.dropped_total = 0
        self._telemetry: deque[str] = deque()
        self._other: deque[tuple[int, str]] = deque()  # (telemetry queued before it, frame)
        self._telemetry_in = 0  # telemetry frames ever queued
        self._telemetry_out = 0  # ... and taken or dropped

    def __len__(self) -> int:
        return len(self._telemetry) + len(self._other)

    def put(self, text: str, droppable: bool) -> None:
        """Queue a frame; over capacity, discard the oldest telemetry (else the oldest)."""
        self.put_many((text,), droppable)

    def put_many(self, texts: Collection[str], droppable: bool) -> None:
        """Queue frames of one kind, in order (the fan-out's hot path)."""
        if droppable:
            self._telemetry.extend(texts)
            self._telemetry_in += len(texts)
        else:
            self._other.extend((self._telemetry_in, text) for text in texts)
        excess = len(self._telemetry) + len(self._other) - self.capacity
        if excess <= 0:
            return
        for _ in range(excess):
            if self._telemetry:
                self._telemetry.popleft()
                self._telemetry_out += 1
            else:
                self._other.popleft()
        self.dropped += excess
        self.dropped_total += excess

    def take(self) -> list[str]:
        """Everything waiting, oldest first, after a ``dropped`` frame if frames were lost."""
        telemetry, other = self._telemetry, self._other
        if not other:
            texts = list(telemetry)
        else:
            texts = []
            done = self._telemetry_out  # telemetry frames before the first one waiting
            for before, text in other:
                while done < before and telemetry:
                    texts.append(telemetry.popleft())
                    done += 1
                texts.append(text)
            texts.extend(telemetry)
        self._telemetry_out = self._telemetry_in
        telemetry.clear()
        other.clear()
        if self.dropped:
            texts.insert(0, frame({"type": "dropped", "count": self.dropped}))
            self.dropped = 0
        return texts

    def clear(self) -> None:
        """Forget everything waiting (the connection is closing)."""
        self._telemetry.clear()
        self._other.clear()
        self._telemetry_out = self._telemetry_in


class LiveClient:
    """One WebSocket connection: principal, subscriptions, what it covers, its outbox.

    ``covered`` maps each device the client receives frames of to the topics it receives;
    the fan-out keeps it and its own device → clients index in step.
    """

    def __init__(
        self,
        principal: Principal,
        credential: Credential,
        *,
        array: bool = False,
        queue_size: int = DEFAULT_QUEUE,
    ) -> None:
        self.principal = principal
        self.credential = credential
        self.array = array
        """Send every batch of waiting frames as one JSON array (``?frames=array``)."""
        self.outbox = ClientQueue(queue_size)
        self.subs: dict[str, Subscription] = {}
        self.covered: dict[str, frozenset[str]] = {}
        self.wake = asyncio.Event()
        self.close_code: int | None = None
        self.close_reason = ""
        self.gone = False
        """The peer closed the connection (or it broke): nothing is sent any more."""
        self._sub_ids = itertools.count(1)

    @property
    def allowed(self) -> frozenset[str]:
        """Topics the principal may receive: events need ``events:read``, alarms
        ``alarms:read``, as in REST."""
        allowed = TOPICS
        if not self.principal.can(Permission.EVENTS_READ):
            allowed = allowed - {EVENT}
        if not self.principal.can(Permission.ALARMS_READ):
            allowed = allowed - {ALARM}
        return allowed

    @property
    def closing(self) -> bool:
        """True once the hub decided to end this connection."""
        return self.close_code is not None

    def next_sub_id(self) -> str:
        """A subscription id unique within this connection."""
        return f"s{next(self._sub_ids)}"

    def put(self, text: str, droppable: bool = False) -> None:
        """Queue a frame and wake the sender."""
        if self.close_code is not None:
            return
        self.outbox.put(text, droppable)
        if not self.wake.is_set():
            self.wake.set()

    def put_all(self, texts: Collection[str], droppable: bool) -> None:
        """Queue several frames of one kind and wake the sender once."""
        if self.close_code is not None:
            return
        self.outbox.put_many(texts, droppable)
        if not self.wake.is_set():
            self.wake.set()

    def close(self, code: int, reason: str) -> None:
        """End the connection with ``code``: nothing more is queued, what waits is forgotten."""
        if self.close_code is None:
            self.close_code, self.close_reason = code, reason
            self.outbox.clear()
        self.wake.set()

    def left(self) -> None:
        """The peer is gone: stop the sender without a close frame."""
        self.gone = True
        self.close(CloseCode.GOING_AWAY, "the client left")
