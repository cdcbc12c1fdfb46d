"""Maintenance windows: the SQL of ``hub/alarms/windows.py``.

The store knows a window's scope and schedule only as dicts: what makes one valid, and when
one is open, is ``hub/alarms/maintenance.py``'s.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import delete, insert, select, update
from sqlalchemy.engine import Connection, Row

from fieldhub.hub.errors import NotFound
from fieldhub.hub.store.schema import maintenance_windows

__all__ = ["WindowNotFound", "WindowRow", "delete_window", "put_window", "window_rows"]


class WindowNotFound(NotFound):
    """No maintenance window with this id (or none the caller may see)."""


@dataclass(frozen=True, slots=True)
class WindowRow:
    """A stored window, its scope and schedule as dicts."""

    id: int
    name: str
    scope: dict[str, Any]
    schedule: dict[str, Any]
    created_at: int
    updated_at: int
    updated_by: str


def window_rows(conn: Connection, window_id: int | None = None) -> list[WindowRow]:
    """Every window by id (or the one ``window_id``)."""
    query = select(maintenance_windows).order_by(maintenance_windows.c.id)
    if window_id is not None:
        query = query.where(maintenance_windows.c.id == window_id)
    return [_row(row) for row in conn.execute(query)]


def put_window(
    conn: Connection,
    window_id: int | None,
    values: dict[str, Any],
    *,
    at: int,
    by: str,
) -> int:
    """Insert a window (``window_id`` None) or replace one; its id.

    Raises:
        WindowNotFound: replacing a window that does not exist.
    """
    values = {**values, "updated_at": at, "updated_by": by}
    if window_id is None:
        statement = insert(maintenance_windows).values(created_at=at, **values)
        return int(conn.execute(statement.returning(maintenance_windows.c.id)).scalar_one())
    changed = conn.execute(
        update(maintenance_windows).where(maintenance_windows.c.id == window_id).values(values)
    )
    if not changed.rowcount:
        raise WindowNotFound(f"maintenance window {window_id} does not exist")
    return window_id


def delete_window(conn: Connection, window_id: int) -> None:
    """Delete a window.

    Raises:
        WindowNotFound: no such window.
    """
    gone = conn.execute(delete(maintenance_windows).where(maintenance_windows.c.id == window_id))
    if not gone.rowcount:
        raise WindowNotFound(f"maintenance window {window_id} does not exist")


def _row(row: Row[Any]) -> WindowRow:
    return WindowRow(
        row.id,
        row.name,
        dict(row.scope),
        dict(row.schedule),
        row.created_at,
        row.updated_at,
        row.updated_by,
    )
