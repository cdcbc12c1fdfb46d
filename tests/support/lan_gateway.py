"""A LAN manager in a process of its own, for tests that put it in another network namespace.

``python -m tests.support.lan_gateway --keys DIR [--static HOST:PORT ...]`` runs the gateway's
LAN side with an uplink that prints each call as a JSON line on stdout (``online``, ``offline``,
``pairing``, ``report``, ``code``) and takes commands as JSON lines on stdin:
``{"approve": ID}``, ``{"run": [ID, COMMAND_ID, ACTION, ARGS]}`` (answered ``{"outcome": ...}``),
``{"states": true}`` (answered ``{"states": ...}``).
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import sys
from pathlib import Path
from typing import Any

from fieldhub.gateway.lan import LanManager, LanSettings
from fieldhub.gateway.ports import ControllerInfo, ReportChannel


def _say(**fields: Any) -> None:
    print(json.dumps(fields), flush=True)


class PrintingUplink:
    async def controller_online(self, info: ControllerInfo) -> None:
        _say(online=dataclasses.asdict(info))

    async def controller_offline(self, controller_id: str, reason: str) -> None:
        _say(offline=controller_id, reason=reason)

    async def pairing_requested(self, controller_id: str, address: str) -> None:
        _say(pairing=controller_id, address=address)

    async def report(
        self, controller_id: str, channel: ReportChannel, body: dict[str, Any]
    ) -> None:
        _say(report=controller_id, channel=channel, body=body)


async def _main(options: argparse.Namespace) -> None:
    settings = LanSettings(
        gateway_id="gw-ns",
        key_dir=Path(options.keys),
        static=tuple(options.static),
        heartbeat_s=1.0,
    )
    manager = LanManager(settings, PrintingUplink(), on_pairing_code=lambda c, k: _say(code=c))
    await manager.start()
    reader = asyncio.StreamReader()
    loop = asyncio.get_running_loop()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    _say(ready=True)
    try:
        while line := await reader.readline():
            request = json.loads(line)
            if "approve" in request:
                _say(approved=await manager.approve_pairing(request["approve"]))
            elif "run" in request:
                outcome = await manager.run_command(*request["run"], timeout_s=5)
                _say(outcome=dataclasses.asdict(outcome))
            elif "states" in request:
                _say(states=manager.link_states())
    finally:
        await manager.stop()


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--keys", required=True)
    parser.add_argument("--static", action="append", default=[])
    asyncio.run(_main(parser.parse_args()))
