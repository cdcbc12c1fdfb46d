"""The event log: every device's events and the hub's own (presence), filtered and paged."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Query

from fieldhub.hub.api.deps import hub_dependency
from fieldhub.hub.api.fields import EpochMs, EventCursor
from fieldhub.hub.api.models import EventOut, EventPageOut
from fieldhub.hub.api.security import require
from fieldhub.hub.app import Hub
from fieldhub.hub.auth import Permission, Principal

router = APIRouter(prefix="/api/events", tags=["events"])


@router.get("", summary="List events")
async def list_events(
    hub: Annotated[Hub, Depends(hub_dependency)],
    who: Annotated[Principal, require(Permission.EVENTS_READ)],
    device: Annotated[list[str], Query(description="device id; repeat for several")] = [],  # noqa: B006
    type: Annotated[list[str], Query(description="event type, or a family like door.*")] = [],  # noqa: B006
    severity: Annotated[list[Literal["info", "warning", "critical"]], Query()] = [],  # noqa: B006
    start: Annotated[EpochMs | None, Query(description="epoch ms, inclusive")] = None,
    end: Annotated[EpochMs | None, Query(description="epoch ms, exclusive")] = None,
    cursor: Annotated[
        EventCursor | None, Query(description="next_cursor of the previous page")
    ] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> EventPageOut:
    """Events matching every filter, newest first (of the caller's sites' devices)."""
    device_ids = device or None
    if who.sites is not None:  # site-scoped: only events of devices the caller sees
        visible = [r.id for r in await hub.devices.find() if who.sees(r.labels)]
        device_ids = [d for d in device if d in set(visible)] if device else visible
        if not device_ids:
            return EventPageOut(events=[], next_cursor=None)
    page = await hub.queries.events(
        device_ids=device_ids,
        types=type or None,
        severities=list(severity) or None,
        start=start,
        end=end,
        cursor=cursor,
        limit=limit,
    )
    return EventPageOut(
        events=[EventOut.model_validate(e.view()) for e in page.events],
        next_cursor=page.next_cursor,
    )
