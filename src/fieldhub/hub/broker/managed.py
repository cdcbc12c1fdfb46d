"""The hub's own Mosquitto: a child process it configures, starts, watches and stops.

Where Mosquitto is installed, a hub without ``--broker`` runs it rather than the embedded amqtt
broker: about 25 times the messages per second (docs/benchmarks.md), with no configuration
(``mosquitto_files``). The hub is its only user; devices reach it on the hub's MQTT address.

- Started in a session of its own, so that Ctrl-C in a terminal (SIGINT to the whole
  foreground group) reaches the hub alone: the broker must outlive the hub's final commit,
  whose acknowledgements it carries. On Linux it also gets SIGTERM if the hub dies without
  stopping it (``PR_SET_PDEATHSIG``), so no orphan keeps the port.
- Watched: when it exits on its own, the hub says so and starts it again after a pause that
  doubles up to 30 s (and starts over after a minute of health). The hub's connections and the
  devices reconnect by themselves; the plugin's state and retained messages are on disk.
- Stopped with SIGTERM, on which Mosquitto saves its retained messages, after the hub's last
  flush (it is entered on the hub's exit stack before the hub's MQTT connection).

What it says on stderr (errors and warnings only) goes to the hub's log, escaped like every line.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import os
import shutil
import signal
import socket
import sys
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from types import TracebackType
from typing import Self

from fieldhub.hub.broker.mosquitto_files import AdminFile, Listener, prepare, shipped_config

__all__ = ["Installation", "ManagedMosquitto", "MosquittoFailed", "find_mosquitto"]

log = logging.getLogger(__name__)

_PLUGIN = "mosquitto_dynamic_security.so"
_SEARCH = ("/usr/sbin", "/sbin", "/usr/local/sbin")  # Debian installs the broker in sbin
_READY_TIMEOUT_S = 10.0
_STOP_TIMEOUT_S = 10.0
_RESTART_MIN_S = 0.5
_RESTART_MAX_S = 30.0
_HEALTHY_AFTER_S = 60.0
_PR_SET_PDEATHSIG = 1


class MosquittoFailed(RuntimeError):
    """Mosquitto is installed but did not start; the text ends with what it said."""


@dataclass(frozen=True, slots=True)
class Installation:
    """A usable Mosquitto: the broker, its dynamic-security plugin, fieldhub's settings."""

    binary: Path
    plugin: Path
    base_config: str


def find_mosquitto(binary: str) -> Installation | str:
    """The Mosquitto to run, or why there is none (for the hub's log line).

    Args:
        binary: a path, or a name looked up in ``$PATH`` and the sbin folders.
    """
    search = os.pathsep.join([os.environ.get("PATH", ""), *_SEARCH])
    found = shutil.which(binary, path=search)
    if found is None:
        return f"no Mosquitto binary {binary!r} found (apt-get install mosquitto)"
    where = Path(found).resolve()
    candidates = [
        *Path("/usr/lib").glob(f"*/{_PLUGIN}"),
        Path("/usr/lib") / _PLUGIN,
        where.parent.parent / "lib" / _PLUGIN,
        Path("/usr/local/lib") / _PLUGIN,
    ]
    plugin = next((path for path in candidates if path.is_file()), None)
    if plugin is None:
        return f"Mosquitto at {where} has no {_PLUGIN} (Mosquitto 2.0 or newer needed)"
    base = shipped_config()
    if base is None:
        return "this installation lacks deploy/mosquitto/fieldhub.conf"
    return Installation(where, plugin, base)


def _free_port(host: str) -> int:
    """A port the kernel says is free now (Mosquitto cannot listen on port 0 and tell)."""
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def _die_with_parent() -> None:
    """In the child, before exec: SIGTERM when the hub's process ends, however it ends."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


class ManagedMosquitto:
    """A Mosquitto child of the hub (see the module doc). Use as an async context manager.

    Args:
        installation: what :func:`find_mosquitto` found.
        folder: the broker's folder (configuration, plugin state, retained messages).
        host: address to listen on.
        port: port to listen on; 0 picks a free one.
        listeners: TLS and WebSocket listeners besides (port 0 picks a free one too).

    Raises:
        MosquittoFailed: on entry, Mosquitto exited or did not listen within 10 s.
    """

    def __init__(
        self,
        installation: Installation,
        folder: Path,
        host: str,
        port: int,
        listeners: Sequence[Listener] = (),
    ) -> None:
        self._installation = installation
        self._folder = folder
        self.host = host
        self.port = port or _free_port(host)
        self.listeners = [
            replace(listener, port=listener.port or _free_port(listener.host))
            for listener in listeners
        ]
        """The extra listeners, with the ports they listen on."""
        self.restarts = 0
        self._admin: AdminFile | None = None
        self._process: asyncio.subprocess.Process | None = None
        self._said: deque[str] = deque(maxlen=8)  # its last lines, for a failure's message
        self._relay: asyncio.Task[None] | None = None
        self._watch: asyncio.Task[None] | None = None

    @property
    def url(self) -> str:
        """``mqtt://host:port`` for devices, logs and health (no credentials)."""
        return f"mqtt://{self.host}:{self.port}"

    @property
    def admin_url(self) -> str:
        """The dynamic-security admin's URL, as ``--broker`` takes it (holds its password)."""
        if self._admin is None:
            raise RuntimeError("the managed Mosquitto is not started")
        return self._admin.url

    @property
    def pid(self) -> int | None:
        """The running broker's process id (None when stopped)."""
        process = self._process
        return None if process is None or process.returncode is not None else process.pid

    async def __aenter__(self) -> Self:
        installation = self._installation
        password = await asyncio.to_thread(
            prepare,
            self._folder,
            base=installation.base_config,
            host=self.host,
            port=self.port,
            plugin=installation.plugin,
            listeners=self.listeners,
        )
        self._admin = AdminFile(self.host, self.port, password, 0)
        try:
            await self._launch()
        except BaseException:
            await self._stop()
            raise
        self._watch = asyncio.create_task(self._supervise(), name="managed-mosquitto")
        if self.listeners:
            log.info(
                "the managed Mosquitto also listens on %s",
                ", ".join(listener.url for listener in self.listeners),
            )
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self._stop()

    async def _launch(self) -> None:
        """Start the process and wait until its port takes connections."""
        linux = sys.platform == "linux"
        self._said.clear()
        process = await asyncio.create_subprocess_exec(
            str(self._installation.binary),
            "-c",
            str(self._folder / "mosquitto.conf"),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
            start_new_session=True,
            # Runs between fork and exec: only a system call, safe beside the hub's threads.
            preexec_fn=_die_with_parent if linux else None,
        )
        self._process = process
        assert process.stderr is not None
        self._relay = asyncio.create_task(self._relay_output(process.stderr), name="mosquitto-log")
        await self._until_listening(process)
        assert self._admin is not None
        self._admin = AdminFile(self.host, self.port, self._admin.password, process.pid)
        await asyncio.to_thread(self._admin.save, self._folder)

    async def _until_listening(self, process: asyncio.subprocess.Process) -> None:
        where = "127.0.0.1" if self.host in ("0.0.0.0", "") else self.host
        where = "::1" if where == "::" else where
        deadline = time.monotonic() + _READY_TIMEOUT_S
        while True:
            if process.returncode is not None:
                await self._relayed()
                raise MosquittoFailed(
                    f"Mosquitto ({self._installation.binary}) exited at start with status "
                    f"{process.returncode}: {self._last_words()}"
                )
            with contextlib.suppress(OSError, TimeoutError):
                async with asyncio.timeout(0.5):
                    _, writer = await asyncio.open_connection(where, self.port)
                writer.close()
                return
            if time.monotonic() > deadline:
                raise MosquittoFailed(
                    f"Mosquitto did not listen on {self.host}:{self.port} within "
                    f"{_READY_TIMEOUT_S:.0f} s: {self._last_words()}"
                )
            await asyncio.sleep(0.05)

    async def _relay_output(self, stream: asyncio.StreamReader) -> None:
        while line := await stream.readline():
            text = line.decode(errors="replace").rstrip()
            self._said.append(text)
            log.warning("mosquitto: %s", text)

    async def _relayed(self) -> None:
        """Wait (briefly) until what the ended process said is read."""
        if self._relay is not None:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(1.0):
                    await asyncio.shield(self._relay)

    def _last_words(self) -> str:
        return " / ".join(self._said) or "it said nothing"

    async def _supervise(self) -> None:
        """Start Mosquitto again whenever it exits; runs until cancelled."""
        delay = _RESTART_MIN_S
        while True:
            process = self._process
            assert process is not None
            started = time.monotonic()
            status = await process.wait()
            await self._relayed()
            if time.monotonic() - started > _HEALTHY_AFTER_S:
                delay = _RESTART_MIN_S
            log.warning(
                "the managed Mosquitto exited (status %s: %s); starting it again in %.1f s, "
                "devices and the hub reconnect by themselves",
                status,
                self._last_words(),
                delay,
            )
            await asyncio.sleep(delay)
            delay = min(delay * 2, _RESTART_MAX_S)
            try:
                await self._launch()
            except (MosquittoFailed, OSError) as exc:
                log.error("the managed Mosquitto did not start again: %s", exc)
                continue
            self.restarts += 1
            log.warning("the managed Mosquitto runs again on %s:%d", self.host, self.port)

    async def _stop(self) -> None:
        """Stop watching, then stop the broker (SIGTERM: it saves its state), or kill it."""
        if self._watch is not None:
            self._watch.cancel()
            await asyncio.gather(self._watch, return_exceptions=True)
            self._watch = None
        process = self._process
        if process is not None and process.returncode is None:
            process.terminate()
            try:
                async with asyncio.timeout(_STOP_TIMEOUT_S):
                    await process.wait()
            except TimeoutError:
                log.error(
                    "the managed Mosquitto ignored SIGTERM for %.0f s: killed", _STOP_TIMEOUT_S
                )
                process.kill()
                await process.wait()
        if self._relay is not None:
            await self._relayed()
            self._relay.cancel()
            await asyncio.gather(self._relay, return_exceptions=True)
        await asyncio.to_thread(AdminFile.forget, self._folder)
