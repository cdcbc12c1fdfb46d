"""Bad input is logged once per key per interval, with a count of what was held back."""

from __future__ import annotations

import logging

import pytest

from fieldhub.logthrottle import LogThrottle, held_back


def test_one_line_per_key_per_interval():
    throttle = LogThrottle(interval_s=60)
    assert throttle.due(("d1", "invalid_payload")) == 0
    assert all(throttle.due(("d1", "invalid_payload")) is None for _ in range(49))
    assert throttle.due(("d2", "invalid_payload")) == 0  # another device, its own line
    assert throttle.due(("d1", "unknown_command")) == 0  # another reason, its own line


def test_after_the_interval_the_held_back_count_is_reported(monkeypatch: pytest.MonkeyPatch):
    clock = [1000.0]
    monkeypatch.setattr("fieldhub.logthrottle.time.monotonic", lambda: clock[0])
    throttle = LogThrottle(interval_s=60)
    assert throttle.due("k") == 0
    for _ in range(4):
        assert throttle.due("k") is None
    clock[0] += 61
    assert throttle.due("k") == 4
    assert held_back(4) == " (4 more like it since the last report)"
    assert held_back(0) == ""


def test_the_table_of_keys_stays_bounded():
    throttle = LogThrottle(interval_s=60, max_keys=100)
    for n in range(1000):
        assert throttle.due(n) == 0
    assert len(throttle._last) <= 100


async def test_ingest_logs_a_flood_of_bad_messages_once(
    hub, connect_device, caplog: pytest.LogCaptureFixture
):
    device = await connect_device(hub, "noisy")
    with caplog.at_level(logging.WARNING, logger="fieldhub.hub.ingest.pipeline"):
        for _ in range(50):
            device.publish_raw("fh/v1/" + device.device_id + "/telemetry", b"{broken")
        device.telemetry(1, t=1)
        await device.wait_acked(1)
    lines = [r.getMessage() for r in caplog.records if "rejected" in r.getMessage()]
    assert len(lines) == 1
    assert hub.stats.rejected["invalid_payload"] == 50
