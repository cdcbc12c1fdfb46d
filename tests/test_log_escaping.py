"""No one but fieldhub writes lines into its log: every record is one line, escaped.

The log is set up as the ``fieldhub`` command sets it up (``configure_logging``), writing to a
buffer; the test then reads the buffer as an operator reads the log, line by line.
"""

from __future__ import annotations

import asyncio
import io
import logging
from collections.abc import Iterator

import pytest

from fieldhub.cli.plain import configure_logging
from fieldhub.clock import now_ms
from fieldhub.hub.broker.embedded import EmbeddedBroker
from fieldhub.hub.broker.keyring import KeyRing, hub_identity
from fieldhub.hub.secrets import digest
from fieldhub.hub.store.credentials import CredentialKey
from fieldhub.logescape import EscapingFormatter

FORGED = "2026-12-07 12:00:00,000 INFO    fieldhub.hub.api: user admin logged in"


@pytest.fixture
def log_output() -> Iterator[io.StringIO]:
    """The process log as ``fieldhub hub`` configures it, into a buffer; restored after."""
    root = logging.getLogger()
    names = ("amqtt", "transitions", "alembic", "uvicorn.access")
    saved = root.handlers[:], root.level, [logging.getLogger(n).level for n in names]
    root.handlers.clear()
    buffer = io.StringIO()
    configure_logging(verbose=False, stream=buffer)
    yield buffer
    root.handlers[:] = saved[0]
    root.setLevel(saved[1])
    for name, level in zip(names, saved[2], strict=True):
        logging.getLogger(name).setLevel(level)


def test_the_formatter_escapes_control_characters_in_messages_and_tracebacks() -> None:
    formatter = EscapingFormatter("%(levelname)s %(message)s")
    try:
        raise ValueError(f"bad value\n{FORGED}")
    except ValueError as exc:
        record = logging.LogRecord(
            "test", logging.ERROR, __file__, 1, "got %r from %s", ("a\rb", "x\x1b[2J\x00y"), None
        )
        record.exc_info = (ValueError, exc, exc.__traceback__)

    line = formatter.format(record)

    assert "\n" not in line
    assert "\r" not in line
    assert "\x1b" not in line
    assert "\x00" not in line
    assert line.startswith("ERROR got 'a\\rb' from x\\x1b[2J\\x00y\\nTraceback")
    assert line.endswith(f"ValueError: bad value\\n{FORGED}")


async def test_a_forged_protocol_name_writes_no_line_into_the_log(
    log_output: io.StringIO,
) -> None:
    ring = KeyRing(hub_identity("test"))
    secret = "secret-of-dev-1"
    ring.put([CredentialKey("dev-1.00000000", "dev-1", digest(secret), now_ms(), None)])
    name = f"MQTT\n{FORGED}".encode()
    flags_and_keepalive = bytes((4, 0xC2, 0, 60))
    body = b"".join(
        len(field).to_bytes(2, "big") + field
        for field in (b"dev-1", b"dev-1.00000000", secret.encode())
    )
    connect = len(name).to_bytes(2, "big") + name + flags_and_keepalive + body
    async with EmbeddedBroker(port=0, access=ring) as broker:
        reader, writer = await asyncio.open_connection(broker.host, broker.port)
        writer.write(bytes((0x10, len(connect))) + connect)
        await writer.drain()
        assert await asyncio.wait_for(reader.read(), 5) == b""  # the broker hung up
        writer.close()

    lines = log_output.getvalue().splitlines()
    assert FORGED not in lines
    assert not any(line.startswith(FORGED) for line in lines)
    assert any("protocol name" in line and "MQTT-3.1.2-1" in line for line in lines)
