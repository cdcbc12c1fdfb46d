"""The tables of alarms and of the notifications they send (hub/alarms/, hub/notify/).

Part of the hub's schema (``store/schema.py``, which lists every table in ``ALL_TABLES``), kept
apart because they are a third of it; the same rules hold: epoch milliseconds, and Alembic
migrations that create exactly these tables.
"""

from __future__ import annotations

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    Index,
    Integer,
    PrimaryKeyConstraint,
    String,
    Table,
    UniqueConstraint,
    text,
)

from fieldhub.hub.store.metadata import metadata

# Notifications (hub/notify/): channels, the durable outbox, and one row per delivery attempt.
# The outbox is written in the transaction that decides to notify (an alarm change), and
# delivered after the commit; a delivery marks its row in a transaction of its own.

notification_channels = Table(
    "notification_channels",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("name", String(64), nullable=False),
    Column("kind", String(16), nullable=False),  # webhook | email | mqtt
    # webhook: {"url", "secret"}; email: {"to": [...]}; mqtt: {"topic"}. Secrets: never answered.
    Column("config", JSON, nullable=False, default=dict),
    Column("enabled", Boolean, nullable=False, default=True),
    Column("created_at", BigInteger, nullable=False),
    Column("created_by", String(128), nullable=False),
    UniqueConstraint("name", name="uq_notification_channels_name"),
)

notifications = Table(
    "notifications",
    metadata,
    Column("id", String(32), primary_key=True),  # random: X-Fieldhub-Delivery, across hubs
    Column("channel_id", Integer, nullable=False),
    Column("dedup_key", String(256), nullable=False),  # the same key twice: one notification
    Column("event", String(64), nullable=False),  # "alarm.raised", "test", ...
    Column("subject", String(256), nullable=False),
    Column("body", JSON, nullable=False, default=dict),
    Column("created_at", BigInteger, nullable=False),
    Column("state", String(16), nullable=False),  # pending | delivered | dead
    Column("attempts", Integer, nullable=False, default=0),
    # Due time while pending; a claimed one is leased by moving it past the send's timeout.
    Column("next_attempt_at", BigInteger, nullable=False),
    Column("leased_by", String(64), nullable=True),  # the hub instance sending it now
    Column("delivered_at", BigInteger, nullable=True),
    Column("last_error", String(1024), nullable=False, default=""),
    # Routing (hub/notify/routing.py): the subscription it was sent for (its rate limit counts
    # these) and, for e-mail, the subscription's own recipients (empty: the channel's).
    Column("subscription_id", Integer, nullable=True),
    Column("recipients", JSON, nullable=False, default=list, server_default="[]"),
    UniqueConstraint("dedup_key", name="uq_notifications_dedup_key"),
    Index("ix_notifications_due", "state", "next_attempt_at"),
    Index("ix_notifications_created", "created_at"),
    Index("ix_notifications_subscription", "subscription_id", "created_at"),
)

# Who hears which alarm changes (hub/notify/subscriptions.py). owner_id null: a hub-wide
# subscription (admins' to manage, every site), as the upgrade gives each older channel.
notification_subscriptions = Table(
    "notification_subscriptions",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("owner_id", Integer, nullable=True),
    Column("channel_id", Integer, nullable=False),
    Column("recipients", JSON, nullable=False, default=list),  # e-mail: the owner's addresses
    Column("sites", JSON, nullable=False, default=list),  # empty: every site the owner sees
    Column("min_severity", String(16), nullable=False),
    Column("rules", JSON, nullable=False, default=list),  # ids or globs; empty: every rule
    Column("changes", JSON, nullable=False, default=list),  # raised, cleared, ...
    Column("quiet_hours", JSON, nullable=True),
    Column("group_interval_s", Integer, nullable=False),
    Column("max_per_hour", Integer, nullable=False),
    Column("enabled", Boolean, nullable=False, default=True),
    Column("created_at", BigInteger, nullable=False),
    Column("created_by", String(128), nullable=False),
    Index("ix_notification_subscriptions_owner", "owner_id"),
)

# Grouping (hub/notify/digest.py): an open group per (subscription, rule, change kind) with
# when its digest is due, and the changes gathered for it, one row each, until that digest.
notification_groups = Table(
    "notification_groups",
    metadata,
    Column("subscription_id", Integer, nullable=False),
    Column("rule_id", String(64), nullable=False),
    Column("kind", String(16), nullable=False),
    Column("opened_at", BigInteger, nullable=False),
    Column("flush_at", BigInteger, nullable=False),
    PrimaryKeyConstraint("subscription_id", "rule_id", "kind", name="pk_notification_groups"),
    Index("ix_notification_groups_due", "flush_at"),
)

notification_gathered = Table(
    "notification_gathered",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("subscription_id", Integer, nullable=False),
    Column("rule_id", String(64), nullable=False),
    Column("kind", String(16), nullable=False),
    Column("alarm_id", BigInteger, nullable=False),
    Column("severity", String(16), nullable=False),
    Column("at", BigInteger, nullable=False),
    Column("item", JSON, nullable=False),  # the change as the digest lists it
    UniqueConstraint("subscription_id", "alarm_id", "kind", "at", name="uq_notification_gathered"),
    Index("ix_notification_gathered_group", "subscription_id", "rule_id", "kind", "id"),
)

notification_deliveries = Table(
    "notification_deliveries",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("notification_id", String(32), nullable=False),
    Column("at", BigInteger, nullable=False),
    Column("ok", Boolean, nullable=False),
    Column("status", String(64), nullable=False, default=""),  # HTTP status, SMTP reply code
    Column("latency_ms", Integer, nullable=False),
    Column("error", String(1024), nullable=False, default=""),
    Index("ix_notification_deliveries_notification", "notification_id", "at"),
)

# Alarms (hub/alarms/): rules, alarms with their history, and the rules' timers per device.
# One open (not cleared) alarm per (device, rule) is the partial unique index's promise, on
# both databases: racing raises (two hubs, two writes) leave one alarm.

alarm_rules = Table(
    "alarm_rules",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("name", String(128), nullable=False),
    Column("enabled", Boolean, nullable=False),
    Column("definition", JSON, nullable=False),  # the rule's dict form (alarms/rules.py)
    Column("created_at", BigInteger, nullable=False),
    Column("updated_at", BigInteger, nullable=False),
    Column("updated_by", String(128), nullable=False),
)

alarms = Table(
    "alarms",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("rule_id", String(64), nullable=False),
    Column("device_id", String(64), nullable=False),
    Column("severity", String(16), nullable=False),
    Column("state", String(16), nullable=False),  # active | acknowledged | cleared
    # False once the condition is gone: an active alarm then is latched (never acknowledged).
    Column("condition_active", Boolean, nullable=False),
    Column("raised_at", BigInteger, nullable=False),
    Column("value", JSON, nullable=True),  # the value that raised it
    Column("message", String(1024), nullable=False),
    Column("acknowledged_by", String(128), nullable=True),
    Column("acknowledged_at", BigInteger, nullable=True),
    Column("ack_comment", String(1024), nullable=True),
    Column("cleared_at", BigInteger, nullable=True),
    Column("cleared_by", String(128), nullable=True),
    Column("clear_reason", String(1024), nullable=True),
    Column("shelved_until", BigInteger, nullable=True),
    Column("assignee", String(128), nullable=True),
    Column("updated_at", BigInteger, nullable=False),
    # Raised inside a maintenance window that still covers it (its notifications are held).
    Column("in_maintenance", Boolean, nullable=False, default=False, server_default=text("false")),
    # Its (device, rule) changes too often: notifications held until it settles.
    Column("flapping", Boolean, nullable=False, default=False, server_default=text("false")),
    Index(
        "uq_alarms_open",
        "device_id",
        "rule_id",
        unique=True,
        sqlite_where=text("state != 'cleared'"),
        postgresql_where=text("state != 'cleared'"),
    ),
    Index("ix_alarms_rule", "rule_id"),
    Index("ix_alarms_device", "device_id"),
    # The sweeper's once-a-second look for shelvings and maintenance marks that end: an index
    # each, so it never scans the history of cleared alarms.
    Index("ix_alarms_shelved_until", "shelved_until"),
    Index("ix_alarms_in_maintenance", "in_maintenance"),
)

alarm_changes = Table(
    "alarm_changes",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("alarm_id", Integer, nullable=False),
    Column("at", BigInteger, nullable=False),
    Column("actor", String(128), nullable=False),  # "hub" for the engine, "user:alice"
    Column("kind", String(16), nullable=False),  # raised | acknowledged | cleared | shelved | …
    Column("from_state", String(16), nullable=True),
    Column("to_state", String(16), nullable=False),
    Column("comment", String(1024), nullable=False),
    Index("ix_alarm_changes_alarm", "alarm_id"),
)

alarm_rule_state = Table(
    "alarm_rule_state",
    metadata,
    Column("device_id", String(64), nullable=False),
    Column("rule_id", String(64), nullable=False),
    Column("pending_since", BigInteger, nullable=True),  # condition true since, not yet raised
    Column("gone_since", BigInteger, nullable=True),  # condition false since, not yet cleared
    Column("value", JSON, nullable=True),  # what made it pending: the alarm is raised with it
    Column("message", String(1024), nullable=False, default=""),
    PrimaryKeyConstraint("device_id", "rule_id", name="pk_alarm_rule_state"),
)

# The windows of N-of-M counts (hub/alarms/counting.py): per (device, rule), the marks of the
# last values (threshold) or the times of the last events (event), oldest first, at most 100.
alarm_count_windows = Table(
    "alarm_count_windows",
    metadata,
    Column("device_id", String(64), nullable=False),
    Column("rule_id", String(64), nullable=False),
    Column("window", JSON, nullable=False),
    PrimaryKeyConstraint("device_id", "rule_id", name="pk_alarm_count_windows"),
)

# Escalation (hub/notify/escalation.py): named policies, the outbox rows each alarm's
# escalation enqueued (to cancel them when it is acknowledged or cleared), and the nonces of
# acknowledge links already used (a link works once).

escalation_policies = Table(
    "escalation_policies",
    metadata,
    Column("id", String(64), primary_key=True),  # what a rule's ``escalation`` names
    Column("name", String(128), nullable=False),
    Column("steps", JSON, nullable=False),  # [{"after_s": 600, "channels": [1, 2]}, ...]
    Column("repeat_every_s", Integer, nullable=True),
    Column("repeat_limit", Integer, nullable=False, default=0),
    Column("created_at", BigInteger, nullable=False),
    Column("updated_at", BigInteger, nullable=False),
    Column("updated_by", String(128), nullable=False),
)

# Maintenance windows (hub/alarms/maintenance.py): while one covers a device and a rule, its
# alarms are raised and marked, their notifications held until the window's end.
maintenance_windows = Table(
    "maintenance_windows",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("name", String(128), nullable=False),
    Column("scope", JSON, nullable=False),  # {"sites", "labels", "devices", "rules"}: empty = all
    Column("schedule", JSON, nullable=False),  # {"kind": "once" | "weekly", ...}
    Column("created_at", BigInteger, nullable=False),
    Column("updated_at", BigInteger, nullable=False),
    Column("updated_by", String(128), nullable=False),
)

alarm_escalations = Table(
    "alarm_escalations",
    metadata,
    Column("notification_id", String(32), primary_key=True),
    Column("alarm_id", Integer, nullable=False),
    Index("ix_alarm_escalations_alarm", "alarm_id"),
)

ack_link_uses = Table(
    "ack_link_uses",
    metadata,
    Column("nonce", String(32), primary_key=True),
    Column("alarm_id", Integer, nullable=False),
    Column("used_at", BigInteger, nullable=False),
    Column("expires_at", BigInteger, nullable=False),  # forgotten after: the link is dead anyway
)

# Flapping (hub/alarms/flapping.py): the recent changes of each (device, rule), so that the
# count and the settling timer survive a restart and are shared by every hub.
alarm_flapping = Table(
    "alarm_flapping",
    metadata,
    Column("device_id", String(64), nullable=False),
    Column("rule_id", String(64), nullable=False),
    Column("changes", JSON, nullable=False),  # epoch ms of the changes within the rule's window
    Column("flapping_since", BigInteger, nullable=True),  # None: not flapping
    PrimaryKeyConstraint("device_id", "rule_id", name="pk_alarm_flapping"),
    Index("ix_alarm_flapping_since", "flapping_since"),  # the sweeper looks for flapping ones
)
