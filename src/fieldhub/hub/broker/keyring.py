"""Who may connect to the embedded broker, and as whom: the hub's identity and device keys.

The embedded broker checks every CONNECT, and every publish, subscription and delivery, against
a :class:`KeyRing`: an in-memory copy of the device keys of the store (digests only), kept
current by ``fieldhub.hub.broker.identities`` whenever a key is issued, rotated, revoked or expires,
so that connecting never waits for the database. The checks are plain dictionary look-ups and
one SHA-256, cheap enough to run on the event loop for every packet.

A connection authenticates as a :class:`BrokerPrincipal`: a device (client id = device id, user name
``<device id>.<key id>``) or the hub (its own :class:`MqttIdentity`). What a principal may do
with topics is decided by ``fieldhub.protocol.acl``.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Protocol

from fieldhub.clock import now_ms
from fieldhub.hub.secrets import matches as secret_matches
from fieldhub.hub.store.credentials import CredentialKey
from fieldhub.protocol import acl

__all__ = [
    "AccessPolicy",
    "BrokerPrincipal",
    "DevicePrincipal",
    "HubPrincipal",
    "KeyRing",
    "MqttIdentity",
    "hub_identity",
]

_NO_HASH = "0" * 64


@dataclass(frozen=True, slots=True)
class MqttIdentity:
    """A user name, password and client id to connect to a broker with."""

    username: str
    password: str = field(repr=False)
    client_id: str


def hub_identity(instance: str) -> MqttIdentity:
    """A fresh identity for the hub process ``instance``, with a new random password.

    User name and client id are ``hub:<instance>``: a ``:`` never occurs in a device id or a
    device user name, so no device can be named like the hub, or take over its session by
    connecting with its client id. The password lives only in this process (the embedded
    broker runs in it; for Mosquitto the hub sets it through dynamic security at each start),
    so it is never written anywhere.
    """
    name = f"hub:{instance}"
    return MqttIdentity(name, secrets.token_urlsafe(32), name)


class BrokerPrincipal(Protocol):
    """An authenticated MQTT client, and what it may do with topics."""

    @property
    def name(self) -> str:
        """For logs and the audit: ``device:atm-1`` or ``hub:<instance>``."""

    def may_publish(self, topic: str) -> bool:
        """True when it may publish to ``topic``."""

    def may_subscribe(self, topic_filter: str) -> bool:
        """True when it may subscribe to ``topic_filter``."""

    def may_receive(self, topic: str) -> bool:
        """True when a message on ``topic`` may be delivered to it."""


@dataclass(frozen=True, slots=True)
class DevicePrincipal:
    """A device: its own subtree (and a gateway its children's), device→hub channels out,
    hub→device channels in.

    ``family`` is the key ring's map of gateways to children, read at each check, so a child
    added or removed changes what its connected gateway may do at once.
    """

    device_id: str
    family: Mapping[str, frozenset[str]] = field(default_factory=dict, compare=False)

    @property
    def name(self) -> str:
        """``device:<id>``."""
        return f"device:{self.device_id}"

    def may_publish(self, topic: str) -> bool:
        """See :func:`fieldhub.protocol.acl.device_may_publish`."""
        return acl.device_may_publish(self.device_id, topic, self.family.get(self.device_id, ()))

    def may_subscribe(self, topic_filter: str) -> bool:
        """See :func:`fieldhub.protocol.acl.device_may_subscribe`."""
        return acl.device_may_subscribe(
            self.device_id, topic_filter, self.family.get(self.device_id, ())
        )

    def may_receive(self, topic: str) -> bool:
        """See :func:`fieldhub.protocol.acl.device_may_receive`."""
        return acl.device_may_receive(self.device_id, topic, self.family.get(self.device_id, ()))


@dataclass(frozen=True, slots=True)
class HubPrincipal:
    """The hub: publishes acks, rejects, commands and desired state; reads the whole tree."""

    username: str

    @property
    def name(self) -> str:
        """The hub's user name."""
        return self.username

    def may_publish(self, topic: str) -> bool:
        """See :func:`fieldhub.protocol.acl.hub_may_publish`."""
        return acl.hub_may_publish(topic)

    def may_subscribe(self, topic_filter: str) -> bool:
        """See :func:`fieldhub.protocol.acl.hub_may_subscribe`."""
        return acl.hub_may_subscribe(topic_filter)

    def may_receive(self, topic: str) -> bool:
        """See :func:`fieldhub.protocol.acl.hub_may_receive`."""
        return acl.hub_may_receive(topic)


class AccessPolicy(Protocol):
    """What the embedded broker asks: who is connecting, and is a session still allowed."""

    def authenticate(
        self, client_id: str, username: str | None, password: str | None
    ) -> BrokerPrincipal | None:
        """The principal these credentials prove, or None to refuse the connection."""

    def principal(self, client_id: str, username: str | None) -> BrokerPrincipal | None:
        """The principal of an already authenticated session, or None once it is revoked."""


def _digest(value: str) -> bytes:
    return hashlib.sha256(value.encode("utf-8")).digest()


class KeyRing:
    """The hub's identity and a copy of every device key: the embedded broker's authority.

    Args:
        hub: the hub's own identity; None admits no hub (tests of devices alone).
    """

    def __init__(self, hub: MqttIdentity | None = None) -> None:
        self._hub = hub
        self._hub_digest = _digest(hub.password) if hub else b""
        self._hub_principal = HubPrincipal(hub.username) if hub else None
        self._keys: dict[str, CredentialKey] = {}
        self._principals: dict[str, DevicePrincipal] = {}
        self._family: dict[str, frozenset[str]] = {}

    def __len__(self) -> int:
        return len(self._keys)

    @property
    def usernames(self) -> frozenset[str]:
        """Every device user name held."""
        return frozenset(self._keys)

    def replace(self, keys: Iterable[CredentialKey]) -> set[str]:
        """Hold exactly ``keys`` from now on; return the user names that were dropped."""
        fresh = {key.username: key for key in keys}
        dropped = set(self._keys) - set(fresh)
        self._keys = fresh
        return dropped

    def put(self, keys: Iterable[CredentialKey]) -> None:
        """Add or update ``keys`` (a new key, or one whose end was set by a rotation)."""
        for key in keys:
            self._keys[key.username] = key

    def remove(self, usernames: Iterable[str]) -> None:
        """Forget ``usernames`` (revoked or expired keys); unknown names are ignored."""
        for username in usernames:
            self._keys.pop(username, None)

    def set_children(self, gateway_id: str, children: frozenset[str]) -> None:
        """From now on ``gateway_id`` speaks for exactly ``children`` (see ``acl``)."""
        if children:
            self._family[gateway_id] = children
        else:
            self._family.pop(gateway_id, None)

    def authenticate(
        self, client_id: str, username: str | None, password: str | None
    ) -> BrokerPrincipal | None:
        """The hub or the device these credentials prove, or None.

        A device key must be known, unexpired, match the secret (compared in constant time)
        and belong to ``client_id``. Every refusal looks the same from outside.
        """
        if username is None or password is None:
            return None
        hub = self._hub
        if hub is not None and username == hub.username:
            matches = hmac.compare_digest(_digest(password), self._hub_digest)
            return self._hub_principal if matches and client_id == hub.client_id else None
        key = self._keys.get(username)
        matches = secret_matches(password, key.secret_hash if key else _NO_HASH)
        if key is None or not matches:
            return None
        return self._device(key, client_id)

    def principal(self, client_id: str, username: str | None) -> BrokerPrincipal | None:
        """The principal of a session that authenticated earlier, while its key still holds."""
        if username is None:
            return None
        hub = self._hub
        if hub is not None and username == hub.username:
            return self._hub_principal if client_id == hub.client_id else None
        key = self._keys.get(username)
        return None if key is None else self._device(key, client_id)

    def _device(self, key: CredentialKey, client_id: str) -> DevicePrincipal | None:
        if key.device_id != client_id or not key.valid_at(now_ms()):
            return None
        principal = self._principals.get(key.device_id)
        if principal is None:
            if len(self._principals) > 2 * len(self._keys) + 1000:
                self._principals.clear()  # bounded: entries of removed devices go eventually
            principal = self._principals[key.device_id] = DevicePrincipal(
                key.device_id, self._family
            )
        return principal
