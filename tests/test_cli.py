"""The ``fieldhub`` command as a user runs it: a real process, real ports, Ctrl-C to stop."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import sqlite3
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import closing, contextmanager
from pathlib import Path
from typing import Any

import pytest

from tests.support.servers import Mosquitto, Postgres, free_port

FIELDHUB = [sys.executable, "-m", "fieldhub"]


def _get(url: str, cookie: str = "") -> Any:
    request = urllib.request.Request(url, headers={"Cookie": cookie} if cookie else {})
    with urllib.request.urlopen(request, timeout=5) as response:
        return json.loads(response.read())


def _post(url: str, body: dict[str, Any]) -> tuple[Any, str]:
    """POST JSON; the answer and the session cookie it set (if any), as ``name=value``."""
    request = urllib.request.Request(
        url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        cookies = [h.split(";")[0] for h in response.headers.get_all("Set-Cookie") or []]
        session = next((c for c in cookies if c.startswith("fieldhub_session=")), "")
        return json.loads(response.read()), session


def _login(url: str, name: str, password: str) -> str:
    """Log in as a browser would; the session cookie to send with later requests."""
    _, cookie = _post(url + "api/auth/login", {"name": name, "password": password})
    assert cookie
    return cookie


def _demo_password(process: subprocess.Popen[str]) -> str:
    """The demo admin's password, printed once right after the URL."""
    assert process.stdout is not None
    line = process.stdout.readline()
    match = re.search(r"as admin with password (\S+) \(shown only now", line)
    assert match, line
    return match.group(1)


@contextmanager
def running(
    *args: str,
    env: dict[str, str] | None = None,
    output: list[str] | None = None,
    stop: signal.Signals = signal.SIGINT,
) -> Iterator[tuple[str, subprocess.Popen[str]]]:
    """Start ``fieldhub ARGS``, wait for the printed URL, stop it with Ctrl-C (or ``stop``, as
    a service manager does with SIGTERM) afterwards.

    ``output`` receives the lines printed up to the URL.
    """
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
    if output is not None:
        output.extend(seen)
    try:
        yield url, process
    finally:
        process.send_signal(stop)
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            process.kill()
            pytest.fail(f"fieldhub did not stop within 15 s of {stop.name}")
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
def test_demo_runs_a_fleet_of_agents_and_goes_on_after_a_restart(tmp_path: Path):
    data = tmp_path / "demo"
    http, mqtt = free_port(), free_port()
    args = (
        "demo",
        "--devices",
        "3",
        "--door-every",
        "5",  # lively doors, so that a test sees some within seconds
        "--data",
        str(data),
        "--http",
        f"127.0.0.1:{http}",
        "--mqtt",
        f"127.0.0.1:{mqtt}",
    )
    with running(*args) as (url, process):
        assert url == f"http://localhost:{http}/"
        password = _demo_password(process)
        assert _get(url + "api/health") == {"status": "ok"}  # strangers learn nothing more
        with pytest.raises(urllib.error.HTTPError, match="401"):
            _get(url + "api/devices")
        cookie = _login(url, "admin", password)
        health = _get(url + "api/health", cookie)
        assert health["status"] == "ok"
        assert health["embedded_broker"] is True

        def all_reporting() -> list[dict[str, Any]]:
            listed = _get(url + "api/devices", cookie)
            ready = len(listed) == 3 and all(
                d["acked_seq"] >= 2 and d["presence"]["state"] == "online" for d in listed
            )
            return listed if ready else []

        devices = _wait_for(all_reporting)
        assert {d["id"] for d in devices} == {"demo-001", "demo-002", "demo-003"}
        assert all(set(d["labels"]) == {"site", "group"} for d in devices)
        first_acked = {d["id"]: d["acked_seq"] for d in devices}
        # What the FocusPro units of a real agent report: its thermometers and supply voltage,
        # its door, socket and socket check as state, its actions as the catalogue.
        device = devices[0]["id"]
        latest = _wait_for(
            lambda: _has(_get(url + f"api/devices/{device}/latest", cookie), _TELEMETRY)
        )
        assert 0 < latest["temperature.cabinet"]["value"] < 60
        assert 4.0 < latest["supply"]["value"] < 6.0
        state = _get(url + f"api/devices/{device}/state", cookie)["reported"]
        assert state["door"] in ("open", "closed")
        assert state["socket"] == "on"
        opened = _wait_for(
            lambda: _get(url + "api/events?type=door.opened", cookie)["events"], within_s=30
        )
        assert {e["device_id"] for e in opened} <= set(first_acked)
        # Each agent keeps its own files, and its secret for its owner only.
        for device_id in first_acked:
            folder = data / "demo-agents" / device_id
            assert (folder / "outbox.db").exists()
            assert (folder / "commands.db").exists()
            assert (folder / "credentials.json").stat().st_mode & 0o777 == 0o600
    assert process.returncode == 0
    kept = (data / "demo-agents" / "demo-001" / "credentials.json").read_bytes()

    # Same data folder: the registry, history, sequence numbers, sessions and the agents'
    # credentials go on; the password is not shown again, only how to reset it.
    with running(*args) as (_, process):
        assert process.stdout is not None
        hint = process.stdout.readline()
        assert "fieldhub user passwd admin" in hint
        assert password not in hint
        grew = _wait_for(
            lambda: all(
                _get(f"http://127.0.0.1:{http}/api/devices/{d}", cookie)["acked_seq"] > n
                for d, n in first_acked.items()
            )
        )
        assert grew
    assert (data / "demo-agents" / "demo-001" / "credentials.json").read_bytes() == kept


_TELEMETRY = {"temperature.cabinet", "temperature.dispenser", "supply"}


def _has(latest: dict[str, Any], keys: set[str]) -> dict[str, Any]:
    return latest if keys <= set(latest) else {}


@pytest.mark.slow
@pytest.mark.mosquitto
@pytest.mark.postgres
def test_hub_alone_on_mosquitto_and_postgres_with_environment_config(tmp_path: Path):
    with Mosquitto(tmp_path / "mq") as broker, Postgres(tmp_path / "pg") as pg:
        http = free_port()
        env = {"FIELDHUB_BROKER": broker.url, "FIELDHUB_DB": pg.url, "FIELDHUB_INSTANCE": "hub-a"}
        output: list[str] = []
        hub_args = ("hub", "--http", f"127.0.0.1:{http}", "--data", str(tmp_path))
        with running(*hub_args, env=env, output=output) as (url, _):
            # A hub without users logs a one-time setup token that makes the first admin.
            (token,) = re.findall(r"fhsetup_[A-Za-z0-9_-]{43}", "".join(output))
            body = {"token": token, "name": "root", "password": "first admin password"}
            made, _ = _post(url + "api/auth/setup", body)
            assert made["role"] == "admin"
            with pytest.raises(urllib.error.HTTPError, match="401"):
                _post(url + "api/auth/setup", {**body, "name": "again"})  # used up
            health = _get(url + "api/health", _login(url, "root", "first admin password"))
            assert health["embedded_broker"] is False
            assert health["database"] == "postgresql"
            assert health["broker"] == f"127.0.0.1:{broker.port}"
            assert health["instance"] == "hub-a"


def _credentials(data: Path, device_id: str) -> dict[str, str]:
    """Register ``device_id`` with ``fieldhub device add``; its client id, user name, secret."""
    added = subprocess.run(
        [*FIELDHUB, "device", "add", device_id, "--data", str(data)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert added.returncode == 0, added.stderr
    return dict(line.split(": ", 1) for line in added.stdout.splitlines())


@pytest.mark.parametrize("stop", [signal.SIGTERM, signal.SIGINT], ids=["sigterm", "sigint"])
def test_a_stopped_hub_commits_and_acknowledges_what_it_took_and_exits_0(
    tmp_path: Path, stop: signal.Signals
):
    # systemd and docker stop a service with SIGTERM: that is a graceful stop, like Ctrl-C.
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    from fieldhub.clock import now_ms
    from fieldhub.protocol import Channel, Status, Telemetry, decode, encode, topic_for

    data, device_id, count = tmp_path / "data", "meter-1", 200
    device = _credentials(data, device_id)
    http, port = free_port(), free_port()
    acked: list[int] = []
    client = mqtt.Client(
        CallbackAPIVersion.VERSION2, client_id=device["client_id"], protocol=mqtt.MQTTv311
    )
    client.username_pw_set(device["username"], device["secret"])
    client.on_message = lambda _c, _u, m: acked.append(decode(Channel.ACK, m.payload).seq)
    args = (
        "hub",
        "--data",
        str(data),
        "--http",
        f"127.0.0.1:{http}",
        "--mqtt",
        f"127.0.0.1:{port}",
    )
    with running(*args, stop=stop) as (_, process):
        client.connect("127.0.0.1", port)
        client.loop_start()
        client.subscribe(topic_for(device_id, Channel.ACK), qos=1)
        start = now_ms()
        sent = [
            client.publish(
                topic_for(device_id, Channel.TELEMETRY),
                encode(Telemetry(seq=seq, ts=start + seq, values={"kwh": seq})),
                qos=1,
            )
            for seq in range(1, count + 1)
        ]
        # A retained message, which the broker keeps for the next start (docs/protocol.md).
        status = Status(online=True, ts=start)
        sent.append(
            client.publish(topic_for(device_id, Channel.STATUS), encode(status), qos=1, retain=True)
        )
        for message in sent:  # the hub's embedded broker has them all: now stop it
            message.wait_for_publish(10)
    client.loop_stop()
    assert process.returncode == 0
    saved = data / "retained.json"
    assert saved.stat().st_mode & 0o777 == 0o600  # the hub's user's alone
    retained = json.loads(saved.read_text())
    assert topic_for(device_id, Channel.STATUS) in json.dumps(retained)
    with closing(sqlite3.connect(data / "fieldhub.db")) as db:
        stored = db.execute(
            "SELECT count(*) FROM samples JOIN series ON series.id = samples.series_id "
            "WHERE series.device_id = ?",
            (device_id,),
        ).fetchone()[0]
        acked_seq = db.execute(
            "SELECT acked_seq FROM devices WHERE id = ?", (device_id,)
        ).fetchone()[0]
    assert stored == count
    assert acked_seq == count
    assert max(acked, default=0) == count  # and the device was told before the hub went


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["hub", "--http", "nonsense"], "'http'"),
        (["hub", "--db", "mysql://x/y"], "only sqlite and postgresql"),
        (["hub", "--broker", "http://x"], "mqtt(s)://admin:password@host:port"),
        (["hub", "--instance", "a/b"], "'instance'"),
        (["hub", "--mqtts", "127.0.0.1:8883"], "mqtts (HOST:PORT of the TLS listener) goes"),
        (["hub", "--broker-ca", "ca.pem"], "broker_ca, broker_pin and broker_crl need an mqtts://"),
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
    ) as (url, process):
        cookie = _login(url, "admin", _demo_password(process))
        _wait_for(
            lambda: (
                all(d["acked_seq"] >= 1 for d in _get(url + "api/devices", cookie))
                and len(_get(url + "api/devices", cookie)) == 2
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
            ["hub", "--broker", f"mqtt://admin:s3cret-pw@127.0.0.1:{free_port()}"],
            "cannot connect to the MQTT broker",
        ),
        (["hub", "--broker", f"mqtt://127.0.0.1:{free_port()}"], "names no user"),
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
            assert "s3cret-pw" not in result.stderr  # the broker admin's password, never shown
    finally:
        taken.close()


def test_user_commands_add_list_and_reset_passwords(tmp_path: Path):
    data = tmp_path / "data"

    def fieldhub(*args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*FIELDHUB, *args, "--data", str(data)],
            input=stdin,
            capture_output=True,
            text=True,
            timeout=60,
            env={**os.environ, "COLUMNS": "200"},
        )

    added = fieldhub(
        "user", "add", "Alice", "--role", "operator", "--site", "berlin", "--site", "paris",
        "--password-stdin", stdin="alice password 1\n",
    )  # fmt: skip
    assert added.returncode == 0, added.stderr
    assert "user 'alice' added: operator, berlin, paris" in added.stderr
    prompted = fieldhub("user", "add", "carol", stdin="carol password\ncarol password\n")
    assert prompted.returncode == 0, prompted.stderr  # typed twice at the prompt, hidden
    assert "viewer" in prompted.stderr  # the least role unless told otherwise
    failures = [
        (("user", "add", "alice", "--password-stdin"), "alice password 9\n", 1, "exists already"),
        (("user", "add", "bob", "--password-stdin"), "short\n", 1, "at least 10 characters"),
        (("user", "add", "bob", "--role", "root", "--password-stdin"), "x" * 12, 2, "--role"),
        (("user", "add", "bob"), "one password\nanother one\n", 1, ""),  # typed twice, unlike
        (("user", "passwd", "nobody", "--password-stdin"), "a password 123\n", 1, "no user"),
    ]
    for args, stdin, code, message in failures:
        result = fieldhub(*args, stdin=stdin)
        assert result.returncode == code, (args, result.stderr)
        assert message in result.stderr, (args, result.stderr)
        assert "Traceback" not in result.stderr
    listed = fieldhub("user", "list")
    assert listed.returncode == 0
    rows = {line.split()[1]: line for line in listed.stdout.splitlines() if "│" in line}
    assert set(rows) >= {"alice", "carol"}
    assert "operator" in rows["alice"]
    assert "berlin, paris" in rows["alice"]
    assert "bob" not in listed.stdout
    reset = fieldhub("user", "passwd", "ALICE", "--password-stdin", stdin="alice password 2\n")
    assert reset.returncode == 0, reset.stderr
    for result in (added, prompted, listed, reset):
        assert "alice password" not in result.stdout + result.stderr
        assert "carol password" not in result.stdout + result.stderr

    # A hub on this data folder has users: no setup token, and alice's new password works.
    output: list[str] = []
    http = f"127.0.0.1:{free_port()}"
    with running(
        "hub", "--data", str(data), "--http", http, "--mqtt", "127.0.0.1:0", output=output
    ) as (
        url,
        _,
    ):
        assert "fhsetup_" not in "".join(output)
        with pytest.raises(urllib.error.HTTPError, match="401"):
            _login(url, "alice", "alice password 1")
        me = _get(url + "api/auth/me", _login(url, "alice", "alice password 2"))
        assert me["user"]["role"] == "operator"
        assert me["user"]["sites"] == ["berlin", "paris"]


def test_the_agent_command_stays_light_and_says_what_is_wrong(tmp_path: Path):
    missing = tmp_path / "agent.yaml"
    for args in (["--config", str(missing)], ["-c", str(missing), "--simulate", "-v"]):
        result = subprocess.run(
            [*FIELDHUB, "agent", *args], capture_output=True, text=True, timeout=60
        )
        assert result.returncode == 2, result.stderr
        assert f"error: {missing}" in result.stderr
        assert "Traceback" not in result.stderr
    # What the plain command line loads: the agent's memory budget has no room for the CLI
    # framework and the hub (docs/benchmarks.md, agent section).
    probe = (
        "import sys; from fieldhub.cli import main\n"
        "try:\n    main()\nexcept SystemExit:\n    pass\n"
        "print(sorted({m.split('.')[0] for m in sys.modules} & "
        "{'typer', 'click', 'rich', 'pydantic', 'uvicorn', 'fastapi', 'sqlalchemy'}))"
    )
    loaded = subprocess.run(
        [sys.executable, "-c", probe, "agent", "--config", str(missing)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert loaded.stdout.strip() == "[]", loaded.stdout + loaded.stderr
    # Anything else is the full command, with its help and its usage errors.
    typo = subprocess.run(
        [*FIELDHUB, "agent", "--config", str(missing), "--simulte"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert typo.returncode == 2
    assert "--simulte" in typo.stderr


# Loaded only when first needed (the technician's login, page views) or never by the agent;
# each one is megabytes of its 30 MB budget (docs/benchmarks.md, agent section).
_NOT_IN_A_RUNNING_AGENT = {
    "ssl", "_ssl", "_hashlib", "hashlib", "hmac", "secrets", "argon2", "ctypes", "h11",
    "typer", "click", "rich", "pydantic", "uvicorn", "fastapi", "sqlalchemy", "uvloop",
    "httptools", "cryptography", "tarfile",
    # The camera's runtime, the media spool and uploader, the bundle host: imported only when
    # agent.yaml has a camera, pictures wait in the spool, or a bundle key is trusted.
    "fieldhub.agent.units.camera", "fieldhub.agent.units._picture", "fieldhub.agent.media.spool",
    "fieldhub.agent.media.uploader", "fieldhub.agent.bundles.host",
}  # fmt: skip


def test_a_running_agent_has_not_loaded_what_it_does_not_need(tmp_path: Path):
    import yaml

    example = Path(__file__).parent.parent / "deploy" / "agent.example.yaml"
    config: dict[str, Any] = yaml.safe_load(example.read_text(encoding="utf-8"))
    config["hub"] = {"broker": f"mqtt://127.0.0.1:{free_port()}", "username": "u", "secret": "s"}
    config["data_dir"] = str(tmp_path / "data")
    config["web"]["listen"] = "127.0.0.1:0"
    path = tmp_path / "agent.yaml"
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    # Three seconds into its run (units polled, uplink retrying, page served), the agent
    # reports what it has imported and stops.
    probe = (
        "import os, signal, sys\n"
        "def report(*_):\n"
        "    loaded = set(sys.modules) | {m.split('.')[0] for m in sys.modules}\n"
        f"    print(sorted(loaded & set({sorted(_NOT_IN_A_RUNNING_AGENT)!r})), flush=True)\n"
        "    os._exit(0)\n"
        "signal.signal(signal.SIGALRM, report); signal.alarm(3)\n"
        "from fieldhub.cli import main\n"
        "main()\n"
    )
    loaded = subprocess.run(
        [sys.executable, "-c", probe, "agent", "--config", str(path), "--simulate"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert loaded.stdout.strip() == "[]", loaded.stdout + loaded.stderr
