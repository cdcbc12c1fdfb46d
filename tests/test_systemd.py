"""systemd: notifications reach a real notify socket (outside systemd they do nothing), the hub
sends them as a real process, and the units in deploy/ pass systemd's own checks."""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import shutil
import signal
import socket
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

from fieldhub.systemd import notify, pet_watchdog, watchdog_interval_s
from tests.test_cli import running


def test_outside_systemd_nothing_happens(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    monkeypatch.delenv("WATCHDOG_USEC", raising=False)
    assert notify("READY=1") is False
    assert watchdog_interval_s() is None


async def test_ready_and_watchdog_reach_the_socket(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    path = tmp_path / "notify"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as server:
        server.bind(str(path))
        server.settimeout(2)
        monkeypatch.setenv("NOTIFY_SOCKET", str(path))
        monkeypatch.setenv("WATCHDOG_USEC", "2000000")
        monkeypatch.delenv("WATCHDOG_PID", raising=False)

        assert notify("READY=1")
        assert server.recv(100) == b"READY=1"
        interval = watchdog_interval_s()
        assert interval == 1.0
        petting = asyncio.create_task(pet_watchdog(0.01))
        try:
            received = [await asyncio.to_thread(server.recv, 100) for _ in range(3)]
        finally:
            petting.cancel()
        assert received == [b"WATCHDOG=1"] * 3


def test_the_hub_tells_systemd_it_serves_pets_the_watchdog_and_says_it_stops(tmp_path: Path):
    """``fieldhub hub`` under ``Type=notify`` (deploy/fieldhub-hub.service), as a real process
    with a real notify socket: READY=1 once it serves, WATCHDOG=1 from its event loop, and on
    SIGTERM STOPPING=1 and exit status 0."""
    path = tmp_path / "notify"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as systemd:
        systemd.bind(str(path))
        systemd.settimeout(10)
        env = {"NOTIFY_SOCKET": str(path), "WATCHDOG_USEC": "400000"}  # a pet every 0.2 s
        args = ("hub", "--data", str(tmp_path / "data"), "--http", "127.0.0.1:0")
        with running(*args, "--mqtt", "127.0.0.1:0", env=env, stop=signal.SIGTERM) as (
            url,
            process,
        ):
            heard = [systemd.recv(100) for _ in range(3)]
            assert heard[0] == b"READY=1"  # sent once the URL was printed: it serves
            assert heard[1:] == [b"WATCHDOG=1"] * 2
            with urllib.request.urlopen(url + "api/health", timeout=5) as answer:
                assert json.loads(answer.read())["status"] == "ok"
        assert process.returncode == 0
        rest = []
        with contextlib.suppress(TimeoutError):
            while (said := systemd.recv(100)) != b"STOPPING=1":
                rest.append(said)
            rest.append(said)
        assert rest[-1:] == [b"STOPPING=1"]


# -- the units in deploy/ ---------------------------------------------------------------------
UNITS = sorted((Path(__file__).resolve().parents[1] / "deploy").glob("*.service"))
EXEC_UNITS = {"fieldhub-controller.service"}
SYSTEMD_ANALYZE = shutil.which("systemd-analyze")
needs_systemd_analyze = pytest.mark.skipif(
    SYSTEMD_ANALYZE is None, reason="systemd-analyze (Debian package systemd) is not installed"
)


def _installed(unit: Path, folder: Path) -> Path:
    """The unit as installed, but starting this checkout's ``fieldhub``: ``verify`` checks
    that the program exists."""
    program = Path(sys.executable).with_name("fieldhub")
    text = unit.read_text().replace("/opt/fieldhub/.venv/bin/fieldhub", str(program))
    installed = folder / unit.name
    installed.write_text(text)
    return installed


@needs_systemd_analyze
@pytest.mark.parametrize("unit", UNITS, ids=lambda unit: unit.name)
def test_each_unit_passes_systemd_analyze_verify(unit: Path, tmp_path: Path):
    assert SYSTEMD_ANALYZE is not None
    checked = subprocess.run(
        [SYSTEMD_ANALYZE, "verify", str(_installed(unit, tmp_path))],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert checked.returncode == 0, checked.stderr
    assert checked.stderr == ""
    text = unit.read_text()
    for setting in ("NoNewPrivileges=yes", "ProtectSystem=strict", "ProtectHome=yes",
                    "PrivateTmp=yes", "User=fieldhub"):  # fmt: skip
        assert setting in text, setting
    # The controller is a small board's program that does not speak sd_notify: systemd counts
    # it started once it runs (Type=exec). The others say when they are ready, and are watched.
    watched = ("Type=exec",) if unit.name in EXEC_UNITS else ("Type=notify", "WatchdogSec=")
    for setting in watched:
        assert setting in text, setting


@needs_systemd_analyze
def test_the_hub_unit_is_locked_down(tmp_path: Path):
    """systemd's own review of the hub's sandbox: exposure 0 (locked down) to 10 (none)."""
    assert SYSTEMD_ANALYZE is not None
    unit = Path(__file__).resolve().parents[1] / "deploy" / "fieldhub-hub.service"
    review = subprocess.run(
        [SYSTEMD_ANALYZE, "security", "--offline=true", str(_installed(unit, tmp_path))],
        capture_output=True,
        text=True,
        timeout=60,
    )
    match = re.search(r"Overall exposure level for \S+: ([\d.]+)", review.stdout)
    assert match, review.stdout + review.stderr
    assert float(match.group(1)) <= 2.5
    # Only the hub gets SIGTERM: it stops its Mosquitto after its final acks.
    assert "KillMode=mixed" in unit.read_text()
