"""Subscribing a test's channel to every alarm change, as an admin would through the API."""

from __future__ import annotations

from fieldhub.hub.app import Hub
from fieldhub.hub.auth.rules import principal_for
from fieldhub.hub.notify.subscriptions import MAX_PER_HOUR, Subscription, SubscriptionSpec

ADMIN = principal_for(via="session", user_id=0, name="test-admin", role="admin", sites=[])


async def hear_every_change(hub: Hub, channel_id: int) -> Subscription:
    """A hub-wide subscription of ``channel_id`` to every alarm raised and cleared, with no
    grouping and no rate limit to speak of: each change is its own message, at once (for tests
    that count messages change by change; grouping has its own tests)."""
    spec = SubscriptionSpec(channel_id=channel_id, group_interval_s=0, max_per_hour=MAX_PER_HOUR)
    return await hub.notifications.subscriptions.create(spec, ADMIN, owner_id=None)
