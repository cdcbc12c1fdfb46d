"""Maintenance windows: ``/api/maintenance-windows`` (docs/alarms.md, "Maintenance windows").

Sites scope windows like alarm rules: a caller sees the windows that can reach a device of
its sites, and may write one only when its whole scope lies in its sites (sites of its own,
devices of its sites, or the ``site`` label of one of them); a window for everything is an
admin's. Reading takes ``alarms:read``, writing ``alarms:write``.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request, Response
from pydantic import BaseModel, ConfigDict, Field

from fieldhub.hub.alarms.maintenance import Scope, Window, parse_scope
from fieldhub.hub.alarms.windows import WindowNotFound, parse_window
from fieldhub.hub.api.deps import hub_dependency
from fieldhub.hub.api.fields import JsonObject, RowId
from fieldhub.hub.api.security import client_address, require
from fieldhub.hub.app import Hub
from fieldhub.hub.auth import SITE_LABEL, Permission, Principal
from fieldhub.hub.errors import Refused

router = APIRouter(prefix="/api/maintenance-windows", tags=["alarms"])
HubDep = Annotated[Hub, Depends(hub_dependency)]
Reader = Annotated[Principal, require(Permission.ALARMS_READ)]
Writer = Annotated[Principal, require(Permission.ALARMS_WRITE)]


class WindowIn(BaseModel):
    """A window as sent; the scope's and schedule's fields are checked by
    ``hub/alarms/maintenance.py`` (the one home of what makes a window valid)."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "name": "Berlin firmware update",
                    "scope": {"sites": ["berlin"]},
                    "schedule": {
                        "kind": "weekly",
                        "days": [6],
                        "start": "02:00",
                        "duration_s": 7200,
                        "timezone": "Europe/Berlin",
                    },
                }
            ]
        },
    )

    name: Annotated[str, Field(min_length=1, max_length=128)]
    scope: Annotated[
        JsonObject, Field(description="sites, labels, devices, rules: each empty = any")
    ] = {}
    schedule: Annotated[
        JsonObject,
        Field(
            description='{"kind": "once", "start", "end"} (epoch ms) or {"kind": "weekly",'
            ' "days": [0-6, Monday = 0], "start": "HH:MM", "duration_s", "timezone"}'
        ),
    ]


class WindowOut(BaseModel):
    """A stored window, and whether it is open now (``active_until``: the end of the
    occurrence open now, epoch ms; null when none is)."""

    id: int
    name: str
    scope: dict[str, Any]
    schedule: dict[str, Any]
    active_until: int | None
    created_at: int
    updated_at: int
    updated_by: str

    @classmethod
    def of(cls, window: Window, now: int) -> WindowOut:
        """The answer for ``window`` as of ``now``."""
        found = window.schedule.occurrence(now)
        return cls(
            id=window.id,
            name=window.name,
            scope=window.scope.to_dict(),
            schedule=window.schedule.to_dict(),
            active_until=None if found is None else found[1],
            created_at=window.created_at,
            updated_at=window.updated_at,
            updated_by=window.updated_by,
        )


def _sees_device(hub: Hub, who: Principal, device_id: str) -> bool:
    entry = hub.directory.get(device_id)
    return who.sees(entry.labels) if entry is not None else who.sites is None


def sees_window(hub: Hub, who: Principal, scope: Scope) -> bool:
    """A window is visible when it can reach a device of the caller's sites."""
    if who.sites is None:
        return True
    if scope.sites:
        return any(who.sees_site(site) for site in scope.sites)
    if scope.devices:
        return any(_sees_device(hub, who, d) for d in scope.devices)
    if scope.labels and SITE_LABEL in scope.labels:
        return who.sees_site(scope.labels[SITE_LABEL])
    return True  # everything, or labels and rules across sites: it reaches the caller's too


def check_window_write(hub: Hub, who: Principal, scope: Scope) -> None:
    """A non-admin writes only windows whose whole scope lies in its sites."""
    if who.sites is None:
        return
    if scope.sites and all(who.sees_site(site) for site in scope.sites):
        return
    if scope.devices and all(_sees_device(hub, who, d) for d in scope.devices):
        return
    if scope.labels and who.sees_site(scope.labels.get(SITE_LABEL)):
        return
    mine = ", ".join(sorted(who.sites)) or "none"
    raise Refused(
        "scope: a window of yours must name sites of yours, devices of your sites or the"
        f" label {SITE_LABEL!r} of one of them ({mine})"
    )


async def _visible(hub: Hub, who: Principal, window_id: int) -> Window:
    window = await hub.maintenance.window(window_id)
    if not sees_window(hub, who, window.scope):
        raise WindowNotFound(f"maintenance window {window_id} does not exist")  # as the store
    return window


@router.get("", summary="List maintenance windows")
async def list_windows(
    hub: HubDep,
    who: Reader,
    active: Annotated[bool | None, Query(description="true: open now; false: not")] = None,
    device: Annotated[
        str | None, Query(max_length=64, description="only windows covering this device")
    ] = None,
) -> list[WindowOut]:
    """The windows that can reach the caller's devices, by id (the dashboard's banner asks
    for the active ones, on a device page for those covering the device)."""
    now = hub.maintenance.now()
    windows = [w for w in await hub.maintenance.windows() if sees_window(hub, who, w.scope)]
    if device is not None:
        entry = hub.directory.get(device)
        if entry is None or not who.sees(entry.labels):
            return []
        windows = [w for w in windows if w.scope.covers(device, entry.labels, None)]
    visible = [WindowOut.of(window, now) for window in windows]
    if active is None:
        return visible
    return [out for out in visible if (out.active_until is not None) == active]


@router.post("", status_code=201, summary="Create a maintenance window")
async def create_window(request: Request, hub: HubDep, who: Writer, body: WindowIn) -> WindowOut:
    """A new window (one-off or weekly), scheduled now or ahead."""
    raw = body.model_dump()
    check_window_write(hub, who, _checked_scope(hub, raw))
    window = await hub.maintenance.put(raw, actor=who.actor, source=client_address(request))
    return WindowOut.of(window, hub.maintenance.now())


@router.get("/{window_id}", summary="Get a maintenance window")
async def get_window(hub: HubDep, who: Reader, window_id: RowId) -> WindowOut:
    """One window."""
    return WindowOut.of(await _visible(hub, who, window_id), hub.maintenance.now())


@router.put("/{window_id}", summary="Replace a maintenance window")
async def replace_window(
    request: Request, hub: HubDep, who: Writer, window_id: RowId, body: WindowIn
) -> WindowOut:
    """Replace a window whole (the old and the new scope must both be the caller's)."""
    old = await _visible(hub, who, window_id)
    check_window_write(hub, who, old.scope)
    raw = body.model_dump()
    check_window_write(hub, who, _checked_scope(hub, raw))
    window = await hub.maintenance.put(
        raw, actor=who.actor, source=client_address(request), window_id=window_id
    )
    return WindowOut.of(window, hub.maintenance.now())


@router.delete("/{window_id}", status_code=204, summary="Delete a maintenance window")
async def delete_window(request: Request, hub: HubDep, who: Writer, window_id: RowId) -> Response:
    """Delete a window; notifications it already held wait until its end as planned."""
    old = await _visible(hub, who, window_id)
    check_window_write(hub, who, old.scope)
    await hub.maintenance.delete(window_id, actor=who.actor, source=client_address(request))
    return Response(status_code=204)


def _checked_scope(hub: Hub, raw: dict[str, Any]) -> Scope:
    """The scope of a window as sent, after the whole window is checked (a bad field is a
    422 before any question of sites)."""
    return parse_scope(parse_window(raw, hub.maintenance.now())["scope"])
