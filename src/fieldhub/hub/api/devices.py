"""Devices: registry CRUD, latest values, telemetry history, reported state."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Depends, HTTPException, Query, Response

from fieldhub.clock import now_ms
from fieldhub.hub.api.deps import get_hub, parse_duration_ms
from fieldhub.hub.api.models import (
    Device,
    DeviceCreate,
    DeviceUpdate,
    History,
    LatestValue,
    ReportedState,
)
from fieldhub.hub.service import Hub
from fieldhub.hub.store.devices import DeviceExists, DeviceNotFound

router = APIRouter(prefix="/api/devices", tags=["devices"])
HubDep = Annotated[Hub, Depends(get_hub)]
MAX_RAW_POINTS = 10_000
MAX_BUCKETS = 10_000


def parse_labels(label: list[str]) -> dict[str, str]:
    """``["site=berlin", "group=atm"]`` → ``{"site": "berlin", "group": "atm"}``."""
    labels = {}
    for item in label:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise HTTPException(422, f"label={item!r}: use label=KEY=VALUE")
        labels[key] = value
    return labels


async def _get(hub: Hub, device_id: str) -> Device:
    try:
        return Device.from_record(await hub.registry.get(device_id))
    except DeviceNotFound as exc:
        raise HTTPException(404, str(exc)) from None


@router.get("", summary="List devices")
async def list_devices(
    hub: HubDep,
    label: Annotated[list[str], Query(description="KEY=VALUE; repeat to require several")] = [],  # noqa: B006
    presence: Annotated[list[Literal["online", "offline", "stale", "unknown"]], Query()] = [],  # noqa: B006
    limit: Annotated[int, Query(ge=1, le=10_000)] = 1000,
    offset: Annotated[int, Query(ge=0)] = 0,
) -> list[Device]:
    """Devices carrying every given label, optionally in the given presence states."""
    records = await hub.registry.list(parse_labels(label))
    if presence:
        records = [r for r in records if r.presence in presence]
    return [Device.from_record(r) for r in records[offset : offset + limit]]


@router.post("", status_code=201, summary="Register a device")
async def create_device(hub: HubDep, body: DeviceCreate) -> Device:
    """Register a device; it may publish from now on."""
    try:
        record = await hub.create_device(
            body.id, name=body.name, labels=body.labels, attributes=body.attributes
        )
    except DeviceExists as exc:
        raise HTTPException(409, str(exc)) from None
    return Device.from_record(record)


@router.get("/{device_id}", summary="Get a device")
async def get_device(hub: HubDep, device_id: str) -> Device:
    """One device with its presence."""
    return await _get(hub, device_id)


@router.patch("/{device_id}", summary="Change a device")
async def update_device(hub: HubDep, device_id: str, body: DeviceUpdate) -> Device:
    """Change name, labels or attributes (labels and attributes are replaced whole)."""
    try:
        record = await hub.registry.update(
            device_id, name=body.name, labels=body.labels, attributes=body.attributes
        )
    except DeviceNotFound as exc:
        raise HTTPException(404, str(exc)) from None
    return Device.from_record(record)


@router.delete("/{device_id}", status_code=204, summary="Delete a device")
async def delete_device(hub: HubDep, device_id: str) -> Response:
    """Delete a device with its history and events; its messages are refused from now on."""
    try:
        await hub.delete_device(device_id)
    except DeviceNotFound as exc:
        raise HTTPException(404, str(exc)) from None
    return Response(status_code=204)


@router.get("/{device_id}/latest", summary="Latest values")
async def latest(hub: HubDep, device_id: str) -> dict[str, LatestValue]:
    """The newest value of every key the device has sent."""
    await _get(hub, device_id)
    return {v.key: LatestValue(ts=v.ts, value=v.value) for v in await hub.queries.latest(device_id)}


@router.get("/{device_id}/state", summary="Reported state")
async def reported_state(hub: HubDep, device_id: str) -> ReportedState:
    """What the device last reported about its state, merged key by key."""
    try:
        record = await hub.registry.get(device_id)
    except DeviceNotFound as exc:
        raise HTTPException(404, str(exc)) from None
    return ReportedState(reported=record.reported, ts=record.reported_ts)


@router.get("/{device_id}/telemetry", summary="Telemetry history")
async def history(
    hub: HubDep,
    device_id: str,
    keys: Annotated[str | None, Query(description="comma-separated keys; default all")] = None,
    start: Annotated[int | None, Query(ge=0, description="epoch ms; default end - 1h")] = None,
    end: Annotated[int | None, Query(ge=0, description="epoch ms, exclusive; default now")] = None,
    bucket: Annotated[str | None, Query(description="bucket size: 60s, 5m, 1h, 1d, or ms")] = None,
    agg: Annotated[Literal["avg", "min", "max", "last", "count"], Query()] = "avg",
    limit: Annotated[int, Query(ge=1, le=MAX_RAW_POINTS)] = MAX_RAW_POINTS,
) -> History:
    """Points in ``[start, end)``, raw or downsampled into buckets aggregated by ``agg``."""
    await _get(hub, device_id)
    end = now_ms() if end is None else end
    start = end - 3_600_000 if start is None else start
    if start >= end:
        raise HTTPException(422, f"start={start} must be before end={end}")
    bucket_ms = parse_duration_ms(bucket, "bucket") if bucket else None
    if bucket_ms is not None and (end - start) // bucket_ms > MAX_BUCKETS:
        asked = (end - start) // bucket_ms
        raise HTTPException(422, f"{asked} buckets asked, at most {MAX_BUCKETS}: use larger ones")
    known = await hub.queries.keys(device_id)
    wanted = [k for k in keys.split(",") if k] if keys else sorted(known)
    unknown = [k for k in wanted if k not in known]
    if unknown:
        raise HTTPException(404, f"device {device_id!r} has no key {', '.join(unknown)}")
    series = {}
    for key in wanted:
        series_id, kind = known[key]
        series[key] = await hub.queries.history(
            series_id=series_id,
            kind=kind,
            start=start,
            end=end,
            bucket_ms=bucket_ms,
            agg=agg,
            limit=limit,
        )
    return History(
        device_id=device_id,
        start=start,
        end=end,
        bucket_ms=bucket_ms,
        agg=agg if bucket_ms else None,
        series=series,
    )
