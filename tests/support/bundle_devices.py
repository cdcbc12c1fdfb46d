"""Devices that speak the bundle contract over a real MQTT connection, for rollout tests.

They stand in for the agent's installer (feat/bundles) where a test needs many devices or a
chosen fault: each takes ``bundle.install`` and ``bundle.rollback`` commands (once per id,
answering repeats from memory, as agents do), downloads the bundle through the hub's API with
the command's token and checks its SHA-256, then reports ``bundle.*`` events and its
``software`` state as the contract says. ``behaviour`` picks the outcome:

- ``confirm``: installs and confirms;
- ``roll_back``: installs, fails its health check and rolls itself back (a broken bundle);
- ``silent``: takes the command and is never heard of again (a power cut mid-install);
- ``hold``: reports ``installing`` and confirms only when the test calls :meth:`release`.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Awaitable, Callable
from typing import Any, Literal
from urllib.parse import urlsplit

import httpx

from fieldhub.clock import now_ms
from fieldhub.hub.app import Hub
from fieldhub.mqtt import MqttClient
from fieldhub.mqtt.address import broker_address
from fieldhub.mqtt.packets import Will
from fieldhub.protocol import (
    Channel,
    Command,
    Event,
    Reply,
    State,
    Status,
    decode,
    encode,
    topic_for,
)

Behaviour = Literal["confirm", "roll_back", "silent", "hold"]
CATALOG = {
    "bundle.install": {
        "url": "str",
        "sha256": "str",
        "size": "int",
        "name": "str",
        "version": "str",
    },
    "bundle.rollback": {"name": "str"},
}
Download = Callable[[str], Awaitable[bytes]]


def api_download(client: httpx.AsyncClient) -> Download:
    """Downloads through ``client`` (the hub's app in-process): the URL's path and query."""

    async def download(url: str) -> bytes:
        parts = urlsplit(url)
        answer = await client.get(f"{parts.path}?{parts.query}")
        answer.raise_for_status()
        return answer.content

    return download


class BundleDevice:
    """One device (see the module's text)."""

    def __init__(
        self,
        hub: Hub,
        device_id: str,
        credentials: tuple[str, str],
        behaviour: Behaviour = "confirm",
        download: Download | None = None,
        bundles: dict[str, str] | None = None,
    ) -> None:
        self.device_id = device_id
        self.behaviour = behaviour
        self.bundles: dict[str, str] = dict(bundles or {})
        self.previous: dict[str, str] = {}
        self.commands: list[Command] = []
        self.downloaded = 0
        self._download = download
        self._replies: dict[str, Reply] = {}
        self._seq = 0
        self._released = asyncio.Event()
        self._tasks: set[asyncio.Task[None]] = set()
        self._credentials = credentials
        self._client = self._client_for(hub)

    def _client_for(self, hub: Hub) -> MqttClient:
        address = broker_address(hub.broker_url)
        return MqttClient(
            address.host,
            address.port,
            client_id=self.device_id,
            username=self._credentials[0],
            password=self._credentials[1],
            on_message=self._on_message,
            will=Will(
                topic_for(self.device_id, Channel.STATUS),
                encode(Status(online=False, reason="connection lost")),
            ),
        )

    async def move_to(self, hub: Hub) -> None:
        """Connect to another hub (one restarted on a new port), keeping what runs on the
        device, an install under way included."""
        await self._client.close()
        self._client = self._client_for(hub)
        await self.start()

    async def start(self) -> None:
        """Connect, listen for commands, say it is online and what it runs and offers."""
        await self._client.connect()
        await self._client.subscribe([(topic_for(self.device_id, Channel.CMD), 1)])
        self._client.publish(
            topic_for(self.device_id, Channel.STATUS),
            encode(Status(online=True, ts=now_ms())),
            qos=1,
            retain=True,
        )
        self._report(actions=CATALOG)

    async def close(self) -> None:
        """Disconnect cleanly."""
        for task in self._tasks:
            task.cancel()
        await self._client.close()

    def release(self) -> None:
        """Let a ``hold`` device confirm."""
        self._released.set()

    def _report(self, **state: Any) -> None:
        software = {"agent_version": "1.0.0", "bundles": dict(self.bundles)}
        self._publish(
            Channel.STATE,
            State(seq=self._next(), ts=now_ms(), state={**state, "software": software}),
        )

    def _event(self, kind: str, **data: Any) -> None:
        self._publish(
            Channel.EVENT, Event(seq=self._next(), ts=now_ms(), type=f"bundle.{kind}", data=data)
        )

    def _next(self) -> int:
        self._seq += 1
        return self._seq

    def _publish(self, channel: Channel, message: Any) -> None:
        self._client.publish(topic_for(self.device_id, channel), encode(message), qos=1)

    def _on_message(self, _topic: str, payload: bytes) -> None:
        command: Command = decode(Channel.CMD, payload)
        task = asyncio.get_running_loop().create_task(self._run(command))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _run(self, command: Command) -> None:
        known = self._replies.get(command.id)
        if known is not None:  # delivered again: answered from memory, never run twice
            self._reply(command, known)
            return
        self.commands.append(command)
        self._replies[command.id] = reply = Reply(
            id=command.id, ok=True, ts=now_ms(), result={"accepted": True}
        )
        self._reply(command, reply)
        args = command.args
        if command.action == "bundle.rollback":
            name = args["name"]
            version = self.previous.pop(name, None)
            if version is None:
                self.bundles.pop(name, None)
            else:
                self.bundles[name] = version
            self._event("rolled_back", name=name, version=version or "", reason="requested")
            self._report()
            return
        await self._install(args)

    async def _install(self, args: dict[str, Any]) -> None:
        name, version = args["name"], args["version"]
        if self.behaviour == "silent":
            return
        self._event("installing", name=name, version=version)
        if self._download is not None:
            data = await self._download(args["url"])
            self.downloaded += 1
            if hashlib.sha256(data).hexdigest() != args["sha256"] or len(data) != args["size"]:
                self._event("refused", name=name, version=version, reason="digest_mismatch")
                return
        if self.behaviour == "roll_back":
            self._event(
                "rolled_back",
                name=name,
                version=version,
                reason="health_failed",
                detail="check failed",
            )
            return
        if self.behaviour == "hold":
            await self._released.wait()
        previous = self.bundles.get(name)
        if previous is not None:
            self.previous[name] = previous
        self.bundles[name] = version
        self._report()
        self._event("confirmed", name=name, version=version, previous=previous or "")

    def _reply(self, command: Command, reply: Reply) -> None:
        self._client.publish(
            topic_for(self.device_id, Channel.REPLY, command.reply), encode(reply), qos=1
        )


async def start_fleet(
    hub: Hub,
    names: list[str],
    behaviour: Callable[[int], Behaviour] = lambda _n: "confirm",
    download: Download | None = None,
    **labels: str,
) -> list[BundleDevice]:
    """Register ``names`` on ``hub`` and start a device for each (the n-th behaves as
    ``behaviour(n)``), each online and reporting its catalog."""
    devices = []
    for n, name in enumerate(names):
        issued = (await hub.devices.create(name, labels=labels)).credentials
        device = BundleDevice(hub, name, (issued.username, issued.secret), behaviour(n), download)
        devices.append(device)
    await asyncio.gather(*(device.start() for device in devices))
    return devices
