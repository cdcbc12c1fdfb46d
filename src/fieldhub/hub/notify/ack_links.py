"""Acknowledge from the message: signed, expiring, single-use links in alarm notifications.

A link is ``<public_url>/ack/<token>``; the token is the URL-safe payload (alarm id,
recipient, expiry, a random nonce) and its signature under the hub's link key
(``hub/auth/links.py``: the one key and rule of every link the hub signs). Whoever holds a link may
acknowledge that one alarm, once, until it expires; nothing else.

Why a link is minted for each delivery attempt (:meth:`AckLinks.prepare`) rather than stored
with the notification: the token never sits in the database or in the outbox's API, and a
step sent days after the raise still gets its full lifetime. Why a link is used only by a POST
from its page: mail scanners and chat previews fetch every link in a message; a GET shows the
alarm and a button, and changes nothing.

Refusals are counted by reason (``forged``, ``expired``, ``used``): a rising ``forged`` count
is someone guessing.
"""

from __future__ import annotations

import re
import secrets
from collections import Counter
from dataclasses import dataclass, replace
from functools import partial
from typing import Final

from sqlalchemy import delete, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncEngine

from fieldhub.clock import now_ms
from fieldhub.hub.auth.links import b64, sign, signed, unb64
from fieldhub.hub.errors import Gone, NotFound
from fieldhub.hub.notify.escalation import EVENT_REMINDER, EVENT_STEP
from fieldhub.hub.notify.records import ChannelRecord, NotificationRecord
from fieldhub.hub.store.schema import ack_link_uses
from fieldhub.hub.store.writes import Writes

__all__ = ["AckLinks", "LinkClaim", "LinkExpired", "LinkForged", "LinkUsed"]

MAX_TOKEN: Final = 512
LINKED_EVENTS: Final = frozenset({"alarm.raised", EVENT_STEP, EVENT_REMINDER})
"""Notifications that ask someone to act carry a link; a clear or a test does not."""
_DOMAIN: Final = b"fieldhub ack link v1\x00"
_RECIPIENT = re.compile(r"^[a-z0-9:_.@-]{1,64}$")
_TOKEN = re.compile(r"^[A-Za-z0-9_-]{1,400}\.[A-Za-z0-9_-]{43}$")


class LinkForged(NotFound):
    """Not a link this hub made (or one altered): answered like any unknown address."""


class LinkExpired(Gone):
    """The link's time is over."""


class LinkUsed(Gone):
    """The link was used already."""


@dataclass(frozen=True, slots=True)
class LinkClaim:
    """What a valid token says."""

    alarm_id: int
    recipient: str
    expires_at: int
    nonce: str

    @property
    def actor(self) -> str:
        """Who acknowledges through the link, as the alarm's history and the audit log say."""
        return f"link:{self.recipient}"


class AckLinks:
    """Mints and checks acknowledge links of one hub (see the module's text).

    Args:
        key: the hub's link key (``auth.links.load_link_key``).
        public_url: the hub's address as recipients reach it, without a trailing slash.
        ttl_s: how long a link works.
        engine, writes: where the links already used are kept.
    """

    def __init__(
        self, key: bytes, public_url: str, ttl_s: int, *, engine: AsyncEngine, writes: Writes
    ) -> None:
        self._key = key
        self._engine = engine
        self._writes = writes
        self.public_url = public_url.rstrip("/")
        self.ttl_ms = ttl_s * 1000
        self.refusals: Counter[str] = Counter()

    def mint(self, alarm_id: int, recipient: str, *, now: int | None = None) -> str:
        """A new token for ``recipient`` to acknowledge ``alarm_id``, valid from ``now``."""
        if not _RECIPIENT.fullmatch(recipient):
            raise ValueError(f"recipient {recipient!r}: 1-64 of a-z 0-9 : _ . @ -")
        expires_at = (now_ms() if now is None else now) + self.ttl_ms
        payload = f"{alarm_id}|{recipient}|{expires_at}|{secrets.token_hex(16)}".encode()
        return f"{b64(payload)}.{sign(self._key, _DOMAIN, payload)}"

    def url(self, token: str) -> str:
        """The address of a token's page."""
        return f"{self.public_url}/ack/{token}"

    def check(self, token: str, *, now: int | None = None) -> LinkClaim:
        """What ``token`` says, if this hub made it and it has not expired (whether it was
        used already: :meth:`was_used`).

        Raises:
            LinkForged: malformed, altered or signed with another key.
            LinkExpired: past its expiry.
        """
        claim = self._verified(token)
        if claim is None:
            self.refusals["forged"] += 1
            raise LinkForged("no such page")
        if claim.expires_at <= (now_ms() if now is None else now):
            self.refusals["expired"] += 1
            raise LinkExpired("this link has expired")
        return claim

    async def was_used(self, claim: LinkClaim) -> bool:
        """True (and counted as a refusal) when the link of ``claim`` was used already."""
        query = select(ack_link_uses.c.nonce).where(ack_link_uses.c.nonce == claim.nonce)
        async with self._engine.connect() as conn:
            used = (await conn.execute(query)).first() is not None
        if used:
            self.refusals["used"] += 1
        return used

    async def spend(self, claim: LinkClaim) -> None:
        """Use up the link of ``claim``; uses of expired links are forgotten on the way
        (those are refused as expired anyway).

        Raises:
            LinkUsed: it was used already (also by a request racing this one).
        """
        if not await self._writes.run(partial(_spend, claim=claim, now=now_ms()), urgent=True):
            self.refusals["used"] += 1
            raise LinkUsed("this link was used already")

    def prepare(
        self, notification: NotificationRecord, channel: ChannelRecord
    ) -> NotificationRecord:
        """The message of one delivery attempt: an alarm notification that asks to act gets
        a fresh ``acknowledge_url`` for its channel (the worker's ``prepare``)."""
        alarm_id = notification.body.get("alarm")
        if notification.event not in LINKED_EVENTS or type(alarm_id) is not int:
            return notification
        token = self.mint(alarm_id, f"channel:{channel.id}")
        return replace(notification, body={**notification.body, "acknowledge_url": self.url(token)})

    def _verified(self, token: str) -> LinkClaim | None:
        if len(token) > MAX_TOKEN or not _TOKEN.fullmatch(token):
            return None
        encoded, mac = token.split(".")
        try:
            payload = unb64(encoded)
        except ValueError:  # binascii.Error is one
            return None
        if b64(payload) != encoded or not signed(self._key, _DOMAIN, payload, mac):
            return None
        try:
            alarm, recipient, expires, nonce = payload.decode("ascii").split("|")
            return LinkClaim(int(alarm), recipient, int(expires), nonce)
        except ValueError:  # signed by us, so never: but a parse error is no 500
            return None


def _spend(conn: Connection, *, claim: LinkClaim, now: int) -> bool:
    conn.execute(delete(ack_link_uses).where(ack_link_uses.c.expires_at < now))
    dialect = postgresql if conn.dialect.name == "postgresql" else sqlite
    added = conn.execute(
        dialect.insert(ack_link_uses)
        .values(
            nonce=claim.nonce, alarm_id=claim.alarm_id, used_at=now, expires_at=claim.expires_at
        )
        .on_conflict_do_nothing(index_elements=["nonce"])
    )
    return bool(added.rowcount)
