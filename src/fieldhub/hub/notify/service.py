"""The notification wing's front: channels, enqueueing, the outbox for the API, the worker.

The API and other services come here; the alarms engine enqueues with
:func:`fieldhub.hub.notify.outbox.enqueue` inside its own write job, then calls
:meth:`NotificationService.wake`.
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Awaitable, Callable, Sequence
from functools import partial
from typing import Any

from sqlalchemy.ext.asyncio import AsyncEngine

from fieldhub.clock import now_ms
from fieldhub.hub.config import HubSettings
from fieldhub.hub.errors import Invalid
from fieldhub.hub.notify import channel_store, outbox
from fieldhub.hub.notify.channel_config import check_config
from fieldhub.hub.notify.channels.base import Sender
from fieldhub.hub.notify.channels.email import EmailSender, SmtpServer
from fieldhub.hub.notify.channels.mqtt import MqttSender, Publish
from fieldhub.hub.notify.channels.webhook import WebhookSender
from fieldhub.hub.notify.digest import DigestFlusher
from fieldhub.hub.notify.outbox import Screen
from fieldhub.hub.notify.records import (
    ChannelKind,
    ChannelRecord,
    DeliveryRecord,
    NewNotification,
    NotificationRecord,
    State,
)
from fieldhub.hub.notify.subscription_service import SubscriptionService
from fieldhub.hub.notify.worker import DeliverySettings, DeliveryWorker, Prepare
from fieldhub.hub.store.writes import Writes

__all__ = ["NotificationService", "notification_service"]

Audit = Callable[..., Awaitable[None]]


class NotificationService:
    """Channels, the outbox and its delivery worker of one hub process.

    Args:
        engine: for reads.
        writes: where write jobs run (the hub's writer).
        smtp: the hub's mail server (None: e-mail channels cannot be made).
        publish, connected: the hub's bus (MQTT channels).
        audit: ``AuditLog.record``: channel changes are audited.
        screen, prepare: see :class:`DeliveryWorker` (escalation, acknowledge links).
    """

    def __init__(
        self,
        engine: AsyncEngine,
        writes: Writes,
        *,
        settings: DeliverySettings,
        instance: str,
        smtp: SmtpServer | None,
        publish: Publish,
        connected: Callable[[], bool],
        audit: Audit,
        screen: Screen | None = None,
        prepare: Prepare | None = None,
    ) -> None:
        self._engine = engine
        self._writes = writes
        self._smtp = smtp
        self._audit = audit
        self._senders: dict[str, Sender] = {
            "webhook": WebhookSender(settings.timeout_s),
            "email": EmailSender(smtp, settings.timeout_s),
            "mqtt": MqttSender(publish, connected),
        }
        self.worker = DeliveryWorker(
            writes, self._senders, settings, instance, screen=screen, prepare=prepare, reads=engine
        )
        self.flusher = DigestFlusher(writes, self.worker.wake)
        self.subscriptions = SubscriptionService(engine, writes, audit)

    # -- the worker ---------------------------------------------------------------------------
    async def run(self) -> None:
        """Deliver, and send digests when due, until stopped or cancelled (a hub task)."""
        async with asyncio.TaskGroup() as tasks:
            tasks.create_task(self.worker.run(), name="notify-delivery")
            tasks.create_task(self.flusher.run(), name="notify-digests")

    async def stop(self) -> None:
        """Stop delivering: sends under way get a short grace, are recorded, or stay pending
        for the next start (see ``DeliveryWorker.stop``)."""
        self.flusher.stop()
        await self.worker.stop(self.worker.settings.stop_grace_s)

    def attempt_counts(self) -> dict[str, int]:
        """Delivery attempts since start by outcome: delivered, retried, dead (metrics)."""
        return self.worker.counts.as_dict()

    def wake(self) -> None:
        """Deliver now what was just committed to the outbox; let the digest flusher see
        the groups opened with it."""
        self.worker.wake()
        self.flusher.wake()

    async def close(self) -> None:
        """Close the senders' connections (after the worker stopped)."""
        for sender in self._senders.values():
            await sender.close()

    # -- channels -------------------------------------------------------------------------------
    async def channels(self) -> list[ChannelRecord]:
        """Every channel, by name."""
        return await channel_store.list_channels(self._engine)

    async def channel(self, channel_id: int) -> ChannelRecord:
        """One channel (raises ``ChannelNotFound``)."""
        return await channel_store.get(self._engine, channel_id)

    def _check_kind(self, kind: ChannelKind) -> None:
        if kind == "email" and self._smtp is None:
            raise Invalid(
                "e-mail channels need the hub's SMTP server: set FIELDHUB_SMTP_HOST",
                ("body", "kind"),
            )

    async def create_channel(
        self,
        name: str,
        kind: ChannelKind,
        config: dict[str, Any],
        *,
        enabled: bool = True,
        actor: str,
        source: str = "",
    ) -> ChannelRecord:
        """Add a channel.

        Raises:
            Invalid: the config breaks a rule of its kind (naming the field).
            ChannelNameTaken: the name is in use.
        """
        self._check_kind(kind)
        values = {
            "name": name,
            "kind": kind,
            "config": check_config(kind, config),
            "enabled": enabled,
            "created_at": now_ms(),
            "created_by": actor,
        }
        channel = await self._writes.run(partial(channel_store.create, values=values), urgent=True)
        await self._audit(
            actor,
            "notification.channel.created",
            str(channel.id),
            source=source,
            detail={"name": name, "kind": kind},
        )
        return channel

    async def update_channel(
        self,
        channel_id: int,
        *,
        name: str | None = None,
        config: dict[str, Any] | None = None,
        enabled: bool | None = None,
        actor: str,
        source: str = "",
    ) -> ChannelRecord:
        """Change name, config (a secret not given is kept) or enabled (a disabled channel's
        notifications wait, pending, until it is enabled again).

        Raises:
            ChannelNotFound, Invalid, ChannelNameTaken.
        """
        current = await self.channel(channel_id)
        values: dict[str, Any] = {}
        if name is not None:
            values["name"] = name
        if config is not None:
            values["config"] = check_config(current.kind, config, old=current.config)
        if enabled is not None:
            values["enabled"] = enabled
        channel = await self._writes.run(
            partial(channel_store.update_channel, channel_id=channel_id, values=values), urgent=True
        )
        await self._audit(
            actor,
            "notification.channel.changed",
            str(channel_id),
            source=source,
            detail={"fields": sorted(values)},
        )
        if enabled:
            self.wake()
        return channel

    async def delete_channel(self, channel_id: int, *, actor: str, source: str = "") -> int:
        """Delete a channel; its pending notifications become dead (returned: how many).

        Raises:
            ChannelNotFound.
        """
        buried = await self._writes.run(
            partial(channel_store.remove, channel_id=channel_id, now=now_ms()), urgent=True
        )
        await self._audit(
            actor,
            "notification.channel.deleted",
            str(channel_id),
            source=source,
            detail={"pending_dropped": buried},
        )
        return buried

    # -- the outbox -------------------------------------------------------------------------------
    async def enqueue(self, items: Sequence[NewNotification]) -> int:
        """Enqueue in a transaction of its own and wake the worker; how many were new."""
        added = await self._writes.run(partial(outbox.enqueue, items=items, now=now_ms()))
        if added:
            self.wake()
        return added

    async def send_test(self, channel_id: int, *, actor: str) -> NotificationRecord:
        """Enqueue a test message on a channel (even a disabled one: it waits); the new one.

        Raises:
            ChannelNotFound.
        """
        now = now_ms()
        key = f"test:{channel_id}:{secrets.token_hex(8)}"

        def job(conn: Any) -> str | None:
            channel = channel_store.fetch(conn, channel_id)
            item = NewNotification(
                channel_id=channel.id,
                dedup_key=key,
                event="test",
                subject=f"fieldhub test message to channel {channel.name!r}",
                body={"message": "This is a test of a fieldhub notification channel.", "by": actor},
            )
            outbox.enqueue(conn, [item], now=now)
            return outbox.id_for(conn, key)

        new_id = await self._writes.run(job, urgent=True)
        if new_id is None:
            raise RuntimeError(f"the test notification {key!r} was not stored")
        self.wake()
        record, _ = await self.notification(new_id)
        return record

    async def notifications(
        self,
        *,
        state: State | None = None,
        channel_id: int | None = None,
        limit: int = 100,
        before: str | None = None,
    ) -> list[NotificationRecord]:
        """The outbox, newest first."""
        return await outbox.list_notifications(
            self._engine, state=state, channel_id=channel_id, limit=limit, before=before
        )

    async def notification(
        self, notification_id: str
    ) -> tuple[NotificationRecord, list[DeliveryRecord]]:
        """One notification and its delivery log (raises ``NotificationNotFound``)."""
        return await outbox.get(self._engine, notification_id)


def notification_service(
    settings: HubSettings,
    engine: AsyncEngine,
    writes: Writes,
    *,
    publish: Publish,
    connected: Callable[[], bool],
    audit: Audit,
    screen: Screen | None,
    prepare: Prepare | None,
) -> NotificationService:
    """The notifications of a hub with ``settings``: its SMTP server (if any) and delivery
    settings; MQTT notifications through the hub's bus (``publish``, ``connected``)."""
    smtp = None
    if settings.smtp_host:
        password = settings.smtp_password
        smtp = SmtpServer(
            host=settings.smtp_host,
            port=settings.smtp_port,
            starttls=settings.smtp_starttls,
            sender=settings.smtp_from,
            user=settings.smtp_user,
            password=password.get_secret_value() if password is not None else None,
        )
    return NotificationService(
        engine,
        writes,
        settings=DeliverySettings(
            max_attempts=settings.notify_max_attempts,
            retry_s=settings.notify_retry_s,
            retry_max_s=settings.notify_retry_max_s,
            timeout_s=settings.notify_timeout_s,
            concurrency=settings.notify_concurrency,
            keep_days=settings.notify_keep_days,
        ),
        instance=settings.instance,
        smtp=smtp,
        publish=publish,
        connected=connected,
        audit=audit,
        screen=screen,
        prepare=prepare,
    )
