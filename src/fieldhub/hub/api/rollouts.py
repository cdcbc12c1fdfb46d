"""Rollouts: ``/api/rollouts`` (docs/rollouts.md).

Starting one and acting on it take ``devices:command`` on every device it concerns (an
operator rolls out to the devices of their sites; a listed device they may not see is 404,
as for group commands); reading takes ``devices:read`` and shows only the caller's devices,
in every field (counts, device list, the target's device list). A rollout with none of the
caller's devices is 404.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Request

from fieldhub.hub.api.deps import hub_dependency
from fieldhub.hub.api.devices import visible_entry
from fieldhub.hub.api.rollout_models import AbortIn, RolloutIn, RolloutOut
from fieldhub.hub.api.security import client_address, device_filter, require
from fieldhub.hub.app import Hub
from fieldhub.hub.auth import Permission, Principal
from fieldhub.hub.errors import Invalid
from fieldhub.hub.rollouts import RolloutNotFound, Run

router = APIRouter(prefix="/api/rollouts", tags=["rollouts"])
HubDep = Annotated[Hub, Depends(hub_dependency)]
Reader = Annotated[Principal, require(Permission.DEVICES_READ)]
Commander = Annotated[Principal, require(Permission.DEVICES_COMMAND)]


@router.post("", status_code=201, summary="Start a rollout")
async def start(request: Request, hub: HubDep, who: Commander, body: RolloutIn) -> RolloutOut:
    """Send a bundle to devices in waves: the first wave starts at once. Devices that run
    this version already are left out; none left is 422 on ``target``; a bundle whose key
    was revoked or has expired since its upload is 422 (``revoked_key``, ``key_expired``). A
    plan that breaks a rule (waves not increasing or not ending at 100, ``abort_below`` above
    ``promote_at``) is 422 naming it."""
    try:
        plan = body.plan()
    except ValueError as exc:
        raise Invalid(str(exc), ("body",)) from None
    bundle = await hub.bundles.to_send(body.bundle)
    target = body.target
    if target.devices is not None:
        entries = [visible_entry(hub, who, device_id) for device_id in sorted(set(target.devices))]
    else:
        entries = [e for e in hub.directory.matching(target.labels or {}) if who.sees(e.labels)]
    reported = {device.id: device.reported for device in await hub.registry.list()}
    run = await hub.rollouts.create(
        bundle,
        plan,
        [(entry.id, reported.get(entry.id, {})) for entry in entries],
        actor=who.actor,
        source=client_address(request),
    )
    return RolloutOut.of(run, device_filter(hub, who), devices=True)


@router.get("", summary="Rollouts")
async def list_rollouts(hub: HubDep, who: Reader) -> list[RolloutOut]:
    """Every rollout with a device of the caller's, newest first, with counts per state."""
    sees = device_filter(hub, who)
    runs = await hub.rollouts.listing()
    return [
        RolloutOut.of(run, sees, devices=False)
        for run in runs
        if any(sees(device_id) for device_id in run.devices)
    ]


@router.get("/{rollout_id}", summary="Get a rollout")
async def get_rollout(hub: HubDep, who: Reader, rollout_id: str) -> RolloutOut:
    """A rollout with each of the caller's devices: wave, state, attempts, why it failed."""
    return RolloutOut.of(
        await _visible(hub, who, rollout_id), device_filter(hub, who), devices=True
    )


async def _visible(hub: Hub, who: Principal, rollout_id: str, *, every: bool = False) -> Run:
    """The rollout if the caller sees one of its devices (``every``: all of them)."""
    run = await hub.rollouts.get(rollout_id)
    sees = device_filter(hub, who)
    seen = [sees(device_id) for device_id in run.devices]
    if not any(seen) or (every and not all(seen)):
        raise RolloutNotFound(f"no rollout {rollout_id!r}")
    return run


async def _act(
    request: Request,
    hub: Hub,
    who: Principal,
    rollout_id: str,
    action: str,
    rollback: bool | None = None,
) -> RolloutOut:
    await _visible(hub, who, rollout_id, every=True)
    run = await hub.rollouts.act(
        rollout_id, action, actor=who.actor, source=client_address(request), rollback=rollback
    )
    return RolloutOut.of(run, device_filter(hub, who), devices=True)


@router.post("/{rollout_id}/approve", summary="Approve the next wave")
async def approve(request: Request, hub: HubDep, who: Commander, rollout_id: str) -> RolloutOut:
    """Start the next wave of a rollout that waits for approval (409 otherwise)."""
    return await _act(request, hub, who, rollout_id, "approve")


@router.post("/{rollout_id}/pause", summary="Pause a rollout")
async def pause(request: Request, hub: HubDep, who: Commander, rollout_id: str) -> RolloutOut:
    """Send to no more devices; those under way run to their end."""
    return await _act(request, hub, who, rollout_id, "pause")


@router.post("/{rollout_id}/resume", summary="Resume a rollout")
async def resume(request: Request, hub: HubDep, who: Commander, rollout_id: str) -> RolloutOut:
    """Go on; a rollout paused by its thresholds takes the paused wave as good enough."""
    return await _act(request, hub, who, rollout_id, "resume")


@router.post("/{rollout_id}/abort", summary="Abort a rollout")
async def abort(
    request: Request, hub: HubDep, who: Commander, rollout_id: str, body: AbortIn | None = None
) -> RolloutOut:
    """Send to no more devices; with ``rollback`` (left out: as planned) the devices already
    updated are sent ``bundle.rollback``."""
    rollback = body.rollback if body is not None else None
    return await _act(request, hub, who, rollout_id, "abort", rollback)


@router.post("/{rollout_id}/retry", summary="Retry failed devices")
async def retry(request: Request, hub: HubDep, who: Commander, rollout_id: str) -> RolloutOut:
    """Send the bundle once more to every failed device (each at most 10 times per rollout)."""
    return await _act(request, hub, who, rollout_id, "retry")
