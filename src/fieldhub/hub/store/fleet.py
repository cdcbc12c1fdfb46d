"""The fleet read in the database: one page of devices filtered and sorted, and the counts of the
whole fleet, each in a few statements however many devices there are.

Why here and not in memory: the fleet page of a hub with 10,000 devices used to read every
device row and filter in Python (and the browser asked two requests per device); the database
filters, counts and sorts with the rows where they lie, and any hub process sharing the database
answers the same.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

from sqlalchemy import ColumnElement, Select, and_, case, func, or_, select, true
from sqlalchemy.ext.asyncio import AsyncEngine

from fieldhub.clock import now_ms
from fieldhub.hub.store.devices import DeviceRecord
from fieldhub.hub.store.queries import LatestValue, render_value
from fieldhub.hub.store.schema import alarms, devices, series
from fieldhub.protocol.messages import DESIRED_ERRORS_KEY

SortKey = Literal["id", "name", "last_seen", "presence"]
SITE, GROUP = "site", "group"
CLEARED = "cleared"
"""The one state of an alarm that is not open (active and acknowledged are)."""
CENSUS_TTL_S = 1.0
"""How old the fleet's counts may be: the page reads them again at most once a second, and
one grouped scan of 10,000 rows costs 30-200 ms on a loaded 2-core machine; every caller in
that second (whatever their sites) shares one scan."""
CensusRow = tuple[str, str | None, str | None, int, int]
"""(presence, site, group, devices, troubled devices) of one group of the census."""
TROUBLED = ("offline", "stale", "unreachable")
"""Presence states that are a problem in themselves (``unknown``: never heard of, not yet)."""
_PRESENCE_RANK = {"online": 0, "stale": 1, "unreachable": 2, "offline": 3, "unknown": 4}


@dataclass(frozen=True, slots=True)
class FleetFilter:
    """Which devices a list shows; every field narrows, none set means the caller's whole fleet.

    ``sites`` is the caller's scope (None: every device, an admin's view).
    """

    sites: Collection[str] | None = None
    labels: Mapping[str, str] = field(default_factory=dict)
    presence: Collection[str] = ()
    text: str = ""
    alarmed: bool | None = None
    troubled: bool | None = None
    parent: str | None = None
    ids: Collection[str] | None = None


@dataclass(frozen=True, slots=True)
class FleetPage:
    """One page of devices and how many the filter matches in all."""

    devices: list[DeviceRecord]
    total: int


@dataclass(frozen=True, slots=True)
class FleetSummary:
    """Counts of a caller's fleet: a device counts once in each mapping (``alarms``: by the
    most serious severity of its open alarms; ``None`` keys: no such label)."""

    total: int
    presence: dict[str, int]
    sites: dict[str | None, int]
    groups: dict[str | None, int]
    alarms: dict[str, int]
    alarmed: int
    troubled: int


def _label(key: str) -> ColumnElement[str]:
    """A label's value as text (SQLite: ``json_extract``; PostgreSQL: ``->>``)."""
    value: ColumnElement[str] = devices.c.labels[key].as_string()
    return value


def _open_alarms(now: int) -> Select[tuple[str, str]]:
    """(device, severity) of every open alarm not shelved at ``now`` (``!= cleared``: the
    words of the partial index ``uq_alarms_open``, so the history of cleared alarms is never
    read)."""
    return select(alarms.c.device_id, alarms.c.severity).where(
        alarms.c.state != CLEARED,
        or_(alarms.c.shelved_until.is_(None), alarms.c.shelved_until <= now),
    )


def _refused() -> ColumnElement[bool]:
    """The device reports desired keys it refused (a non-empty ``desired_errors``)."""
    refused = func.coalesce(devices.c.reported[DESIRED_ERRORS_KEY].as_string(), "{}")
    return refused.not_in(("{}", "null", ""))


def _troubled(now: int) -> ColumnElement[bool]:
    """One home for what the fleet page calls a device with problems, as far as the store can
    tell: absent, an open alarm, or desired keys refused. (Unit trouble words and a twin out of
    sync are judged by the page on the rows it shows, from the twin: ``web/js/problems.js``.)"""
    alarmed = devices.c.id.in_(_open_alarms(now).with_only_columns(alarms.c.device_id))
    return or_(devices.c.presence.in_(TROUBLED), alarmed, _refused())


def _where(which: FleetFilter, now: int) -> ColumnElement[bool]:
    conditions: list[ColumnElement[bool]] = []
    if which.sites is not None:
        conditions.append(_label(SITE).in_(list(which.sites)))
    conditions.extend(_label(key) == value for key, value in which.labels.items())
    if which.presence:
        conditions.append(devices.c.presence.in_(list(which.presence)))
    if which.text:
        conditions.append(
            or_(
                devices.c.id.icontains(which.text, autoescape=True),
                devices.c.name.icontains(which.text, autoescape=True),
            )
        )
    if which.alarmed is not None:
        alarmed = devices.c.id.in_(_open_alarms(now).with_only_columns(alarms.c.device_id))
        conditions.append(alarmed if which.alarmed else ~alarmed)
    if which.troubled is not None:
        troubled = _troubled(now)
        conditions.append(troubled if which.troubled else ~troubled)
    if which.parent is not None:
        conditions.append(devices.c.parent_id == which.parent)
    if which.ids is not None:
        conditions.append(devices.c.id.in_(list(which.ids)))
    return and_(true(), *conditions)


def _order(sort: SortKey, descending: bool) -> list[ColumnElement[object]]:
    """The order of a page, the id last so that pages never overlap; devices never seen sort
    after the others whichever the direction."""
    if sort == "presence":
        column: ColumnElement[object] = case(_PRESENCE_RANK, value=devices.c.presence, else_=9)
    else:
        column = devices.c[sort]
    keyed = column.desc() if descending else column.asc()
    ident = devices.c.id.desc() if descending else devices.c.id.asc()
    return [keyed.nulls_last(), ident] if sort != "id" else [ident]


class FleetQueries:
    """Pages and counts of the fleet, read from the store."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine
        self._counting = asyncio.Lock()
        self._taken: tuple[float, list[CensusRow] | None] = (0.0, None)

    async def page(
        self,
        which: FleetFilter,
        *,
        sort: SortKey = "id",
        descending: bool = False,
        offset: int = 0,
        limit: int | None = None,
    ) -> FleetPage:
        """Devices matching ``which`` in the given order, ``offset`` skipped, at most
        ``limit`` (all without), and how many match in all."""
        where = _where(which, now_ms())
        rows = select(devices).where(where).order_by(*_order(sort, descending)).offset(offset)
        if limit is not None:
            rows = rows.limit(limit)
        async with self._engine.connect() as conn:
            found = [DeviceRecord.from_row(r) for r in await conn.execute(rows)]
            if limit is None or (len(found) < limit and (found or offset == 0)):
                total = offset + len(found)
            else:
                count = select(func.count()).select_from(devices).where(where)
                total = int((await conn.execute(count)).scalar_one())
        return FleetPage(found, total)

    async def latest(self, device_ids: Collection[str]) -> dict[str, list[LatestValue]]:
        """The newest value of every key of each of ``device_ids``, in one statement (a page
        of the fleet asks once, not once per device)."""
        query = (
            select(
                series.c.device_id,
                series.c.key,
                series.c.kind,
                series.c.last_ts,
                series.c.last_num,
                series.c.last_txt,
            )
            .where(series.c.device_id.in_(list(device_ids)), series.c.last_ts.is_not(None))
            .order_by(series.c.device_id, series.c.key)
        )
        found: dict[str, list[LatestValue]] = {device_id: [] for device_id in device_ids}
        async with self._engine.connect() as conn:
            for r in await conn.execute(query):
                value = render_value(r.kind, r.last_num, r.last_txt)
                found[r.device_id].append(LatestValue(r.key, r.last_ts, value))
        return found

    async def summary(
        self, sites: Collection[str] | None, severities: Sequence[str]
    ) -> FleetSummary:
        """Counts of the devices of ``sites`` (None: all): the fleet's census (at most
        :data:`CENSUS_TTL_S` old) narrowed to the sites, and the open alarms of their devices;
        ``severities``, most serious first, rank these (the alarm rules' list; another
        severity counts as ``other``)."""
        by_presence: dict[str, int] = {}
        by_site: dict[str | None, int] = {}
        by_group: dict[str | None, int] = {}
        total = troubled = 0
        for presence, site, group, count, bad in await self._census():
            if sites is not None and site not in sites:
                continue
            by_presence[presence] = by_presence.get(presence, 0) + count
            by_site[site] = by_site.get(site, 0) + count
            by_group[group] = by_group.get(group, 0) + count
            total += count
            troubled += bad
        now = now_ms()
        open_alarms = _open_alarms(now).join(devices, devices.c.id == alarms.c.device_id)
        worst: dict[str, int] = {}  # device → rank of its most serious open alarm
        async with self._engine.connect() as conn:
            scoped = open_alarms.where(_where(FleetFilter(sites=sites), now))
            for alarm in await conn.execute(scoped):
                severity = alarm.severity
                rank = severities.index(severity) if severity in severities else len(severities)
                worst[alarm.device_id] = min(worst.get(alarm.device_id, rank), rank)
        by_severity: dict[str, int] = {}
        for rank in worst.values():
            name = severities[rank] if rank < len(severities) else "other"
            by_severity[name] = by_severity.get(name, 0) + 1
        return FleetSummary(
            total, by_presence, by_site, by_group, by_severity, len(worst), troubled
        )

    async def _census(self) -> list[CensusRow]:
        """The whole fleet counted by (presence, site, group), with the troubled of each: read
        again when older than :data:`CENSUS_TTL_S`, by one caller while the others wait. (The
        page reads the counts a second after a change it hears of: by then a census from
        before the change is too old to answer.)"""
        async with self._counting:
            taken, rows = self._taken
            if rows is None or time.monotonic() - taken > CENSUS_TTL_S:
                started = time.monotonic()  # what changed during the scan may be missing
                rows = await self._count()
                self._taken = (started, rows)
            return rows

    async def _count(self) -> list[CensusRow]:
        site, group = _label(SITE), _label(GROUP)
        troubled = func.sum(case((_troubled(now_ms()), 1), else_=0))
        counts = select(devices.c.presence, site, group, func.count(), troubled).group_by(
            devices.c.presence, site, group
        )
        async with self._engine.connect() as conn:
            return [
                (presence, site_name, group_name, int(count), int(bad or 0))
                for presence, site_name, group_name, count, bad in await conn.execute(counts)
            ]
