"""The audit log, for admins: filtered and paged, newest first."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Query, Request

from fieldhub.hub.api.access_models import AuditEntryOut, AuditPageOut
from fieldhub.hub.api.deps import get_hub
from fieldhub.hub.api.fields import AuditCursor, EpochMs
from fieldhub.hub.api.security import require
from fieldhub.hub.auth import Permission, Principal

router = APIRouter(prefix="/api/audit", tags=["audit"])


@router.get("", summary="Audit log")
async def audit_log(
    request: Request,
    _: Annotated[Principal, require(Permission.AUDIT_READ)],
    actor: Annotated[str | None, Query(description="user:NAME also finds NAME's tokens")] = None,
    action: Annotated[str | None, Query(description="e.g. login, or a family like user.*")] = None,
    target: Annotated[str | None, Query(description="user name, token:ID, device id")] = None,
    outcome: Annotated[Literal["ok", "denied", "failed"] | None, Query()] = None,
    start: Annotated[EpochMs | None, Query(description="epoch ms, inclusive")] = None,
    end: Annotated[EpochMs | None, Query(description="epoch ms, exclusive")] = None,
    cursor: Annotated[
        AuditCursor | None, Query(description="next_cursor of the previous page")
    ] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> AuditPageOut:
    """Security-relevant actions (logins, logouts, user and token changes, credentials, claims)."""
    page = await get_hub(request).auth.audit.query(
        actor=actor,
        action=action,
        target=target,
        outcome=outcome,
        start=start,
        end=end,
        cursor=cursor,
        limit=limit,
    )
    return AuditPageOut(
        entries=[AuditEntryOut.from_entry(e) for e in page.entries], next_cursor=page.next_cursor
    )
