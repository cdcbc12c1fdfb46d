"""A stand-in agent for kill tests and benchmarks: an outbox and an uplink, and a thread that
reports numbered telemetry the way a gpiozero callback would.

Run as ``python -m tests.support.outbox_probe --host H --port P --device ID --username U
--outbox FILE --first 1 --count 1000``, with the device secret in ``FIELDHUB_PROBE_SECRET`` (not
on the command line, where ``ps`` would show it). Report ``n`` is ``{"n": n}`` at ``base_ts +
n`` milliseconds; every ``event_every``-th also comes with a ``probe.tick`` event. It prints one
JSON object per line on stdout:

- ``{"accepted": n}``: reports up to ``n`` are committed to the outbox (printed every
  ``report_every`` reports), so a test that kills the probe knows what the hub must get;
- ``{"drained": true, ...}`` once everything it made is acknowledged by the hub; then it exits.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import threading
import time
from pathlib import Path

from fieldhub.agent.outbox import Outbox, OutboxReporter
from fieldhub.agent.uplink import Uplink, UplinkSettings


def _arguments(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m tests.support.outbox_probe")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--device", required=True)
    parser.add_argument("--username")
    parser.add_argument("--outbox", type=Path, required=True)
    parser.add_argument("--first", type=int, default=1)
    parser.add_argument("--count", type=int, default=1000)
    parser.add_argument("--base-ts", type=int, default=1_700_000_000_000)
    parser.add_argument("--interval-ms", type=float, default=1.0)
    parser.add_argument("--event-every", type=int, default=10)
    parser.add_argument("--report-every", type=int, default=50)
    parser.add_argument("--max-messages", type=int, default=100_000)
    parser.add_argument("--window", type=int, default=8)
    parser.add_argument("--ack-timeout", type=float, default=2.0)
    return parser.parse_args(argv)


def _say(**fields: object) -> None:
    sys.stdout.write(json.dumps(fields) + "\n")
    sys.stdout.flush()


async def run(args: argparse.Namespace) -> None:
    """Report, print progress, wait until the hub has everything."""
    loop = asyncio.get_running_loop()
    settings = UplinkSettings(
        window=args.window,
        ack_timeout_s=args.ack_timeout,
        reconnect_min_s=0.05,
        reconnect_max_s=0.5,
        keepalive_s=5,
    )
    handed: list[int] = [args.first - 1]  # last report the loop has seen, set on the loop

    def produce(reporter: OutboxReporter) -> None:
        for n in range(args.first, args.first + args.count):
            reporter.telemetry({"n": n}, ts=args.base_ts + n)
            if args.event_every and n % args.event_every == 0:
                reporter.event("probe.tick", data={"n": n})
            loop.call_soon_threadsafe(handed.__setitem__, 0, n)  # runs after the submits
            if args.interval_ms:
                time.sleep(args.interval_ms / 1000)

    async with (
        Outbox(args.outbox, max_messages=args.max_messages) as outbox,
        Uplink(
            outbox,
            device_id=args.device,
            host=args.host,
            port=args.port,
            username=args.username,
            password=os.environ.get("FIELDHUB_PROBE_SECRET"),
            settings=settings,
        ) as uplink,
    ):
        reporter = OutboxReporter(outbox)
        producer = threading.Thread(target=produce, args=(reporter,), daemon=True)
        producer.start()
        last = args.first - 1
        while producer.is_alive() or last < handed[0]:
            await asyncio.sleep(0.01)
            target = handed[0]
            if target - last >= args.report_every or (not producer.is_alive() and target > last):
                await outbox.sync()
                last = target
                _say(accepted=last)
        while True:  # the uplink has no event for "all acknowledged": look now and then
            if not (outbox.pending or outbox.stats.depth or uplink.stats.in_flight):
                break
            await asyncio.sleep(0.02)
        _say(drained=True, **uplink.snapshot())


def main(argv: list[str] | None = None) -> None:
    """Entry point of ``python -m tests.support.outbox_probe``."""
    asyncio.run(run(_arguments(argv)))


if __name__ == "__main__":
    main()
