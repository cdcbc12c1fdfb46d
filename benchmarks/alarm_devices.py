"""The alarm benchmark's own devices, in their own process: triggers and a site that dies.

Two kinds of device, each with the credentials the hub issued (``--credentials FILE``, a JSON
object ``{device id: [user name, secret]}``, as ``loadgen.py`` takes them):

- **trigger devices** publish, between the load generator's messages, a temperature that
  crosses their rule's raise threshold, then one that clears it, taking turns so that one
  crossing comes every ``--every`` seconds over the whole run. Each raise value is unique
  (100, 101, …) so that the notification it caused can be told apart, and its publish time
  (epoch seconds, the same clock as the webhook sink's) is kept. They have no last will:
  when they stop, nobody is told they went away.
- **storm devices** connect with a last will (offline status, retained) and say they are
  online, then sit idle. They are the site that loses power: the benchmark kills this
  process, every socket closes at once, and the broker publishes their wills.

Protocol on stdin/stdout, one JSON line each: it prints ``{"ready": true}`` once every device
is connected; the line ``stop`` on stdin ends the triggers and prints
``{"triggers": [[device, raise value, publish time], ...]}``; then it waits to be killed.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import sys
import time
from pathlib import Path

from fieldhub.clock import now_ms
from fieldhub.mqtt import MqttClient, Will
from fieldhub.protocol import Channel, Status, Telemetry, encode, topic_for

RAISE_FROM = 100.0
"""The first trigger's value; each next one is one higher, so every crossing is unique."""
CLEAR_VALUE = 40.0
"""Below every trigger rule's clear threshold."""
KEY = "temperature"
"""The key the load generator's samples carry too (``loadgen.VALUES``)."""


class Trigger:
    """One trigger device: its connection and its own seq."""

    def __init__(self, client: MqttClient, device_id: str) -> None:
        self.client = client
        self.topic = topic_for(device_id, Channel.TELEMETRY)
        self.device_id = device_id
        self.seq = 0

    def send(self, value: float) -> float:
        """Publish ``value`` now (QoS 1, as the load); return the epoch time of the publish."""
        self.seq += 1
        payload = encode(Telemetry(seq=self.seq, ts=now_ms(), values={KEY: value}))
        published = time.time()
        self.client.publish(self.topic, payload, qos=1)
        return published


async def _connect(
    host: str, port: int, device_id: str, secret: tuple[str, str], *, will: bool
) -> MqttClient:
    status = topic_for(device_id, Channel.STATUS)
    client = MqttClient(
        host, port, client_id=device_id, on_message=lambda _topic, _payload: None,
        username=secret[0], password=secret[1], keepalive_s=60,
        will=Will(status, encode(Status(online=False, reason="connection lost"))) if will else None,
    )  # fmt: skip
    await client.connect()
    if will:
        client.publish(status, encode(Status(online=True, ts=now_ms())), qos=1, retain=True)
        await client.flushed()
    return client


async def _fire(triggers: list[Trigger], every_s: float, fired: list[list[object]]) -> None:
    """One crossing every ``every_s``, devices in turn; each clears half a turn later."""
    loop = asyncio.get_running_loop()
    half_turn = every_s * len(triggers) / 2
    value = RAISE_FROM
    start = loop.time()
    for k in itertools.count():
        await asyncio.sleep(max(0.0, start + k * every_s - loop.time()))
        trigger = triggers[k % len(triggers)]
        fired.append([trigger.device_id, value, trigger.send(value)])
        loop.call_later(half_turn, trigger.send, CLEAR_VALUE)
        value += 1


async def main(args: argparse.Namespace) -> None:
    """Connect, fire until ``stop``, report, then wait to be killed."""
    keys = json.loads(await asyncio.to_thread(Path(args.credentials).read_text, "utf-8"))
    storm = set(args.storm)
    connect = [
        _connect(args.host, args.port, device, tuple(keys[device]), will=device in storm)
        for device in [*args.trigger, *args.storm]
    ]
    clients = await asyncio.gather(*connect)
    triggers = [Trigger(c, d) for c, d in zip(clients, args.trigger, strict=False)]
    print(json.dumps({"ready": True}), flush=True)
    fired: list[list[object]] = []
    firing = asyncio.create_task(_fire(triggers, args.every, fired))
    loop = asyncio.get_running_loop()
    await loop.run_in_executor(None, sys.stdin.readline)
    firing.cancel()
    await asyncio.gather(*(t.client.flushed() for t in triggers))
    print(json.dumps({"triggers": fired}), flush=True)
    await asyncio.Event().wait()  # the storm: killed with the storm devices connected


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options (device ids as comma-separated lists)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--credentials", required=True, help="JSON: {id: [user, secret]}")
    parser.add_argument("--trigger", type=lambda s: s.split(","), required=True)
    parser.add_argument("--storm", type=lambda s: s.split(",") if s else [], default=[])
    parser.add_argument("--every", type=float, default=0.25, help="seconds between crossings")
    return parser.parse_args(argv)


if __name__ == "__main__":
    asyncio.run(main(parse_args()))
