"""The REST API as an operator uses it: register and find devices, read history and events,
watch the hub's health.

Data reaches the hub the honest way, over real MQTT from a test device, and is read back over
the API; expected results are computed here from the same inputs the device sent.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any, Literal

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from fieldhub.clock import now_ms
from fieldhub.hub.app import Hub
from fieldhub.hub.ingest.pipeline import IngestSettings
from fieldhub.protocol import Channel, Event, Sample, Status, Telemetry
from tests.conftest import DeviceFactory, HubFactory, api_client
from tests.device_client import TestDevice

MINUTE_MS = 60_000
Severity = Literal["info", "warning", "critical"]


async def _wait_until(
    condition: Callable[[], Awaitable[bool]], what: str, within_s: float = 10.0
) -> None:
    deadline = time.monotonic() + within_s
    while not await condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"no {what} within {within_s} s")
        await asyncio.sleep(0.02)


async def _create(api: httpx.AsyncClient, device_id: str, **fields: Any) -> dict[str, Any]:
    response = await api.post("/api/devices", json={"id": device_id, **fields})
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body


async def _device_ids(api: httpx.AsyncClient, **params: Any) -> list[str]:
    response = await api.get("/api/devices", params=params)
    assert response.status_code == 200, response.text
    return [d["id"] for d in response.json()]


# --- devices ---------------------------------------------------------------------------------


async def test_registered_device_reads_back_as_created(api: httpx.AsyncClient, uid: str):
    before = now_ms()
    created = await _create(
        api,
        f"atm-{uid}",
        name="ATM at the station",
        labels={"site": "berlin", "group": "atm"},
        attributes={"model": "NCR 6622", "floor": 1},
    )
    assert created["id"] == f"atm-{uid}"
    assert created["name"] == "ATM at the station"
    assert created["labels"] == {"site": "berlin", "group": "atm"}
    assert created["attributes"] == {"model": "NCR 6622", "floor": 1}
    assert before <= created["created_at"] <= now_ms()
    assert created["acked_seq"] == 0
    assert created["presence"]["state"] == "unknown"  # never heard of yet

    # Its MQTT credentials, in this answer only: client id = device id, user name per key.
    credentials = created.pop("credentials")
    assert credentials["client_id"] == f"atm-{uid}"
    assert credentials["username"].startswith(f"atm-{uid}.")
    assert len(credentials["secret"]) >= 43  # 256 random bits

    response = await api.get(f"/api/devices/{created['id']}")
    assert response.status_code == 200
    assert response.json() == created
    assert (await api.get(f"/api/devices/nope-{uid}")).status_code == 404


async def test_duplicate_id_is_refused_naming_it(api: httpx.AsyncClient, uid: str):
    await _create(api, f"atm-{uid}", name="first")
    response = await api.post("/api/devices", json={"id": f"atm-{uid}", "name": "second"})
    assert response.status_code == 409
    assert f"atm-{uid}" in response.json()["detail"]
    # The first registration is untouched.
    assert (await api.get(f"/api/devices/atm-{uid}")).json()["name"] == "first"


async def test_invalid_device_ids_are_refused(api: httpx.AsyncClient):
    for bad_id in ["bad/id", "a+b", "#", "x$y", "", "-lead", ".hidden", "has space", "x" * 65]:
        response = await api.post("/api/devices", json={"id": bad_id})
        assert response.status_code == 422, f"{bad_id!r}: {response.text}"
    assert await _device_ids(api) == []


async def test_longest_valid_device_id_is_accepted(api: httpx.AsyncClient):
    assert (await _create(api, "x" * 64))["id"] == "x" * 64


async def test_list_filters_by_every_given_label(api: httpx.AsyncClient, uid: str):
    fleet = {
        f"a-{uid}": {"site": "berlin", "group": "atm"},
        f"b-{uid}": {"site": "berlin", "group": "kiosk"},
        f"c-{uid}": {"site": "hamburg", "group": "atm"},
        f"d-{uid}": {},
    }
    for device_id, labels in fleet.items():
        await _create(api, device_id, labels=labels)

    def expected(**wanted: str) -> list[str]:
        return sorted(d for d, labels in fleet.items() if wanted.items() <= labels.items())

    assert await _device_ids(api) == sorted(fleet)
    assert await _device_ids(api, label="site=berlin") == expected(site="berlin")
    assert await _device_ids(api, label="group=atm") == expected(group="atm")
    both = await _device_ids(api, label=["site=berlin", "group=atm"])
    assert both == expected(site="berlin", group="atm") == [f"a-{uid}"]
    assert await _device_ids(api, label=["site=hamburg", "group=kiosk"]) == []
    assert await _device_ids(api, label="site=paris") == []
    assert (await api.get("/api/devices", params={"label": "site"})).status_code == 422


async def test_list_filters_by_presence(
    hub: Hub, api: httpx.AsyncClient, connect_device: DeviceFactory, uid: str
):
    talking = await connect_device(hub, "talking")
    await _create(api, f"silent-{uid}")
    talking.telemetry(1, t=1)
    await talking.wait_acked(1)

    assert await _device_ids(api, presence="online") == [talking.device_id]
    assert await _device_ids(api, presence="unknown") == [f"silent-{uid}"]
    assert await _device_ids(api, presence="offline") == []
    both = await _device_ids(api, presence=["online", "unknown"])
    assert both == sorted([talking.device_id, f"silent-{uid}"])
    assert (await api.get("/api/devices", params={"presence": "asleep"})).status_code == 422


async def test_update_changes_only_what_is_given(api: httpx.AsyncClient, uid: str):
    device_id = f"atm-{uid}"
    created = await _create(
        api, device_id, name="old", labels={"site": "berlin"}, attributes={"a": 1}
    )

    renamed = await api.patch(f"/api/devices/{device_id}", json={"name": "new"})
    assert renamed.status_code == 200, renamed.text
    assert renamed.json()["name"] == "new"
    assert renamed.json()["labels"] == {"site": "berlin"}
    assert renamed.json()["attributes"] == {"a": 1}
    assert renamed.json()["created_at"] == created["created_at"]
    assert renamed.json()["updated_at"] >= created["updated_at"]

    relabelled = await api.patch(
        f"/api/devices/{device_id}", json={"labels": {"site": "hamburg", "group": "atm"}}
    )
    assert relabelled.json()["labels"] == {"site": "hamburg", "group": "atm"}  # replaced whole
    assert relabelled.json()["name"] == "new"
    assert (await api.get(f"/api/devices/{device_id}")).json() == relabelled.json()
    assert await _device_ids(api, label="site=hamburg") == [device_id]
    assert await _device_ids(api, label="site=berlin") == []

    assert (await api.patch(f"/api/devices/nope-{uid}", json={"name": "x"})).status_code == 404
    refused = await api.patch(f"/api/devices/{device_id}", json={"id": "other"})
    assert refused.status_code == 422


async def test_deleted_device_loses_its_data_and_is_refused(
    hub: Hub, api: httpx.AsyncClient, connect_device: DeviceFactory
):
    doomed = await connect_device(hub, "doomed")
    kept = await connect_device(hub, "kept")
    ts = now_ms() - 10_000
    for device in (doomed, kept):
        device.telemetry(1, ts=ts, temperature=21.5)
        device.publish(Channel.EVENT, Event(seq=2, ts=ts + 1, type="door.opened"))
        await device.wait_acked(2)
    kept_events = await _all_events(api, device=kept.device_id)

    response = await api.delete(f"/api/devices/{doomed.device_id}")
    assert response.status_code == 204
    assert response.content == b""
    assert (await api.get(f"/api/devices/{doomed.device_id}")).status_code == 404
    assert (await api.get(f"/api/devices/{doomed.device_id}/latest")).status_code == 404
    assert (await api.delete(f"/api/devices/{doomed.device_id}")).status_code == 404
    assert await _device_ids(api) == [kept.device_id]

    assert await _all_events(api, device=doomed.device_id) == []
    assert await _all_events(api) == kept_events  # the other device's events stay

    # Its credentials went with it: the broker hung up on it, and it cannot log in again.
    await doomed.wait_disconnected()
    doomed.telemetry(3, ts=ts + 3, temperature=99.0)  # paho holds it: it never gets out
    await doomed.wait_refused()
    assert not doomed.connected

    # Registered again under the same id, it starts empty: nothing of the old one comes back.
    await _create(api, doomed.device_id)
    assert (await api.get(f"/api/devices/{doomed.device_id}/latest")).json() == {}
    history = await api.get(f"/api/devices/{doomed.device_id}/telemetry", params={"start": 0})
    assert history.json()["series"] == {}


async def test_delete_drops_messages_not_yet_committed(
    make_hub: HubFactory, connect_device: DeviceFactory
):
    # A long linger keeps accepted messages waiting for their commit; delete meanwhile.
    async with make_hub(ingest=IngestSettings(linger_s=1.0)) as hub, api_client(hub) as api:
        device = await connect_device(hub, "late")
        witness = await connect_device(hub, "witness")
        received = hub.stats.received[Channel.TELEMETRY]
        device.telemetry(1, ts=now_ms(), temperature=21.5)

        async def accepted() -> bool:
            return hub.stats.received[Channel.TELEMETRY] > received

        await _wait_until(accepted, "telemetry reaching ingest")
        assert (await api.delete(f"/api/devices/{device.device_id}")).status_code == 204
        # The witness's message joins the same open batch: once it is acknowledged, that batch
        # has been committed.
        witness.telemetry(1, t=1)
        await witness.wait_acked(1)

        await _create(api, device.device_id)
        assert (await api.get(f"/api/devices/{device.device_id}/latest")).json() == {}
        assert await _all_events(api, device=device.device_id) == []


# --- telemetry history -----------------------------------------------------------------------


@dataclass(frozen=True)
class Sent:
    """What the test device sent: ``samples[i]`` holds the values at ``start + i`` seconds."""

    device_id: str
    start: int
    samples: list[dict[str, Any]]

    def points(self, key: str, start: int, end: int) -> list[tuple[int, Any]]:
        """Every (ts, value) of ``key`` in ``[start, end)``."""
        pairs = [(self.start + i * 1000, values[key]) for i, values in enumerate(self.samples)]
        return [(ts, v) for ts, v in pairs if start <= ts < end]


def _values(i: int) -> dict[str, Any]:
    return {
        "temperature": 20.0 + (i * 37 % 23) / 4,  # jumps up and down, never in order
        "counter": i * 3,
        "door_open": (i // 20) % 2 == 1,
        "mode": "eco" if i % 2 else "boost",
    }


async def _send_samples(hub: Hub, connect_device: DeviceFactory) -> Sent:
    """120 samples one second apart, starting on a whole minute, sent in one message."""
    device = await connect_device(hub, "meter")
    start = (now_ms() // MINUTE_MS - 10) * MINUTE_MS
    samples = [_values(i) for i in range(120)]
    message = Telemetry(
        seq=1,
        samples=[Sample(ts=start + i * 1000, values=v) for i, v in enumerate(samples)],
    )
    device.publish(Channel.TELEMETRY, message)
    await device.wait_acked(1)
    return Sent(device.device_id, start, samples)


@pytest.fixture
async def sent(hub: Hub, connect_device: DeviceFactory) -> Sent:
    """What a device sent to the default hub (see ``_send_samples``)."""
    return await _send_samples(hub, connect_device)


def _aggregate(values: list[Any], agg: str) -> Any:
    numbers = [float(v) for v in values]
    if agg == "avg":
        return pytest.approx(sum(numbers) / len(numbers))
    if agg == "count":
        return len(values)
    if agg == "last":
        return values[-1]
    return {"min": min, "max": max}[agg](values)


def _buckets(points: list[tuple[int, Any]], bucket_ms: int, agg: str) -> list[list[Any]]:
    """Aggregate by buckets aligned to multiples of ``bucket_ms`` since the epoch."""
    grouped: dict[int, list[Any]] = {}
    for ts, value in sorted(points):
        grouped.setdefault(ts // bucket_ms * bucket_ms, []).append(value)
    return [[label, _aggregate(values, agg)] for label, values in sorted(grouped.items())]


async def _history(api: httpx.AsyncClient, device_id: str, **params: Any) -> httpx.Response:
    return await api.get(f"/api/devices/{device_id}/telemetry", params=params)


async def test_raw_history_is_what_the_device_sent(api: httpx.AsyncClient, sent: Sent):
    end = sent.start + 120_000
    response = await _history(api, sent.device_id, start=sent.start, end=end)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["bucket_ms"] is None
    assert body["agg"] is None
    assert sorted(body["series"]) == ["counter", "door_open", "mode", "temperature"]
    for key, points in body["series"].items():
        assert [tuple(p) for p in points] == sent.points(key, sent.start, end), key

    flags = [value for _, value in body["series"]["door_open"]]
    assert all(value is True or value is False for value in flags)  # booleans, not 0/1
    assert True in flags
    assert False in flags
    counters = [value for _, value in body["series"]["counter"]]
    assert all(type(value) is int for value in counters)


async def test_raw_history_window_is_start_inclusive_end_exclusive(
    api: httpx.AsyncClient, sent: Sent
):
    start, end = sent.start + 30_000, sent.start + 45_000
    body = (await _history(api, sent.device_id, keys="counter", start=start, end=end)).json()
    points = body["series"]["counter"]
    assert [tuple(p) for p in points] == sent.points("counter", start, end)
    assert points[0][0] == start
    assert points[-1][0] == end - 1000

    limited = await _history(api, sent.device_id, keys="counter", start=start, end=end, limit=4)
    assert [tuple(p) for p in limited.json()["series"]["counter"]] == sent.points(
        "counter", start, end
    )[:4]


async def test_latest_values_are_the_newest_sample(api: httpx.AsyncClient, sent: Sent):
    latest = (await api.get(f"/api/devices/{sent.device_id}/latest")).json()
    newest_ts = sent.start + (len(sent.samples) - 1) * 1000
    assert latest == {
        key: {"ts": newest_ts, "value": value} for key, value in sent.samples[-1].items()
    }


@pytest.mark.parametrize("agg", ["avg", "min", "max", "last", "count"])
async def test_bucketed_history_aggregates_per_minute(api: httpx.AsyncClient, sent: Sent, agg: str):
    end = sent.start + 120_000
    keys = ["counter", "door_open", "temperature"]
    response = await _history(
        api, sent.device_id, keys=",".join(keys), start=sent.start, end=end, bucket="60s", agg=agg
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["bucket_ms"] == MINUTE_MS
    assert body["agg"] == agg
    assert sorted(body["series"]) == keys
    for key in keys:
        expected = _buckets(sent.points(key, sent.start, end), MINUTE_MS, agg)
        assert len(expected) == 2
        assert body["series"][key] == expected, key
    if agg in ("min", "max", "last"):
        assert all(isinstance(value, bool) for _, value in body["series"]["door_open"])


@pytest.mark.postgres
async def test_bucketed_history_on_postgres(make_hub: HubFactory, connect_device: DeviceFactory):
    # PostgreSQL computes buckets and the last value of a bucket with its own SQL.
    async with make_hub(db="postgres") as hub, api_client(hub) as api:
        sent = await _send_samples(hub, connect_device)
        end = sent.start + 120_000
        for agg in ("avg", "min", "max", "last", "count"):
            for key in ("temperature", "counter", "door_open"):
                response = await _history(
                    api, sent.device_id, keys=key, start=sent.start, end=end, bucket="1m", agg=agg
                )
                assert response.status_code == 200, response.text
                expected = _buckets(sent.points(key, sent.start, end), MINUTE_MS, agg)
                assert response.json()["series"][key] == expected, (key, agg)


async def test_buckets_are_aligned_to_the_epoch_not_to_start(api: httpx.AsyncClient, sent: Sent):
    # 30 s into the first minute: the first bucket is still labelled by the whole minute and
    # holds only what lies inside the window.
    start, end = sent.start + 30_000, sent.start + 90_000
    for bucket in ("60s", "1m", "60000"):
        response = await _history(
            api, sent.device_id, keys="temperature", start=start, end=end, bucket=bucket
        )
        assert response.status_code == 200, response.text
        series = response.json()["series"]["temperature"]
        assert [label for label, _ in series] == [sent.start, sent.start + MINUTE_MS]
        assert series == _buckets(sent.points("temperature", start, end), MINUTE_MS, "avg")
    counts = await _history(
        api, sent.device_id, keys="temperature", start=start, end=end, bucket="1m", agg="count"
    )
    assert [count for _, count in counts.json()["series"]["temperature"]] == [30, 30]


async def test_history_selects_keys(api: httpx.AsyncClient, sent: Sent):
    window = {"start": sent.start, "end": sent.start + 120_000}
    two = await _history(api, sent.device_id, keys="temperature,door_open", **window)
    assert sorted(two.json()["series"]) == ["door_open", "temperature"]

    unknown = await _history(api, sent.device_id, keys="temperature,humidity", **window)
    assert unknown.status_code == 404
    assert "humidity" in unknown.json()["detail"]
    assert "temperature" not in unknown.json()["detail"]

    assert (await _history(api, "no-such-device", **window)).status_code == 404


async def test_history_refuses_bad_ranges_and_buckets(api: httpx.AsyncClient, sent: Sent):
    cases: list[tuple[dict[str, Any], str]] = [
        ({"start": 2_000, "end": 1_000}, "start"),
        ({"start": 1_000, "end": 1_000}, "start"),
        ({"start": 0, "end": 10_001_000, "bucket": "1s"}, "buckets"),  # 10,001 buckets
        ({"start": 0, "end": 10_000, "bucket": "abc"}, "bucket"),
        ({"start": 0, "end": 10_000, "bucket": "0s"}, "bucket"),
        ({"start": 0, "end": 10_000, "bucket": "-5m"}, "bucket"),
        ({"start": 0, "end": 10_000, "bucket": "1.5h"}, "bucket"),
        ({"start": 0, "end": 10_000, "bucket": "5 minutes"}, "bucket"),
        ({"start": 0, "end": 10_000, "bucket": "60s", "agg": "median"}, "agg"),
    ]
    for params, complaint in cases:
        response = await _history(api, sent.device_id, keys="temperature", **params)
        assert response.status_code == 422, f"{params}: {response.text}"
        assert complaint in response.text, params

    # 10,000 buckets are allowed.
    response = await _history(
        api, sent.device_id, keys="temperature", start=0, end=10_000_000, bucket="1s"
    )
    assert response.status_code == 200, response.text


# --- events ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class SentEvent:
    device: str  # "atm" or "kiosk"
    type: str
    severity: Severity
    offset_s: int  # seconds after the fleet's base time


SENT_EVENTS = [
    SentEvent("atm", "door.opened", "warning", 1),
    SentEvent("atm", "door.closed", "info", 2),
    SentEvent("kiosk", "door.opened", "critical", 2),
    SentEvent("atm", "doorbell.rang", "info", 3),
    SentEvent("atm", "power.lost", "critical", 4),
    SentEvent("atm", "door.opened", "warning", 4),
    SentEvent("kiosk", "power.restored", "info", 6),
    SentEvent("atm", "sensor.missing", "warning", 7),
]


@dataclass(frozen=True)
class Fleet:
    devices: dict[str, TestDevice]
    base: int

    def summary(self, event: SentEvent) -> tuple[str, str, str, int]:
        return (
            self.devices[event.device].device_id,
            event.type,
            event.severity,
            self.base + event.offset_s * 1000,
        )


@pytest.fixture
async def fleet(hub: Hub, connect_device: DeviceFactory) -> Fleet:
    """Two devices that sent SENT_EVENTS (an hour ago) and, by sending, went online (now)."""
    devices = {"atm": await connect_device(hub, "atm"), "kiosk": await connect_device(hub, "kiosk")}
    base = (now_ms() // 1000 - 3600) * 1000
    seqs = dict.fromkeys(devices, 0)
    for sent_event in SENT_EVENTS:
        seqs[sent_event.device] += 1
        event = Event(
            seq=seqs[sent_event.device],
            ts=base + sent_event.offset_s * 1000,
            type=sent_event.type,
            severity=sent_event.severity,
            message=f"{sent_event.type} on {sent_event.device}",
        )
        devices[sent_event.device].publish(Channel.EVENT, event)
    for name, device in devices.items():
        await device.wait_acked(seqs[name])
    return Fleet(devices, base)


async def _events_page(api: httpx.AsyncClient, **params: Any) -> dict[str, Any]:
    response = await api.get("/api/events", params=params)
    assert response.status_code == 200, response.text
    page: dict[str, Any] = response.json()
    return page


async def _all_events(api: httpx.AsyncClient, **params: Any) -> list[dict[str, Any]]:
    page = await _events_page(api, limit=1000, **params)
    assert page["next_cursor"] is None
    events: list[dict[str, Any]] = page["events"]
    return events


def _summaries(events: Iterable[dict[str, Any]]) -> list[tuple[str, str, str, int]]:
    return sorted((e["device_id"], e["type"], e["severity"], e["ts"]) for e in events)


def _device_sent(events: Iterable[dict[str, Any]]) -> list[tuple[str, str, str, int]]:
    """Summaries of the events devices sent (not the hub's own presence events)."""
    return _summaries(e for e in events if not e["type"].startswith("presence."))


def _is_newest_first(events: list[dict[str, Any]]) -> bool:
    keys = [(e["ts"], e["id"]) for e in events]
    return keys == sorted(keys, reverse=True) and len(set(keys)) == len(keys)


async def test_events_are_listed_newest_first_with_their_details(
    api: httpx.AsyncClient, fleet: Fleet
):
    events = await _all_events(api)
    assert _is_newest_first(events)
    assert _device_sent(events) == sorted(fleet.summary(e) for e in SENT_EVENTS)
    # By sending, each device went online: the hub recorded that once per device.
    presence = [e for e in events if e["type"].startswith("presence.")]
    assert sorted(e["device_id"] for e in presence) == sorted(
        d.device_id for d in fleet.devices.values()
    )
    assert {e["type"] for e in presence} == {"presence.online"}
    assert all(e["seq"] is None for e in presence)

    power = next(e for e in events if e["type"] == "power.lost")
    sent_by_atm = [e for e in SENT_EVENTS if e.device == "atm"]
    assert power["seq"] == 1 + next(i for i, e in enumerate(sent_by_atm) if e.type == "power.lost")
    assert power["message"] == "power.lost on atm"
    assert power["device_id"] == fleet.devices["atm"].device_id


async def test_events_filter_by_device(api: httpx.AsyncClient, fleet: Fleet):
    atm = fleet.devices["atm"].device_id
    kiosk = fleet.devices["kiosk"].device_id
    events = await _all_events(api, device=atm)
    assert {e["device_id"] for e in events} == {atm}
    assert _device_sent(events) == sorted(
        fleet.summary(e) for e in SENT_EVENTS if e.device == "atm"
    )
    assert _is_newest_first(events)
    both = await _all_events(api, device=[atm, kiosk])
    assert both == await _all_events(api)
    assert await _all_events(api, device="someone-else") == []


async def test_events_filter_by_type_and_family(api: httpx.AsyncClient, fleet: Fleet):
    def wanted(event_type: str, types: list[str]) -> bool:
        return any(
            event_type == t or (t.endswith(".*") and event_type.startswith(t[:-1])) for t in types
        )

    for types in [["door.opened"], ["door.*"], ["power.*", "sensor.missing"], ["door"]]:
        events = await _all_events(api, type=types)
        expected = [fleet.summary(e) for e in SENT_EVENTS if wanted(e.type, types)]
        assert _summaries(events) == sorted(expected), types
        assert _is_newest_first(events)
    # A family is a whole first part: door.* is not doorbell.rang.
    assert {e["type"] for e in await _all_events(api, type="door.*")} == {
        "door.opened",
        "door.closed",
    }


async def test_event_family_is_not_a_pattern(api: httpx.AsyncClient, fleet: Fleet):
    # '_' and '%' in a family are characters like any other, not SQL LIKE wildcards.
    assert await _all_events(api, type="doo_.*") == []
    assert await _all_events(api, type="do%.*") == []


async def test_events_filter_by_severity(api: httpx.AsyncClient, fleet: Fleet):
    for severities in [["critical"], ["warning"], ["warning", "critical"]]:
        events = await _all_events(api, severity=severities)
        expected = [fleet.summary(e) for e in SENT_EVENTS if e.severity in severities]
        assert _summaries(events) == sorted(expected), severities
    assert (await api.get("/api/events", params={"severity": "fatal"})).status_code == 422


async def test_events_filter_by_time_range(api: httpx.AsyncClient, fleet: Fleet):
    start, end = fleet.base + 2000, fleet.base + 4000  # start inclusive, end exclusive
    events = await _all_events(api, start=start, end=end)
    expected = [fleet.summary(e) for e in SENT_EVENTS if 2 <= e.offset_s < 4]
    assert _summaries(events) == sorted(expected)

    combined = await _all_events(
        api,
        start=start,
        end=fleet.base + 5000,
        type="door.*",
        device=fleet.devices["atm"].device_id,
    )
    expected = [
        fleet.summary(e)
        for e in SENT_EVENTS
        if e.device == "atm" and e.type.startswith("door.") and 2 <= e.offset_s < 5
    ]
    assert _summaries(combined) == sorted(expected)


async def _walk(api: httpx.AsyncClient, limit: int) -> tuple[list[dict[str, Any]], int]:
    """Every event, page by page; and how many pages it took."""
    walked: list[dict[str, Any]] = []
    cursor = None
    pages = 0
    while True:
        params: dict[str, Any] = {"limit": limit}
        if cursor is not None:
            params["cursor"] = cursor
        page = await _events_page(api, **params)
        pages += 1
        walked.extend(page["events"])
        cursor = page["next_cursor"]
        if cursor is None:
            return walked, pages
        assert len(page["events"]) == limit  # only the last page may be short
        assert pages <= 100, "paging does not end"


async def test_paging_walks_every_event_once_newest_first(api: httpx.AsyncClient, fleet: Fleet):
    everything = await _all_events(api)
    assert len(everything) == len(SENT_EVENTS) + len(fleet.devices)
    # One per page; a short last page (3 does not divide the total); everything on one page.
    assert len(everything) % 3
    for limit in (1, 3, len(everything)):
        walked, pages = await _walk(api, limit)
        assert walked == everything, limit
        assert pages == -(-len(everything) // limit), limit  # and no empty page at the end


async def test_paging_with_a_filter(api: httpx.AsyncClient, fleet: Fleet):
    atm = fleet.devices["atm"].device_id
    filtered = await _all_events(api, device=atm, type="door.*")
    first = await _events_page(api, device=atm, type="door.*", limit=2)
    second = await _events_page(
        api, device=atm, type="door.*", limit=2, cursor=first["next_cursor"]
    )
    assert first["events"] + second["events"] == filtered
    assert second["next_cursor"] is None


async def test_bad_cursor_is_refused(api: httpx.AsyncClient):
    for cursor in ["nonsense", "1:2:3", "abc:1", "1:abc", ":"]:
        response = await api.get("/api/events", params={"cursor": cursor})
        assert response.status_code == 422, cursor
        assert response.json()["detail"][0]["loc"] == ["query", "cursor"]


async def test_presence_events_follow_status_messages(
    hub: Hub, api: httpx.AsyncClient, connect_device: DeviceFactory
):
    device = await connect_device(hub, "agent")
    before = now_ms()
    device.online()

    async def presence_events() -> list[dict[str, Any]]:
        return await _all_events(api, device=device.device_id, type="presence.*")

    async def has(count: int) -> bool:
        return len(await presence_events()) >= count

    await _wait_until(lambda: has(1), "presence.online event")
    (online,) = await presence_events()
    assert online["type"] == "presence.online"
    assert online["severity"] == "info"
    assert online["data"] == {"connected": True}
    assert before <= online["ts"] <= now_ms()
    presence = (await api.get(f"/api/devices/{device.device_id}")).json()["presence"]
    assert presence["state"] == "online"
    assert presence["connected"] is True
    assert presence["since"] == online["ts"]

    device.publish(Channel.STATUS, Status(online=False, reason="maintenance"), retain=True)
    await _wait_until(lambda: has(2), "presence.offline event")
    offline = (await presence_events())[0]
    assert offline["type"] == "presence.offline"
    assert offline["severity"] == "warning"
    assert offline["message"] == "maintenance"
    presence = (await api.get(f"/api/devices/{device.device_id}")).json()["presence"]
    assert presence["state"] == "offline"
    assert presence["reason"] == "maintenance"
    assert await _device_ids(api, presence="offline") == [device.device_id]


# --- the hub itself --------------------------------------------------------------------------


async def test_health_says_ok_and_counts_devices(
    hub: Hub, api: httpx.AsyncClient, connect_device: DeviceFactory, uid: str
):
    device = await connect_device(hub, "online")
    await _create(api, f"never-heard-{uid}")
    device.telemetry(1, t=1)
    await device.wait_acked(1)

    response = await api.get("/api/health")
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    health = response.json()
    assert health["status"] == "ok"
    assert health["broker_connected"] is True
    assert health["embedded_broker"] is True
    assert health["database"] == "sqlite"
    assert health["instance"] == hub.settings.instance
    assert health["uptime_s"] >= 0
    assert health["devices"] == {
        "online": 1,
        "offline": 0,
        "stale": 0,
        "unknown": 1,
        "unreachable": 0,
    }


async def test_openapi_lists_the_routes(api: httpx.AsyncClient):
    response = await api.get("/openapi.json")
    assert response.status_code == 200
    paths = response.json()["paths"]
    for path, method in [
        ("/api/devices", "get"),
        ("/api/devices", "post"),
        ("/api/devices/{device_id}", "get"),
        ("/api/devices/{device_id}", "patch"),
        ("/api/devices/{device_id}", "delete"),
        ("/api/devices/{device_id}/latest", "get"),
        ("/api/devices/{device_id}/state", "get"),
        ("/api/devices/{device_id}/telemetry", "get"),
        ("/api/events", "get"),
        ("/api/health", "get"),
    ]:
        assert method in paths.get(path, {}), f"{method.upper()} {path} is not documented"


async def test_metrics_count_what_ingest_did(
    hub: Hub, api: httpx.AsyncClient, connect_device: DeviceFactory
):
    device = await connect_device(hub, "counted")
    ts = now_ms()
    for seq in range(1, 4):
        device.telemetry(seq, ts=ts + seq, a=seq, b=seq)
    device.publish(Channel.EVENT, Event(seq=4, ts=ts, type="door.opened"))
    await device.wait_acked(4)
    device.publish_raw(Channel.TELEMETRY, b"{not json")

    async def rejected() -> bool:
        return hub.stats.rejected["invalid_payload"] == 1

    await _wait_until(rejected, "rejection of the bad payload")

    response = await api.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    samples = {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    }

    def metric(name: str, **labels: str) -> float:
        return samples[(name, tuple(sorted(labels.items())))]

    assert metric("fieldhub_messages_received_total", channel="telemetry") == 4
    assert metric("fieldhub_messages_received_total", channel="event") == 1
    assert metric("fieldhub_messages_rejected_total", reason="invalid_payload") == 1
    assert metric("fieldhub_messages_rejected_total", reason="unknown_device") == 0
    assert metric("fieldhub_ingest_messages_stored_total") == 4
    assert metric("fieldhub_ingest_points_stored_total") == 6
    assert metric("fieldhub_ingest_events_stored_total") == 1
    assert metric("fieldhub_ingest_duplicates_total") == 0
    assert metric("fieldhub_broker_connected") == 1
    assert metric("fieldhub_devices", presence="online") == 1
