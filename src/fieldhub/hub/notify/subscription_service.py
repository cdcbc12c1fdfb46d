"""Subscriptions for the API: users manage their own, admins anyone's (and hub-wide ones).

Who may touch a subscription is decided here, once: its owner, or a caller who may manage
notification channels (``notifications:read`` to see, ``notifications:write`` to change).
Anyone else's subscription looks exactly like one that does not exist (404). Every change
is audited.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from functools import partial

from sqlalchemy.ext.asyncio import AsyncEngine

from fieldhub.clock import now_ms
from fieldhub.hub.auth import Permission, Principal
from fieldhub.hub.errors import Invalid, Refused
from fieldhub.hub.notify import channel_store, subscription_store
from fieldhub.hub.notify.records import ChannelNotFound, ChannelRecord
from fieldhub.hub.notify.subscriptions import (
    Subscription,
    SubscriptionNotFound,
    SubscriptionSpec,
    check_spec,
)
from fieldhub.hub.store.writes import Writes

__all__ = ["SubscriptionService"]

Audit = Callable[..., Awaitable[None]]
_ANY = object()


class SubscriptionService:
    """Subscriptions' CRUD with its access rules (see the module's text)."""

    def __init__(self, engine: AsyncEngine, writes: Writes, audit: Audit) -> None:
        self._engine = engine
        self._writes = writes
        self._audit = audit

    async def list(self, who: Principal) -> list[Subscription]:
        """The caller's subscriptions; everyone's for those who may read channels."""
        everyone = who.can(Permission.NOTIFICATIONS_READ)
        return await subscription_store.list_subscriptions(
            self._engine, owner_id=None if everyone else who.user_id or -1
        )

    async def get(self, subscription_id: int, who: Principal) -> Subscription:
        """One subscription of the caller's (or anyone's, for channel readers).

        Raises:
            SubscriptionNotFound: none, or another's.
        """
        found = await subscription_store.get(self._engine, subscription_id)
        if found.owner_id != who.user_id and not who.can(Permission.NOTIFICATIONS_READ):
            raise SubscriptionNotFound(f"no notification subscription {subscription_id}")
        return found

    async def create(
        self, spec: SubscriptionSpec, who: Principal, *, owner_id: object = _ANY, source: str = ""
    ) -> Subscription:
        """A new subscription for ``owner_id`` (left out: the caller; None: hub-wide).

        Raises:
            Refused: for another owner, or hub-wide, without ``notifications:write``.
            Invalid: naming the field.
        """
        owner = who.user_id if owner_id is _ANY else owner_id
        if owner is not None and not isinstance(owner, int):
            raise Invalid("owner_id must be a user's id or null", ("body", "owner_id"))
        if owner != who.user_id and not who.can(Permission.NOTIFICATIONS_WRITE):
            raise Refused("you may subscribe only yourself (owner_id: your own id)")
        await self._checked(spec, owner)
        values = {
            **subscription_store.columns(spec),
            "owner_id": owner,
            "created_at": now_ms(),
            "created_by": who.actor,
        }
        created = await self._writes.run(
            partial(subscription_store.create, values=values), urgent=True
        )
        await self._audited(who, "created", created, source)
        return created

    async def subscribe_hub_wide(self, channel_id: int, *, actor: str) -> Subscription:
        """A catch-all for ``channel_id``: every alarm raised and cleared, every site (what
        the upgrade gives older channels; the demo's console gets one). For the hub's own
        callers: no permission is checked."""
        values = {
            **subscription_store.columns(SubscriptionSpec(channel_id=channel_id)),
            "owner_id": None,
            "created_at": now_ms(),
            "created_by": actor,
        }
        await self._channel(channel_id)
        created = await self._writes.run(
            partial(subscription_store.create, values=values), urgent=True
        )
        await self._audit(
            actor,
            "notification.subscription.created",
            f"subscription:{created.id}",
            detail={"owner_id": None, "channel_id": channel_id},
        )
        return created

    async def replace(
        self, subscription_id: int, spec: SubscriptionSpec, who: Principal, *, source: str = ""
    ) -> Subscription:
        """Replace a subscription's settings whole (its owner stays).

        Raises:
            SubscriptionNotFound, Refused, Invalid.
        """
        current = await self._writable(subscription_id, who)
        await self._checked(spec, current.owner_id)
        changed = await self._writes.run(
            partial(
                subscription_store.replace,
                subscription_id=subscription_id,
                values=subscription_store.columns(spec),
            ),
            urgent=True,
        )
        await self._audited(who, "changed", changed, source)
        return changed

    async def delete(self, subscription_id: int, who: Principal, *, source: str = "") -> None:
        """Delete a subscription and what it gathered for its next digest.

        Raises:
            SubscriptionNotFound, Refused.
        """
        current = await self._writable(subscription_id, who)
        await self._writes.run(
            partial(subscription_store.remove, subscription_id=subscription_id), urgent=True
        )
        await self._audited(who, "deleted", current, source)

    async def _writable(self, subscription_id: int, who: Principal) -> Subscription:
        current = await self.get(subscription_id, who)
        if current.owner_id != who.user_id and not who.can(Permission.NOTIFICATIONS_WRITE):
            raise Refused("only its owner or an admin may change a subscription")
        return current

    async def _checked(self, spec: SubscriptionSpec, owner_id: int | None) -> None:
        owner = await subscription_store.owner(self._engine, owner_id)
        if owner is None:
            raise Invalid(f"owner_id {owner_id}: no such user, or disabled", ("body", "owner_id"))
        check_spec(spec, await self._channel(spec.channel_id), owner)

    async def _channel(self, channel_id: int) -> ChannelRecord:
        try:
            return await channel_store.get(self._engine, channel_id)
        except ChannelNotFound:
            raise Invalid(
                f"channel_id {channel_id}: no such notification channel", ("body", "channel_id")
            ) from None

    async def _audited(
        self, who: Principal, what: str, subscription: Subscription, source: str
    ) -> None:
        await self._audit(
            who.actor,
            f"notification.subscription.{what}",
            f"subscription:{subscription.id}",
            source=source,
            detail={"owner_id": subscription.owner_id, "channel_id": subscription.channel_id},
        )
