"""Device credentials end to end: the store, the audit log and the broker, kept in step.

``DeviceIdentities`` is the one way credentials change: it writes the store, tells the broker
(:class:`BrokerAccess`: the embedded broker's key ring, or Mosquitto's dynamic security),
and records each change in the audit log. The hub uses it, and so does the CLI on the same
database while a hub may be running.

How the CLI's changes reach a running hub: every second the hub's :meth:`DeviceIdentities.run`
loop reads a fingerprint of the key table (one aggregate query) and, when it changed,
reloads the keys into the broker (the embedded broker's key ring; for Mosquitto a
reconciliation that deletes what is no longer in the store), which closes the connections of
deleted keys; the devices themselves are followed by ``DeviceLifecycle.follow_registry``. A
key issued by the CLI reaches Mosquitto through the CLI itself: only the process that made a
secret knows it, and Mosquitto takes passwords only in clear. The same loop ends rotated keys
when their grace period is over.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Collection
from typing import Protocol
from urllib.parse import unquote, urlsplit

from sqlalchemy.exc import SQLAlchemyError

from fieldhub.clock import now_ms
from fieldhub.hub.broker.dynsec import DynSecError
from fieldhub.hub.broker.keyring import KeyRing, MqttIdentity
from fieldhub.hub.errors import Unavailable
from fieldhub.hub.store.audit import AuditLog
from fieldhub.hub.store.credentials import (
    CredentialKey,
    CredentialStore,
    Fingerprint,
    IssuedCredentials,
    split_username,
)
from fieldhub.logthrottle import LogThrottle, held_back
from fieldhub.mqtt import MqttError
from fieldhub.mqtt.address import broker_address

__all__ = [
    "BrokerAccess",
    "CredentialsError",
    "DeviceIdentities",
    "EmbeddedAccess",
    "StoreOnlyAccess",
    "admin_identity",
    "public_url",
]

log = logging.getLogger(__name__)

_SYNC_PERIOD_S = 1.0
_FULL_SYNC_EVERY = 60  # periods: reload even when the fingerprint says nothing changed
KeyLoader = Callable[[], Awaitable[list[CredentialKey]]]
_BROKER_ERRORS = (DynSecError, MqttError, OSError, TimeoutError)


class CredentialsError(Unavailable):
    """The broker could not be told about a credential change; the text says what holds now."""


class BrokerAccess(Protocol):
    """How the broker in use learns of device keys."""

    async def grant(self, issued: IssuedCredentials, device_keys: list[CredentialKey]) -> None:
        """A key was issued; ``device_keys`` are all keys of its device now (ends included)."""

    async def withdraw(self, usernames: Collection[str], gone: Collection[str] = ()) -> None:
        """Keys were deleted: refuse them and disconnect who uses them. ``gone``: devices
        left with no key at all."""

    async def refresh(self, load_keys: KeyLoader) -> None:
        """Another process changed keys: catch up with the store."""

    async def set_children(self, gateway_id: str, children: frozenset[str]) -> None:
        """``gateway_id`` speaks for exactly ``children`` from now on (``devices/family.py``)."""


class EmbeddedAccess:
    """The embedded broker's key ring, and closing the connections of withdrawn keys."""

    def __init__(self, keyring: KeyRing, kick: Callable[[Collection[str]], int]) -> None:
        self._keyring = keyring
        self._kick = kick

    async def grant(self, issued: IssuedCredentials, device_keys: list[CredentialKey]) -> None:
        """Hold the device's keys as they are now (a rotation also set the old ones' end)."""
        self._keyring.put(device_keys)

    async def withdraw(self, usernames: Collection[str], gone: Collection[str] = ()) -> None:
        """Forget the keys, then close their connections (they cannot come back)."""
        self._keyring.remove(usernames)
        self._kick(set(usernames))

    async def refresh(self, load_keys: KeyLoader) -> None:
        """Hold exactly the stored keys; close connections of keys that went."""
        dropped = self._keyring.replace(await load_keys())
        if dropped:
            self._kick(dropped)

    async def set_children(self, gateway_id: str, children: frozenset[str]) -> None:
        """Checked on every packet: the next one of the gateway sees the change."""
        self._keyring.set_children(gateway_id, children)


class StoreOnlyAccess:
    """For the CLI next to an embedded broker: the running hub applies changes itself."""

    async def grant(self, issued: IssuedCredentials, device_keys: list[CredentialKey]) -> None:
        """Nothing to do here."""

    async def withdraw(self, usernames: Collection[str], gone: Collection[str] = ()) -> None:
        """Nothing to do here."""

    async def refresh(self, load_keys: KeyLoader) -> None:
        """Nothing to do here."""

    async def set_children(self, gateway_id: str, children: frozenset[str]) -> None:
        """Nothing to do here."""


class DeviceIdentities:
    """Issue, rotate, revoke and expire device credentials, with the broker and the audit log.

    Args:
        store: the device keys.
        audit: where every change is recorded (user names and ids, never secrets).
        broker: the broker in use.
    """

    def __init__(
        self,
        store: CredentialStore,
        audit: AuditLog,
        broker: BrokerAccess,
    ) -> None:
        self._store = store
        self._audit = audit
        self._broker = broker
        self._fingerprint: Fingerprint | None = None
        self._throttle = LogThrottle()
        self.syncing = asyncio.Lock()
        """Held while :meth:`run` works; the hub's stop cancels it only outside, so that no
        query is cut off with its database connection checked out."""

    def synced(self, fingerprint: Fingerprint) -> None:
        """The broker holds the keys as they were at ``fingerprint`` (read before loading
        them): :meth:`run` reloads only once the store has changed since."""
        self._fingerprint = fingerprint

    async def keys(self, device_id: str | None = None) -> list[CredentialKey]:
        """Every stored key (of one device, if given): user names and ends, no secrets."""
        return await self._store.keys(device_id)

    async def issue(self, device_id: str, *, actor: str, source: str = "") -> IssuedCredentials:
        """A new key for ``device_id`` (registered), in the store and the broker.

        Raises:
            CredentialsError: the broker refused or was unreachable; nothing was kept.
        """
        issued = await self._store.issue(device_id)
        await self._grant(issued, "device.credentials.issued", actor, source, {})
        return issued

    async def rotate(
        self, device_id: str, grace_s: float, *, actor: str, source: str = ""
    ) -> IssuedCredentials:
        """A new key; the device's other keys keep working for ``grace_s`` more seconds.

        Raises:
            CredentialsError: the broker refused or was unreachable; the new key was dropped
                (the old ones end as if the rotation had worked: rotate again).
        """
        ending = await self._store.usernames(device_id)
        issued = await self._store.rotate(device_id, grace_s)
        detail = {"grace_s": grace_s, "ending": ending}
        await self._grant(issued, "device.credentials.rotated", actor, source, detail)
        return issued

    async def _grant(
        self,
        issued: IssuedCredentials,
        action: str,
        actor: str,
        source: str,
        detail: dict[str, object],
    ) -> None:
        device_id = issued.device_id
        detail = {"username": issued.username, **detail}
        try:
            await self._broker.grant(issued, await self._store.keys(device_id))
        except _BROKER_ERRORS as exc:
            await self._store.discard([issued.username])
            await self._audit.record(
                actor, action, device_id, "failed", source, {**detail, "error": str(exc)}
            )
            raise CredentialsError(
                f"the broker was not told about the new key of {device_id!r}, so it was dropped:"
                f" {exc}"
            ) from exc
        await self._audit.record(actor, action, device_id, "ok", source, detail)

    async def revoke(self, device_id: str, *, actor: str, source: str = "") -> list[str]:
        """Delete every key of ``device_id``; the broker disconnects the device at once.

        Returns the user names revoked (empty when the device had none).

        Raises:
            CredentialsError: the keys are gone from the store, but the broker could not be
                told; a running hub catches up within seconds.
        """
        usernames = await self._store.revoke(device_id)
        await self.withdrawn(device_id, usernames, actor=actor, source=source)
        return usernames

    async def withdrawn(
        self, device_id: str, usernames: list[str], *, actor: str, source: str = "", why: str = ""
    ) -> None:
        """Tell the broker and the audit log that ``usernames`` of ``device_id`` are gone from
        the store (revoked, or deleted with their device)."""
        detail: dict[str, object] = {"usernames": usernames}
        if why:
            detail["why"] = why
        try:
            await self._broker.withdraw(usernames, gone=[device_id])
        except _BROKER_ERRORS as exc:
            await self._audit.record(
                actor,
                "device.credentials.revoked",
                device_id,
                "failed",
                source,
                {**detail, "error": str(exc)},
            )
            raise CredentialsError(
                f"the keys of {device_id!r} are revoked in the store, but the broker was not "
                f"told ({exc}); a running hub applies it within seconds"
            ) from exc
        await self._audit.record(
            actor, "device.credentials.revoked", device_id, "ok", source, detail
        )

    async def expire(self, now: int | None = None) -> list[str]:
        """Delete the rotated keys whose grace period is over, in the store and the broker."""
        usernames = await self._store.expire_due(now_ms() if now is None else now)
        if not usernames:
            return []
        by_device: dict[str, list[str]] = {}
        for username in usernames:
            parts = split_username(username)
            by_device.setdefault(parts[0] if parts else "", []).append(username)
        gone = [device for device in by_device if not await self._store.usernames(device)]
        await self._broker.withdraw(usernames, gone=gone)
        for device_id, names in sorted(by_device.items()):
            await self._audit.record(
                "hub", "device.credentials.expired", device_id, detail={"usernames": names}
            )
        return usernames

    async def refresh(self, *, force: bool = False) -> bool:
        """Reload keys into the broker when another process changed them (or ``force``).

        Returns True when it reloaded.
        """
        return await self._refresh(await self._store.fingerprint(), force=force)

    async def _refresh(self, fingerprint: Fingerprint, *, force: bool) -> bool:
        if fingerprint == self._fingerprint and not force:
            return False
        await self._broker.refresh(self._store.keys)
        self._fingerprint = fingerprint
        return True

    async def run(self) -> None:
        """Every second: end keys whose grace period is over, catch up with other processes.

        A quiet second costs one aggregate query (the fingerprint, which also tells when the
        next grace period ends).

        Runs until cancelled; a failing database or broker is logged (once a minute) and
        tried again the next second.
        """
        ticks = 0
        while True:
            await asyncio.sleep(_SYNC_PERIOD_S)
            ticks += 1
            async with self.syncing:
                try:
                    fingerprint = await self._store.fingerprint()  # a quiet second's one query
                    earliest_end = fingerprint[2]
                    if 0 <= earliest_end <= now_ms() and await self.expire():
                        fingerprint = await self._store.fingerprint()
                    await self._refresh(fingerprint, force=ticks % _FULL_SYNC_EVERY == 0)
                except (SQLAlchemyError, CredentialsError, *_BROKER_ERRORS) as exc:
                    held = self._throttle.due(type(exc))
                    if held is not None:
                        log.warning("device credentials sync failed: %s%s", exc, held_back(held))


def admin_identity(broker_url: str) -> MqttIdentity | None:
    """The user name and password in ``mqtt://user:pass@host:port``, or None without them."""
    parts = urlsplit(broker_url)
    if not parts.username or parts.password is None:
        return None
    return MqttIdentity(unquote(parts.username), unquote(parts.password), "")


def public_url(broker_url: str) -> str:
    """``broker_url`` without user name and password: what devices and logs may see."""
    return broker_address(broker_url).url
