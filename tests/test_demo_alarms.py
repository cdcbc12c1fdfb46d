"""The demo warns a newcomer: default alarm rules, and notifications printed on its console.

Given a new data folder, ``fieldhub demo`` installs the shipped rules once, points the webhook
channel "demo console" at a receiver in its own process, sends e-mail through a local SMTP
server of its own to the channel "demo mail", and a cabinet with a failed fan raises an alarm
whose webhook and e-mail are both printed within a minute.
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import pytest

from fieldhub.cli.demo_alarms import INSTALLED_FILE, default_rules, install_default_rules
from fieldhub.cli.demo_console import CHANNEL_NAME, DemoConsole, point_channel
from fieldhub.cli.demo_fleet import demo_config, demo_devices, runs_hot
from fieldhub.cli.demo_mail import CHANNEL_NAME as MAIL_CHANNEL
from fieldhub.cli.demo_mail import DEMO_ADDRESS, DemoMail, demo_mail, point_mail_channel
from fieldhub.hub.alarms.rules import (
    EventCondition,
    PresenceCondition,
    StateCondition,
    ThresholdCondition,
    parse_rule,
)
from fieldhub.hub.app import Hub
from fieldhub.hub.config import HubSettings
from fieldhub.hub.notify.channels.webhook import WebhookSender
from fieldhub.hub.notify.records import ChannelRecord, NotificationRecord
from tests.conftest import HubFactory
from tests.support.servers import free_port
from tests.test_cli import _demo_password, _get, _login, running
from tests.waiting import HTTP_TIMEOUT_S, eventually

ROOT = Path(__file__).resolve().parent.parent

# -- the shipped rules ---------------------------------------------------------------------


def test_the_shipped_rules_load_and_each_one_is_valid() -> None:
    rules = [parse_rule(raw) for raw in default_rules()]
    assert len({rule.id for rule in rules}) == len(rules) == 5
    by_id = {rule.id: rule for rule in rules}
    door = by_id["door-open-too-long"].condition
    assert isinstance(door, StateCondition)
    assert (door.key, door.equals, by_id["door-open-too-long"].for_s) == ("door", "open", 120)
    assert isinstance(by_id["device-offline"].condition, PresenceCondition)
    hot = by_id["over-temperature"].condition
    assert isinstance(hot, ThresholdCondition)
    assert (hot.direction, hot.raise_at, hot.clear_at) == ("above", 50, 45)  # hysteresis
    low = by_id["supply-low"].condition
    assert isinstance(low, ThresholdCondition)
    assert low.direction == "below"
    assert low.raise_at < low.clear_at
    fault = by_id["socket-fault"].condition
    assert isinstance(fault, EventCondition)
    assert fault.matches("socket.fault")


def test_docs_show_the_shipped_rules_as_they_are() -> None:
    shipped = (ROOT / "src/fieldhub/cli/demo_rules.yaml").read_text(encoding="utf-8")
    docs = (ROOT / "docs/alarms.md").read_text(encoding="utf-8")
    assert shipped[shipped.index("rules:") :] in docs


def test_the_rules_watch_keys_the_demo_units_report(tmp_path: Path) -> None:
    """A rule on a key no unit reports would never fire: the keys are the units' own."""
    device = demo_devices(1, tmp_path)[0]
    units = {unit.name: unit for unit in demo_config(device, "mqtt://x:1", "u").units}
    sensors = units["temperature"].sensors  # type: ignore[attr-defined]
    reported = {"door", "supply", *(f"temperature.{name}" for name in sensors)}
    for raw in default_rules():
        key = raw["condition"].get("key")
        assert key is None or key in reported, raw["id"]


def test_one_cabinet_in_twenty_runs_hot_the_second_first(tmp_path: Path) -> None:
    hot = [d.device_id for d in demo_devices(40, tmp_path) if runs_hot(d)]
    assert hot == ["demo-002", "demo-022"]


# -- installing them -----------------------------------------------------------------------


async def test_rules_are_installed_once_and_a_users_changes_stay(hub: Hub, tmp_path: Path):
    created = await install_default_rules(hub, tmp_path)
    assert sorted(created) == sorted(raw["id"] for raw in default_rules())
    stored = {r.rule.id: r for r in await hub.alarms.rules()}
    assert stored["over-temperature"].updated_by == "demo"

    # The user raises the threshold and deletes the door rule.
    changed = dict(stored["over-temperature"].rule.to_dict())
    changed["condition"] = {**changed["condition"], "raise": 60, "clear": 55}
    await hub.alarms.put_rule(changed, actor="ops", rule_id="over-temperature", create=False)
    await hub.alarms.delete_rule("door-open-too-long", actor="ops")

    assert await install_default_rules(hub, tmp_path) == []  # a restart
    after = {r.rule.id: r for r in await hub.alarms.rules()}
    assert "door-open-too-long" not in after
    hot = after["over-temperature"].rule.condition
    assert isinstance(hot, ThresholdCondition)
    assert hot.raise_at == 60
    assert after["over-temperature"].updated_by == "ops"


async def test_a_users_own_rule_with_a_shipped_id_is_left_alone(hub: Hub, tmp_path: Path):
    mine = {"id": "supply-low", "condition": {"kind": "presence", "presence": "stale"}}
    await hub.alarms.put_rule(mine, actor="ops", rule_id="supply-low", create=True)
    created = await install_default_rules(hub, tmp_path)
    assert "supply-low" not in created
    kept = await hub.alarms.rule("supply-low")
    assert isinstance(kept.rule.condition, PresenceCondition)
    installed = json.loads((tmp_path / INSTALLED_FILE).read_text())["rules"]
    assert "supply-low" in installed  # not tried again at the next start


async def test_the_console_channel_is_made_once_and_pointed_anew(hub: Hub):
    assert await point_channel(hub, "http://127.0.0.1:1111/", "s1")
    first = [c for c in await hub.notifications.channels() if c.name == CHANNEL_NAME]
    await hub.notifications.update_channel(first[0].id, enabled=False, actor="ops")
    assert await point_channel(hub, "http://127.0.0.1:2222/", "s2")  # the next start
    channels = [c for c in await hub.notifications.channels() if c.name == CHANNEL_NAME]
    assert [c.id for c in channels] == [first[0].id]
    assert channels[0].config == {"url": "http://127.0.0.1:2222/", "secret": "s2"}
    assert channels[0].enabled is False  # as the user left it


# -- the receiver --------------------------------------------------------------------------


def _notification(subject: str, number: int = 1) -> NotificationRecord:
    return NotificationRecord(
        id=f"n{number}",
        channel_id=1,
        dedup_key=f"k{number}",
        event="alarm.raised",
        subject=subject,
        body={"alarm": number},
        created_at=0,
        state="pending",
        attempts=0,
        next_attempt_at=0,
        delivered_at=None,
        last_error="",
    )


def _channel(url: str, secret: str) -> ChannelRecord:
    return ChannelRecord(
        id=1,
        name=CHANNEL_NAME,
        kind="webhook",
        config={"url": url, "secret": secret},
        enabled=True,
        created_at=0,
        created_by="demo",
    )


async def test_the_console_prints_what_the_hub_signed_and_refuses_the_rest():
    lines: list[str] = []
    sender = WebhookSender(timeout_s=5)
    try:
        async with DemoConsole(lines.append) as console:
            subject = "[MAJOR] Cabinet too hot on demo-002: raised"
            sent = await sender.send(_notification(subject), _channel(console.url, console.secret))
            assert sent.ok, sent
            again = await sender.send(_notification(subject), _channel(console.url, console.secret))
            assert again.ok  # a retry of the same delivery: accepted, printed once
            two_lines = _notification("a\nnotification: faked", 3)
            assert (await sender.send(two_lines, _channel(console.url, console.secret))).ok
            forged = await sender.send(_notification("forged", 2), _channel(console.url, "guess"))
            assert (forged.ok, forged.status, forged.permanent) == (False, "401", True)
    finally:
        await sender.close()
    assert lines == [
        "notification: [MAJOR] Cabinet too hot on demo-002: raised",
        "notification: a\\nnotification: faked",  # one line: a subject cannot add lines
    ]
    assert (console.received, console.refused) == (2, 1)


async def test_the_console_refuses_old_timestamps_and_big_bodies():
    import httpx

    now = [1_000_000.0]
    async with DemoConsole(print, secret="s", clock=lambda: now[0]) as console:
        sender = WebhookSender(timeout_s=5)
        try:
            old = await sender.send(_notification("late"), _channel(console.url, "s"))
        finally:
            await sender.close()
        assert (old.ok, old.status) == (False, "401")  # its timestamp is the real time: far off
        async with httpx.AsyncClient(timeout=HTTP_TIMEOUT_S) as client:
            big = await client.post(console.url, content=b"x" * (65 * 1024))
            assert big.status_code == 413
            get = await client.get(console.url)
            assert get.status_code == 405
    assert console.refused == 3


# -- the mail server -----------------------------------------------------------------------


async def test_the_demo_mail_server_prints_what_the_hub_mails(make_hub: HubFactory, tmp_path):
    lines: list[str] = []
    async with demo_mail(HubSettings(data=tmp_path / "d"), lines.append) as (settings, mail):
        assert mail == DemoMail.RUNNING
        assert (settings.smtp_host, settings.smtp_starttls) == ("127.0.0.1", False)
        smtp = {"smtp_host": settings.smtp_host, "smtp_port": settings.smtp_port}
        async with make_hub(smtp_starttls=False, **smtp) as hub:
            assert await point_mail_channel(hub)
            [channel] = [c for c in await hub.notifications.channels() if c.name == MAIL_CHANNEL]
            assert (channel.kind, channel.config) == ("email", {"to": [DEMO_ADDRESS]})
            await hub.notifications.send_test(channel.id, actor="ops")
            await eventually(lambda: lines, "the test mail printed")
            await hub.notifications.update_channel(channel.id, enabled=False, actor="ops")
            assert await point_mail_channel(hub)  # the next start: made once, left as it was
            again = [c for c in await hub.notifications.channels() if c.name == MAIL_CHANNEL]
            assert [(c.id, c.enabled) for c in again] == [(channel.id, False)]
    assert lines == [f"mail to {DEMO_ADDRESS}: fieldhub test message to channel 'demo mail'"]


async def test_the_demo_mail_server_prints_one_line_whatever_the_subject(tmp_path: Path):
    import aiosmtplib

    lines: list[str] = []
    async with demo_mail(HubSettings(data=tmp_path / "d"), lines.append) as (settings, _mail):
        # An encoded word may hold a line break that a decoder puts back into the subject.
        faked = "=?utf-8?q?hot=0D=0Amail_to_boss@example.org:_all_fine?="
        message = f"Subject: {faked}\r\n\r\nbody\r\n"
        await aiosmtplib.send(
            message, sender="a@b.invalid", recipients=[DEMO_ADDRESS],
            hostname="127.0.0.1", port=settings.smtp_port, start_tls=False,
        )  # fmt: skip
    assert len(lines) == 1
    assert lines[0].startswith(f"mail to {DEMO_ADDRESS}: hot")
    assert "\n" not in lines[0]


async def test_the_demo_leaves_an_smtp_server_of_the_users_own(tmp_path: Path):
    own = HubSettings(data=tmp_path / "d", smtp_host="mail.example.org")
    async with demo_mail(own, print) as (settings, mail):
        assert mail == DemoMail.YOURS
        assert settings is own


# -- the demo as a newcomer runs it --------------------------------------------------------

_LINE = "notification: [MAJOR] Cabinet too hot on demo-002: raised"
_MAIL = f"mail to {DEMO_ADDRESS}: [MAJOR] Cabinet too hot on demo-002: raised"


@pytest.mark.slow
def test_the_demo_shows_an_alarm_by_webhook_and_by_mail_within_a_minute(tmp_path: Path):
    data = tmp_path / "demo"
    http = free_port()
    args = ("demo", "--devices", "2", "--data", str(data), "--http", f"127.0.0.1:{http}")
    args += ("--mqtt", f"127.0.0.1:{free_port()}")
    started = time.monotonic()
    with running(*args) as (url, process):
        assert process.stdout is not None
        cookie = _login(url, "admin", _demo_password(process))
        seen = []
        while time.monotonic() - started < 60:
            line = process.stdout.readline()
            seen.append(line)
            if all(any(wanted in said for said in seen) for wanted in (_LINE, _MAIL)):
                break
        else:
            pytest.fail("no notification and mail within a minute:\n" + "".join(seen))
        said = "".join(seen)
        assert re.search(
            r"alarms: \S+/alarms \(API \S+/api/alarms.*notifications .* print here, "
            rf"and the mail to {DEMO_ADDRESS} too",
            said,
        ), said
        alarms = _get(url + "api/alarms?state=active", cookie)["alarms"]
        hot = [a for a in alarms if a["rule_id"] == "over-temperature"]
        assert [a["device_id"] for a in hot] == ["demo-002"]
        rules = _get(url + "api/alarm-rules", cookie)
        channels = _get(url + "api/notification-channels", cookie)
    assert len(rules) == 5
    assert sorted((c["name"], c["kind"]) for c in channels) == [
        (CHANNEL_NAME, "webhook"),
        (MAIL_CHANNEL, "email"),
    ]

    with running(*args) as (url, process):  # a restart: nothing doubled
        assert len(_get(url + "api/alarm-rules", cookie)) == 5
        assert len(_get(url + "api/notification-channels", cookie)) == 2
