"""Maintenance windows as users change them (create, replace, delete, audited) and as the
alarm side reads them (:func:`load_windows`, inside a write job).

The windows are read from the database in the very write job that marks an alarm change, so
every hub sharing the database agrees at once on what a window covers, without a cache to
keep in step: windows are few, and only raises and clears look at them.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Final

from sqlalchemy import insert
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncEngine

from fieldhub.clock import now_ms
from fieldhub.hub.alarms.maintenance import Window, parse_schedule, parse_scope
from fieldhub.hub.errors import Invalid
from fieldhub.hub.store.audit import audit_row
from fieldhub.hub.store.maintenance import (
    WindowNotFound,
    WindowRow,
    delete_window,
    put_window,
    window_rows,
)
from fieldhub.hub.store.schema import audit_log
from fieldhub.hub.store.writes import Writes

__all__ = ["MaintenanceService", "WindowNotFound", "load_windows", "parse_window"]

MAX_WINDOWS: Final = 1000
"""Windows a hub keeps: each raise and clear looks at every one."""
_NAME_MAX: Final = 128


class TooManyWindows(Invalid):
    """The hub holds as many windows as it takes."""


def window_of(row: WindowRow) -> Window:
    """The :class:`Window` of a stored row (checked when it was written)."""
    return Window(
        row.id,
        row.name,
        parse_scope(row.scope, ("scope",)),
        parse_schedule(row.schedule, None, ("schedule",)),
        row.created_at,
        row.updated_at,
        row.updated_by,
    )


def load_windows(conn: Connection) -> list[Window]:
    """Every window, read in the caller's transaction."""
    return [window_of(row) for row in window_rows(conn)]


class MaintenanceService:
    """Windows for the API: every change one write job with its audit entry."""

    def __init__(
        self, db: AsyncEngine, writes: Writes, *, clock: Callable[[], int] = now_ms
    ) -> None:
        self._db = db
        self._writes = writes
        self._clock = clock

    def now(self) -> int:
        """The hub's clock (what "active" is measured by)."""
        return self._clock()

    async def windows(self) -> list[Window]:
        """Every window, by id."""
        async with self._db.connect() as conn:
            return await conn.run_sync(load_windows)

    async def window(self, window_id: int) -> Window:
        """The window ``window_id``.

        Raises:
            WindowNotFound: no such window.
        """
        async with self._db.connect() as conn:
            rows = await conn.run_sync(window_rows, window_id)
        if not rows:
            raise WindowNotFound(f"maintenance window {window_id} does not exist")
        return window_of(rows[0])

    async def put(
        self,
        raw: Mapping[str, Any],
        *,
        actor: str,
        source: str = "",
        window_id: int | None = None,
    ) -> Window:
        """Create (``window_id`` None) or replace a window from its dict form (``name``,
        ``scope``, ``schedule``), checked by :func:`parse_window` first.

        Raises:
            Invalid: a bad field (``loc`` under ``body``); TooManyWindows.
            WindowNotFound: replacing a window that does not exist.
        """
        at = self._clock()
        values = parse_window(raw, at)

        def job(conn: Connection) -> int:
            if window_id is None and len(window_rows(conn)) >= MAX_WINDOWS:
                raise TooManyWindows(
                    f"the hub holds {MAX_WINDOWS} maintenance windows: delete old ones first",
                    ("body",),
                )
            new_id = put_window(conn, window_id, values, at=at, by=actor)
            action = "maintenance.created" if window_id is None else "maintenance.changed"
            _audit(conn, actor, action, new_id, source, at, values)
            return new_id

        return await self.window(await self._writes.run(job, urgent=True))

    async def delete(self, window_id: int, *, actor: str, source: str = "") -> None:
        """Delete a window; notifications it held stay held until its end as planned.

        Raises:
            WindowNotFound: no such window.
        """
        at = self._clock()

        def job(conn: Connection) -> None:
            delete_window(conn, window_id)
            _audit(conn, actor, "maintenance.deleted", window_id, source, at, {})

        await self._writes.run(job, urgent=True)


def parse_window(raw: Mapping[str, Any], now: int) -> dict[str, Any]:
    """The stored values of a window's dict form, every field checked (``now``: a one-off
    window must not be over).

    Raises:
        Invalid: the first bad field, its ``loc`` under ``body``.
    """
    name = raw.get("name")
    if not isinstance(name, str) or not 1 <= len(name) <= _NAME_MAX:
        raise Invalid(f"name {name!r}: a text of 1-{_NAME_MAX} characters", ("body", "name"))
    scope = parse_scope(raw.get("scope"))
    schedule = parse_schedule(raw.get("schedule"), now)
    return {"name": name, "scope": scope.to_dict(), "schedule": schedule.to_dict()}


def _audit(
    conn: Connection,
    actor: str,
    action: str,
    window_id: int,
    source: str,
    at: int,
    detail: dict[str, Any],
) -> None:
    conn.execute(
        insert(audit_log).values(
            audit_row(
                actor, action, f"maintenance:{window_id}", source=source, detail=detail, ts=at
            )
        )
    )
