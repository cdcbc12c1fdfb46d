"""Commands: to one device or to a group, waited for or followed by id.

Sending needs ``devices:command`` on every device concerned (operators of the devices' site,
admins); reading a command needs ``devices:read`` on its device. A device the caller may not
see is 404, as everywhere. A group command read by someone who sees only some of its devices
shows only those, in every field (``BatchOut.from_records``).
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request, Response

from fieldhub.hub.api.command_models import (
    BatchOut,
    CommandOut,
    CommandRequest,
    GroupCommandRequest,
)
from fieldhub.hub.api.deps import hub_dependency
from fieldhub.hub.api.devices import visible_entry
from fieldhub.hub.api.fields import EpochMs
from fieldhub.hub.api.security import client_address, device_filter, require
from fieldhub.hub.app import Hub
from fieldhub.hub.auth import Permission, Principal
from fieldhub.hub.commands.batches import Pace
from fieldhub.hub.commands.check import Fit
from fieldhub.hub.errors import Invalid, NotFound

router = APIRouter(tags=["commands"])
TIMEOUT_GRACE_S = 0.5
"""A waiting request outlasts ``timeout_s`` by this much, so that a command sent at once and
never answered is reported as ``timed_out`` (final, 200) rather than still under way (202)."""


HubDep = Annotated[Hub, Depends(hub_dependency)]
Reader = Annotated[Principal, require(Permission.DEVICES_READ)]
Commander = Annotated[Principal, require(Permission.DEVICES_COMMAND)]
Wait = Annotated[
    bool,
    Query(description="wait for the outcome (up to timeout_s); false: answer at once with the id"),
]


@router.post(
    "/api/devices/{device_id}/commands",
    summary="Send a command",
    responses={202: {"model": CommandOut, "description": "sent or queued, not finished yet"}},
)
async def send_command(
    request: Request,
    response: Response,
    hub: HubDep,
    who: Commander,
    device_id: str,
    body: CommandRequest,
    wait: Wait = True,
) -> CommandOut:
    """Queue ``action`` for the device, send it when the device is connected, and by default
    wait for the outcome: 200 when it finished (succeeded, failed, timed out, expired), 202
    when it is still under way after ``timeout_s`` or ``wait=false``.

    The device runs it at most once, also when the hub delivers it again. An action the
    device does not offer, wrong arguments or a ``timeout_s`` shorter than the action are
    refused here (422) when the device has reported its actions; arguments left out that the
    device gives a default get it, and ``timeout_s`` left out follows the action's duration.
    """
    entry = visible_entry(hub, who, device_id)
    [fit], _ = hub.commands.fit(
        [(entry.id, entry.reported)], body.action, body.args, body.timeout_s
    )
    _batch, [command] = await hub.commands.submit(
        [device_id],
        body.action,
        fit.args,
        timeout_s=fit.timeout_s,
        ttl_s=body.ttl_s,
        actor=who.actor,
        source=client_address(request),
    )
    if wait:
        await hub.commands.wait([command.id], fit.timeout_s + TIMEOUT_GRACE_S)
    response.status_code = 200 if command.finished else 202
    return CommandOut.from_record(command)


@router.get("/api/devices/{device_id}/commands", summary="Commands of a device")
async def device_commands(
    hub: HubDep,
    who: Reader,
    device_id: str,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    before: Annotated[EpochMs | None, Query(description="created before this epoch ms")] = None,
) -> list[CommandOut]:
    """The device's commands, newest first."""
    visible_entry(hub, who, device_id)
    records = await hub.commands.of_device(device_id, limit=limit, before=before)
    return [CommandOut.from_record(record) for record in records]


@router.get("/api/commands/{command_id}", summary="Get a command")
async def get_command(hub: HubDep, who: Reader, command_id: str) -> CommandOut:
    """A command and where it is in its life."""
    record = await hub.commands.get(command_id)
    if not device_filter(hub, who)(record.device_id):
        raise NotFound(f"no command {command_id!r}")
    return CommandOut.from_record(record)


@router.post(
    "/api/commands",
    summary="Send a command to a group",
    responses={202: {"model": BatchOut, "description": "not every command finished yet"}},
)
async def send_group_command(
    request: Request,
    response: Response,
    hub: HubDep,
    who: Commander,
    body: GroupCommandRequest,
    wait: Wait = True,
) -> BatchOut:
    """One action for a list of devices, every device carrying ``labels``, or ``all`` of the
    caller's devices: one command per device, each with its own outcome. Progress:
    ``GET /api/command-batches/{id}``. A listed device the caller may not command is 404
    and nothing is sent; ``labels`` and ``all`` take only the caller's devices.

    A device that does not offer the action (or not with these arguments, or not within
    ``timeout_s``) is reported ``unsupported`` with the reason and the others are sent; only
    when no device fits is the request refused (422). ``per_second`` paces the sending,
    ``abort_failure_ratio`` aborts what is not sent yet when too many fail (docs/commands.md).
    """
    if body.devices is not None:
        devices = [visible_entry(hub, who, device_id) for device_id in sorted(set(body.devices))]
    else:
        devices = [e for e in hub.directory.matching(body.labels or {}) if who.sees(e.labels)]
        if not devices:
            raise Invalid("no device of yours matches", ("body",))
    fits, unsupported = hub.commands.fit(
        ((e.id, e.reported) for e in devices), body.action, body.args, body.timeout_s
    )
    batch, commands = await hub.commands.submit_group(
        fits,
        body.action,
        body.args,
        target=body.target(),
        ttl_s=body.ttl_s,
        actor=who.actor,
        source=client_address(request),
        unsupported=unsupported,
        pace=Pace(body.per_second, body.abort_failure_ratio),
    )
    if wait:
        await hub.commands.wait(
            [command.id for command in commands],
            max(fit.timeout_s for fit in fits) + TIMEOUT_GRACE_S,
        )
    result = BatchOut.from_records(batch, commands, device_filter(hub, who))
    response.status_code = 200 if result.finished else 202
    return result


@router.get("/api/command-batches/{batch_id}", summary="Progress of a group command")
async def get_batch(
    hub: HubDep,
    who: Reader,
    batch_id: str,
    wait_s: Annotated[
        float, Query(ge=0, le=60, description="wait up to this long for every command to end")
    ] = 0,
) -> BatchOut:
    """The group command with the outcome of each of the caller's devices so far."""
    batch, records = await hub.commands.batch(batch_id, wait_s)
    result = BatchOut.from_records(batch, records, device_filter(hub, who))
    if not result.commands:  # none of the caller's devices: as if there were no such batch
        raise NotFound(f"no command batch {batch_id!r}")
    return result


def _batch_wait_s(fits: list[Fit], per_second: float | None) -> float:
    """How long a group command's request waits: the pacing, then the longest timeout."""
    pacing = (len(fits) - 1) / per_second if per_second else 0.0
    return pacing + max(fit.timeout_s for fit in fits) + TIMEOUT_GRACE_S
