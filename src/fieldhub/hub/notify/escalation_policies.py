"""Escalation policies as admins keep them: list, read, create, replace, delete, audited.

The shape of a policy (bounds of every field) is the API's model; what needs the other fields
or the database is checked here, once, for every door: steps in time order, reminders only
with an interval, channels that exist, no policy deleted while a rule names it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

from sqlalchemy import delete, insert, select, update
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncEngine

from fieldhub.clock import now_ms
from fieldhub.hub.errors import Conflict, Invalid, NotFound
from fieldhub.hub.notify.escalation import Policy, policy_from_row
from fieldhub.hub.store.audit import audit_row
from fieldhub.hub.store.schema import (
    alarm_rules,
    audit_log,
    escalation_policies,
    notification_channels,
)
from fieldhub.hub.store.writes import Writes

__all__ = ["EscalationPolicies", "PolicyInUse", "PolicyNotFound"]


class PolicyNotFound(NotFound):
    """No escalation policy with that id."""


class PolicyInUse(Conflict):
    """Rules still name the policy."""


class EscalationPolicies:
    """The policies of one hub (``engine`` for reads, ``writes`` for the write jobs)."""

    def __init__(
        self, engine: AsyncEngine, writes: Writes, *, clock: Callable[[], int] = now_ms
    ) -> None:
        self._engine = engine
        self._writes = writes
        self._clock = clock

    async def list(self) -> list[Policy]:
        """Every policy, by id."""
        async with self._engine.connect() as conn:
            rows = await conn.execute(
                select(escalation_policies).order_by(escalation_policies.c.id)
            )
            return [policy_from_row(row) for row in rows]

    async def get(self, policy_id: str) -> Policy:
        """The policy ``policy_id`` (raises :class:`PolicyNotFound`)."""
        async with self._engine.connect() as conn:
            row = (
                await conn.execute(
                    select(escalation_policies).where(escalation_policies.c.id == policy_id)
                )
            ).first()
        if row is None:
            raise PolicyNotFound(f"escalation policy {policy_id!r} does not exist")
        return policy_from_row(row)

    async def put(self, policy: Policy, *, actor: str, source: str, create: bool) -> Policy:
        """Create (``create``) or replace ``policy``. Alarms already raised keep the plan they
        were raised with; the next raise uses the new one.

        Raises:
            Invalid: steps out of order, reminders without an interval, a channel missing.
            Conflict: creating an id that is taken. PolicyNotFound: replacing a missing one.
        """
        _check(policy)
        at = self._clock()

        def job(conn: Connection) -> Policy:
            _check_channels(conn, policy)
            found = conn.execute(
                select(escalation_policies.c.created_at).where(
                    escalation_policies.c.id == policy.id
                )
            ).first()
            values = {
                "name": policy.name,
                "steps": policy.steps_as_json(),
                "repeat_every_s": policy.repeat_every_s,
                "repeat_limit": policy.repeat_limit,
                "updated_at": at,
                "updated_by": actor,
            }
            if create:
                if found is not None:
                    raise Conflict(f"escalation policy {policy.id!r} exists already")
                conn.execute(
                    insert(escalation_policies).values(id=policy.id, created_at=at, **values)
                )
                created_at = at
            else:
                if found is None:
                    raise PolicyNotFound(f"escalation policy {policy.id!r} does not exist")
                conn.execute(
                    update(escalation_policies)
                    .where(escalation_policies.c.id == policy.id)
                    .values(**values)
                )
                created_at = found.created_at
            action = "escalation_policy.created" if create else "escalation_policy.changed"
            conn.execute(
                insert(audit_log).values(
                    audit_row(actor, action, policy.id, source=source, detail=values, ts=at)
                )
            )
            return replace(policy, created_at=created_at, updated_at=at, updated_by=actor)

        return await self._writes.run(job, urgent=True)

    async def delete(self, policy_id: str, *, actor: str, source: str) -> None:
        """Delete a policy no rule names (alarms raised with it keep their planned messages).

        Raises:
            PolicyNotFound, PolicyInUse (409 naming the rules).
        """
        at = self._clock()

        def job(conn: Connection) -> None:
            users = sorted(
                row.id
                for row in conn.execute(select(alarm_rules.c.id, alarm_rules.c.definition))
                if (row.definition or {}).get("escalation") == policy_id
            )
            if users:
                raise PolicyInUse(
                    f"escalation policy {policy_id!r} is named by rules {', '.join(users[:10])}"
                )
            gone = conn.execute(
                delete(escalation_policies).where(escalation_policies.c.id == policy_id)
            )
            if not gone.rowcount:
                raise PolicyNotFound(f"escalation policy {policy_id!r} does not exist")
            conn.execute(
                insert(audit_log).values(
                    audit_row(actor, "escalation_policy.deleted", policy_id, source=source, ts=at)
                )
            )

        await self._writes.run(job, urgent=True)


def _check(policy: Policy) -> None:
    """What the fields say together (their bounds are the API model's)."""
    for index in range(1, len(policy.steps)):
        before, step = policy.steps[index - 1], policy.steps[index]
        if step.after_s <= before.after_s:
            raise Invalid(
                f"steps[{index}].after_s {step.after_s}: after the step before"
                f" ({before.after_s} s); steps are in time order",
                ("body", "steps", index, "after_s"),
            )
    if policy.repeat_limit and policy.repeat_every_s is None:
        raise Invalid(
            f"repeat_every_s: needed for repeat_limit {policy.repeat_limit}",
            ("body", "repeat_every_s"),
        )


def _check_channels(conn: Connection, policy: Policy) -> None:
    named = {channel for step in policy.steps for channel in step.channels}
    existing = {
        row.id
        for row in conn.execute(
            select(notification_channels.c.id).where(notification_channels.c.id.in_(named))
        )
    }
    for index, step in enumerate(policy.steps):
        for channel in step.channels:
            if channel not in existing:
                raise Invalid(
                    f"steps[{index}].channels: no notification channel {channel}",
                    ("body", "steps", index, "channels"),
                )
