"""``fieldhub hub --workers N``: N hub processes on one machine, one HTTP port, one broker.

Why processes: one hub process is one event loop on one core, and under the ingest load of the
benchmarks a command's HTTP request queued behind ingest on that loop (issue 18). N workers
are N loops: HTTP requests, live clients and ingest (through the broker's shared subscriptions,
``HubSettings.cluster_group``) spread over them, and the database coordinates the rest
(docs/scaling.md): singleton work under a lease, committed data passed between them.

Each worker listens on a socket of its own bound to the same port with ``SO_REUSEPORT``
(nginx's ``reuseport``): the kernel spreads new connections evenly over the workers. One
socket shared by all (the pre-fork model) does not: the first worker to wake accepts every
connection waiting, and in ``benchmarks/commands.py`` one worker took 31 of its 32 keep-alive
connections. The parent binds the port too, without listening (so it receives no connection),
to refuse a port in use at once and keep it while workers restart. The parent runs no event
loop and opens no database: it forks, watches, restarts a worker that died (after a pause if it
died young, so a worker that cannot start does not spin), and on SIGTERM or Ctrl-C stops them
all and waits for their clean stop.

Workers are named ``<instance>-1`` … ``<instance>-N``: a restarted worker takes up its own
unfinished commands by that name (``CommandService.load``).
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import time
from collections.abc import Callable, Iterable
from typing import Final

from fieldhub.hub.auth.links import load_link_key
from fieldhub.hub.broker.device_ca import DeviceCa
from fieldhub.hub.config import HubSettings

log = logging.getLogger(__name__)

YOUNG_S: Final = 10.0
"""A worker that dies sooner than this after its start is restarted only after a pause."""
RESTART_PAUSE_S: Final = 2.0
STOP_GRACE_S: Final = 30.0
"""How long the workers have to stop cleanly after SIGTERM before they are killed."""
_BACKLOG: Final = 2048
_SIGNALS: Final = {signal.SIGCHLD, signal.SIGTERM, signal.SIGINT}

Serve = Callable[[HubSettings, socket.socket], None]
"""Runs one worker until it is stopped (in the forked child)."""


class WorkersRefused(ValueError):
    """``--workers`` cannot run with these settings; the text says what to change."""


def check(settings: HubSettings, workers: int) -> None:
    """Refuse what several hub processes cannot share.

    Raises:
        WorkersRefused: SQLite (one writer: a second hub would corrupt nothing but would be
            refused), or no external broker (each worker would start its own).
    """
    if settings.db is None or settings.db.startswith("sqlite"):
        raise WorkersRefused(
            f"--workers {workers} needs PostgreSQL, which several hub processes can share: "
            "--db postgresql://USER:PASSWORD@HOST/DATABASE (SQLite takes one hub)"
        )
    if settings.broker is None:
        raise WorkersRefused(
            f"--workers {workers} needs a broker all workers share, with $share/ subscriptions "
            "(Mosquitto, EMQX, HiveMQ): --broker mqtt://ADMIN:PASSWORD@HOST:PORT"
        )


def supervise(settings: HubSettings, workers: int, serve: Serve) -> None:
    """Run ``workers`` hub processes until SIGTERM or Ctrl-C; returns once all have stopped."""
    _make_shared_secrets(settings)
    host, port = settings.http_address
    reserved = _bound(host, port)  # OSError (port in use) before any worker starts
    port = reserved.getsockname()[1]  # the one a port of 0 was given
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, _SIGNALS)
    running: dict[int, tuple[int, float]] = {}  # pid → (worker number, started monotonic)

    def start(number: int) -> None:
        pid = os.fork()
        if pid == 0:  # the worker: its own signals, its own loop
            reserved.close()
            os._exit(_work(settings, number, (host, port), serve, previous))
        running[pid] = (number, time.monotonic())

    for number in range(1, workers + 1):
        start(number)
    log.info("%d hub workers on %s:%d (pids %s)", workers, host, port, sorted(running))
    try:
        while True:
            received = signal.sigwait(_SIGNALS)
            if received != signal.SIGCHLD:
                break
            for number, lived in _reap(running):
                log.warning("hub worker %d stopped after %.0f s: restarting it", number, lived)
                if lived < YOUNG_S:
                    time.sleep(RESTART_PAUSE_S)
                start(number)
    finally:
        _stop_all(running)
        reserved.close()
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


def _bound(host: str, port: int) -> socket.socket:
    """A TCP socket bound to ``host:port`` that others of this user may bind too."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((host, port))
    except BaseException:
        sock.close()
        raise
    return sock


def _make_shared_secrets(settings: HubSettings) -> None:
    """The secrets each hub makes at its first start, made here once: workers starting at the
    same moment would each make their own and the last one's file would win, while each signs
    with the key it made (a link one worker signed refused by another). The link key
    (``DATA/ack-links.key``) and the device CA (``DATA/device-ca``) live in the data folder
    all workers share."""
    load_link_key(settings.data)
    DeviceCa(settings.device_ca_folder).ensure()


def _work(
    settings: HubSettings,
    number: int,
    address: tuple[str, int],
    serve: Serve,
    mask: Iterable[int],
) -> int:
    """Worker ``number``'s life in the forked child; its exit status. Its own process group:
    a Ctrl-C in the terminal reaches the parent only, which stops the workers in order."""
    os.setpgid(0, 0)
    signal.pthread_sigmask(signal.SIG_SETMASK, mask)
    worker = settings.model_copy(
        update={
            "instance": f"{settings.instance}-{number}",
            "cluster_group": settings.cluster_group or settings.instance,
        }
    )
    try:
        listener = _bound(*address)
        listener.listen(_BACKLOG)
        serve(worker, listener)
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else 1
    except Exception as exc:
        code = getattr(exc, "exit_code", None)  # typer.Exit: the error was said already
        if isinstance(code, int):
            return code
        log.exception("hub worker %d failed", number)
        return 1
    return 0


def _reap(running: dict[int, tuple[int, float]]) -> list[tuple[int, float]]:
    """The workers that ended (number, seconds they ran), forgotten."""
    ended = []
    while running:
        pid, _status = os.waitpid(-1, os.WNOHANG)
        if pid == 0:
            break
        number, started = running.pop(pid, (0, 0.0))
        if number:
            ended.append((number, time.monotonic() - started))
    return ended


def _stop_all(running: dict[int, tuple[int, float]]) -> None:
    """SIGTERM to every worker (each commits and acknowledges what it holds), then wait; one
    still running after :data:`STOP_GRACE_S` is killed."""
    for pid in running:
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + STOP_GRACE_S
    while running and time.monotonic() < deadline:
        pid, _status = os.waitpid(-1, os.WNOHANG)
        if pid == 0:
            time.sleep(0.05)
        else:
            running.pop(pid, None)
    for pid in running:
        log.warning("hub worker pid %d did not stop within %.0f s: killed", pid, STOP_GRACE_S)
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
