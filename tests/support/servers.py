"""Start real Mosquitto, PostgreSQL and owserver processes from their Debian packages.

Tests and benchmarks talk to the same broker and database that run in production, so that
queue limits, privilege drops and SQL dialect are the real ones. Each server gets its own
port and its own directory, so several can run side by side (one per test module).

The API is synchronous and blocks (subprocesses, ``time.sleep``): call it from pytest fixtures,
or from async code through ``asyncio.to_thread``.

Example::

    with Mosquitto(tmp_path / "broker") as broker, Postgres(tmp_path / "db") as db:
        run_hub(mqtt_url=broker.url, database_url=db.create_database("hub"))

Mosquitto runs as fieldhub expects it in production: no anonymous clients, the
dynamic-security plugin loaded, and an admin (in :attr:`Mosquitto.url`) through which the hub
manages device credentials.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import os
import pwd
import re
import secrets
import shlex
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import IO, Self

__all__ = [
    "Mosquitto",
    "Owserver",
    "Postgres",
    "ServerError",
    "ServerStartError",
    "ServerUnavailable",
    "free_port",
    "tls_listener_config",
]

HOST = "127.0.0.1"
_START_TIMEOUT_S = 10.0
_STOP_TIMEOUT_S = 10.0
# $SYS topics are republished at most this often; see ``Mosquitto.dropped_messages``.
_SYS_INTERVAL_S = 1
# Mosquitto 2.0 republishes when ``now - sys_interval > last_update`` in whole seconds, so with
# an interval of 1 s a new value appears only every 2 s; wait that long, plus its loop's latency.
_SYS_REFRESH_S = 2 * _SYS_INTERVAL_S + 0.5
_DROPPED_TOPIC = "$SYS/broker/publish/messages/dropped"
_DYNSEC_PLUGIN = "mosquitto_dynamic_security.so"
MOSQUITTO_CONF = Path(__file__).resolve().parents[2] / "deploy" / "mosquitto" / "fieldhub.conf"
"""The broker settings fieldhub needs, shipped for operators (deploy/mosquitto/)."""
MOSQUITTO_TLS_CONF = MOSQUITTO_CONF.with_name("tls.conf")
"""The TLS listener shipped for operators; tests change only its port and file paths."""
_DYNSEC_ADMIN = "admin"
_PBKDF2_ITERATIONS = 101  # what `mosquitto_ctrl dynsec init` writes
_POSTGRES_USER = "fieldhub"
_POSTGRES_DB = "fieldhub"
# Unquoted PostgreSQL identifier, at most 63 bytes: safe to put in a URL and on a command line.
_DB_NAME = re.compile(r"[a-z_][a-z0-9_]{0,62}")


class ServerError(RuntimeError):
    """Root of this module's errors: a test server could not be provided."""


class ServerUnavailable(ServerError):
    """A program the server needs is not installed; the message names the Debian package."""


class ServerStartError(ServerError):
    """The server was found but failed to start or to answer; the message ends with its log."""


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that was free a moment ago.

    The kernel picks the port (bind to port 0), so parallel test runs do not collide on a fixed
    number. Another process may still take it before the server binds it; that race is rare
    enough on a test machine to accept.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


def _path() -> str:
    return os.environ.get("PATH", os.defpath)


def _require(program: str, package: str, search: str | None = None) -> str:
    """Return the path of ``program`` or raise ``ServerUnavailable`` naming its package."""
    path = shutil.which(program, path=search)
    if path is None:
        where = search or "PATH"
        raise ServerUnavailable(
            f"Program {program!r} not found in {where}; install the Debian package {package!r} "
            f"(apt-get install {package})."
        )
    return path


def _tail(path: Path, lines: int = 20) -> str:
    """Return the last lines of a log file, for error messages that explain themselves."""
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return f"(no log at {path})"
    kept = text.strip().splitlines()[-lines:]
    return "\n".join(kept) if kept else f"(empty log at {path})"


def _accepts_connections(port: int) -> bool:
    try:
        with socket.create_connection((HOST, port), timeout=0.2):
            return True
    except OSError:
        return False


def _dynsec_plugin() -> Path:
    """The dynamic-security plugin of the installed Mosquitto (Debian: in the package)."""
    candidates = [
        *Path("/usr/lib").glob(f"*/{_DYNSEC_PLUGIN}"),
        Path("/usr/lib") / _DYNSEC_PLUGIN,
        Path("/usr/local/lib") / _DYNSEC_PLUGIN,
    ]
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    raise ServerUnavailable(
        f"Mosquitto's {_DYNSEC_PLUGIN} not found under /usr/lib; install the Debian package "
        "'mosquitto' 2.0 or newer (apt-get install mosquitto)."
    )


def _dynsec_password(password: str) -> dict[str, object]:
    """A password as the plugin stores it: PBKDF2-SHA512 over a random salt, base64."""
    salt = secrets.token_bytes(12)
    digest = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, _PBKDF2_ITERATIONS)
    return {
        "password": base64.b64encode(digest).decode(),
        "salt": base64.b64encode(salt).decode(),
        "iterations": _PBKDF2_ITERATIONS,
    }


def _dynsec_config(admin_password: str) -> dict[str, object]:
    """The plugin's first configuration: one admin, and everything else denied by default.

    The admin may do what ``mosquitto_ctrl dynsec init`` allows (manage dynamic security,
    read everything) and, for tests and benchmarks that talk MQTT on their own topics, also
    publish anywhere. Nobody else exists until the hub creates its clients; anonymous clients
    are refused by ``allow_anonymous false`` and would get no role anyway.
    """
    acls = [
        ("publishClientSend", "$CONTROL/dynamic-security/#"),
        ("publishClientReceive", "$CONTROL/dynamic-security/#"),
        ("subscribePattern", "$CONTROL/dynamic-security/#"),
        ("publishClientReceive", "$SYS/#"),
        ("subscribePattern", "$SYS/#"),
        ("publishClientSend", "#"),
        ("publishClientReceive", "#"),
        ("subscribePattern", "#"),
        ("unsubscribePattern", "#"),
    ]
    return {
        "clients": [
            {
                "username": _DYNSEC_ADMIN,
                "textName": "admin of the test broker",
                "roles": [{"rolename": "admin"}],
                **_dynsec_password(admin_password),
            }
        ],
        "roles": [
            {
                "rolename": "admin",
                "acls": [{"acltype": t, "topic": topic, "allow": True} for t, topic in acls],
            }
        ],
        "groups": [],
        "defaultACLAccess": {
            "publishClientSend": False,
            "publishClientReceive": False,
            "subscribe": False,
            "unsubscribe": True,
        },
    }


class _LocalServer:
    """A server program on 127.0.0.1 run as a child process: start it, wait until its port
    accepts connections, stop it. Subclasses say how to start it (:meth:`_launch`'s argv)
    and what to show when it does not come up (:meth:`_failure_detail`)."""

    _name = "server"

    def __init__(self, workdir: Path, port: int | None) -> None:
        self.workdir = Path(workdir)
        self._port = port if port is not None else free_port()
        self._process: subprocess.Popen[bytes] | None = None
        self._output: IO[bytes] | None = None

    @property
    def host(self) -> str:
        """Address it listens on: loopback only, never reachable from the network."""
        return HOST

    @property
    def port(self) -> int:
        """Its TCP port (kept across restarts, so clients reconnect to the same address)."""
        return self._port

    @property
    def pid(self) -> int | None:
        """Its process id while it runs (benchmarks read its CPU time)."""
        return self._process.pid if self._process is not None and self.running else None

    @property
    def running(self) -> bool:
        """Whether the process is alive."""
        return self._process is not None and self._process.poll() is None

    def _failure_detail(self) -> str:
        """What to add to a start failure: the tail of its logs."""
        return ""

    def _launch(self, argv: list[str], output: Path) -> None:
        """Start ``argv`` (stdout and stderr appended to ``output``) and wait for its port.

        Raises:
            ServerStartError: the port was taken, or the program exited or did not listen
                within 10 s; the message ends with :meth:`_failure_detail`.
        """
        if _accepts_connections(self._port):
            # Otherwise the wait below would take the other program's listener for ours.
            raise ServerStartError(f"Port {self._port} on {HOST} is already in use.")
        self._output = output.open("ab")
        self._process = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=self._output, stderr=self._output
        )
        deadline = time.monotonic() + _START_TIMEOUT_S
        while True:
            listening = _accepts_connections(self._port)
            returncode = self._process.poll()
            if listening and returncode is None:
                return
            if returncode is not None or time.monotonic() > deadline:
                self.stop()
                reason = (
                    f"exited with status {returncode}"
                    if returncode is not None
                    else f"did not accept connections within {_START_TIMEOUT_S:.0f} s"
                )
                raise ServerStartError(
                    f"{self._name} on port {self._port} {reason}: {shlex.join(argv)}\n"
                    f"{self._failure_detail()}"
                )
            time.sleep(0.05)

    def stop(self) -> None:
        """Terminate the process and wait for it; does nothing if it is not running."""
        process, self._process = self._process, None
        if process is not None:
            process.terminate()
            try:
                process.wait(timeout=_STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        if self._output is not None:
            self._output.close()
            self._output = None

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    def start(self) -> None:
        """Start the server (subclasses)."""
        raise NotImplementedError


class Mosquitto(_LocalServer):
    """A Mosquitto broker on 127.0.0.1, configured for tests, as a child process.

    It refuses anonymous clients and runs the dynamic-security plugin with an admin of its
    own, whose credentials are in :attr:`url` (for the hub) and in :attr:`admin_username` /
    :attr:`admin_password` (for test clients: the admin may use every topic). The plugin's
    state (``dynamic-security.json``) is kept across :meth:`restart`, as Mosquitto's is.

    Args:
        workdir: Directory for ``mosquitto.conf`` and ``mosquitto.log``; created if missing.
        port: TCP port to listen on; a free one is picked when ``None``. It is kept across
            ``restart()`` so clients can reconnect to the same URL.
        extra_config: Lines appended to the generated config. Later lines win in Mosquitto,
            so this can also override the defaults below (e.g. ``max_queued_messages 100``).
        tls: certificate and key files: also listen for TLS on :attr:`tls_port`, configured
            by ``deploy/mosquitto/tls.conf`` (:func:`tls_listener_config`).
    """

    _name = "Mosquitto"

    def __init__(
        self,
        workdir: Path,
        port: int | None = None,
        extra_config: str = "",
        tls: tuple[Path, Path] | None = None,
    ) -> None:
        self._binary = _require("mosquitto", "mosquitto", search=f"/usr/sbin:/sbin:{_path()}")
        super().__init__(workdir, port)
        self._extra_config = extra_config
        self._tls = tls
        self.tls_port = free_port() if tls is not None else None
        self.config_path = self.workdir / "mosquitto.conf"
        self.log_path = self.workdir / "mosquitto.log"
        self.dynsec_path = self.workdir / "dynamic-security.json"
        self._dynsec_plugin = _dynsec_plugin()
        self._admin_password = secrets.token_urlsafe(16)
        # stderr holds what Mosquitto says before its log file is open (bad config lines).
        self._stderr_path = self.workdir / "mosquitto.stderr"

    @property
    def url(self) -> str:
        """Broker address with the admin, as the hub's settings take it:
        ``mqtt://admin:PASSWORD@127.0.0.1:PORT``."""
        return f"mqtt://{_DYNSEC_ADMIN}:{self._admin_password}@{HOST}:{self._port}"

    @property
    def tls_url(self) -> str:
        """Like :attr:`url`, on the TLS listener: ``mqtts://admin:PASSWORD@127.0.0.1:PORT``.

        Raises:
            ServerError: the broker was made without ``tls``.
        """
        if self.tls_port is None:
            raise ServerError("this Mosquitto has no TLS listener (give tls=(cert, key))")
        return f"mqtts://{_DYNSEC_ADMIN}:{self._admin_password}@{HOST}:{self.tls_port}"

    @property
    def admin_username(self) -> str:
        """User name of the dynamic-security admin."""
        return _DYNSEC_ADMIN

    @property
    def admin_password(self) -> str:
        """Its password, made for this broker (kept across restarts)."""
        return self._admin_password

    def _config(self) -> str:
        lines = [
            "# Generated by tests.support.servers for tests; rewritten on every start.",
            # What operators install too (anonymous refused, queue limits): one copy.
            MOSQUITTO_CONF.read_text(encoding="utf-8"),
            f"listener {self._port} {HOST}",
        ]
        if self._tls is not None and self.tls_port is not None:
            lines.append(tls_listener_config(self.tls_port, *self._tls))
        lines += [
            f"plugin {self._dynsec_plugin}",
            f"plugin_opt_config_file {self.dynsec_path}",
            # Each run starts empty; nothing of a previous test leaks into the next.
            "persistence false",
            # Refresh $SYS counters as often as Mosquitto allows (default 10 s): dropped_messages().
            f"sys_interval {_SYS_INTERVAL_S}",
            f"log_dest file {self.log_path}",
        ]
        if os.geteuid() == 0:
            # Run as root, Mosquitto otherwise switches to user 'mosquitto' after reading the
            # config, cannot open a log file in a root-only directory (pytest's tmp_path is mode
            # 0700) and then runs on without any log. Staying root keeps the log where we look.
            lines.append("user root")
        if self._extra_config:
            lines.append(self._extra_config)
        return "\n".join(lines) + "\n"

    def start(self) -> None:
        """Write the config, start the broker and wait until its port accepts connections.

        Raises:
            ServerStartError: The broker exited or did not listen within 10 s; the message ends
                with the tail of its log.
        """
        if self.running:
            return
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.config_path.write_text(self._config(), encoding="utf-8")
        if not self.dynsec_path.exists():  # the plugin rewrites it on every change
            config = _dynsec_config(self._admin_password)
            self.dynsec_path.write_text(json.dumps(config, indent=1), encoding="utf-8")
            self.dynsec_path.chmod(0o600)
        self._launch([self._binary, "-c", str(self.config_path)], self._stderr_path)

    def _failure_detail(self) -> str:
        return (
            f"--- {self.log_path} ---\n{_tail(self.log_path)}\n"
            f"--- {self._stderr_path} ---\n{_tail(self._stderr_path)}"
        )

    def restart(self) -> None:
        """Stop and start again on the same port: a broker outage, for reconnect tests.

        All sessions and queued messages are lost, as with a real broker restart without
        persistence.
        """
        self.stop()
        self.start()

    def dropped_messages(self) -> int:
        """Return the broker's count of messages it dropped since it started.

        Mosquitto republishes its ``$SYS`` counters only every other second here (see
        ``_SYS_REFRESH_S``), so this first waits 2.5 s: the value then includes everything that
        happened before the call. Reads the retained ``$SYS/broker/publish/messages/dropped`` with
        ``mosquitto_sub``, an independent client, and returns 0 if it does not appear in 5 s.

        Raises:
            ServerUnavailable: ``mosquitto_sub`` is missing (Debian package mosquitto-clients).
            ServerError: The topic carried something other than an integer.
        """
        mosquitto_sub = _require("mosquitto_sub", "mosquitto-clients")
        time.sleep(_SYS_REFRESH_S)
        result = subprocess.run(
            [
                mosquitto_sub,
                "-h",
                HOST,
                "-p",
                str(self._port),
                "-u",
                _DYNSEC_ADMIN,
                "-P",
                self._admin_password,
                "-t",
                _DROPPED_TOPIC,
                "-C",
                "1",
                "-W",
                "5",
            ],
            capture_output=True,
            text=True,
            timeout=15,
            check=False,
        )
        value = result.stdout.strip()
        if not value:
            return 0
        try:
            return int(value)
        except ValueError:
            raise ServerError(f"{_DROPPED_TOPIC} is {value!r}, expected an integer.") from None


def tls_listener_config(port: int, cert: Path, key: Path) -> str:
    """``deploy/mosquitto/tls.conf`` with its listener on ``127.0.0.1:port`` and these files:
    the operators' TLS settings, tested as shipped."""
    values = {"listener": f"{port} {HOST}", "certfile": str(cert), "keyfile": str(key)}
    lines = []
    for line in MOSQUITTO_TLS_CONF.read_text(encoding="utf-8").splitlines():
        option = line.split(" ", 1)[0]
        lines.append(f"{option} {values.pop(option)}" if option in values else line)
    if values:
        raise ServerError(f"{MOSQUITTO_TLS_CONF} has no line for {', '.join(values)}")
    return "\n".join(lines)


def _postgres_bindir() -> Path:
    """Return the newest ``/usr/lib/postgresql/<version>/bin`` that has the server programs."""

    def version(bindir: Path) -> tuple[int, ...]:
        digits = re.findall(r"\d+", bindir.parent.name)
        return tuple(int(d) for d in digits)

    candidates = [
        bindir
        for bindir in Path("/usr/lib/postgresql").glob("*/bin")
        if all((bindir / program).is_file() for program in ("initdb", "pg_ctl", "createdb"))
    ]
    if not candidates:
        raise ServerUnavailable(
            "No PostgreSQL server found under /usr/lib/postgresql/*/bin; "
            "install the Debian package 'postgresql' (apt-get install postgresql)."
        )
    return max(candidates, key=version)


class Postgres:
    """A throw-away PostgreSQL cluster on 127.0.0.1, tuned for speed rather than durability.

    The cluster is created fresh by ``start()`` and deleted by ``stop()``; its log is copied to
    ``workdir/postgres.log`` on stop so it can be read after a failed test.

    PostgreSQL refuses to run as root. When we are root (as in CI), every server program runs
    as the ``postgres`` user through ``runuser``, and the cluster lives in its own directory
    under the system temp dir owned by ``postgres``: pytest's ``tmp_path`` sits in a 0700
    directory that ``postgres`` cannot enter. The short temp path also keeps the Unix socket
    path under its 107-byte limit.

    Args:
        workdir: Directory that receives the server log; created if missing.
        port: TCP port to listen on; a free one is picked when ``None``.
    """

    def __init__(self, workdir: Path, port: int | None = None) -> None:
        self._bindir = _postgres_bindir()
        self._as_postgres: list[str] = []
        if os.geteuid() == 0:
            runuser = _require("runuser", "util-linux", search=f"/usr/sbin:/sbin:{_path()}")
            try:
                pwd.getpwnam("postgres")
            except KeyError:
                raise ServerUnavailable(
                    "Running as root, but there is no 'postgres' user to run PostgreSQL as; "
                    "install the Debian package 'postgresql', which creates it."
                ) from None
            self._as_postgres = [runuser, "-u", "postgres", "--"]
        self.workdir = Path(workdir)
        self._port = port if port is not None else free_port()
        self.log_path = self.workdir / "postgres.log"
        self._rundir: Path | None = None

    @property
    def port(self) -> int:
        """TCP port the server listens on."""
        return self._port

    @property
    def url(self) -> str:
        """SQLAlchemy URL of the ``fieldhub`` database, created at start."""
        return self.url_for(_POSTGRES_DB)

    def url_for(self, database: str) -> str:
        """Return the SQLAlchemy (asyncpg) URL of ``database`` on this server."""
        return f"postgresql+asyncpg://{_POSTGRES_USER}@{HOST}:{self._port}/{database}"

    @property
    def running(self) -> bool:
        """Whether ``start()`` succeeded and ``stop()`` has not been called since."""
        return self._rundir is not None

    def _run(self, argv: list[str], what: str, timeout: float = 60) -> None:
        """Run a PostgreSQL program; on failure raise with its output and the server log."""
        try:
            result = subprocess.run(
                argv, capture_output=True, text=True, timeout=timeout, check=False
            )
        except subprocess.TimeoutExpired as exc:
            raise ServerStartError(
                f"PostgreSQL: {what} did not finish in {timeout:.0f} s: {shlex.join(argv)}\n"
                f"--- server log ---\n{self._log_tail()}"
            ) from exc
        if result.returncode != 0:
            raise ServerStartError(
                f"PostgreSQL: {what} failed with status {result.returncode}: "
                f"{shlex.join(argv)}\n{result.stdout}{result.stderr}"
                f"--- server log ---\n{self._log_tail()}"
            )

    def _server_argv(self, program: str, *args: str) -> list[str]:
        """Command line for a program that must run as the cluster's owner, never as root."""
        return [*self._as_postgres, str(self._bindir / program), *args]

    def _log_tail(self) -> str:
        return _tail(self._rundir / "postgres.log") if self._rundir else _tail(self.log_path)

    def start(self) -> None:
        """Create a fresh cluster, start it and create the ``fieldhub`` database.

        Raises:
            ServerStartError: ``initdb``, ``pg_ctl start`` or ``createdb`` failed; the message
                has the program's output and the tail of the server log.
        """
        if self.running:
            return
        self.workdir.mkdir(parents=True, exist_ok=True)
        rundir = Path(tempfile.mkdtemp(prefix="fieldhub-pg-"))
        self._rundir = rundir
        try:
            if self._as_postgres:
                shutil.chown(rundir, user="postgres", group="postgres")
            data = rundir / "data"
            # Trust auth over loopback only: no passwords in test URLs. --no-sync and the
            # -c options below trade crash safety for speed; the cluster is deleted anyway.
            # --no-locale makes sorting and case rules the same on every machine.
            self._run(
                self._server_argv(
                    "initdb",
                    f"--pgdata={data}",
                    "--auth=trust",
                    f"--username={_POSTGRES_USER}",
                    "--encoding=UTF8",
                    "--no-locale",
                    "--no-sync",
                ),
                "initdb",
            )
            options = (
                f"-p {self._port} -k {shlex.quote(str(rundir))} -c listen_addresses={HOST}"
                " -c fsync=off -c synchronous_commit=off -c full_page_writes=off"
            )
            log = rundir / "postgres.log"
            self._run(
                self._server_argv(
                    "pg_ctl",
                    f"--pgdata={data}",
                    f"--log={log}",
                    "-o",
                    options,
                    "-w",
                    "-t30",
                    "start",
                ),
                "pg_ctl start",
            )
            self._createdb(_POSTGRES_DB)
        except BaseException:
            # The start error says more than a failure to clean up after it.
            with contextlib.suppress(ServerError):
                self.stop()
            raise

    def _createdb(self, name: str) -> None:
        # A client program: connects over TCP with trust auth, so it needs no runuser.
        self._run(
            [
                str(self._bindir / "createdb"),
                "-h",
                HOST,
                "-p",
                str(self._port),
                "-U",
                _POSTGRES_USER,
                name,
            ],
            f"createdb {name}",
            timeout=30,
        )

    def create_database(self, name: str) -> str:
        """Create an empty database and return its SQLAlchemy URL.

        One database per test keeps tests independent without restarting the server.

        Args:
            name: Lower-case identifier (letters, digits, ``_``; at most 63 characters).

        Raises:
            ValueError: ``name`` is not such an identifier.
            ServerError: The server is not running.
            ServerStartError: ``createdb`` failed, e.g. because the database exists.
        """
        if not _DB_NAME.fullmatch(name):
            raise ValueError(
                f"Database name {name!r} is not a lower-case identifier of at most 63 characters."
            )
        if not self.running:
            raise ServerError("PostgreSQL is not running; call start() first.")
        self._createdb(name)
        return self.url_for(name)

    def stop(self) -> None:
        """Stop the server (fast shutdown), keep its log in ``workdir`` and delete the cluster.

        Does nothing if it is not running.
        """
        rundir, self._rundir = self._rundir, None
        if rundir is None:
            return
        data = rundir / "data"
        log = rundir / "postgres.log"
        if (data / "postmaster.pid").exists():
            result = subprocess.run(
                self._server_argv("pg_ctl", f"--pgdata={data}", "-m", "fast", "-w", "-t30", "stop"),
                capture_output=True,
                text=True,
                timeout=60,
                check=False,
            )
            if result.returncode != 0:
                # Keep the cluster: deleting it under a live server would orphan the process.
                self._rundir = rundir
                raise ServerError(
                    f"PostgreSQL: pg_ctl stop failed with status {result.returncode} "
                    f"(cluster kept in {rundir}):\n{result.stdout}{result.stderr}"
                    f"--- server log ---\n{_tail(log)}"
                )
        if log.exists():
            shutil.copyfile(log, self.log_path)
        shutil.rmtree(rundir, ignore_errors=True)

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()


class Owserver(_LocalServer):
    """owserver (Debian package ``owserver``) on 127.0.0.1 with its fake 1-Wire bus master.

    The fake bus holds DS18B20 thermometers with the ids given (owfs style,
    ``28.AABBCCDDEEFF``) that read a random temperature within ``temperature_range`` on every
    conversion: the real server and protocol, made-up sensors. :meth:`restart` can change the
    sensors and the range, which is how a test unplugs a sensor or heats the cabinet.

    Args:
        workdir: Directory for its (empty) config file and its log; created if missing.
        sensors: Ids of the fake thermometers.
        temperature_range: Lowest and highest fake reading, °C.
        port: TCP port; a free one is picked when ``None``, and kept across restarts.
    """

    def __init__(
        self,
        workdir: Path,
        sensors: Sequence[str] = ("28.000000000001",),
        temperature_range: tuple[float, float] = (20.0, 25.0),
        port: int | None = None,
    ) -> None:
        self._binary = _require("owserver", "owserver", search=f"/usr/bin:/usr/sbin:{_path()}")
        super().__init__(workdir, port)
        self.sensors = tuple(sensors)
        self.temperature_range = temperature_range
        self.log_path = self.workdir / "owserver.log"

    @property
    def address(self) -> tuple[str, int]:
        """``(host, port)``, as the agent's drivers take it."""
        return HOST, self._port

    def start(self) -> None:
        """Start the server and wait until it accepts connections.

        Raises:
            ServerStartError: It exited or did not listen within 10 s; the message ends with
                its log.
        """
        if self.running:
            return
        self.workdir.mkdir(parents=True, exist_ok=True)
        # An empty config of its own: the Debian /etc/owfs.conf adds fake devices of its own.
        config = self.workdir / "owfs.conf"
        config.write_text("# Generated by tests.support.servers; all on the command line.\n")
        low, high = self.temperature_range
        argv = [
            self._binary,
            "-c",
            str(config),
            f"--fake={','.join(self.sensors)}",
            f"--temperature_low={low}",
            f"--temperature_high={high}",
            "-p",
            f"{HOST}:{self._port}",
            "--foreground",
            "--error_print=2",  # to stderr, i.e. our log file
            "--error_level=1",
        ]
        self._launch(argv, self.log_path)

    def _failure_detail(self) -> str:
        return f"--- {self.log_path} ---\n{_tail(self.log_path)}"

    def restart(
        self,
        sensors: Sequence[str] | None = None,
        temperature_range: tuple[float, float] | None = None,
    ) -> None:
        """Stop, then start on the same port, optionally with other sensors or another range."""
        self.stop()
        if sensors is not None:
            self.sensors = tuple(sensors)
        if temperature_range is not None:
            self.temperature_range = temperature_range
        self.start()
