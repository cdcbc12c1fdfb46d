"""The ``fieldhub`` command as a user runs it: a real process, real ports, Ctrl-C to stop."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from fieldhub.testing.servers import Mosquitto, Postgres, free_port

FIELDHUB = [sys.executable, "-m", "fieldhub"]


def _get(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=5) as response:
        return json.loads(response.read())


@contextmanager
def running(
    *args: str, env: dict[str, str] | None = None
) -> Iterator[tuple[str, subprocess.Popen[str]]]:
    """Start ``fieldhub ARGS``, wait for the printed URL, stop it with Ctrl-C afterwards."""
    process = subprocess.Popen(
        [*FIELDHUB, *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, **(env or {}), "COLUMNS": "200"},
    )
    assert process.stdout is not None
    url = None
    seen = []
    deadline = time.monotonic() + 30
    while url is None and time.monotonic() < deadline:
        line = process.stdout.readline()
        if not line:
            break
        seen.append(line)
        match = re.search(r"hub at (http://\S+/)", line)
        if match:
            url = match.group(1)
    if url is None:
        process.kill()
        pytest.fail("fieldhub printed no URL:\n" + "".join(seen) + process.stdout.read())
    try:
        yield url, process
    finally:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            process.kill()
            pytest.fail("fieldhub did not stop within 15 s of Ctrl-C")
        finally:
            rest = process.stdout.read()
            process.stdout.close()
        assert "Traceback" not in rest, rest
        assert "ERROR" not in rest, rest


def _wait_for(predicate: Any, within_s: float = 20) -> Any:
    deadline = time.monotonic() + within_s
    while True:
        value = predicate()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(0.2)


@pytest.mark.slow
def test_demo_runs_a_fleet_and_goes_on_after_a_restart(tmp_path: Path):
    data = tmp_path / "demo"
    http, mqtt = free_port(), free_port()
    args = (
        "demo",
        "--devices",
        "3",
        "--data",
        str(data),
        "--http",
        f"127.0.0.1:{http}",
        "--mqtt",
        f"127.0.0.1:{mqtt}",
    )
    with running(*args) as (url, process):
        assert url == f"http://localhost:{http}/"
        health = _get(url + "api/health")
        assert health["status"] == "ok"
        assert health["embedded_broker"] is True

        def all_reporting() -> list[dict[str, Any]]:
            listed = _get(url + "api/devices")
            return listed if len(listed) == 3 and all(d["acked_seq"] >= 2 for d in listed) else []

        devices = _wait_for(all_reporting)
        assert len(devices) == 3
        first_acked = {d["id"]: d["acked_seq"] for d in devices}
        latest = _get(url + f"api/devices/{devices[0]['id']}/latest")
        assert set(latest) >= {"temperature", "voltage", "door_open", "socket_on"}
    assert process.returncode == 0

    # Same data folder: the registry, history and sequence numbers go on.
    with running(*args):
        grew = _wait_for(
            lambda: all(
                _get(f"http://127.0.0.1:{http}/api/devices/{d}")["acked_seq"] > n
                for d, n in first_acked.items()
            )
        )
        assert grew


@pytest.mark.slow
@pytest.mark.mosquitto
@pytest.mark.postgres
def test_hub_alone_on_mosquitto_and_postgres_with_environment_config(tmp_path: Path):
    with Mosquitto(tmp_path / "mq") as broker, Postgres(tmp_path / "pg") as pg:
        http = free_port()
        env = {"FIELDHUB_BROKER": broker.url, "FIELDHUB_DB": pg.url, "FIELDHUB_INSTANCE": "hub-a"}
        with running("hub", "--http", f"127.0.0.1:{http}", "--data", str(tmp_path), env=env) as (
            url,
            _,
        ):
            health = _get(url + "api/health")
            assert health["embedded_broker"] is False
            assert health["database"] == "postgresql"
            assert health["broker"] == f"127.0.0.1:{broker.port}"
            assert health["instance"] == "hub-a"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["hub", "--http", "nonsense"], "'http'"),
        (["hub", "--db", "mysql://x/y"], "only sqlite and postgresql"),
        (["hub", "--broker", "http://x"], "mqtt://host:port"),
        (["hub", "--instance", "a/b"], "'instance'"),
    ],
)
def test_bad_configuration_fails_fast_naming_the_setting(args: list[str], message: str):
    result = subprocess.run([*FIELDHUB, *args], capture_output=True, text=True, timeout=30)
    assert result.returncode == 2
    assert message in result.stderr
    assert "Traceback" not in result.stderr


def test_backup_and_restore_commands(tmp_path: Path):
    source, target = tmp_path / "a", tmp_path / "b"
    http, mqtt = free_port(), free_port()
    with running(
        "demo",
        "--devices",
        "2",
        "--data",
        str(source),
        "--http",
        f"127.0.0.1:{http}",
        "--mqtt",
        f"127.0.0.1:{mqtt}",
    ) as (url, _):
        _wait_for(
            lambda: (
                all(d["acked_seq"] >= 1 for d in _get(url + "api/devices"))
                and len(_get(url + "api/devices")) == 2
            )
        )
        backup = subprocess.run(
            [*FIELDHUB, "hub", "backup", str(tmp_path / "b.zip"), "--data", str(source)],
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert backup.returncode == 0, backup.stderr
    assert "2 devices" in backup.stderr
    restore = [*FIELDHUB, "hub", "restore", str(tmp_path / "b.zip"), "--data", str(target)]
    first = subprocess.run(restore, capture_output=True, text=True, timeout=60)
    assert first.returncode == 0, first.stderr
    again = subprocess.run(restore, capture_output=True, text=True, timeout=60)
    assert again.returncode == 1
    assert "not empty" in again.stderr


def test_start_failures_say_what_failed_without_a_traceback(tmp_path: Path):
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    port = taken.getsockname()[1]
    cases = [
        (["demo", "--mqtt", f"127.0.0.1:{port}"], "cannot listen on"),
        (
            ["hub", "--broker", f"mqtt://127.0.0.1:{free_port()}"],
            "cannot connect to the MQTT broker",
        ),
        (
            ["hub", "--db", f"postgresql://nobody@127.0.0.1:{free_port()}/x"],
            "cannot open the database",
        ),
    ]
    try:
        for args, message in cases:
            common = ["--data", str(tmp_path), "--http", f"127.0.0.1:{free_port()}"]
            if args[0] == "hub" and "--broker" not in args:
                common += ["--mqtt", "127.0.0.1:0"]
            result = subprocess.run(
                [*FIELDHUB, *args, *common], capture_output=True, text=True, timeout=60
            )
            assert result.returncode == 1, result.stderr
            assert message in result.stderr
            assert "Traceback" not in result.stderr
    finally:
        taken.close()
