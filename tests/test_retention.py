"""Retention (docs/retention.md): admins read and set the policy, bad ones are 422 naming the
field; a sweep removes what the policy no longer keeps, per key glob and device label, per
event type, on SQLite and PostgreSQL, and nothing younger; the disk budget guard degrades
health, counts in /metrics and on SQLite trims the oldest raw samples first."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import func, select

from fieldhub.clock import now_ms
from fieldhub.hub.app import Hub
from fieldhub.hub.retention.guard import KEEP_MS
from fieldhub.hub.store.schema import alarm_changes, alarms, events, rollups, samples, series
from fieldhub.protocol import Channel, Event, Sample, Telemetry
from tests.conftest import DeviceFactory, HubFactory, api_client

DAY = 86_400_000
POLICY: dict[str, Any] = {
    "raw_days": 10,
    "minute_days": 20,
    "hour_days": 40,
    "day_days": 400,
    "events_days": 15,
    "alarms_days": 30,
    "event_types": {"door.open": 3},
    "overrides": [
        {"key": "vibration.*", "labels": {}, "days": 2},
        {"key": "temp", "labels": {"site": "berlin"}, "days": 30},
    ],
    "budget_mb": 0,
}


async def test_admins_read_and_set_the_policy_others_are_refused(hub: Hub) -> None:
    async with (
        api_client(hub) as admin,
        api_client(hub, "operator") as operator,
        api_client(hub, None) as anonymous,
    ):
        shown = (await admin.get("/api/retention")).json()
        assert shown["policy"]["raw_days"] == 30
        assert shown["updated_at"] == 0
        assert (await operator.get("/api/retention")).status_code == 403
        assert (await operator.put("/api/retention", json=POLICY)).status_code == 403
        assert (await anonymous.get("/api/retention")).status_code == 401

        stored = await admin.put("/api/retention", json=POLICY)
        assert stored.status_code == 200, stored.text
        assert stored.json()["updated_by"].startswith("user:")
        assert (await admin.get("/api/retention")).json()["policy"] == POLICY
        audit = (await admin.get("/api/audit", params={"action": "retention.set"})).json()
        assert [entry["action"] for entry in audit["entries"]] == ["retention.set"]


BAD: list[tuple[dict[str, Any], list[Any]]] = [
    ({"raw_days": 0}, ["body", "raw_days"]),
    ({"events_days": "a year"}, ["body", "events_days"]),
    ({"event_types": {"door open": 3}}, ["body", "event_types", "door open", "[key]"]),
    ({"overrides": [{"key": "a/b", "days": 3}]}, ["body", "overrides", 0, "key"]),
    ({"overrides": [{"key": "x"}]}, ["body", "overrides", 0, "days"]),
    ({"raw_days": 40, "minute_days": 20}, ["body", "minute_days"]),
    ({"hour_days": 15}, ["body", "hour_days"]),
    ({"hour_days": 400, "day_days": 300}, ["body", "day_days"]),
    ({"alarms_days": 0}, ["body", "alarms_days"]),
    ({"week_days": 400}, ["body", "week_days"]),
]


async def test_a_bad_policy_is_a_422_naming_the_field(hub: Hub) -> None:
    async with api_client(hub) as admin:
        for change, loc in BAD:
            refused = await admin.put("/api/retention", json={**POLICY, **change})
            assert refused.status_code == 422
            assert loc in [error["loc"] for error in refused.json()["detail"]], refused.text
        assert (await admin.get("/api/retention")).json()["updated_at"] == 0  # nothing stored


@pytest.mark.parametrize(
    "db", ["sqlite", pytest.param("postgres", marks=[pytest.mark.postgres, pytest.mark.slow])]
)
async def test_a_sweep_removes_what_the_policy_no_longer_keeps_and_nothing_younger(
    make_hub: HubFactory, connect_device: DeviceFactory, db: str
) -> None:
    now = now_ms()
    instants = [now - hours * 3_600_000 for hours in range(40 * 24, 0, -6)]  # 40 days, 6-hourly
    async with make_hub(db=db) as hub:
        berlin = await connect_device(hub, "berlin", site="berlin")
        paris = await connect_device(hub, "paris", site="paris")
        for device in (berlin, paris):
            values = {"temp": 20.5, "vibration.x": 0.1, "power": 230}
            device.publish(
                Channel.TELEMETRY,
                Telemetry(seq=1, samples=[Sample(ts=ts, values=values) for ts in instants]),
            )
            for seq, ts in enumerate(instants, start=2):
                kind = "door.open" if seq % 2 else "fault"
                device.publish(Channel.EVENT, Event(seq=seq, ts=ts, type=kind))
            await device.wait_acked(len(instants) + 1, within_s=60)
        async with api_client(hub) as admin:
            assert (await admin.put("/api/retention", json=POLICY)).status_code == 200
            await hub.retention.sweep(now)
            removed = (await admin.get("/api/retention")).json()["removed"]
            metrics = (await admin.get("/metrics")).text

        async with hub.engine.connect() as conn:
            oldest = {
                (row.device_id, row.key): row.oldest
                for row in await conn.execute(
                    select(series.c.device_id, series.c.key, func.min(samples.c.ts).label("oldest"))
                    .join(samples, samples.c.series_id == series.c.id)
                    .group_by(series.c.device_id, series.c.key)
                )
            }
            oldest_minute = (await conn.execute(select(func.min(rollups.c.minute)))).scalar()
            oldest_event = {
                row.type: row.oldest
                for row in await conn.execute(
                    select(events.c.type, func.min(events.c.ts).label("oldest"))
                    .where(events.c.device_id.in_([berlin.device_id, paris.device_id]))
                    .group_by(events.c.type)
                )
            }

    def first_kept(days: int, sent: list[int] = instants) -> int:
        return min(ts for ts in sent if ts >= now - days * DAY)

    doors = [ts for seq, ts in enumerate(instants, start=2) if seq % 2]
    faults = [ts for seq, ts in enumerate(instants, start=2) if not seq % 2]

    assert oldest[(berlin.device_id, "temp")] == first_kept(30)  # berlin's temp: 30 days
    assert oldest[(paris.device_id, "temp")] == first_kept(10)  # anyone else's: raw_days
    for device in (berlin, paris):
        assert oldest[(device.device_id, "vibration.x")] == first_kept(2)
        assert oldest[(device.device_id, "power")] == first_kept(10)
    minutes = [ts - ts % 60_000 for ts in instants]  # a rollup's minute starts on the clock
    assert oldest_minute == min(m for m in minutes if m >= now - 20 * DAY)
    assert oldest_event["door.open"] == first_kept(3, doors)  # its type's own days
    assert oldest_event["fault"] == first_kept(15, faults)  # events_days
    assert min(removed["samples"], removed["events"], removed["rollups"]) > 0
    assert f'fieldhub_retention_removed_total{{kind="samples"}} {removed["samples"]}.0' in metrics


@pytest.mark.slow
async def test_past_80_percent_of_the_budget_health_degrades_and_the_oldest_samples_go(
    hub: Hub, connect_device: DeviceFactory
) -> None:
    now = now_ms()
    device = await connect_device(hub, "rtu")
    instants = list(range(now - 2 * DAY, now, 5000))  # two days, every 5 s: samples dominate
    for seq, start in enumerate(range(0, len(instants), 1000), start=1):
        chunk = instants[start : start + 1000]
        values = {"a": 1.5, "b": 2.5, "c": "some text that takes room"}
        device.publish(
            Channel.TELEMETRY,
            Telemetry(seq=seq, samples=[Sample(ts=t, values=values) for t in chunk]),
        )
    await device.wait_acked(seq, within_s=60)
    async with api_client(hub) as admin:
        roomy = {**POLICY, "overrides": [], "raw_days": 30, "minute_days": 30, "budget_mb": 1000}
        assert (await admin.put("/api/retention", json=roomy)).status_code == 200
        reading = await hub.retention.sweep(now)
        assert not reading.over
        assert (await admin.get("/api/health")).json()["status"] == "ok"
        in_use = reading.used_bytes

        # A budget the data fills to ~110 %: the oldest samples go until it is under 80 %.
        tight = {**roomy, "budget_mb": round(in_use / 1.1 / 2**20)}
        assert (await admin.put("/api/retention", json=tight)).status_code == 200
        reading = await hub.retention.sweep(now)
        assert reading.share < 0.8
        async with hub.engine.connect() as conn:
            oldest = (await conn.execute(select(func.min(samples.c.ts)))).scalar()
            newest_count = (
                await conn.execute(select(func.count()).where(samples.c.ts >= now - KEEP_MS))
            ).scalar()
        assert oldest is not None
        assert oldest > instants[0]  # the oldest went first ...
        assert newest_count == 3 * sum(1 for t in instants if t >= now - KEEP_MS)  # ... not the day
        metrics = (await admin.get("/metrics")).text
        assert "fieldhub_retention_budget_trims_total" in metrics
        assert 'fieldhub_retention_removed_total{kind="budget"}' in metrics

        # A budget no trimming can meet (a day of data is never trimmed this way): degraded.
        hopeless = {**roomy, "budget_mb": 1}
        assert (await admin.put("/api/retention", json=hopeless)).status_code == 200
        reading = await hub.retention.sweep(now)
        health = (await admin.get("/api/health")).json()
        assert health["status"] == "degraded"
        assert any(r.startswith("disk: ") and "database budget" in r for r in health["reasons"])
        assert (await admin.get("/api/retention")).json()["budget"]["used_pct"] >= 80


async def test_cleared_alarms_go_after_alarms_days_with_their_changes_open_ones_stay(
    hub: Hub,
) -> None:
    now = now_ms()
    old, recent = now - 400 * DAY, now - 10 * DAY

    def alarm(device: str, state: str, at: int) -> dict[str, Any]:
        cleared = at + 60_000 if state == "cleared" else None
        return {
            "rule_id": "hot", "device_id": device, "severity": "major", "state": state,
            "condition_active": False, "raised_at": at, "message": "too hot",
            "cleared_at": cleared, "updated_at": at,
        }  # fmt: skip

    rows = {
        "cleared-old": alarm("d1", "cleared", old),
        "cleared-recent": alarm("d2", "cleared", recent),
        "active-old": alarm("d3", "active", old),
        "acknowledged-old": alarm("d4", "acknowledged", old),
    }
    ids: dict[str, int] = {}
    async with hub.engine.begin() as conn:
        for name, row in rows.items():
            ids[name] = (await conn.execute(alarms.insert().values(**row))).inserted_primary_key[0]
            for kind in ("raised", "comment"):
                await conn.execute(
                    alarm_changes.insert().values(
                        alarm_id=ids[name], at=row["raised_at"], actor="hub", kind=kind,
                        to_state=row["state"], comment="looked at it",
                    )
                )  # fmt: skip
    async with api_client(hub) as admin:
        policy = {**POLICY, "alarms_days": 365}
        assert (await admin.put("/api/retention", json=policy)).status_code == 200
        await hub.retention.sweep(now)
        removed = (await admin.get("/api/retention")).json()["removed"]
    async with hub.engine.connect() as conn:
        kept = {r.id for r in await conn.execute(select(alarms.c.id))}
        changed = {r.alarm_id for r in await conn.execute(select(alarm_changes.c.alarm_id))}
    assert kept == changed == {ids[n] for n in ("cleared-recent", "active-old", "acknowledged-old")}
    assert removed["alarms"] == 1
