"""Bad input is logged once per device and reason per interval, with a count of what was held."""

from __future__ import annotations

import logging

import pytest

from fieldhub.hub.stats import LogThrottle


def test_one_line_per_device_and_reason_per_interval(caplog: pytest.LogCaptureFixture):
    throttle = LogThrottle(logging.getLogger("test.throttle"), interval_s=0.2)
    with caplog.at_level(logging.WARNING, logger="test.throttle"):
        for _ in range(50):
            throttle.warning("d1", "invalid_payload", "rejected: bad json")
        throttle.warning("d2", "invalid_payload", "rejected: bad json")
        throttle.warning("d1", "unknown_command", "rejected: no such command")
    assert [r.getMessage() for r in caplog.records] == [
        "rejected: bad json",
        "rejected: bad json",
        "rejected: no such command",
    ]


def test_after_the_interval_the_held_back_count_is_reported(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
):
    clock = [1000.0]
    monkeypatch.setattr("fieldhub.hub.stats.time.monotonic", lambda: clock[0])
    throttle = LogThrottle(logging.getLogger("test.throttle"), interval_s=60)
    with caplog.at_level(logging.WARNING, logger="test.throttle"):
        for _ in range(5):
            throttle.warning("d1", "invalid_payload", "rejected")
        clock[0] += 61
        throttle.warning("d1", "invalid_payload", "rejected")
    assert [r.getMessage() for r in caplog.records] == [
        "rejected",
        "rejected (4 more like it since the last report)",
    ]
