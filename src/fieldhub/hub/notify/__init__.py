"""Notifications: channels (webhook, e-mail, MQTT), a durable outbox and its delivery worker.

Why an outbox in the database (shared DESIGN §7): whoever decides to notify (the alarms
engine) writes the notification in the same transaction as the change it is about, so a
crash can neither lose it nor send a notification for a change that was rolled back; the
worker delivers after the commit, retries with back-off and logs every attempt. See
``docs/notifications.md``.
"""

from fieldhub.hub.notify.outbox import enqueue
from fieldhub.hub.notify.records import NewNotification

__all__ = ["NewNotification", "enqueue"]
