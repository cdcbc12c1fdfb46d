"""Alarm rules and alarms: ``/api/alarm-rules`` and ``/api/alarms`` (docs/alarms.md).

Sites scope both like devices: a caller sees the alarms of the devices of its sites, and the
rules that can reach them; it may write a rule only when the rule's whole target lies in its
sites (a rule for every device, or labels without a site, is an admin's).
"""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Query, Request, Response

from fieldhub.clock import now_ms
from fieldhub.hub.alarms import AlarmFilter, AlarmRecord, Rule, StoredRule, parse_rule
from fieldhub.hub.alarms.rules import Target
from fieldhub.hub.api.alarm_models import (
    AlarmAssign,
    AlarmChangeOut,
    AlarmComment,
    AlarmCursor,
    AlarmDetail,
    AlarmNote,
    AlarmOut,
    AlarmPage,
    AlarmRuleIn,
    AlarmRuleOut,
    AlarmShelve,
    AlarmSummary,
    DeviceAlarmCount,
)
from fieldhub.hub.api.deps import hub_dependency
from fieldhub.hub.api.fields import RowId
from fieldhub.hub.api.security import client_address, require
from fieldhub.hub.app import Hub
from fieldhub.hub.auth import SITE_LABEL, Permission, Principal, UserRecord
from fieldhub.hub.auth.rules import principal_for
from fieldhub.hub.errors import Invalid, NotFound, Refused

rules_router = APIRouter(prefix="/api/alarm-rules", tags=["alarms"])
alarms_router = APIRouter(prefix="/api/alarms", tags=["alarms"])
HubDep = Annotated[Hub, Depends(hub_dependency)]
Reader = Annotated[Principal, require(Permission.ALARMS_READ)]
Writer = Annotated[Principal, require(Permission.ALARMS_WRITE)]
Severity = Literal["critical", "major", "minor", "warning", "info"]  # rules.SEVERITIES


# -- who sees and writes which rule -----------------------------------------------------------
def _sees_device(hub: Hub, who: Principal, device_id: str) -> bool:
    entry = hub.directory.get(device_id)
    return who.sees(entry.labels) if entry is not None else who.sites is None


def sees_rule(hub: Hub, who: Principal, target: Target) -> bool:
    """A rule is visible when it can reach a device of the caller's sites."""
    if who.sites is None:
        return True
    if target.devices is not None:
        return any(_sees_device(hub, who, d) for d in target.devices)
    if target.labels is not None and SITE_LABEL in target.labels:
        return who.sees_site(target.labels[SITE_LABEL])
    return True  # every device, or labels across sites: it reaches the caller's devices too


def check_rule_write(hub: Hub, who: Principal, target: Target) -> None:
    """A non-admin writes only rules whose whole target lies in its sites."""
    if who.sites is None:
        return
    if target.devices is not None and all(_sees_device(hub, who, d) for d in target.devices):
        return
    if target.labels is not None and who.sees_site(target.labels.get(SITE_LABEL)):
        return
    mine = ", ".join(sorted(who.sites)) or "none"
    raise Refused(
        f"target: a rule of yours must name devices of your sites or the label"
        f" {SITE_LABEL!r} of one of them ({mine})"
    )


async def _visible_rule(hub: Hub, who: Principal, rule_id: str) -> StoredRule:
    stored = await hub.alarms.rule(rule_id)
    if not sees_rule(hub, who, stored.rule.target):
        raise NotFound(f"alarm rule {rule_id!r} does not exist")  # as the store says
    return stored


async def _visible_alarm(hub: Hub, who: Principal, alarm_id: int) -> AlarmRecord:
    record = await hub.alarms.alarm(alarm_id)
    if not _sees_device(hub, who, record.device_id):
        raise NotFound(f"alarm {alarm_id} does not exist")  # as the store says
    return record


# -- rules ------------------------------------------------------------------------------------
@rules_router.get("", summary="List alarm rules")
async def list_rules(hub: HubDep, who: Reader) -> list[AlarmRuleOut]:
    """Every rule that can reach a device of the caller's sites, by id."""
    return [
        AlarmRuleOut.of(s) for s in await hub.alarms.rules() if sees_rule(hub, who, s.rule.target)
    ]


@rules_router.post("", status_code=201, summary="Create an alarm rule")
async def create_rule(
    request: Request, hub: HubDep, who: Writer, body: AlarmRuleIn
) -> AlarmRuleOut:
    """A new rule (an id is made when none is given); 409 when the id is taken."""
    rule = _parsed(body)
    check_rule_write(hub, who, rule.target)
    stored = await hub.alarms.put_rule(
        body.raw(), actor=who.actor, source=client_address(request), create=True, loc=("body",)
    )
    return AlarmRuleOut.of(stored)


@rules_router.get("/{rule_id}", summary="Get an alarm rule")
async def get_rule(hub: HubDep, who: Reader, rule_id: str) -> AlarmRuleOut:
    """One rule."""
    return AlarmRuleOut.of(await _visible_rule(hub, who, rule_id))


@rules_router.put("/{rule_id}", summary="Replace an alarm rule")
async def replace_rule(
    request: Request, hub: HubDep, who: Writer, rule_id: str, body: AlarmRuleIn
) -> AlarmRuleOut:
    """Replace a rule whole; its pending timers start over, its open alarms stay."""
    old = await _visible_rule(hub, who, rule_id)
    check_rule_write(hub, who, old.rule.target)
    check_rule_write(hub, who, _parsed(body, rule_id).target)
    stored = await hub.alarms.put_rule(
        body.raw(),
        actor=who.actor,
        source=client_address(request),
        rule_id=rule_id,
        create=False,
        loc=("body",),
    )
    return AlarmRuleOut.of(stored)


@rules_router.delete("/{rule_id}", status_code=204, summary="Delete an alarm rule")
async def delete_rule(request: Request, hub: HubDep, who: Writer, rule_id: str) -> Response:
    """Delete a rule; its open alarms are cleared ("rule deleted"), their history stays."""
    old = await _visible_rule(hub, who, rule_id)
    check_rule_write(hub, who, old.rule.target)
    await hub.alarms.delete_rule(rule_id, actor=who.actor, source=client_address(request))
    return Response(status_code=204)


def _parsed(body: AlarmRuleIn, rule_id: str | None = None) -> Rule:
    raw = body.raw()
    if rule_id is None and "id" not in raw:
        rule_id = "new"  # the id the service makes does not change the target
    return parse_rule(raw, rule_id=rule_id, loc=("body",))


# -- alarms -----------------------------------------------------------------------------------
@alarms_router.get("", summary="List alarms")
async def list_alarms(
    hub: HubDep,
    who: Reader,
    state: Annotated[list[Literal["active", "acknowledged", "cleared"]], Query()] = [],  # noqa: B006
    severity: Annotated[list[Severity], Query()] = [],  # noqa: B006
    device: Annotated[str | None, Query(max_length=64)] = None,
    rule: Annotated[str | None, Query(max_length=64)] = None,
    assignee: Annotated[
        str | None, Query(max_length=64, description="a user's name, or me: the caller")
    ] = None,
    cursor: Annotated[AlarmCursor | None, Query(description="next_cursor of the last page")] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> AlarmPage:
    """Alarms matching every filter, newest first (of the caller's sites' devices)."""
    devices = None
    if who.sites is not None:
        devices = frozenset(e.id for e in hub.directory.matching({}) if who.sees(e.labels))
    where = AlarmFilter(
        states=state,
        severities=severity,
        device=device,
        rule=rule,
        assignee=who.name if assignee == "me" else assignee,
        devices=devices,
        before_id=int(cursor) if cursor else None,
        limit=limit,
    )
    found = await hub.alarms.find(where)
    next_cursor = str(found[-1].id) if len(found) == limit else None
    return AlarmPage(alarms=[AlarmOut.of(a) for a in found], next_cursor=next_cursor)


_OPEN = ("active", "acknowledged")
_RANK = {"critical": 0, "major": 1, "minor": 2, "warning": 3, "info": 4}  # rules.SEVERITIES
_SUMMARY_PAGE = 1000


@alarms_router.get("/summary", summary="Count open alarms")
async def summary(hub: HubDep, who: Reader) -> AlarmSummary:
    """The caller's open alarms counted in total, by severity and per device (shelved ones
    apart): what a badge shows, in one request however many devices there are.

    Open alarms are few by construction (one per device and rule), so they are read whole,
    a page of 1,000 at a time.
    """
    devices = None
    if who.sites is not None:
        devices = frozenset(e.id for e in hub.directory.matching({}) if who.sees(e.labels))
    now = now_ms()
    total = shelved = 0
    first_back: int | None = None
    by_severity: dict[str, int] = {}
    per_device: dict[str, DeviceAlarmCount] = {}
    before: int | None = None
    while True:
        where = AlarmFilter(states=_OPEN, devices=devices, before_id=before, limit=_SUMMARY_PAGE)
        found = await hub.alarms.find(where)
        for alarm in found:
            count = per_device.setdefault(
                alarm.device_id, DeviceAlarmCount(open=0, severity=None, shelved=0)
            )
            if alarm.shelved_until is not None and alarm.shelved_until > now:
                shelved += 1
                count.shelved += 1
                first_back = min(first_back or alarm.shelved_until, alarm.shelved_until)
                continue
            total += 1
            count.open += 1
            by_severity[alarm.severity] = by_severity.get(alarm.severity, 0) + 1
            if count.severity is None or _RANK.get(alarm.severity, 9) < _RANK.get(
                count.severity, 9
            ):
                count.severity = alarm.severity
        if len(found) < _SUMMARY_PAGE:
            break
        before = found[-1].id
    return AlarmSummary(
        open=total,
        shelved=shelved,
        shelved_until=first_back,
        by_severity=by_severity,
        devices=per_device,
    )


@alarms_router.get("/{alarm_id}", summary="Get an alarm with its history")
async def get_alarm(hub: HubDep, who: Reader, alarm_id: RowId) -> AlarmDetail:
    """One alarm and every change it went through."""
    record = await _visible_alarm(hub, who, alarm_id)
    history = [AlarmChangeOut.of(c) for c in await hub.alarms.history(alarm_id)]
    return AlarmDetail(**AlarmOut.of(record).model_dump(), history=history)


@alarms_router.post("/{alarm_id}/acknowledge", summary="Acknowledge an alarm")
async def acknowledge(
    request: Request, hub: HubDep, who: Writer, alarm_id: RowId, body: AlarmComment
) -> AlarmOut:
    """Acknowledge an open alarm; a latched one (its condition gone) is cleared with it."""
    await _visible_alarm(hub, who, alarm_id)
    record = await hub.alarms.acknowledge(
        alarm_id, actor=who.actor, comment=body.comment, source=client_address(request)
    )
    return AlarmOut.of(record)


@alarms_router.post("/{alarm_id}/clear", summary="Clear an alarm")
async def clear(
    request: Request, hub: HubDep, who: Writer, alarm_id: RowId, body: AlarmComment
) -> AlarmOut:
    """Clear an open alarm by hand, where its rule allows it (``clearable_by_user``)."""
    await _visible_alarm(hub, who, alarm_id)
    record = await hub.alarms.clear(
        alarm_id, actor=who.actor, comment=body.comment, source=client_address(request)
    )
    return AlarmOut.of(record)


@alarms_router.post("/{alarm_id}/shelve", summary="Shelve an alarm")
async def shelve(
    request: Request, hub: HubDep, who: Writer, alarm_id: RowId, body: AlarmShelve
) -> AlarmOut:
    """Put an open alarm away until ``until`` (at most 30 days ahead)."""
    await _visible_alarm(hub, who, alarm_id)
    record = await hub.alarms.shelve(
        alarm_id,
        until=body.until,
        actor=who.actor,
        comment=body.comment,
        source=client_address(request),
    )
    return AlarmOut.of(record)


@alarms_router.post("/{alarm_id}/unshelve", summary="Unshelve an alarm")
async def unshelve(
    request: Request, hub: HubDep, who: Writer, alarm_id: RowId, body: AlarmComment
) -> AlarmOut:
    """Take a shelved alarm back before its time (409 when it is not shelved)."""
    await _visible_alarm(hub, who, alarm_id)
    record = await hub.alarms.unshelve(
        alarm_id, actor=who.actor, comment=body.comment, source=client_address(request)
    )
    return AlarmOut.of(record)


# -- who has an alarm -------------------------------------------------------------------------
def _may_have(hub: Hub, user: UserRecord, device_id: str) -> bool:
    """An alarm goes only to an enabled user who sees its device, by the rule every route
    uses (:meth:`Principal.sees`)."""
    if user.disabled:
        return False
    eyes = principal_for(
        via="session", user_id=user.id, name=user.name, role=user.role, sites=user.sites
    )
    return _sees_device(hub, eyes, device_id)


@alarms_router.get("/{alarm_id}/assignable", summary="Users an alarm may be given to")
async def assignable(hub: HubDep, who: Writer, alarm_id: RowId) -> list[str]:
    """The names (nothing else) of the enabled users who see the alarm's device, sorted: what
    the dashboard's assign select offers."""
    record = await _visible_alarm(hub, who, alarm_id)
    users = await hub.auth.accounts.all_users()
    return sorted(u.name for u in users if _may_have(hub, u, record.device_id))


@alarms_router.post("/{alarm_id}/assign", summary="Assign an alarm")
async def assign(
    request: Request, hub: HubDep, who: Writer, alarm_id: RowId, body: AlarmAssign
) -> AlarmOut:
    """Give an open alarm to a user who sees its device (null: to nobody); 409 when cleared."""
    record = await _visible_alarm(hub, who, alarm_id)
    if body.assignee is not None:
        name = body.assignee.strip().lower()
        users = await hub.auth.accounts.all_users()
        if not any(u.name == name and _may_have(hub, u, record.device_id) for u in users):
            raise Invalid(
                "assignee: no enabled user of that name sees this alarm's device",
                ("body", "assignee"),
            )
        body.assignee = name
    record = await hub.alarms.assign(
        alarm_id,
        assignee=body.assignee,
        actor=who.actor,
        comment=body.comment,
        source=client_address(request),
    )
    return AlarmOut.of(record)


@alarms_router.post("/{alarm_id}/comment", summary="Comment on an alarm")
async def comment(
    request: Request, hub: HubDep, who: Writer, alarm_id: RowId, body: AlarmNote
) -> AlarmOut:
    """Add a comment to an open alarm's history; 409 when it is cleared."""
    await _visible_alarm(hub, who, alarm_id)
    record = await hub.alarms.comment(
        alarm_id, actor=who.actor, comment=body.comment, source=client_address(request)
    )
    return AlarmOut.of(record)
