"""The fleet at a glance: counts of the caller's devices, and the details of a page of them.

Why: the fleet page of 10,000 devices must not ask per device. ``/api/fleet/summary`` counts
the caller's whole fleet in one request (the tiles above the table); ``/api/fleet/details``
gives the latest values and twins of the rows the page shows, in one request per page;
``/api/fleet/names`` the names of the devices a list of alarms or a rule's preview shows,
so that such a page never loads the fleet to name a few ids.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query
from pydantic import BaseModel, Field

from fieldhub.hub.alarms.rules import SEVERITIES
from fieldhub.hub.api.deps import hub_dependency
from fieldhub.hub.api.models import LatestValueOut, TwinOut
from fieldhub.hub.api.security import require
from fieldhub.hub.app import Hub
from fieldhub.hub.auth import Permission, Principal
from fieldhub.hub.devices import FleetFilter
from fieldhub.hub.devices.twin import TwinView

router = APIRouter(prefix="/api/fleet", tags=["devices"])
HubDep = Annotated[Hub, Depends(hub_dependency)]
Reader = Annotated[Principal, require(Permission.DEVICES_READ)]
MAX_DETAILS = 200
"""Devices one details request may name: a page of the fleet, not the fleet."""
NO_LABEL = ""
"""How the counts name devices without a ``site`` or ``group`` label."""


class FleetSummaryOut(BaseModel):
    """Counts of the caller's devices (of their sites)."""

    total: int = Field(description="devices in all")
    presence: dict[str, int] = Field(
        description="by presence: online, stale, offline, unreachable, unknown (never heard of)"
    )
    sites: dict[str, int] = Field(description='by the "site" label ("": none)')
    groups: dict[str, int] = Field(description='by the "group" label ("": none)')
    alarms: dict[str, int] = Field(
        description="devices with open (unshelved) alarms, each under its most serious severity"
    )
    alarmed: int = Field(description="devices with at least one open alarm")
    problems: int = Field(
        description="devices offline, stale or unreachable, with an open alarm, or refusing "
        "desired keys"
    )


class DeviceDetailsOut(BaseModel):
    """What a row of the fleet page shows beyond the device list: values and twin."""

    latest: dict[str, LatestValueOut]
    twin: TwinOut


@router.get("/summary", summary="Count the fleet")
async def summary(hub: HubDep, who: Reader) -> FleetSummaryOut:
    """The caller's devices counted by presence, site, group and open alarms, in one request
    however large the fleet (a site user counts only their sites' devices)."""
    found = await hub.fleet.summary(who.sites, SEVERITIES)
    return FleetSummaryOut(
        total=found.total,
        presence=found.presence,
        sites={site or NO_LABEL: count for site, count in found.sites.items()},
        groups={group or NO_LABEL: count for group, count in found.groups.items()},
        alarms=found.alarms,
        alarmed=found.alarmed,
        problems=found.troubled,
    )


@router.get("/details", summary="Latest values and twins of some devices")
async def details(
    hub: HubDep,
    who: Reader,
    device: Annotated[
        list[str],
        Query(max_length=MAX_DETAILS, description=f"device ids, at most {MAX_DETAILS}"),
    ],
) -> dict[str, DeviceDetailsOut]:
    """Per device: the newest value of every key and the twin. Devices not registered or not
    of the caller's sites are left out (as the device routes answer 404 for them)."""
    wanted = set(device)
    page = await hub.fleet.page(FleetFilter(sites=who.sites, ids=wanted))
    latest = await hub.fleet.latest([record.id for record in page.devices])
    return {
        record.id: DeviceDetailsOut(
            latest={v.key: LatestValueOut(ts=v.ts, value=v.value) for v in latest[record.id]},
            twin=TwinOut.from_view(TwinView.of(record)),
        )
        for record in page.devices
    }


@router.get("/names", summary="Names of some devices")
async def names(
    hub: HubDep,
    who: Reader,
    device: Annotated[
        list[str],
        Query(max_length=MAX_DETAILS, description=f"device ids, at most {MAX_DETAILS}"),
    ],
) -> dict[str, str]:
    """Per device, its name ("" when it has none). Devices not registered or not of the
    caller's sites are left out (as the device routes answer 404 for them)."""
    page = await hub.fleet.page(FleetFilter(sites=who.sites, ids=set(device)))
    return {record.id: record.name for record in page.devices}
