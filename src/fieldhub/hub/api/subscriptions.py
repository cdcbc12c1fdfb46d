"""Notification subscriptions: who hears which alarms, where, when (docs/notifications.md).

Every user manages their own; admins anyone's, and hub-wide ones (no owner). The access rules
live in ``hub/notify/subscription_service.py``; another user's subscription is a 404.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Request, Response

from fieldhub.hub.api.deps import get_hub
from fieldhub.hub.api.fields import RowId
from fieldhub.hub.api.security import client_address, require
from fieldhub.hub.api.subscription_models import SubscriptionIn, SubscriptionOut
from fieldhub.hub.auth import Permission, Principal

router = APIRouter(prefix="/api/notification-subscriptions", tags=["notifications"])
Reader = Annotated[Principal, require(Permission.SUBSCRIPTIONS_READ)]
Writer = Annotated[Principal, require(Permission.SUBSCRIPTIONS_WRITE)]


@router.get("", summary="List notification subscriptions")
async def list_subscriptions(request: Request, who: Reader) -> list[SubscriptionOut]:
    """Yours (admins: everyone's), by id."""
    found = await get_hub(request).notifications.subscriptions.list(who)
    return [SubscriptionOut.of(s) for s in found]


@router.post("", status_code=201, summary="Add a notification subscription")
async def create_subscription(
    body: SubscriptionIn, request: Request, who: Writer
) -> SubscriptionOut:
    """Subscribe to alarm changes through a channel; 422 names a bad field."""
    service = get_hub(request).notifications.subscriptions
    spec, source = body.spec(), client_address(request)
    if "owner_id" in body.model_fields_set:
        created = await service.create(spec, who, owner_id=body.owner_id, source=source)
    else:
        created = await service.create(spec, who, source=source)
    return SubscriptionOut.of(created)


@router.get("/{subscription_id}", summary="Get a notification subscription")
async def get_subscription(
    subscription_id: RowId, request: Request, who: Reader
) -> SubscriptionOut:
    """One subscription."""
    found = await get_hub(request).notifications.subscriptions.get(subscription_id, who)
    return SubscriptionOut.of(found)


@router.put("/{subscription_id}", summary="Replace a notification subscription")
async def replace_subscription(
    subscription_id: RowId, body: SubscriptionIn, request: Request, who: Writer
) -> SubscriptionOut:
    """Replace its settings whole (``owner_id`` is ignored: the owner stays)."""
    changed = await get_hub(request).notifications.subscriptions.replace(
        subscription_id, body.spec(), who, source=client_address(request)
    )
    return SubscriptionOut.of(changed)


@router.delete("/{subscription_id}", status_code=204, summary="Delete a subscription")
async def delete_subscription(subscription_id: RowId, request: Request, who: Writer) -> Response:
    """Delete it, with what it gathered for its next digest."""
    await get_hub(request).notifications.subscriptions.delete(
        subscription_id, who, source=client_address(request)
    )
    return Response(status_code=204)
