"""Retention: ``GET/PUT /api/retention`` (docs/retention.md).

Admins only: how long data is kept is the whole fleet's business, and the budget reading
shows the hub's disk. The body of ``PUT`` is the policy itself (``hub/retention/policy.py``,
the one home of its rules), so a bad field is a 422 naming it (``["body", "raw_days"]``).
"""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel, Field

from fieldhub.hub.api.deps import hub_dependency
from fieldhub.hub.api.security import client_address, require
from fieldhub.hub.app import Hub
from fieldhub.hub.auth import Permission, Principal
from fieldhub.hub.retention import RetentionPolicy
from fieldhub.hub.retention.service import PolicyRecord

router = APIRouter(prefix="/api/retention", tags=["hub"])
HubDep = Annotated[Hub, Depends(hub_dependency)]
Reader = Annotated[Principal, require(Permission.HUB_READ)]
Writer = Annotated[Principal, require(Permission.HUB_WRITE)]


class Budget(BaseModel):
    """The disk budget as the last sweep read it."""

    of: Literal["database", "disk"]
    used_bytes: int
    budget_bytes: int
    used_pct: float = Field(description="alarm (health degraded) and, on SQLite, trims at 80")


class RetentionOut(BaseModel):
    """The policy in force, who set it, what the trimmer removed, the budget."""

    policy: RetentionPolicy
    updated_at: int = Field(description="epoch ms; 0: the defaults, never set")
    updated_by: str
    removed: dict[str, int] = Field(
        description=(
            "rows removed since the hub started: samples, rollups (every tier), events,"
            " alarms, budget"
        )
    )
    budget: Budget | None = Field(description="none before the first sweep")


def _out(hub: Hub, record: PolicyRecord) -> RetentionOut:
    reading = hub.retention.budget
    budget = (
        None
        if reading is None
        else Budget(
            of=reading.of,
            used_bytes=reading.used_bytes,
            budget_bytes=reading.budget_bytes,
            used_pct=round(reading.share * 100, 1),
        )
    )
    return RetentionOut(
        policy=record.policy,
        updated_at=record.updated_at,
        updated_by=record.updated_by,
        removed=dict(hub.retention.trimmer.removed),
        budget=budget,
    )


@router.get("", summary="The retention policy")
async def get_retention(hub: HubDep, _: Reader) -> RetentionOut:
    """The policy in force (the defaults until an admin sets one) and the disk budget."""
    return _out(hub, hub.retention.record)


@router.put("", summary="Set the retention policy")
async def put_retention(
    request: Request, hub: HubDep, who: Writer, body: RetentionPolicy
) -> RetentionOut:
    """Replace the policy whole (audited); it applies from the next sweep (within a minute).
    422 naming the field for a bad one."""
    record = await hub.retention.set(body, actor=who.actor, source=client_address(request))
    return _out(hub, record)
