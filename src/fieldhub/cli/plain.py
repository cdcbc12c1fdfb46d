"""The part of the ``fieldhub`` command that runs on a Raspberry Pi, without typer.

``fieldhub agent --config X [--simulate] [--verbose]`` is what systemd starts on the Pi, and the
agent's memory budget is 30 MB (DESIGN §6). Typer builds its commands through pydantic, and with
rich that is about 12 MB of a 50 MB agent (``docs/benchmarks.md``, agent section). So
:func:`main` recognises exactly that command line and runs the agent with nothing but the
standard library's argument handling; any other command line (``--help``, ``hash-password``, a
typo) goes to the typer application, which parses the same options and calls the same
:func:`run_agent_command`, so both ways behave alike. ``fieldhub gateway --config X
[--verbose]`` likewise (:func:`run_gateway_command`): a gateway's budget is 60 MB with 200
controllers (issue 14, docs/gateway.md).

Nothing here may import typer, rich, pydantic or the hub.
"""

from __future__ import annotations

import logging
import signal
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from types import FrameType
from typing import TextIO

from fieldhub.logescape import EscapingFormatter

DEFAULT_CONFIG = Path("/etc/fieldhub/agent.yaml")
GATEWAY_CONFIG = Path("/etc/fieldhub/gateway.yaml")
_DEFAULT_CONFIGS = {"agent": DEFAULT_CONFIG, "gateway": GATEWAY_CONFIG}


LOG_FORMAT = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"


def configure_logging(verbose: bool, stream: TextIO | None = None) -> None:
    """Log lines with time, level and source; third-party chatter only from WARNING.

    Every record is one line, whoever logs and whatever it quotes: control characters are
    escaped (``fieldhub.logescape``), so a device cannot write lines into the log.

    Args:
        verbose: log DEBUG too.
        stream: where to write; stderr by default.
    """
    handler = logging.StreamHandler(stream)
    handler.setFormatter(EscapingFormatter(LOG_FORMAT))
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO, handlers=[handler])
    # httpx logs every request at INFO: one line per webhook notification sent.
    for noisy in ("amqtt", "transitions", "alembic", "uvicorn.access", "httpx"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def run_agent_command(config: Path, *, simulate: bool, verbose: bool) -> int:
    """Run the agent described by ``config`` until stopped; the process's exit code.

    2: the file is wrong; 1: the agent could not start (hardware, port, claim); 0: stopped.
    Errors are one line on stderr, never a traceback.
    """
    if not _speaks_tls(config):
        _import_asyncio_without_tls()
    import asyncio

    from fieldhub.agent.config import ConfigError, load_config
    from fieldhub.agent.service import AgentStartError, run_agent
    from fieldhub.agent.units import UnitError

    configure_logging(verbose)
    try:
        checked = load_config(config)
        with sigterm_as_ctrl_c():
            asyncio.run(run_agent(checked, config, simulate=simulate))
    except ConfigError as exc:
        _error(str(exc))
        return 2
    except (UnitError, AgentStartError) as exc:
        _error(str(exc))
        return 1
    except KeyboardInterrupt:
        print("stopped", file=sys.stderr)
    return 0


def run_gateway_command(config: Path, *, verbose: bool) -> int:
    """Run the gateway described by ``config`` until stopped; the process's exit code.

    2: the file is wrong; 1: the gateway could not start; 0: stopped. Errors are one line on
    stderr, never a traceback.
    """
    import asyncio

    from fieldhub.gateway.config import ConfigError, load_config
    from fieldhub.gateway.service import GatewayStartError, run_gateway

    configure_logging(verbose)
    try:
        checked = load_config(config)
        with sigterm_as_ctrl_c():
            asyncio.run(run_gateway(checked, config))
    except ConfigError as exc:
        _error(str(exc))
        return 2
    except GatewayStartError as exc:
        _error(str(exc))
        return 1
    except KeyboardInterrupt:
        print("stopped", file=sys.stderr)
    return 0


@contextmanager
def sigterm_as_ctrl_c() -> Iterator[None]:
    """Within the block, SIGTERM (systemd, ``docker stop``, ``kill``) takes Ctrl-C's path.

    Left to its default, SIGTERM kills the process at once: the hub without its final commit
    and acks, the agent without closing its outbox and uplink (exit status -15), also after
    uvicorn, which catches it while serving, raised it again on the way out. As SIGINT it
    reaches the handler of ``asyncio.run`` / ``asyncio.Runner``, which cancels the main task,
    so the program leaves through its ``async with`` like after Ctrl-C, and a second one
    stops at once. Here, beside the agent's command line, because that one may not import
    the typer side (``cli/common.py``), which uses it too.
    """
    previous = signal.signal(signal.SIGTERM, _as_ctrl_c)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _as_ctrl_c(_signum: int, _frame: FrameType | None) -> None:
    signal.raise_signal(signal.SIGINT)


def _import_asyncio_without_tls() -> None:
    """Import asyncio the way it is imported where Python has no ``ssl`` module.

    asyncio imports ``ssl`` when it is imported (``base_events``, ``selector_events`` and
    ``sslproto`` each do ``try: import ssl / except ImportError: ssl = None``), and importing
    ``ssl`` starts OpenSSL: with ``_hashlib``, which the agent no longer imports at start either
    (``agent/web/auth.py``), 4.4 MB of the agent's RSS, for nothing, because the agent's event
    loop speaks no TLS when its MQTT link is plain TCP (an ``mqtt://`` broker: see
    :func:`_speaks_tls`), and the technician page is plain HTTP on the site's LAN. So asyncio
    is imported while
    ``sys.modules["ssl"]`` is None, which makes ``import ssl`` fail and asyncio take its own
    branch for Pythons built without ssl. Afterwards ``ssl`` imports normally again, for the
    claim's https request, which runs ``http.client`` in a thread, not through asyncio.

    The price: in this process, a TLS connection through asyncio raises ``RuntimeError: stdlib
    ssl module not available``; so it runs only for an agent whose broker is ``mqtt://``.

    Does nothing when asyncio or ssl is already imported (the typer command line imports
    asyncio).
    """
    if "asyncio" in sys.modules or "ssl" in sys.modules:
        return
    sys.modules["ssl"] = None  # type: ignore[assignment]  # "not importable", per the import system
    try:
        import asyncio  # noqa: F401  # imported for its side effect: asyncio without ssl
    finally:
        del sys.modules["ssl"]


def _speaks_tls(config: Path) -> bool:
    """Whether ``agent.yaml`` may name an ``mqtts://`` or ``wss://`` broker, judged before the
    file is loaded (loading it imports asyncio): any ``mqtts:`` or ``wss:`` in the text says
    yes. A false yes (a comment) costs the agent OpenSSL's 4 MB; a false no cannot happen short
    of a YAML escape inside the scheme. An unreadable file says no: loading it reports the
    error."""
    try:
        text = config.read_bytes()
    except OSError:
        return False
    return b"mqtts:" in text or b"wss:" in text


def _error(message: str) -> None:
    print(f"error: {message}", file=sys.stderr)


def plain_command_line(args: Sequence[str]) -> tuple[str, Path, bool, bool] | None:
    """``(program, config, simulate, verbose)`` if ``args`` is a plain ``agent`` or ``gateway``
    run, else None.

    Accepts the program followed by ``--config X``, ``--config=X``, ``-c X``, ``--verbose``,
    ``-v`` and (the agent's only) ``--simulate`` in any order; anything else is for the typer
    application.
    """
    if not args or args[0] not in _DEFAULT_CONFIGS:
        return None
    program = args[0]
    config, simulate, verbose = _DEFAULT_CONFIGS[program], False, False
    rest = list(args[1:])
    while rest:
        arg = rest.pop(0)
        if arg in ("--config", "-c") and rest and not rest[0].startswith("-"):
            config = Path(rest.pop(0))
        elif arg.startswith("--config=") and len(arg) > len("--config="):
            config = Path(arg.removeprefix("--config="))
        elif arg == "--simulate" and program == "agent":
            simulate = True
        elif arg in ("--verbose", "-v"):
            verbose = True
        else:
            return None
    return program, config, simulate, verbose


def main(args: Sequence[str] | None = None) -> int | None:
    """Run ``fieldhub agent …`` or ``fieldhub gateway …`` if that is the command line; None if
    it is another one."""
    parsed = plain_command_line(sys.argv[1:] if args is None else args)
    if parsed is None:
        return None
    program, config, simulate, verbose = parsed
    if program == "gateway":
        return run_gateway_command(config, verbose=verbose)
    return run_agent_command(config, simulate=simulate, verbose=verbose)
