"""Committed data of one hub process passed to the others: their live clients and presence.

With several hub processes (docs/scaling.md) a device's messages are ingested by whichever
process the broker's shared subscription hands them to, but a browser is connected to one
process, and every process's presence sweep needs to know who was heard of lately. So each
process publishes what it committed, after the commit, on a PostgreSQL ``NOTIFY`` channel,
and every other process feeds it to its live fan-out (``live/fanout.py``, as if committed
there) and its presence tracker (fresh devices, presence changes, never recorded twice).

Why PostgreSQL and not the broker: the database is already where the data became a fact, a
``NOTIFY`` is sent only if its transaction commits, and it costs no broker ACL of its own.
Why not in the ingest transaction: the payload limit. ``NOTIFY`` payloads must stay under
8000 bytes, so a batch is encoded compactly (JSON arrays) and split into as many notifications
as it needs, sent by a task of their own on a connection of their own, never on ingest's path;
a single message too large for one notification is counted (``too_large``) and left out:
its process's own clients still see it, and the others read it from the history.

Only on PostgreSQL with the cluster setting on (``HubSettings.cluster_group``): one hub alone has
nobody to tell.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Callable
from typing import Any, Final

import asyncpg
import msgspec
from sqlalchemy.engine import URL

from fieldhub.hub.ingest.batch import Batch, PresenceChange
from fieldhub.logthrottle import LogThrottle, held_back
from fieldhub.protocol import Event, State, Telemetry

log = logging.getLogger(__name__)

CHANNEL: Final = "fieldhub_committed"
MAX_PAYLOAD: Final = 7900
"""Bytes of one notification (PostgreSQL refuses 8000 and more)."""
MAX_QUEUED: Final = 1000
"""Batches waiting to be sent; beyond this the oldest are dropped and counted."""
_RECONNECT_S: Final = 1.0
_json = msgspec.json.Encoder()


def encode(origin: str, batch: Batch) -> tuple[list[str], int]:
    """``batch`` as notification payloads of at most :data:`MAX_PAYLOAD` bytes, and how many
    messages were too large for any."""
    items: list[Any] = [["t", d, m] for d, m in batch.telemetry]
    items += [["e", d, received, e] for d, received, e in batch.events]
    items += [["s", d, s] for d, s in batch.states]
    items += [
        ["p", p.device_id, p.presence, p.since, p.reason, p.connected] for p in batch.presence
    ]
    items += [["q", d] for d in batch.seqs]
    head = b'{"o":' + _json.encode(origin) + b',"i":['
    room = MAX_PAYLOAD - len(head) - 2  # "]}"
    payloads: list[str] = []
    parts: list[bytes] = []
    size = 0
    too_large = 0
    for item in items:
        text = _json.encode(item)
        if len(text) > room:
            too_large += 1
            continue
        if size + len(text) + 1 > room:
            payloads.append((head + b",".join(parts) + b"]}").decode())
            parts, size = [], 0
        parts.append(text)
        size += len(text) + 1
    if parts:
        payloads.append((head + b",".join(parts) + b"]}").decode())
    return payloads, too_large


def decode(payload: str) -> tuple[str, Batch]:
    """The origin and the batch (part) of one notification."""
    body = msgspec.json.decode(payload)
    batch = Batch()
    for item in body["i"]:
        kind, device_id = item[0], item[1]
        if kind == "t":
            batch.telemetry.append((device_id, msgspec.convert(item[2], Telemetry)))
        elif kind == "e":
            batch.events.append((device_id, item[2], msgspec.convert(item[3], Event)))
        elif kind == "s":
            batch.states.append((device_id, msgspec.convert(item[2], State)))
        elif kind == "p":
            batch.presence.append(PresenceChange(device_id, *item[2:6]))
        elif kind == "q":
            batch.seqs[device_id] = []
    return str(body["o"]), batch


class ClusterFeed:
    """Sends this process's commits to the others and hands theirs to ``deliver``.

    Args:
        url: the PostgreSQL database every hub process shares.
        origin: this process's instance name (its own notifications come back: skipped).
        deliver: called with each batch (part) another process committed.
    """

    def __init__(self, url: URL, origin: str, deliver: Callable[[Batch], None]) -> None:
        self._dsn = url.set(drivername="postgresql").render_as_string(hide_password=False)
        self.origin = origin
        self._deliver = deliver
        self._queue: deque[Batch] = deque()
        self._wake = asyncio.Event()
        self._throttle = LogThrottle()
        self.sent = 0  # notifications
        self.received = 0  # notifications from other processes
        self.dropped = 0  # batches not sent: the queue was full
        self.too_large = 0  # messages larger than one notification

    def committed(self, batch: Batch) -> None:
        """Queue what this process just committed (``Ingest.on_commit``: nothing more here)."""
        if len(self._queue) >= MAX_QUEUED:
            self._queue.popleft()
            self.dropped += 1
        self._queue.append(batch)
        self._wake.set()

    async def run(self) -> None:
        """Listen and send until cancelled, reconnecting after the database comes back."""
        while True:
            conn: Any = None
            try:
                conn = await asyncpg.connect(self._dsn, timeout=10)
                await conn.add_listener(CHANNEL, self._notified)
                await self._send_loop(conn)
            except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
                held = self._throttle.due("feed")
                if held is not None:
                    log.warning("cluster feed: database unreachable: %s%s", exc, held_back(held))
            finally:
                if conn is not None:
                    with contextlib.suppress(Exception):
                        conn.terminate()
            await asyncio.sleep(_RECONNECT_S)

    async def _send_loop(self, conn: Any) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._queue:
                payloads, too_large = encode(self.origin, self._queue[0])
                self.too_large += too_large
                for payload in payloads:
                    await conn.execute("SELECT pg_notify($1, $2)", CHANNEL, payload)
                    self.sent += 1
                self._queue.popleft()  # sent: a failure above retries it on the next connection

    def _notified(self, _conn: Any, _pid: int, _channel: str, payload: str) -> None:
        try:
            origin, batch = decode(payload)
            if origin == self.origin:
                return
            self.received += 1
            self._deliver(batch)
        except Exception:  # a bug or a foreign payload must not stop the listener
            held = self._throttle.due("decode")
            if held is not None:
                log.exception("cluster feed: a notification could not be used%s", held_back(held))
