"""The live fan-out: what the hub committed, pushed to the WebSocket clients watching it.

Fed from three places, always after the fact:

- **ingest commits** (``Ingest.on_commit``): telemetry values, events, reported state and
  presence changes of a batch the database has just committed; events go out with the ids
  they were stored under, as ``GET /api/events`` shows them;
- **command changes** (``CommandService.on_change``): a command's state as
  ``GET /api/commands/{id}`` answers it at that moment;
- **registry changes** (``DeviceLifecycle``, ``devices/lifecycle.py``): a device
  added, changed (labels move it in or out of label subscriptions) or deleted.

Each message is encoded once, to the text every client gets, and only when some client
watches its device. A device → clients index says who watches what, so the cost of a commit is
the frames it produces times their watchers, never times all clients. Nothing here waits for a
client: frames go into each client's bounded outbox (``live_client.ClientQueue``) and the
connection's own sender takes them from there; a slow client loses its oldest telemetry and
is told so.

What a client sees is what the REST API would show its principal: only devices of its sites
(``Principal.sees``), events only with ``events:read``. The credentials of every connection are
checked again every ``recheck_s`` seconds (one lookup per distinct token or session, however
many connections share it), so a logout, a revoked token, a disabled or deleted user or a
changed role or site list takes effect within that time: the connection is closed
(``CloseCode``) or its view narrowed.

One connection's state and outbox: ``live_client.py``; event ids: ``live_events.py``; the
WebSocket route: ``api/live.py``; the contract: ``docs/live.md``.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Final

from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine

from fieldhub.clock import now_ms
from fieldhub.hub.alarms.changes import AlarmChange
from fieldhub.hub.auth import Permission, Principal
from fieldhub.hub.auth.authn import Authenticator, Credential, CredentialsRejected
from fieldhub.hub.commands.view import command_view
from fieldhub.hub.devices.directory import DeviceDirectory
from fieldhub.hub.devices.events import (
    DeviceAdded,
    DeviceChanged,
    DeviceEvent,
    DeviceRemoved,
)
from fieldhub.hub.ingest.batch import Batch, PresenceChange
from fieldhub.hub.live.client import (
    ALARM,
    COMMAND,
    DEFAULT_QUEUE,
    DEVICE,
    EVENT,
    MEDIA,
    NO_TOPICS,
    PRESENCE,
    STATE,
    TELEMETRY,
    CloseCode,
    LiveClient,
    Subscription,
    frame,
)
from fieldhub.hub.live.events import EventKey, event_keys, stored_events
from fieldhub.hub.store.commands import CommandRecord
from fieldhub.hub.store.media import MediaRecord
from fieldhub.logthrottle import LogThrottle, held_back

log = logging.getLogger(__name__)

RECHECK_S: Final = 2.0
"""How often the credentials of open connections are checked again."""
MAX_SUBSCRIPTIONS: Final = 100
"""Per connection; a dashboard needs a handful."""
_MAX_PENDING_LOOKUPS: Final = 1000
"""Commits whose events wait for their ids; beyond this the oldest are dropped (and counted
as dropped for every client that watched them): the database is far behind."""


class LiveError(ValueError):
    """A client's request cannot be done; the text says why (sent back as an error frame)."""


@dataclass(frozen=True, slots=True)
class _PendingEvent:
    key: EventKey
    watchers: tuple[LiveClient, ...]


class LiveHub:
    """The fan-out of one hub process to its live clients.

    Args:
        directory: labels of every registered device, kept by the hub.
        engine: the hub's database (events are read back for their ids).
        authenticator: to check the connections' credentials again.
        queue_size: frames that may wait for one client.
        recheck_s: seconds between two checks of the connections' credentials.
    """

    def __init__(
        self,
        directory: DeviceDirectory,
        engine: AsyncEngine,
        authenticator: Authenticator,
        *,
        queue_size: int = DEFAULT_QUEUE,
        recheck_s: float = RECHECK_S,
    ) -> None:
        self._directory = directory
        self._engine = engine
        self._authenticator = authenticator
        self.queue_size = queue_size
        self.recheck_s = recheck_s
        self._clients: set[LiveClient] = set()
        self._watchers: dict[str, dict[LiveClient, frozenset[str]]] = {}
        self._last_seen: dict[str, int] = {}
        self._lookups: deque[list[_PendingEvent]] = deque()
        self._lookup_due = asyncio.Event()
        self._throttle = LogThrottle()
        self.reading = asyncio.Lock()
        """Held while this reads the database; the hub's stop cancels :meth:`run` only outside
        it, so that no query is cut off with its connection checked out."""
        self.failures = 0
        """Feeds that raised (a bug: logged with its traceback, never passed on to ingest)."""

    # -- clients ------------------------------------------------------------------------------
    @property
    def clients(self) -> int:
        """Open connections."""
        return len(self._clients)

    def connect(self, principal: Principal, credential: Credential, *, array: bool) -> LiveClient:
        """A new connection of ``principal``; it receives nothing until it subscribes."""
        client = LiveClient(principal, credential, array=array, queue_size=self.queue_size)
        self._clients.add(client)
        return client

    def disconnect(self, client: LiveClient) -> None:
        """The connection is gone: forget it."""
        self._clients.discard(client)
        self._cover(client, {})
        client.close(CloseCode.GOING_AWAY, "disconnected")

    def subscribe(
        self,
        client: LiveClient,
        *,
        devices: Iterable[str] | None = None,
        labels: Mapping[str, str] | None = None,
        everything: bool = False,
        topics: Iterable[str],
    ) -> tuple[Subscription, list[str]]:
        """Add a subscription; returns it and the devices it covers now (sorted).

        Raises:
            LiveError: not exactly one of devices, labels or everything; too many.
        """
        if sum((devices is not None, labels is not None, everything)) != 1:
            raise LiveError("give exactly one of `devices`, `labels` or `all: true`")
        if len(client.subs) >= MAX_SUBSCRIPTIONS:
            raise LiveError(f"at most {MAX_SUBSCRIPTIONS} subscriptions per connection")
        sub = Subscription(
            client.next_sub_id(),
            frozenset(topics),
            frozenset(devices) if devices is not None else None,
            dict(labels) if labels is not None else None,
        )
        client.subs[sub.id] = sub
        self._recompute(client)
        covered = [
            device_id
            for device_id in self._candidates(client, [sub])
            if (entry := self._directory.get(device_id)) is not None
            and client.principal.sees(entry.labels)
            and sub.matches(device_id, entry.labels)
        ]
        return sub, sorted(covered)

    def unsubscribe(self, client: LiveClient, sub_id: str) -> None:
        """Drop a subscription of this connection.

        Raises:
            LiveError: no such subscription on this connection.
        """
        if client.subs.pop(sub_id, None) is None:
            raise LiveError(f"no subscription {sub_id!r} on this connection")
        self._recompute(client)

    # -- feeds --------------------------------------------------------------------------------
    def load(self, device_id: str, last_seen: int | None) -> None:
        """When a device was last heard of as the store says (hub start)."""
        if last_seen is not None:
            self._last_seen[device_id] = last_seen

    def committed(self, batch: Batch) -> None:
        """Push what a just committed ingest batch holds (``Ingest.on_commit``)."""
        now = now_ms()
        last_seen = self._last_seen
        for device_id in batch.seqs:
            last_seen[device_id] = now
        if not self._clients:
            return
        try:
            self._push_batch(batch)
        except Exception:  # a bug here must not stop ingest: logged, counted
            self._failed("commit")

    def command_changed(self, record: CommandRecord) -> None:
        """Push a command's new state (``CommandService.on_change``)."""
        watching = self._watchers.get(record.device_id)
        if not watching:
            return
        try:
            text: str | None = None
            for client, topics in watching.items():
                if COMMAND in topics:
                    text = text or frame(
                        {
                            "type": COMMAND,
                            "device": record.device_id,
                            "command": command_view(record),
                        }
                    )
                    client.put(text)
        except Exception:  # the caller is a REST request or a device's reply: not theirs
            self._failed("command")

    def alarms_changed(self, changes: list[AlarmChange]) -> None:
        """Push committed alarm changes (``AlarmEngine.on_changed``) to the clients watching
        each alarm's device with the ``alarm`` topic."""
        try:
            for change in changes:
                watching = self._watchers.get(change.device_id)
                if not watching:
                    continue
                text: str | None = None
                for client, topics in watching.items():
                    if ALARM in topics:
                        text = text or frame(
                            {"type": ALARM, "device": change.device_id, "alarm": _alarm(change)}
                        )
                        client.put(text)
        except Exception:  # the caller is the alarm engine or a REST request: not theirs
            self._failed("alarm")

    def media_changed(self, records: list[MediaRecord]) -> None:
        """Push media that just arrived (``MediaService.on_complete``) as ``media`` frames to
        the clients watching the device's events: the picture that was coming is there."""
        try:
            for record in records:
                clients = self._watching(record.device_id, EVENT)
                if clients:
                    text = frame(
                        {
                            "type": MEDIA,
                            "device": record.device_id,
                            "seq": record.seq,
                            "media": record.view(),
                        }
                    )
                    for client in clients:
                        client.put(text)
        except Exception:  # the caller is an upload: not its business
            self._failed("media")

    def device_changed(self, device_id: str, change: str) -> None:
        """A device was ``added``, ``changed`` or ``deleted`` (after its commit)."""
        try:
            self._device_changed(device_id, change)
        except Exception:  # the change is committed: the request that made it must not fail
            self._failed("registry change")

    def on_device(self, event: DeviceEvent) -> None:
        """Registry changes, as lifecycle events: clients gain or lose what they may see."""
        if isinstance(event, DeviceAdded):
            self.load(event.record.id, event.record.last_seen)
            self.device_changed(event.record.id, "added")
        elif isinstance(event, DeviceChanged):
            self.device_changed(event.record.id, "changed")  # labels may move it in or out
        elif isinstance(event, DeviceRemoved):
            self.device_changed(event.device_id, "deleted")

    def _device_changed(self, device_id: str, change: str) -> None:
        before = dict(self._watchers.get(device_id, {}))
        entry = self._directory.get(device_id) if change != "deleted" else None
        after: dict[LiveClient, frozenset[str]] = {}
        for client in self._clients:
            topics = self._topics(client, device_id, entry.labels if entry else None)
            if topics:
                after[client] = topics
            self._set_cover(client, device_id, topics)
        for client in before.keys() | after.keys():
            topics = after.get(client) or before.get(client, NO_TOPICS)
            if DEVICE in topics:
                client.put(
                    frame(
                        {
                            "type": DEVICE,
                            "device": device_id,
                            "change": change,
                            "watched": client in after,
                        }
                    )
                )
        if change == "deleted":
            self._last_seen.pop(device_id, None)

    # -- background work ----------------------------------------------------------------------
    async def run(self) -> None:
        """Read stored events' ids and re-check credentials, forever; on the way out, close
        every connection (the hub is stopping)."""
        try:
            async with asyncio.TaskGroup() as tasks:
                tasks.create_task(self._lookup_loop(), name="live-event-ids")
                tasks.create_task(self._recheck_loop(), name="live-recheck")
        finally:
            for client in list(self._clients):
                client.close(CloseCode.GOING_AWAY, "the hub is stopping")

    async def recheck(self) -> None:
        """Check every connection's credentials now; close or narrow as they say."""
        by_credential: dict[Credential, list[LiveClient]] = {}
        for client in self._clients:
            if not client.closing:
                by_credential.setdefault(client.credential, []).append(client)
        for credential, clients in by_credential.items():
            try:
                principal = await self._authenticate(credential)
            except CredentialsRejected as exc:
                for client in clients:
                    self._close(client, CloseCode.CREDENTIALS, str(exc))
                continue
            except (SQLAlchemyError, OSError) as exc:  # the database is away: try next time
                held = self._throttle.due("recheck")
                if held is not None:
                    log.warning("cannot re-check live connections: %s%s", exc, held_back(held))
                continue
            for client in clients:
                if not principal.can(Permission.DEVICES_READ):
                    self._close(client, CloseCode.FORBIDDEN, "may no longer read devices")
                elif principal != client.principal:
                    client.principal = principal
                    self._recompute(client)

    async def _authenticate(self, credential: Credential) -> Principal:
        async with self.reading:
            return (await self._authenticator.resolve(credential)).principal

    async def _recheck_loop(self) -> None:
        while True:
            await asyncio.sleep(self.recheck_s)
            if self._clients:
                await self.recheck()

    async def _lookup_loop(self) -> None:
        while True:
            await self._lookup_due.wait()
            self._lookup_due.clear()
            while self._lookups:
                pending = self._lookups.popleft()
                try:
                    async with self.reading:
                        rows = await stored_events(self._engine, (p.key for p in pending))
                except (SQLAlchemyError, OSError) as exc:
                    held = self._throttle.due("lookup")
                    if held is not None:
                        log.warning(
                            "cannot read events for live clients: %s%s", exc, held_back(held)
                        )
                    self._lost(pending)
                    continue
                for item in pending:
                    row = rows.get(item.key)
                    if row is None:
                        continue  # the device was deleted meanwhile
                    device_id = item.key[0]
                    text = frame({"type": EVENT, "device": device_id, "event": row})
                    for client in item.watchers:  # still allowed to see it now?
                        if EVENT in client.covered.get(device_id, NO_TOPICS):
                            client.put(text)

    # -- internals ----------------------------------------------------------------------------
    def _push_batch(self, batch: Batch) -> None:
        self._push_telemetry(batch)
        for device_id, state in batch.states:
            clients = self._watching(device_id, STATE)
            if clients:
                text = frame(
                    {"type": STATE, "device": device_id, "ts": state.ts, "reported": state.state}
                )
                for client in clients:
                    client.put(text)
        for change in batch.presence:
            clients = self._watching(change.device_id, PRESENCE)
            if clients:
                text = frame(self._presence(change))
                for client in clients:
                    client.put(text)
        lookup = [
            _PendingEvent(key, clients)
            for key in event_keys(batch.events, batch.presence)
            if (clients := self._watching(key[0], EVENT))
        ]
        if lookup:
            if len(self._lookups) >= _MAX_PENDING_LOOKUPS:
                self._lost(self._lookups.popleft())
            self._lookups.append(lookup)
            self._lookup_due.set()

    def _push_telemetry(self, batch: Batch) -> None:
        """Every instant of every message, one hand-over per client per commit: with 100
        clients watching everything, this runs 100 times per frame."""
        watchers = self._watchers
        pending: dict[LiveClient, list[str]] = {}
        for device_id, message in batch.telemetry:
            watching = watchers.get(device_id)
            if not watching:
                continue
            texts: list[str] | None = None
            for client, topics in watching.items():
                if TELEMETRY in topics:
                    if texts is None:
                        texts = [
                            frame({"type": TELEMETRY, "device": device_id, "ts": ts, "values": v})
                            for ts, v in message.instants()
                        ]
                    queued = pending.get(client)
                    if queued is None:
                        pending[client] = texts.copy()
                    else:
                        queued += texts
        for client, texts in pending.items():
            client.put_all(texts, droppable=True)

    def _watching(self, device_id: str, topic: str) -> tuple[LiveClient, ...]:
        watching = self._watchers.get(device_id)
        if not watching:
            return ()
        return tuple(client for client, topics in watching.items() if topic in topics)

    def _presence(self, change: PresenceChange) -> dict[str, Any]:
        return {
            "type": PRESENCE,
            "device": change.device_id,
            "presence": {
                "state": change.presence,
                "since": change.since,
                "reason": change.reason,
                "connected": change.connected,
                "last_seen": self._last_seen.get(change.device_id),
            },
        }

    def _lost(self, pending: list[_PendingEvent]) -> None:
        """Events that will not be sent: counted as dropped for whoever watched them."""
        for item in pending:
            for client in item.watchers:
                client.outbox.dropped += 1
                client.outbox.dropped_total += 1

    def _failed(self, feed: str) -> None:
        self.failures += 1
        held = self._throttle.due(("failed", feed))
        if held is not None:
            log.exception("live fan-out of a %s failed%s", feed, held_back(held))

    def _close(self, client: LiveClient, code: CloseCode, reason: str) -> None:
        self._cover(client, {})
        client.close(code, reason)

    def _candidates(self, client: LiveClient, subs: Iterable[Subscription]) -> Iterable[str]:
        """Device ids that ``subs`` may cover: the listed ones, or every registered one."""
        subs = list(subs)
        if all(sub.explicit for sub in subs):
            return {device_id for sub in subs for device_id in sub.devices or ()}
        return [entry.id for entry in self._directory.matching({})]

    def _topics(
        self, client: LiveClient, device_id: str, labels: Mapping[str, str] | None
    ) -> frozenset[str]:
        """What ``client`` receives of a device with ``labels`` (None: not registered)."""
        if labels is None or client.closing or not client.principal.sees(labels):
            return NO_TOPICS
        topics = NO_TOPICS
        for sub in client.subs.values():
            if sub.matches(device_id, labels):
                topics = topics | sub.topics
        return topics & client.allowed

    def _recompute(self, client: LiveClient) -> None:
        """Work out again everything ``client`` covers (subscriptions or principal changed)."""
        covered: dict[str, frozenset[str]] = {}
        for device_id in self._candidates(client, client.subs.values()):
            entry = self._directory.get(device_id)
            topics = self._topics(client, device_id, entry.labels if entry else None)
            if topics:
                covered[device_id] = topics
        self._cover(client, covered)

    def _cover(self, client: LiveClient, covered: dict[str, frozenset[str]]) -> None:
        for device_id in client.covered.keys() - covered.keys():
            self._set_cover(client, device_id, NO_TOPICS)
        for device_id, topics in covered.items():
            self._set_cover(client, device_id, topics)

    def _set_cover(self, client: LiveClient, device_id: str, topics: frozenset[str]) -> None:
        if topics:
            client.covered[device_id] = topics
            self._watchers.setdefault(device_id, {})[client] = topics
            return
        client.covered.pop(device_id, None)
        watching = self._watchers.get(device_id)
        if watching is not None:
            watching.pop(client, None)
            if not watching:
                del self._watchers[device_id]


__all__ = ["LiveError", "LiveHub"]


def _alarm(change: AlarmChange) -> dict[str, Any]:
    return {
        "id": change.alarm_id,
        "rule_id": change.rule_id,
        "rule_name": change.rule_name,
        "severity": change.severity,
        "change": change.kind,
        "state": change.state,
        "at": change.at,
        "actor": change.actor,
        "message": change.message,
        "value": change.value,
        "comment": change.comment,
    }
