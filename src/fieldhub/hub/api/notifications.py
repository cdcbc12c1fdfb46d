"""Notification channels and the outbox, for admins (docs/notifications.md).

Channels: list, add, read, change, delete, and send a test message. The outbox: what was
sent, what waits, what is dead, each with its delivery log. Every user may list the enabled
channels' ids, names and kinds (``/choices``, nothing of their config): what a subscription
of their own may name.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request, Response

from fieldhub.hub.api.deps import get_hub
from fieldhub.hub.api.fields import RowId
from fieldhub.hub.api.notification_models import (
    ChannelChoice,
    ChannelCreate,
    ChannelOut,
    ChannelUpdate,
    NotificationDetail,
    NotificationId,
    NotificationOut,
)
from fieldhub.hub.api.security import client_address, require
from fieldhub.hub.auth import Permission, Principal
from fieldhub.hub.notify.records import State

channels = APIRouter(prefix="/api/notification-channels", tags=["notifications"])
outbox = APIRouter(prefix="/api/notifications", tags=["notifications"])
Reader = Annotated[Principal, require(Permission.NOTIFICATIONS_READ)]
Writer = Annotated[Principal, require(Permission.NOTIFICATIONS_WRITE)]
Subscriber = Annotated[Principal, require(Permission.SUBSCRIPTIONS_READ)]


@channels.get("", summary="List notification channels")
async def list_channels(request: Request, _: Reader) -> list[ChannelOut]:
    """Every channel, by name (secrets never shown: ``secret_set`` says if one is)."""
    found = await get_hub(request).notifications.channels()
    return [ChannelOut.from_record(c) for c in found]


@channels.post("", status_code=201, summary="Add a notification channel")
async def create_channel(body: ChannelCreate, request: Request, who: Writer) -> ChannelOut:
    """A webhook (http/https URL, HMAC secret), e-mail (recipients; the hub's SMTP server must
    be configured) or MQTT (a topic under ``fh/notify/``) channel. 422 names a bad field."""
    channel = await get_hub(request).notifications.create_channel(
        body.name,
        body.kind,
        body.config,
        enabled=body.enabled,
        actor=who.actor,
        source=client_address(request),
    )
    return ChannelOut.from_record(channel)


@channels.get("/choices", summary="Channels a subscription may name")
async def channel_choices(request: Request, _: Subscriber) -> list[ChannelChoice]:
    """The enabled channels' ids, names and kinds, by name, for every user: their config
    (addresses, URLs, secrets) stays the admins'."""
    found = await get_hub(request).notifications.channels()
    return [ChannelChoice(id=c.id, name=c.name, kind=c.kind) for c in found if c.enabled]


@channels.get("/{channel_id}", summary="Get a notification channel")
async def get_channel(channel_id: RowId, request: Request, _: Reader) -> ChannelOut:
    """One channel."""
    return ChannelOut.from_record(await get_hub(request).notifications.channel(channel_id))


@channels.patch("/{channel_id}", summary="Change a notification channel")
async def update_channel(
    channel_id: RowId, body: ChannelUpdate, request: Request, who: Writer
) -> ChannelOut:
    """Rename, reconfigure (a webhook secret left out is kept) or enable/disable. A disabled
    channel's notifications wait, pending, until it is enabled."""
    channel = await get_hub(request).notifications.update_channel(
        channel_id,
        name=body.name,
        config=body.config,
        enabled=body.enabled,
        actor=who.actor,
        source=client_address(request),
    )
    return ChannelOut.from_record(channel)


@channels.delete("/{channel_id}", status_code=204, summary="Delete a notification channel")
async def delete_channel(channel_id: RowId, request: Request, who: Writer) -> Response:
    """Delete it; its pending notifications become dead (kept, with why, in the outbox)."""
    await get_hub(request).notifications.delete_channel(
        channel_id, actor=who.actor, source=client_address(request)
    )
    return Response(status_code=204)


@channels.post("/{channel_id}/test", status_code=202, summary="Send a test message")
async def test_channel(channel_id: RowId, request: Request, who: Writer) -> NotificationOut:
    """Enqueue a test message (event ``test``); follow it at ``/api/notifications/{id}``."""
    record = await get_hub(request).notifications.send_test(channel_id, actor=who.actor)
    return NotificationOut.from_record(record)


@outbox.get("", summary="List notifications")
async def list_notifications(
    request: Request,
    _: Reader,
    state: State | None = None,
    channel_id: RowId | None = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    before: Annotated[NotificationId | None, Query(description="the last id of a page")] = None,
) -> list[NotificationOut]:
    """The outbox, newest first; ``state=dead`` for what gave up (with its last error)."""
    found = await get_hub(request).notifications.notifications(
        state=state, channel_id=channel_id, limit=limit, before=before
    )
    return [NotificationOut.from_record(n) for n in found]


@outbox.get("/{notification_id}", summary="Get a notification and its delivery log")
async def get_notification(
    notification_id: NotificationId, request: Request, _: Reader
) -> NotificationDetail:
    """One notification with every delivery attempt (when, status, latency, error)."""
    record, log = await get_hub(request).notifications.notification(notification_id)
    return NotificationDetail.with_log(record, log)
