"""Webhook sink: an HTTP receiver in its own process that notes when each request arrived.

The alarm benchmark times a device's publish against the moment its notification reaches a
receiver, so the receiver must not share the hub's event loop (a busy hub would delay its
own measurement) and must answer at once (a slow endpoint would hold the hub's delivery
slots). This one accepts every POST with 204 and writes one JSON line per request to stdout:
``{"t": <epoch seconds on arrival>, "body": <the request's JSON>}``. Its first line is
``{"port": N}``: where it listens, on 127.0.0.1.

    python benchmarks/webhook_sink.py   # then point a webhook channel at http://127.0.0.1:N/
"""

from __future__ import annotations

import asyncio
import json
import sys
import time

_ANSWER = b"HTTP/1.1 204 No Content\r\ncontent-length: 0\r\n\r\n"


def _say(line: dict[str, object]) -> None:
    sys.stdout.write(json.dumps(line) + "\n")
    sys.stdout.flush()


async def _serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Requests of one keep-alive connection, one at a time (``Content-Length`` bodies)."""
    try:
        while await reader.readline():  # the request line
            length = 0
            while (header := await reader.readline()) not in (b"\r\n", b""):
                name, _, value = header.decode("latin-1").partition(":")
                if name.strip().lower() == "content-length":
                    length = int(value)
            body = await reader.readexactly(length)
            arrived = time.time()  # the end of the request: what a receiver can act on
            writer.write(_ANSWER)
            _say({"t": arrived, "body": json.loads(body) if body else None})
            await writer.drain()
    except (ConnectionError, asyncio.IncompleteReadError):
        pass
    finally:
        writer.close()


async def main() -> None:
    """Listen until stdin closes (the benchmark ends), then exit."""
    server = await asyncio.start_server(_serve, "127.0.0.1", 0)
    _say({"port": server.sockets[0].getsockname()[1]})
    loop = asyncio.get_running_loop()
    await loop.run_in_executor(None, sys.stdin.read)
    server.close()


if __name__ == "__main__":
    asyncio.run(main())
