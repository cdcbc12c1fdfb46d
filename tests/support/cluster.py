"""Several ``fieldhub hub`` processes on one Mosquitto and one PostgreSQL, and devices that
resend what is not acknowledged: for the cluster test and ``benchmarks/scale.py``.

``HubProcess`` is the real command, started as a user starts it and killed with SIGKILL as a
crash kills it. ``Reporter`` is a device as the agent's sender behaves toward the hub
(``agent/sender.py``): a window of unacknowledged messages, each carrying ``oldest``, all of
them sent again when no ack came for ``resend_s`` or when an ack says ``resend``; an ack for N
frees everything up to N. Telemetry and events alternate, so both sequenced tables are checked.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from fieldhub.mqtt import MqttClient
from fieldhub.protocol import Ack, Channel, Event, Telemetry, decode, encode, topic_for
from tests.support.servers import free_port

FIELDHUB = [sys.executable, "-m", "fieldhub"]
T0 = 1_750_000_000_000
"""The instant of seq 0: every telemetry seq has its own millisecond (``T0 + seq``)."""


def is_event(seq: int) -> bool:
    """Every fourth seq is an event, the rest telemetry."""
    return seq % 4 == 0


class HubProcess:
    """``fieldhub hub`` in a cluster: ``--broker``, ``--db``, ``--cluster``, its own name."""

    def __init__(self, folder: Path, instance: str, broker: str, db: str, group: str) -> None:
        self.instance = instance
        self.folder = folder / instance
        self.http = f"127.0.0.1:{free_port()}"
        self._args = [
            *FIELDHUB,
            "hub",
            *("--broker", broker, "--db", db, "--cluster", group),
            *("--instance", instance, "--http", self.http, "--data", str(self.folder)),
        ]
        self._process: asyncio.subprocess.Process | None = None
        self.starts = 0
        self.log = self.folder / "hub-0.log"

    @property
    def url(self) -> str:
        return f"http://{self.http}/"

    async def start(self, within_s: float = 60) -> None:
        """Start the hub and wait until it serves (it printed its URL)."""
        self.folder.mkdir(parents=True, exist_ok=True)
        self.log = self.folder / f"hub-{self.starts}.log"
        self.starts += 1
        with self.log.open("wb") as out:
            process = self._process = await asyncio.create_subprocess_exec(
                *self._args,
                stdout=out,
                stderr=asyncio.subprocess.STDOUT,
                env={**os.environ, "COLUMNS": "200"},
            )
        deadline = time.monotonic() + within_s
        while "hub at http://" not in self.output():
            if process.returncode is not None or time.monotonic() > deadline:
                await self.kill()
                raise RuntimeError(f"hub {self.instance} did not start:\n{self.output()}")
            await asyncio.sleep(0.1)

    def output(self) -> str:
        """What the hub printed since its last start."""
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    async def kill(self) -> None:
        """SIGKILL: no last commit, no last ack, no goodbye to the broker."""
        if self._process is not None and self._process.returncode is None:
            self._process.kill()
            await self._process.wait()

    async def stop(self) -> None:
        """Ctrl-C, as a user stops it; SIGKILL after 15 s."""
        if self._process is not None and self._process.returncode is None:
            self._process.send_signal(signal.SIGINT)
            try:
                async with asyncio.timeout(15):
                    await self._process.wait()
            except TimeoutError:
                await self.kill()


async def admin_session(hub: HubProcess) -> httpx.AsyncClient:
    """An API client logged in as the first admin, made with the setup token the first hub of
    a new database logs."""
    (token,) = re.findall(r"fhsetup_[A-Za-z0-9_-]{43}", hub.output())
    client = httpx.AsyncClient(base_url=hub.url, timeout=30)
    body = {"token": token, "name": "root", "password": "cluster admin password"}
    (await client.post("/api/auth/setup", json=body)).raise_for_status()
    login = {"name": "root", "password": "cluster admin password"}
    response = await client.post("/api/auth/login", json=login)
    response.raise_for_status()
    client.headers["X-CSRF-Token"] = response.json()["csrf_token"]
    return client


async def register(api: httpx.AsyncClient, device_ids: list[str]) -> dict[str, tuple[str, str]]:
    """Register devices through the API; each one's MQTT user name and secret."""
    issued = {}
    for device_id in device_ids:
        response = await api.post("/api/devices", json={"id": device_id})
        response.raise_for_status()
        credentials = response.json()["credentials"]
        issued[device_id] = (credentials["username"], credentials["secret"])
    return issued


@dataclass
class Reporter:
    """One device sending ``count`` sequenced messages at ``rate`` per second (module docstring).

    ``stalls`` records, for every ack that moved the watermark after a wait longer than
    ``resend_s``, how long the device had waited: how long a hub's death held its messages.
    """

    device_id: str
    username: str
    secret: str
    port: int
    count: int
    rate: float = 20.0
    window: int = 50
    resend_s: float = 1.0
    acked: int = 0
    sent: int = 0
    resends: int = 0
    stalls: list[float] = field(default_factory=list)
    _progress: asyncio.Event = field(default_factory=asyncio.Event)
    _acked_at: float = 0.0  # when the watermark last moved
    _resent_at: float = 0.0
    _resend_now: bool = False

    def _message(self, seq: int) -> bytes:
        oldest = self.acked + 1
        if is_event(seq):
            return encode(Event(seq=seq, oldest=oldest, ts=T0 + seq, type="door.open"))
        return encode(Telemetry(seq=seq, oldest=oldest, ts=T0 + seq, values={"n": seq}))

    def _on_message(self, _topic: str, payload: bytes) -> None:
        ack = decode(Channel.ACK, payload)
        assert isinstance(ack, Ack)
        if ack.seq > self.acked:
            now = time.monotonic()
            if now - self._acked_at > self.resend_s:
                self.stalls.append(now - self._acked_at)
            self.acked, self._acked_at = ack.seq, now
            self._progress.set()
        self._resend_now = self._resend_now or ack.resend

    def _publish(self, client: MqttClient, seq: int) -> None:
        channel = Channel.EVENT if is_event(seq) else Channel.TELEMETRY
        client.publish(topic_for(self.device_id, channel), self._message(seq), 1)

    async def run(self) -> None:
        """Send everything and return once all of it is acknowledged."""
        client = MqttClient(
            "127.0.0.1",
            self.port,
            client_id=self.device_id,
            username=self.username,
            password=self.secret,
            on_message=self._on_message,
        )
        async with client:
            await client.subscribe([(topic_for(self.device_id, Channel.ACK), 0)])
            started = self._acked_at = time.monotonic()
            while self.acked < self.count:
                due = min(self.count, int((time.monotonic() - started) * self.rate) + 1)
                while self.sent < min(due, self.acked + self.window):
                    self.sent += 1
                    self._publish(client, self.sent)
                now = time.monotonic()
                silent = now - max(self._acked_at, self._resent_at)
                if self._resend_now or (self.sent > self.acked and silent > self.resend_s):
                    self._resend_now, self._resent_at = False, now
                    self.resends += 1
                    for seq in range(self.acked + 1, self.sent + 1):
                        self._publish(client, seq)
                self._progress.clear()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(min(0.1, 1 / self.rate)):
                        await self._progress.wait()
