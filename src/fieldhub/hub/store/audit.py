"""The audit log: who did what security-relevant thing, to what, from where, with what outcome.

Written by every part that changes identity or access (logins, users, tokens, device
credentials, claims) and read by admins through ``GET /api/audit``. Entries are appended, never
changed. ``detail`` must never hold a secret or a hash: callers pass names and ids only.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Literal

from sqlalchemy import insert, or_, select
from sqlalchemy.ext.asyncio import AsyncEngine

from fieldhub.clock import now_ms
from fieldhub.hub.errors import Invalid
from fieldhub.hub.store.database import write_transaction
from fieldhub.hub.store.schema import audit_log

log = logging.getLogger(__name__)

Outcome = Literal["ok", "denied", "failed"]


@dataclass(frozen=True, slots=True)
class AuditEntry:
    """One recorded action."""

    id: int
    ts: int
    actor: str
    action: str
    target: str
    outcome: str
    source: str
    detail: dict[str, Any]


@dataclass(frozen=True, slots=True)
class AuditPage:
    """Entries newest first, and the cursor of the next (older) page."""

    entries: list[AuditEntry]
    next_cursor: str | None


def audit_row(
    actor: str,
    action: str,
    target: str = "",
    outcome: Outcome = "ok",
    source: str = "",
    detail: dict[str, Any] | None = None,
    *,
    ts: int,
) -> dict[str, Any]:
    """An ``audit_log`` row (see :meth:`AuditLog.record`), for an entry written in the same
    transaction as the change it is about (``store/commands.py``)."""
    return {
        "ts": ts,
        "actor": actor[:128],
        "action": action[:64],
        "target": target[:128],
        "outcome": outcome,
        "source": source[:64],
        "detail": detail or {},
    }


class AuditLog:
    """Append and query audit entries."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    async def record(
        self,
        actor: str,
        action: str,
        target: str = "",
        outcome: Outcome = "ok",
        source: str = "",
        detail: dict[str, Any] | None = None,
    ) -> None:
        """Append one entry, committed before this returns.

        Args:
            actor: who acted: ``"user:alice"``, ``"user:alice/token:7"``, ``"device:atm-1"``,
                ``"hub"``, ``"cli"``; ``"anonymous"`` when nobody is known yet.
            action: what, dotted: ``"login"``, ``"user.created"``, ``"token.revoked"``.
            target: what it was done to: a user name, ``"token:7"``, a device id.
            outcome: ``ok``, ``denied`` (not allowed) or ``failed`` (wrong credentials).
            source: the client address, when there is one.
            detail: more facts, never secrets.
        """
        async with write_transaction(self._engine) as conn:
            await conn.execute(
                insert(audit_log).values(
                    audit_row(actor, action, target, outcome, source, detail, ts=now_ms())
                )
            )

    async def query(
        self,
        *,
        actor: str | None = None,
        action: str | None = None,
        target: str | None = None,
        outcome: str | None = None,
        start: int | None = None,
        end: int | None = None,
        cursor: str | None = None,
        limit: int = 100,
    ) -> AuditPage:
        """Entries matching every given filter, newest first, ``limit`` per page.

        ``actor="user:alice"`` also matches what alice did with her tokens
        (``"user:alice/token:7"``); an action ending in ``.*`` matches a family (``user.*``).

        Raises:
            Invalid: the cursor is not one this function returned.
        """
        query = select(audit_log)
        if actor:
            query = query.where(
                or_(
                    audit_log.c.actor == actor,
                    audit_log.c.actor.startswith(actor + "/", autoescape=True),
                )
            )
        if action:
            if action.endswith(".*"):
                query = query.where(
                    or_(
                        audit_log.c.action == action[:-2],
                        audit_log.c.action.startswith(action[:-1], autoescape=True),
                    )
                )
            else:
                query = query.where(audit_log.c.action == action)
        if target:
            query = query.where(audit_log.c.target == target)
        if outcome:
            query = query.where(audit_log.c.outcome == outcome)
        if start is not None:
            query = query.where(audit_log.c.ts >= start)
        if end is not None:
            query = query.where(audit_log.c.ts < end)
        if cursor:
            query = query.where(audit_log.c.id < _parse_cursor(cursor))
        query = query.order_by(audit_log.c.id.desc()).limit(limit + 1)
        async with self._engine.connect() as conn:
            rows = list(await conn.execute(query))
        entries = [
            AuditEntry(
                id=r.id,
                ts=r.ts,
                actor=r.actor,
                action=r.action,
                target=r.target,
                outcome=r.outcome,
                source=r.source,
                detail=dict(r.detail or {}),
            )
            for r in rows[:limit]
        ]
        next_cursor = str(entries[-1].id) if len(rows) > limit else None
        return AuditPage(entries, next_cursor)


def _parse_cursor(cursor: str) -> int:
    if not cursor.isdigit():
        raise Invalid(f"cursor {cursor!r} is not one this API returned", ("query", "cursor"))
    return int(cursor)
