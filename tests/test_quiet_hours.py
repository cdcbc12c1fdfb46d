"""Quiet hours in local time: a period that crosses midnight, days of the week, the owner's
time zone, and the severities that pass (issue 13)."""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

import pytest

from fieldhub.hub.errors import Invalid
from fieldhub.hub.notify.holds import quiet_until
from fieldhub.hub.notify.subscriptions import QuietHours, quiet_hours

BERLIN = ZoneInfo("Europe/Berlin")
NIGHTS = quiet_hours(
    {"timezone": "Europe/Berlin", "from": "22:00", "to": "07:00", "days": ["fri", "sat"]}
)


def _ms(*when: int, zone: ZoneInfo = BERLIN) -> int:
    return int(datetime(*when, tzinfo=zone).timestamp() * 1000)  # type: ignore[misc]


@pytest.mark.parametrize(
    ("at", "until"),
    [
        (_ms(2026, 12, 4, 21, 59), None),  # Friday, before it starts
        (_ms(2026, 12, 4, 22, 0), _ms(2026, 12, 5, 7, 0)),  # Friday night: until Saturday 7:00
        (_ms(2026, 12, 5, 6, 59), _ms(2026, 12, 5, 7, 0)),  # after midnight, still Friday's
        (_ms(2026, 12, 5, 7, 0), None),  # over
        (_ms(2026, 12, 6, 3, 0), _ms(2026, 12, 6, 7, 0)),  # Saturday's night, on Sunday
        (_ms(2026, 12, 6, 23, 0), None),  # Sunday night is not quiet
        (_ms(2026, 12, 4, 21, 30, zone=ZoneInfo("UTC")), _ms(2026, 12, 5, 7, 0)),  # 22:30 there
    ],
)
def test_a_night_crossing_midnight_holds_until_its_morning(at: int, until: int | None) -> None:
    assert NIGHTS is not None
    assert quiet_until(NIGHTS, at) == until


def test_equal_times_are_a_whole_day() -> None:
    sunday = quiet_hours(
        {"timezone": "Europe/Berlin", "from": "00:00", "to": "00:00", "days": ["sun"]}
    )
    assert isinstance(sunday, QuietHours)
    assert quiet_until(sunday, _ms(2026, 12, 6, 12, 0)) == _ms(2026, 12, 7, 0, 0)
    assert quiet_until(sunday, _ms(2026, 12, 7, 12, 0)) is None


@pytest.mark.parametrize(
    ("raw", "loc"),
    [
        ({"timezone": "Berlin", "from": "22:00", "to": "07:00"}, "timezone"),
        ({"timezone": "Europe/Berlin", "from": "7", "to": "07:00"}, "from"),
        ({"timezone": "Europe/Berlin", "from": "22:00", "to": "24:00"}, "to"),
    ],
)
def test_bad_quiet_hours_name_their_field(raw: dict[str, str], loc: str) -> None:
    with pytest.raises(Invalid) as refused:
        quiet_hours(raw)
    assert refused.value.loc == ("body", "quiet_hours", loc)
