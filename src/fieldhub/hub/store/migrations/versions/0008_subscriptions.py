"""Notification routing: subscriptions, grouping into digests, rate limits (``hub/notify/``).

Every channel made before this migration gets a hub-wide catch-all subscription (no owner,
every site, every rule, raised and cleared, the default grouping and rate limit), so that an
upgraded installation keeps hearing what it heard: every alarm raised and cleared.

Revision ID: 0008
Revises: 0007
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("notifications") as notifications:
        notifications.add_column(sa.Column("subscription_id", sa.Integer, nullable=True))
        notifications.add_column(
            sa.Column("recipients", sa.JSON, nullable=False, server_default="[]")
        )
    op.create_index(
        "ix_notifications_subscription", "notifications", ["subscription_id", "created_at"]
    )
    op.create_table(
        "notification_subscriptions",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("owner_id", sa.Integer, nullable=True),
        sa.Column("channel_id", sa.Integer, nullable=False),
        sa.Column("recipients", sa.JSON, nullable=False),
        sa.Column("sites", sa.JSON, nullable=False),
        sa.Column("min_severity", sa.String(16), nullable=False),
        sa.Column("rules", sa.JSON, nullable=False),
        sa.Column("changes", sa.JSON, nullable=False),
        sa.Column("quiet_hours", sa.JSON, nullable=True),
        sa.Column("group_interval_s", sa.Integer, nullable=False),
        sa.Column("max_per_hour", sa.Integer, nullable=False),
        sa.Column("enabled", sa.Boolean, nullable=False),
        sa.Column("created_at", sa.BigInteger, nullable=False),
        sa.Column("created_by", sa.String(128), nullable=False),
    )
    op.create_index(
        "ix_notification_subscriptions_owner", "notification_subscriptions", ["owner_id"]
    )
    op.create_table(
        "notification_groups",
        sa.Column("subscription_id", sa.Integer, nullable=False),
        sa.Column("rule_id", sa.String(64), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("opened_at", sa.BigInteger, nullable=False),
        sa.Column("flush_at", sa.BigInteger, nullable=False),
        sa.PrimaryKeyConstraint(
            "subscription_id", "rule_id", "kind", name="pk_notification_groups"
        ),
    )
    op.create_index("ix_notification_groups_due", "notification_groups", ["flush_at"])
    op.create_table(
        "notification_gathered",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("subscription_id", sa.Integer, nullable=False),
        sa.Column("rule_id", sa.String(64), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("alarm_id", sa.BigInteger, nullable=False),
        sa.Column("severity", sa.String(16), nullable=False),
        sa.Column("at", sa.BigInteger, nullable=False),
        sa.Column("item", sa.JSON, nullable=False),
        sa.UniqueConstraint(
            "subscription_id", "alarm_id", "kind", "at", name="uq_notification_gathered"
        ),
    )
    op.create_index(
        "ix_notification_gathered_group",
        "notification_gathered",
        ["subscription_id", "rule_id", "kind", "id"],
    )
    # The upgrade's promise: each existing channel keeps hearing every raise and clear.
    op.execute(
        "INSERT INTO notification_subscriptions (owner_id, channel_id, recipients, sites,"
        " min_severity, rules, changes, quiet_hours, group_interval_s, max_per_hour, enabled,"
        " created_at, created_by)"
        " SELECT NULL, id, '[]', '[]', 'info', '[]', '[\"raised\", \"cleared\"]', NULL, 60, 30,"
        " TRUE, created_at, 'upgrade' FROM notification_channels"
    )


def downgrade() -> None:
    op.drop_table("notification_gathered")
    op.drop_table("notification_groups")
    op.drop_table("notification_subscriptions")
    op.drop_index("ix_notifications_subscription", "notifications")
    with op.batch_alter_table("notifications") as notifications:
        notifications.drop_column("recipients")
        notifications.drop_column("subscription_id")
