"""When a maintenance window is open: one-off and weekly schedules, across midnight and the
changes of a time zone's offset (unit tests of ``hub/alarms/maintenance.py``)."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

from fieldhub.hub.alarms.maintenance import Once, Scope, parse_schedule, parse_scope
from fieldhub.hub.errors import Invalid

UTC = dt.UTC


def ms(text: str) -> int:
    """Epoch ms of an ISO time with its offset."""
    return int(dt.datetime.fromisoformat(text).timestamp() * 1000)


def weekly(days: list[int], start: str, duration_s: int, timezone: str) -> Any:
    raw = {"kind": "weekly", "days": days, "start": start, "duration_s": duration_s}
    return parse_schedule({**raw, "timezone": timezone}, None)


def test_a_one_off_window_is_open_from_its_start_until_before_its_end():
    window = Once(1000, 2000)
    assert window.occurrence(999) is None
    assert window.occurrence(1000) == (1000, 2000)
    assert window.occurrence(1999) == (1000, 2000)
    assert window.occurrence(2000) is None


def test_a_weekly_window_runs_past_midnight_into_the_next_day():
    saturday_night = weekly([5], "23:00", 2 * 3600, "UTC")  # Saturdays 23:00-01:00
    opened = (ms("2026-12-05T23:00:00+00:00"), ms("2026-12-06T01:00:00+00:00"))
    assert saturday_night.occurrence(ms("2026-12-05T22:59:59+00:00")) is None
    assert saturday_night.occurrence(ms("2026-12-05T23:00:00+00:00")) == opened
    assert saturday_night.occurrence(ms("2026-12-06T00:30:00+00:00")) == opened  # a Sunday
    assert saturday_night.occurrence(ms("2026-12-06T01:00:00+00:00")) is None
    assert saturday_night.occurrence(ms("2026-12-04T23:30:00+00:00")) is None  # a Friday


def test_a_weekly_window_starts_at_the_local_time_in_winter_and_in_summer():
    sundays = weekly([6], "01:00", 3600, "Europe/Berlin")
    winter = ms("2026-03-22T01:00:00+01:00")  # CET: 00:00 UTC
    summer = ms("2026-04-05T01:00:00+02:00")  # CEST: 23:00 UTC on the Saturday before
    assert sundays.occurrence(winter + 1) == (winter, winter + 3_600_000)
    assert sundays.occurrence(summer + 1) == (summer, summer + 3_600_000)
    assert sundays.occurrence(ms("2026-04-04T23:30:00+00:00")) == (summer, summer + 3_600_000)
    assert sundays.occurrence(ms("2026-04-05T01:00:00+00:00")) is None  # 03:00 local: over


def test_a_weekly_window_lasts_its_real_duration_over_the_spring_forward_night():
    sundays = weekly([6], "01:00", 3 * 3600, "Europe/Berlin")
    start = ms("2026-03-29T01:00:00+01:00")  # the clocks jump 02:00 → 03:00 that night
    end = ms("2026-03-29T05:00:00+02:00")  # three real hours: 05:00 summer time
    assert end - start == 3 * 3_600_000
    assert sundays.occurrence(end - 1) == (start, end)
    assert sundays.occurrence(end) is None


def test_a_start_the_clocks_skip_or_pass_twice_is_well_defined():
    skipped = weekly([6], "02:30", 3600, "Europe/Berlin")  # 02:30 does not exist on 29 March
    begins = ms("2026-03-29T03:30:00+02:00")
    assert skipped.occurrence(begins) == (begins, begins + 3_600_000)
    assert skipped.occurrence(begins - 1) is None
    twice = weekly([6], "02:30", 3600, "Europe/Berlin")  # 02:30 happens twice on 25 October
    first = ms("2026-10-25T02:30:00+02:00")  # the first one, still summer time
    assert twice.occurrence(first) == (first, first + 3_600_000)


def test_a_scope_matches_on_every_part_it_names():
    scope = parse_scope({"sites": ["berlin"], "rules": ["hot"]})
    assert scope.covers("atm-1", {"site": "berlin"}, "hot")
    assert not scope.covers("atm-1", {"site": "paris"}, "hot")
    assert not scope.covers("atm-1", {"site": "berlin"}, "door")
    assert scope.covers("atm-1", {"site": "berlin"}, None)  # "a window on this device"
    assert Scope().everything
    assert Scope().covers("any", {}, "any")


@pytest.mark.parametrize(
    ("raw", "loc"),
    [
        ({"kind": "daily"}, ("schedule", "kind")),
        ({"kind": "once", "start": 5, "end": 5}, ("schedule", "end")),
        ({"kind": "once", "start": 0, "end": 40 * 86_400_000}, ("schedule", "end")),
        (
            {"kind": "weekly", "days": [7], "start": "01:00", "duration_s": 60, "timezone": "UTC"},
            ("schedule", "days"),
        ),
        (
            {"kind": "weekly", "days": [1], "start": "24:00", "duration_s": 60, "timezone": "UTC"},
            ("schedule", "start"),
        ),
        (
            {"kind": "weekly", "days": [1], "start": "01:00", "duration_s": 10, "timezone": "UTC"},
            ("schedule", "duration_s"),
        ),
        (
            {
                "kind": "weekly",
                "days": [1],
                "start": "01:00",
                "duration_s": 60,
                "timezone": "Mars/Olympus",
            },
            ("schedule", "timezone"),
        ),
    ],
)
def test_a_bad_schedule_names_its_field(raw: dict[str, Any], loc: tuple[str, ...]):
    with pytest.raises(Invalid) as caught:
        parse_schedule(raw, 0, ("schedule",))
    assert caught.value.loc == loc
