"""Who hears which alarm: subscriptions filter by site, severity and rule; a user never hears
of a device outside their sites; quiet hours hold a message until they end; an outage of
200 devices is at most 3 messages naming every device, also across a hub restart (issue 13)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from prometheus_client.parser import text_string_to_metric_families

from fieldhub.clock import now_ms
from fieldhub.hub.app import Hub
from fieldhub.hub.auth import Principal
from fieldhub.hub.auth.rules import principal_for
from fieldhub.hub.ingest.batch import Batch
from fieldhub.hub.notify.subscriptions import SubscriptionSpec, quiet_hours
from fieldhub.hub.store.alarms import AlarmFilter
from fieldhub.protocol import Event
from tests.conftest import HubFactory, api_client
from tests.hub_client import add_user
from tests.support.receivers import MailBox, WebhookReceiver, smtp_server, webhook_receiver
from tests.waiting import eventually

DATABASES = ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]
FAST: dict[str, Any] = {"notify_retry_s": 0.2, "notify_retry_max_s": 1.0}
ADMIN = principal_for(via="session", user_id=0, name="root", role="admin", sites=[])


@pytest.fixture
async def receiver() -> AsyncIterator[WebhookReceiver]:
    async with webhook_receiver() as running:
        yield running


@pytest.fixture
def mailbox() -> Iterator[tuple[MailBox, int]]:
    with smtp_server() as running:
        yield running


async def _rule(hub: Hub, rule_id: str, severity: str, match: str) -> None:
    rule = {
        "id": rule_id,
        "name": rule_id.replace("-", " ").capitalize(),
        "severity": severity,
        "condition": {"kind": "event", "match": match},
        "clearable_by_user": True,
    }
    await hub.alarms.put_rule(rule, actor="test", create=True)


async def _events(hub: Hub, event_type: str, device_ids: list[str]) -> None:
    """Each device sends ``event_type`` in one committed batch: one engine round."""
    at = now_ms()
    batch = Batch(
        events=[(d, at, Event(seq=1, ts=at, type=event_type, message="")) for d in device_ids]
    )
    hub.alarms.engine.committed(batch)
    await hub.alarms.engine.evaluate()


async def _channel(hub: Hub, receiver: WebhookReceiver, path: str) -> int:
    config = {"url": receiver.url(path), "secret": "s3cret"}
    return (await hub.notifications.create_channel(path, "webhook", config, actor="test")).id


async def _subscribe(hub: Hub, who: Principal | None, channel_id: int, **settings: Any) -> int:
    """A subscription of ``who`` (None: a hub-wide one, made by an admin)."""
    spec = SubscriptionSpec(channel_id=channel_id, **settings)
    service = hub.notifications.subscriptions
    if who is None:
        return (await service.create(spec, ADMIN, owner_id=None)).id
    return (await service.create(spec, who)).id


def _devices(requests: list[Any]) -> list[str]:
    """Every device the messages name: a single alarm's, or each one a digest lists."""
    named: list[str] = []
    for request in requests:
        data = request.json()["data"]
        named += data["devices"] if data.get("digest") else [data["device"]]
    return named


@pytest.mark.parametrize("db", DATABASES)
async def test_each_user_hears_what_their_filter_and_their_sites_allow(
    make_hub: HubFactory, receiver: WebhookReceiver, db: str
) -> None:
    async with make_hub(db=db, **FAST) as hub:
        await _rule(hub, "door", "minor", "door.*")
        await _rule(hub, "fire", "critical", "fire.*")
        for device, site in [("dev-a", "a"), ("dev-a2", "a"), ("dev-b", "b")]:
            await hub.devices.create(device, labels={"site": site})
        ann = await add_user(hub, "operator", ["a"])
        bob = await add_user(hub, "viewer", ["b"])
        as_ann = principal_for(
            via="session", user_id=ann.id, name=ann.name, role="operator", sites=["a"]
        )
        as_bob = principal_for(
            via="session", user_id=bob.id, name=bob.name, role="viewer", sites=["b"]
        )
        now = {"group_interval_s": 0}
        await _subscribe(hub, as_ann, await _channel(hub, receiver, "/ann"), **now)
        await _subscribe(hub, as_bob, await _channel(hub, receiver, "/bob"), **now)
        await _subscribe(
            hub, None, await _channel(hub, receiver, "/crit"), min_severity="critical", **now
        )
        await _subscribe(
            hub,
            None,
            await _channel(hub, receiver, "/door-a"),
            rules=("do*",),
            sites=("a",),
            **now,
        )

        await _events(hub, "door.opened", ["dev-a", "dev-b"])
        await _events(hub, "fire.alarm", ["dev-b"])
        await eventually(lambda: len(receiver.requests) >= 5, "five notifications")

        assert _devices(receiver.to("/ann")) == ["dev-a"]  # site b's alarms never reach ann
        assert sorted(_devices(receiver.to("/bob"))) == ["dev-b", "dev-b"]  # door and fire
        assert _devices(receiver.to("/crit")) == ["dev-b"]
        assert [r.json()["data"]["rule"] for r in receiver.to("/crit")] == ["fire"]
        assert _devices(receiver.to("/door-a")) == ["dev-a"]

        # A disabled user receives nothing, whatever the subscription says.
        await hub.auth.accounts.update_user(ann.id, disabled=True, actor="test")
        await _events(hub, "door.opened", ["dev-a2"])
        await eventually(lambda: len(receiver.to("/door-a")) == 2, "the admin's second door")
    assert _devices(receiver.to("/ann")) == ["dev-a"]
    assert len(receiver.requests) == 6


async def test_quiet_hours_hold_a_message_until_they_end_and_critical_ones_pass(
    make_hub: HubFactory, receiver: WebhookReceiver
) -> None:
    zone = "America/New_York"
    local = datetime.now(ZoneInfo(zone))
    start, end = local - timedelta(seconds=30), local + timedelta(seconds=4)
    quiet = {
        "timezone": zone,
        "from": start.strftime("%H:%M:%S"),
        "to": end.strftime("%H:%M:%S"),
        "days": [start.strftime("%a").lower()],
    }
    async with make_hub(**FAST) as hub:
        await _rule(hub, "door", "minor", "door.*")
        await _rule(hub, "fire", "critical", "fire.*")
        await hub.devices.create("dev-1", labels={"site": "a"})
        channel = await _channel(hub, receiver, "/quiet")
        await _subscribe(hub, None, channel, quiet_hours=quiet_hours(quiet))

        await _events(hub, "door.opened", ["dev-1"])
        await _events(hub, "fire.alarm", ["dev-1"])
        [fire] = await eventually(lambda: receiver.to("/quiet"), "the critical one, at once")
        assert fire.json()["data"]["rule"] == "fire"
        [held] = await hub.notifications.notifications(state="pending")
        assert held.event == "alarm.raised"
        assert held.next_attempt_at == pytest.approx(int(end.timestamp()) * 1000, abs=1000)

        both = await eventually(
            lambda: len(got := receiver.to("/quiet")) == 2 and got, "the held one, after", 15
        )
    door = both[1]
    assert door.json()["data"]["rule"] == "door"
    assert door.at - fire.at >= 1.0  # held, then sent: not dropped, not sent at once


@pytest.mark.slow
@pytest.mark.parametrize("db", DATABASES)
async def test_200_alarms_at_once_are_at_most_3_messages_naming_every_device(
    make_hub: HubFactory, receiver: WebhookReceiver, db: str
) -> None:
    devices = [f"atm-{n:03}" for n in range(200)]
    async with make_hub(db=db, **FAST) as hub:
        await _rule(hub, "device-offline", "critical", "link.down")
        for device in devices:
            await hub.devices.create(device, labels={"site": "a"})
        # The default grouping (60 s): the first digest still comes 10 s after the first.
        await _subscribe(hub, None, await _channel(hub, receiver, "/ops"))

        await _events(hub, "link.down", devices)
        [first] = await eventually(lambda: receiver.to("/ops"), "the first, at once")
        got = await eventually(lambda: len(r := receiver.to("/ops")) >= 2 and r, "the digest", 40)
        await eventually(lambda: not hub.notifications.worker.inflight, "nothing under way")
        pending = await hub.notifications.notifications(state="pending")
    assert pending == []
    assert len(got) <= 3
    assert first.json()["subject"].startswith("[CRITICAL] Device offline on atm-")
    digest = got[1].json()
    assert digest["event"] == "alarm.digest"
    assert digest["subject"] == "[CRITICAL] Device offline on 199 more devices: raised"
    assert sorted(_devices(got)) == devices  # every device, each once
    assert 9.5 <= got[1].at - first.at < 30  # the first digest, not a whole interval later


async def test_a_restart_in_the_middle_of_a_group_loses_nothing_and_sends_nothing_twice(
    make_hub: HubFactory, receiver: WebhookReceiver, tmp_path: Path
) -> None:
    devices = [f"cab-{n:02}" for n in range(20)]
    data = tmp_path / "kept"
    async with make_hub(data=data, **FAST) as hub:
        await _rule(hub, "hot", "major", "temp.high")
        for device in devices:
            await hub.devices.create(device, labels={"site": "a"})
        await _subscribe(hub, None, await _channel(hub, receiver, "/ops"), group_interval_s=3)
        await _events(hub, "temp.high", devices)
        await eventually(lambda: receiver.to("/ops"), "the first, at once")
    assert len(receiver.to("/ops")) == 1  # stopped before the group's digest was due

    async with make_hub(data=data, **FAST) as hub:
        got = await eventually(lambda: len(r := receiver.to("/ops")) >= 2 and r, "the digest")
        await eventually(lambda: not hub.notifications.worker.inflight, "nothing under way")
        assert await hub.notifications.notifications(state="pending") == []
    assert len(got) == 2
    assert sorted(_devices(got)) == devices
    assert len({r.headers["x-fieldhub-delivery"] for r in got}) == 2


async def test_over_the_rate_limit_changes_wait_for_the_next_digest(
    make_hub: HubFactory, receiver: WebhookReceiver
) -> None:
    async with make_hub(**FAST) as hub:
        for n in range(5):
            await _rule(hub, f"rule-{n}", "major", f"thing{n}.*")
        await hub.devices.create("dev-1", labels={"site": "a"})
        channel = await _channel(hub, receiver, "/ops")
        await _subscribe(hub, None, channel, group_interval_s=0, max_per_hour=2)
        for n in range(5):
            await _events(hub, f"thing{n}.broke", ["dev-1"])
        await eventually(lambda: len(receiver.to("/ops")) >= 2, "two messages")
        enqueued, next_due = await hub.notifications.flusher.flush()
        assert enqueued == 0  # rolled over into a digest due when the hour's first is an hour old
        assert next_due is not None
        assert next_due > now_ms() + 3_500_000
        assert len(receiver.to("/ops")) == 2
    assert [r.json()["data"]["rule"] for r in receiver.to("/ops")] == ["rule-0", "rule-1"]


async def test_an_email_subscription_mails_its_owner_through_the_admins_channel(
    make_hub: HubFactory, mailbox: tuple[MailBox, int]
) -> None:
    box, port = mailbox
    smtp = {"smtp_host": "127.0.0.1", "smtp_port": port, "smtp_starttls": False}
    async with make_hub(**FAST, **smtp) as hub:
        await _rule(hub, "door", "minor", "door.*")
        await hub.devices.create("dev-1", labels={"site": "a"})
        mail = await hub.notifications.create_channel("mail", "email", {}, actor="test")
        ann = await add_user(hub, "viewer", ["a"])
        as_ann = principal_for(
            via="session", user_id=ann.id, name=ann.name, role="viewer", sites=["a"]
        )
        await _subscribe(hub, as_ann, mail.id, recipients=("ann@example.org",))
        await _events(hub, "door.opened", ["dev-1"])
        await eventually(lambda: box.messages, "the mail")
    [(_, to)] = box.envelopes
    assert to == ["ann@example.org"]
    assert box.messages[0]["Subject"] == "[MINOR] Door on dev-1: raised"


def _scrape(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


@pytest.mark.parametrize("db", DATABASES)
async def test_metrics_count_what_routing_sent_gathered_held_and_dropped_and_why(
    make_hub: HubFactory, receiver: WebhookReceiver, db: str
) -> None:
    local = datetime.now(ZoneInfo("UTC"))
    quiet = {
        "timezone": "UTC",
        "from": (local - timedelta(seconds=30)).strftime("%H:%M:%S"),
        "to": (local + timedelta(minutes=30)).strftime("%H:%M:%S"),
        "days": [(local - timedelta(seconds=30)).strftime("%a").lower()],
    }
    async with make_hub(db=db, **FAST) as hub:
        for rule in ("door", "fire", "leak", "hum", "gas"):
            await _rule(hub, rule, "minor", f"{rule}.*")
        for device, site in [("dev-a", "a"), ("dev-a2", "a"), ("dev-b", "b"), ("dev-m", "a")]:
            await hub.devices.create(device, labels={"site": site})
        ann, carl = await add_user(hub, "operator", ["a"]), await add_user(hub, "operator", ["a"])
        as_ann, as_carl = (
            principal_for(via="session", user_id=u.id, name=u.name, role="operator", sites=["a"])
            for u in (ann, carl)
        )
        await _subscribe(hub, as_ann, await _channel(hub, receiver, "/ann"), rules=("door",))
        await _subscribe(hub, as_carl, await _channel(hub, receiver, "/carl"), rules=("fire",))
        await hub.auth.accounts.update_user(carl.id, disabled=True, actor="test")
        quiet_channel = await _channel(hub, receiver, "/quiet")
        await _subscribe(hub, None, quiet_channel, rules=("hum",), quiet_hours=quiet_hours(quiet))
        gas_channel = await _channel(hub, receiver, "/gas")
        await _subscribe(hub, None, gas_channel, rules=("gas",), group_interval_s=0)
        await hub.maintenance.put(
            {
                "name": "swap",
                "scope": {"devices": ["dev-m"]},
                "schedule": {"kind": "once", "start": now_ms() - 1000, "end": now_ms() + 600_000},
            },
            actor="test",
        )

        await _events(hub, "door.opened", ["dev-a"])  # ann, at once
        await _events(hub, "door.opened", ["dev-a2"])  # ann, gathered for her digest
        await _events(hub, "door.opened", ["dev-b"])  # ann would, but site b is not hers
        await _events(hub, "fire.alarm", ["dev-a"])  # only carl would, and he is disabled
        await _events(hub, "leak.found", ["dev-a"])  # nobody subscribed
        await _events(hub, "hum.loud", ["dev-a"])  # held by quiet hours
        await _events(hub, "gas.smell", ["dev-m"])  # held by the window...
        [gas] = await hub.alarms.find(AlarmFilter(device="dev-m"))
        await hub.alarms.clear(gas.id, actor="user:root")  # ...then gone inside it: dropped

        async with api_client(hub) as api:
            metrics = _scrape((await api.get("/metrics")).text)

    def metric(name: str, **labels: str) -> float:
        return metrics[(f"fieldhub_notification_{name}_total", tuple(sorted(labels.items())))]

    assert metric("routed_changes") == 4  # door a, door a2, hum, gas
    assert metric("recipients", delivery="now") == 3
    assert metric("recipients", delivery="digest") == 1
    assert metric("dropped_changes", reason="site_not_visible") == 1
    assert metric("dropped_changes", reason="disabled_user") == 1
    assert metric("dropped_changes", reason="no_subscriber") == 1
    assert metric("dropped_changes", reason="maintenance") == 1
    assert metric("dropped_changes", reason="flapping") == 0
    assert metric("held", reason="quiet_hours") == 1
    assert metric("held", reason="maintenance") == 1
