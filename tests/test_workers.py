"""``fieldhub hub --workers N`` (docs/scaling.md): N hub processes on one HTTP port, a parent
that restarts a worker that died and stops them all on SIGTERM; refused on SQLite.

Real parts: the ``fieldhub`` program, Mosquitto and PostgreSQL from the session fixtures.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import socket
import subprocess
import sys
import urllib.request
from pathlib import Path

import psutil
import pytest

from tests.support.servers import Mosquitto, Postgres, free_port
from tests.waiting import eventually

FIELDHUB = [sys.executable, "-m", "fieldhub"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ([], "needs PostgreSQL"),
        (["--db", "sqlite:////tmp/x.db"], "--db postgresql://"),
        (["--db", "postgresql://u@127.0.0.1/x"], "--broker mqtt://"),
    ],
)
def test_workers_refused_without_what_they_share_naming_the_option(
    args: list[str], message: str, tmp_path: Path
):
    result = subprocess.run(
        [*FIELDHUB, "hub", "--workers", "2", "--data", str(tmp_path), *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "COLUMNS": "200"},
    )
    assert result.returncode == 2
    assert message in result.stdout + result.stderr
    assert "Traceback" not in result.stdout + result.stderr


def test_workers_refused_on_a_port_in_use(tmp_path: Path):
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        result = subprocess.run(
            [*FIELDHUB, "hub", "--workers", "2", "--data", str(tmp_path), "--http",
             f"127.0.0.1:{port}", "--db", "postgresql://u@127.0.0.1/x", "--broker",
             "mqtt://admin:secret@127.0.0.1:1"],
            capture_output=True, text=True, timeout=60, env={**os.environ, "COLUMNS": "200"},
        )  # fmt: skip
    assert result.returncode == 1
    assert f"cannot listen on 127.0.0.1:{port}: Address already in use" in result.stderr
    assert "Traceback" not in result.stdout + result.stderr


def _supervisor(log: Path, *args: str) -> subprocess.Popen[bytes]:
    """``fieldhub hub --workers 2 ARGS``, its output (and its workers') in ``log``."""
    with log.open("wb") as out:
        return subprocess.Popen(
            [*FIELDHUB, "hub", "--workers", "2", *args],
            stdout=out,
            stderr=subprocess.STDOUT,
            env={**os.environ, "COLUMNS": "200"},
        )


def _answers(url: str) -> bool:
    """Whether the hub answers a page on ``url`` (each call a new connection)."""
    try:
        with urllib.request.urlopen(url + "login", timeout=30) as response:
            return bool(response.status == 200)
    except OSError:
        return False


@pytest.mark.slow
@pytest.mark.mosquitto
@pytest.mark.postgres
@pytest.mark.timeout(360)  # two workers start, one restarts: 15-70 s measured, loaded
async def test_workers_share_the_port_a_dead_worker_comes_back_sigterm_stops_all(
    mosquitto: Mosquitto, postgres: Postgres, tmp_path: Path, uid: str
):
    db = await asyncio.to_thread(postgres.create_database, f"workers_{uid}")
    port = free_port()
    url = f"http://127.0.0.1:{port}/"
    log = tmp_path / "hub.log"
    args = ["--broker", mosquitto.url, "--db", db, "--http", f"127.0.0.1:{port}"]
    parent = _supervisor(log, "--instance", f"w{uid}", *args, "--data", str(tmp_path / "data"))
    supervisor = psutil.Process(parent.pid)

    def started(number: int) -> int:
        return len(re.findall(rf"hub w{uid}-{number} started", log.read_text()))

    try:
        await eventually(lambda: started(1) and started(2), "both workers started", 120)
        workers = supervisor.children()
        assert len(workers) == 2
        assert "restarting it" not in log.read_text()  # both started on the new database
        assert [await asyncio.to_thread(_answers, url) for _ in range(10)] == [True] * 10

        victim = workers[0]
        victim.kill()  # SIGKILL: no clean stop, the parent must notice
        await eventually(lambda: started(1) + started(2) == 3, "the dead worker restarted", 120)
        assert "restarting it" in log.read_text()
        assert len(supervisor.children()) == 2
        assert victim.pid not in {child.pid for child in supervisor.children()}
        assert await asyncio.to_thread(_answers, url)

        workers = supervisor.children()
        parent.send_signal(signal.SIGTERM)
        assert await asyncio.to_thread(parent.wait, 60) == 0
        assert not any(worker.is_running() for worker in workers)
    finally:
        if parent.poll() is None:
            left = supervisor.children(recursive=True)
            parent.kill()
            parent.wait()
            for child in left:
                child.kill()
    text = log.read_text()
    assert "Traceback" not in text, text
    assert "did not stop" not in text, text
