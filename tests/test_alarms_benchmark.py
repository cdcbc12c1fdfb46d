"""The alarm benchmark itself works: run tiny, it prints its figures and loses nothing.

Speed is the benchmark's business (``benchmarks/alarms.py``, docs/benchmarks.md); this only
checks that a run measures what it says: no alarm twice for one crossing, every raised alarm's
webhook arrived, the latency was measured under load, and the storm's outage was heard.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

FIELDS = (
    "alarm_p50_ms",
    "alarm_p99_ms",
    "ingest_ratio_rules_on_off",
    "duplicate_alarms",
    "lost_notifications",
    "storm_notifications",
    "rate_on_msg_s",
    "rate_off_msg_s",
    "raw_rate_msg_s",
)


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_a_tiny_run_prints_every_figure_and_loses_nothing() -> None:
    tiny = ["--devices", "30", "--triggers", "5", "--storm", "10", "--messages", "1500"]
    paced = ["--rate", "2000", "--paced-s", "5", "--every", "0.2"]
    result = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks/alarms.py"), *tiny, *paced],
        capture_output=True,
        text=True,
        timeout=540,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    figures = json.loads(result.stdout.strip().splitlines()[-1])
    assert [name for name in FIELDS if figures.get(name) is None] == [], figures
    assert figures["triggers_paced"] >= 1, figures  # latency measured under the paced load
    assert figures["duplicate_alarms"] == 0, figures
    assert figures["lost_notifications"] == 0, figures
    assert (figures["ingest_lost"], figures["ingest_duplicates"]) == (0, 0), figures
    assert figures["rules"] == 31  # a threshold rule per device, and `offline`
    # Rules off and on alternated: three rounds, each one phase of each, in turns.
    order = [[phase["phase"] for phase in pair] for pair in figures["rounds"]]
    assert order == [["off-0", "on-0"], ["on-1", "off-1"], ["off-2", "on-2"]], order
    assert len(figures["round_ratios"]) == 3, figures
    split = ("deliver_p50_ms", "write_p50_ms", "claim_p50_ms", "send_p50_ms")
    assert [name for name in split if figures.get(name) is None] == [], figures
    assert figures["storm_notifications"] >= 1, figures  # the outage reached the receiver
    assert figures["storm_first_s"] <= figures["storm_last_s"], figures
