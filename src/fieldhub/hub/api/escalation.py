"""Escalation policies: ``/api/escalation-policies`` (docs/notifications.md, "Escalation and
reminders").

Whoever reads alarms may read the policies their rules name; only admins write them (a policy
says which channels an alarm reaches, like the channels themselves).
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Request, Response

from fieldhub.hub.api.deps import hub_dependency
from fieldhub.hub.api.escalation_models import PolicyId, PolicyIn, PolicyOut
from fieldhub.hub.api.security import client_address, require
from fieldhub.hub.app import Hub
from fieldhub.hub.auth import Permission, Principal
from fieldhub.hub.errors import Invalid

router = APIRouter(prefix="/api/escalation-policies", tags=["notifications"])
HubDep = Annotated[Hub, Depends(hub_dependency)]
Reader = Annotated[Principal, require(Permission.ALARMS_READ)]
Writer = Annotated[Principal, require(Permission.NOTIFICATIONS_WRITE)]


@router.get("", summary="List escalation policies")
async def list_policies(hub: HubDep, _: Reader) -> list[PolicyOut]:
    """Every policy, by id."""
    return [PolicyOut.of(p) for p in await hub.escalation.list()]


@router.post("", status_code=201, summary="Create an escalation policy")
async def create_policy(request: Request, hub: HubDep, who: Writer, body: PolicyIn) -> PolicyOut:
    """201; 409 when the id is taken; 422 naming a bad field (a channel that does not exist:
    ``["body", "steps", 0, "channels"]``)."""
    if body.id is None:
        raise Invalid("id: required when creating a policy", ("body", "id"))
    stored = await hub.escalation.put(
        body.policy(body.id), actor=who.actor, source=client_address(request), create=True
    )
    return PolicyOut.of(stored)


@router.get("/{policy_id}", summary="Get an escalation policy")
async def get_policy(hub: HubDep, _: Reader, policy_id: PolicyId) -> PolicyOut:
    """One policy."""
    return PolicyOut.of(await hub.escalation.get(policy_id))


@router.put("/{policy_id}", summary="Replace an escalation policy")
async def replace_policy(
    request: Request, hub: HubDep, who: Writer, policy_id: PolicyId, body: PolicyIn
) -> PolicyOut:
    """Replace it whole; alarms raised before keep the messages planned for them."""
    if body.id is not None and body.id != policy_id:
        raise Invalid(f"id {body.id!r} differs from the policy's id {policy_id!r}", ("body", "id"))
    stored = await hub.escalation.put(
        body.policy(policy_id), actor=who.actor, source=client_address(request), create=False
    )
    return PolicyOut.of(stored)


@router.delete("/{policy_id}", status_code=204, summary="Delete an escalation policy")
async def delete_policy(
    request: Request, hub: HubDep, who: Writer, policy_id: PolicyId
) -> Response:
    """Delete it; 409 while a rule names it."""
    await hub.escalation.delete(policy_id, actor=who.actor, source=client_address(request))
    return Response(status_code=204)
