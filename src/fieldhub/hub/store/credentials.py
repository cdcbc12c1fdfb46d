"""Device credentials: per-device MQTT keys, stored as SHA-256 digests, shown once.

A device connects with client id = its device id, user name ``<device id>.<key id>`` and a
secret of 256 random bits. A key is one row; rotation adds a second key for the same device
and gives the old ones an end (``expires_at``), so the device can switch over while both
work; revocation deletes every key of the device. Only the digest of a secret is stored
(see ``schema.py`` for why SHA-256 and not argon2), so a lost secret cannot be shown again:
rotate instead.

This module keeps the rows; telling the broker is the job of ``fieldhub.hub.broker.identities``.
"""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass, field

from sqlalchemy import delete, func, insert, or_, select, update
from sqlalchemy.engine import Row
from sqlalchemy.ext.asyncio import AsyncEngine

from fieldhub.clock import now_ms
from fieldhub.hub.secrets import digest, matches
from fieldhub.hub.store.database import write_transaction
from fieldhub.hub.store.schema import device_credentials
from fieldhub.protocol.topics import DEVICE_ID_PATTERN

__all__ = [
    "CredentialKey",
    "CredentialStore",
    "Fingerprint",
    "IssuedCredentials",
    "split_username",
]

_KEY_ID_BYTES = 4  # 8 hex digits: tells a device's keys apart, no secret
_SECRET_BYTES = 32  # 256 bits
_USERNAME = re.compile(rf"^(?P<device>{DEVICE_ID_PATTERN[1:-1]})\.(?P<key>[0-9a-f]{{8}})$")
# Compared against when a user name is unknown, so that a miss takes as long as a mismatch.
_NO_HASH = "0" * 64


@dataclass(frozen=True, slots=True)
class IssuedCredentials:
    """A new key, with its secret in clear: hand it to the device once, then forget it."""

    device_id: str
    username: str
    secret: str = field(repr=False)  # never in logs, tracebacks or reprs

    @property
    def client_id(self) -> str:
        """The MQTT client id the device must use: its device id."""
        return self.device_id


@dataclass(frozen=True, slots=True)
class CredentialKey:
    """A stored key: what a broker needs to check a device, without the secret."""

    username: str
    device_id: str
    secret_hash: str = field(repr=False)
    created_at: int
    expires_at: int | None  # end of the grace period after a rotation; None: no end

    def valid_at(self, now: int) -> bool:
        """True while the key may be used (``now`` in epoch ms)."""
        return self.expires_at is None or now < self.expires_at

    @classmethod
    def from_row(cls, row: Row[tuple[str, str, str, int, int | None]]) -> CredentialKey:
        """Build a key from a ``device_credentials`` row."""
        return cls(row.username, row.device_id, row.secret_hash, row.created_at, row.expires_at)


Fingerprint = tuple[int, int, int]
"""(number of keys, newest creation, earliest end): changes whenever any process issues,
rotates, revokes or expires a key, which is how a hub notices what the CLI did."""


def split_username(username: str) -> tuple[str, str] | None:
    """``"atm-1.0a1b2c3d"`` → ``("atm-1", "0a1b2c3d")``; None when it is no device user name."""
    match = _USERNAME.match(username)
    return (match["device"], match["key"]) if match else None


def _new_key(device_id: str) -> tuple[IssuedCredentials, str]:
    username = f"{device_id}.{secrets.token_hex(_KEY_ID_BYTES)}"
    secret = secrets.token_urlsafe(_SECRET_BYTES)
    return IssuedCredentials(device_id, username, secret), digest(secret)


class CredentialStore:
    """Device keys in the store."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    async def issue(self, device_id: str) -> IssuedCredentials:
        """Add a key for ``device_id`` (a registered device) and return it with its secret."""
        issued, secret_hash = _new_key(device_id)
        async with write_transaction(self._engine) as conn:
            await conn.execute(insert(device_credentials).values(**self._row(issued, secret_hash)))
        return issued

    async def rotate(self, device_id: str, grace_s: float) -> IssuedCredentials:
        """Add a key; the device's other keys keep working for ``grace_s`` seconds more.

        A key that already ends sooner keeps its earlier end. ``grace_s=0`` ends them now.
        """
        if grace_s < 0:
            raise ValueError(f"grace_s must not be negative, not {grace_s!r}")
        issued, secret_hash = _new_key(device_id)
        now = now_ms()
        end = now + round(grace_s * 1000)
        table = device_credentials
        async with write_transaction(self._engine) as conn:
            await conn.execute(
                update(table)
                .where(table.c.device_id == device_id)
                .where(or_(table.c.expires_at.is_(None), table.c.expires_at > end))
                .values(expires_at=end)
            )
            await conn.execute(insert(table).values(**self._row(issued, secret_hash, now)))
        return issued

    async def revoke(self, device_id: str) -> list[str]:
        """Delete every key of ``device_id``; return their user names (empty: there were none)."""
        table = device_credentials
        async with write_transaction(self._engine) as conn:
            names = await conn.execute(
                select(table.c.username).where(table.c.device_id == device_id)
            )
            usernames = sorted(names.scalars())
            await conn.execute(delete(table).where(table.c.device_id == device_id))
        return usernames

    async def discard(self, usernames: list[str]) -> None:
        """Delete the keys ``usernames`` (a new key the broker could not be told about)."""
        table = device_credentials
        async with write_transaction(self._engine) as conn:
            await conn.execute(delete(table).where(table.c.username.in_(usernames)))

    async def verify(self, username: str, secret: str, client_id: str) -> str | None:
        """The device id when ``username``/``secret`` is a valid key and ``client_id`` its device.

        Refuses keys past their end and client ids other than the key's device id. Brokers
        check against their own copy of the keys; this is the store's answer to the same
        question (for tools, tests, and anything that authenticates devices outside MQTT).
        """
        parts = split_username(username)
        key = None
        if parts is not None and parts[0] == client_id:
            async with self._engine.connect() as conn:
                row = (
                    await conn.execute(
                        select(device_credentials).where(device_credentials.c.username == username)
                    )
                ).first()
            key = CredentialKey.from_row(row) if row is not None else None
        right = matches(secret, key.secret_hash if key else _NO_HASH)
        if key is None or not right or not key.valid_at(now_ms()):
            return None
        return key.device_id

    async def usernames(self, device_id: str) -> list[str]:
        """The user names of every stored key of ``device_id``, expired ones included."""
        return [key.username for key in await self.keys(device_id)]

    async def keys(self, device_id: str | None = None) -> list[CredentialKey]:
        """Every stored key (of one device, if given), oldest first."""
        table = device_credentials
        query = select(table).order_by(table.c.created_at, table.c.username)
        if device_id is not None:
            query = query.where(table.c.device_id == device_id)
        async with self._engine.connect() as conn:
            return [CredentialKey.from_row(row) for row in await conn.execute(query)]

    async def expire_due(self, now: int) -> list[str]:
        """Delete the keys whose grace period ended by ``now`` (epoch ms); return their names."""
        table = device_credentials
        due = table.c.expires_at <= now
        async with write_transaction(self._engine) as conn:
            names = await conn.execute(select(table.c.username).where(due))
            usernames = sorted(names.scalars())
            if usernames:
                await conn.execute(delete(table).where(table.c.username.in_(usernames)))
        return usernames

    async def fingerprint(self) -> Fingerprint:
        """See :data:`Fingerprint`; one aggregate over the table, no rows fetched."""
        table = device_credentials
        query = select(
            func.count(), func.max(table.c.created_at), func.min(table.c.expires_at)
        ).select_from(table)
        async with self._engine.connect() as conn:
            count, newest, earliest_end = (await conn.execute(query)).one()
        return int(count), int(newest or 0), int(earliest_end if earliest_end is not None else -1)

    @staticmethod
    def _row(
        issued: IssuedCredentials, secret_hash: str, now: int | None = None
    ) -> dict[str, object]:
        return {
            "username": issued.username,
            "device_id": issued.device_id,
            "secret_hash": secret_hash,
            "created_at": now_ms() if now is None else now,
            "expires_at": None,
        }
