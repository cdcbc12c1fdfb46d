"""The connections benchmark itself works: run with 50 devices, it measures what it says.

Scale and speed are the benchmark's business (``benchmarks/connections.py``: 10,000 devices,
docs/benchmarks.md); this runs the same code path small: ``fieldhub hub`` on its managed
Mosquitto, devices registered with their own credentials (most next to the stopped hub, ten
while it runs), two load processes holding one
real MQTT connection each, the broker killed and started again by the hub's supervisor.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DEVICES = 50
FIELDS = ("devices", "online", "hub_rss_mb", "hub_cpu_pct", "reconnect_all_s", "fleet_summary_ms")


@pytest.mark.slow
@pytest.mark.mosquitto
@pytest.mark.timeout(300)  # a hub, its broker and two load processes, on a loaded machine
def test_fifty_devices_connect_stay_online_and_come_back_after_a_broker_crash() -> None:
    small = [
        "--devices",
        str(DEVICES),
        "--live-register",
        "10",
        "--processes",
        "2",
        "--report-s",
        "1",
    ]
    short = ["--settle-s", "1", "--steady-s", "3", "--requests", "30", "--timeout-s", "120"]
    result = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks/connections.py"), *small, *short],
        capture_output=True,
        text=True,
        timeout=280,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    figures = json.loads(result.stdout.strip().splitlines()[-1])
    assert [name for name in FIELDS if figures.get(name) is None] == [], figures
    assert figures["online"] == figures["devices"] == DEVICES, figures
    assert figures["broker_restarted"] is True, figures  # a new Mosquitto, started by the hub
    assert figures["online_after_restart"] == DEVICES, figures
    assert 0 < figures["reconnect_load_s"] <= figures["reconnect_all_s"], figures
    assert figures["refused"] == 0, figures  # every device's own credentials worked
    assert figures["register_live_per_s"] > 0, figures  # 10 registered with the hub up
    assert figures["reports"] >= DEVICES, figures  # each reported at least once
    assert figures["hub_tracebacks"] == 0, figures
    assert figures["hub_rss_mb"] > figures["raw_rss_mb"] > 0, figures
