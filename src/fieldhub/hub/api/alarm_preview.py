"""``POST /api/alarm-rules/preview``: what a rule would have raised over stored history.

The body is a rule exactly as ``POST /api/alarm-rules`` takes it (checked by the same
``parse_rule``), stored nowhere; ``hours`` says how far back to look. The replay is the alarm
engine's own (``hub/alarms/preview.py``), over the devices of the caller's sites only, so a
preview tells nothing a caller could not read in the devices' history.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query
from pydantic import BaseModel

from fieldhub.clock import now_ms
from fieldhub.hub.alarms import parse_rule
from fieldhub.hub.alarms.preview import (
    MAX_HOURS,
    Preview,
    PreviewAlarm,
    PreviewSource,
    preview_rule,
)
from fieldhub.hub.api.alarm_models import AlarmRuleIn
from fieldhub.hub.api.deps import hub_dependency
from fieldhub.hub.api.fields import StoredValue
from fieldhub.hub.api.security import require
from fieldhub.hub.app import Hub
from fieldhub.hub.auth import Permission, Principal

router = APIRouter(prefix="/api/alarm-rules", tags=["alarms"])
HubDep = Annotated[Hub, Depends(hub_dependency)]
Reader = Annotated[Principal, require(Permission.ALARMS_READ)]


class PreviewAlarmOut(BaseModel):
    """One alarm the rule would have raised."""

    device_id: str
    raised_at: int
    cleared_at: int | None  # None: still open at the end of the span
    value: StoredValue
    message: str

    @classmethod
    def of(cls, alarm: PreviewAlarm) -> PreviewAlarmOut:
        """The answer for ``alarm``."""
        return cls(
            device_id=alarm.device_id,
            raised_at=alarm.raised_at,
            cleared_at=alarm.cleared_at,
            value=alarm.value,
            message=alarm.message,
        )


class PreviewOut(BaseModel):
    """What the rule would have done over ``[since, until)``."""

    rule_id: str
    since: int
    until: int
    devices: int  # devices of the caller's sites that the rule covers, replayed
    rows: int  # stored values or events read
    raised: int
    open: int
    alarms: list[PreviewAlarmOut]
    cut: str | None  # which bound stopped the work (then ``until`` is where), None when whole
    notes: list[str]

    @classmethod
    def of(cls, preview: Preview) -> PreviewOut:
        """The answer for ``preview``."""
        return cls(
            rule_id=preview.rule_id,
            since=preview.since,
            until=preview.until,
            devices=preview.devices,
            rows=preview.rows,
            raised=len(preview.alarms),
            open=preview.open,
            alarms=[PreviewAlarmOut.of(a) for a in preview.alarms],
            cut=preview.cut,
            notes=preview.notes,
        )


@router.post("/preview", summary="Preview an alarm rule against stored history")
async def preview(
    hub: HubDep,
    who: Reader,
    body: AlarmRuleIn,
    hours: Annotated[int, Query(ge=1, le=MAX_HOURS, description="how far back")] = 24,
) -> PreviewOut:
    """The alarms the rule (not stored) would have raised over the last ``hours`` on the
    stored values and events of the devices of the caller's sites it covers."""
    raw = body.raw()
    rule = parse_rule(raw, rule_id=None if "id" in raw else "preview", loc=("body",))
    devices = [d for d in await hub.registry.list() if who.sees(d.labels)]
    until = now_ms()
    answer = await preview_rule(
        rule, devices, PreviewSource.of(hub.engine), since=until - hours * 3_600_000, until=until
    )
    return PreviewOut.of(answer)
