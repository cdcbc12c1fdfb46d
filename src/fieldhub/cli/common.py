"""What every ``fieldhub`` subcommand shares: options, settings, the console, the run loop."""

from __future__ import annotations

import asyncio
import getpass
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Annotated, Any

import typer
from pydantic import ValidationError
from rich.console import Console

from fieldhub.cli.plain import sigterm_as_ctrl_c

console = Console(stderr=True, soft_wrap=True)

DataOpt = Annotated[Path | None, typer.Option("--data", help="data folder [env FIELDHUB_DATA]")]
DbOpt = Annotated[
    str | None, typer.Option("--db", help="database URL (SQLite file in --data by default)")
]
HttpOpt = Annotated[str | None, typer.Option("--http", help="HOST:PORT of the API")]
MqttOpt = Annotated[str | None, typer.Option("--mqtt", help="HOST:PORT of the embedded broker")]
BrokerOpt = Annotated[
    str | None, typer.Option("--broker", help="external broker mqtt://host:port (not embedded)")
]


def hub_settings(**options: Any) -> Any:
    """HubSettings from the environment, overridden by the options that were given."""
    from fieldhub.hub.config import HubSettings

    given = {k: v for k, v in options.items() if v is not None}
    try:
        return HubSettings(**given)
    except ValidationError as exc:
        for error in exc.errors():
            field = ".".join(str(p) for p in error["loc"])
            message = str(error["msg"]).removeprefix("Value error, ")
            where = f"setting {field!r}: " if field else ""  # settings checked together name them
            console.print(f"[red]error:[/red] {where}{message}")
        raise typer.Exit(2) from None


def run_until_stopped(main: Coroutine[Any, Any, None]) -> None:
    """Run until done, Ctrl-C or SIGTERM; the hub shuts down cleanly either way (its last
    ingest commit and acks, then the broker), and neither signal is an error (exit status 0).
    """
    from fieldhub.hub.app import HubStartError
    from fieldhub.hub.bus import BusError

    try:
        with sigterm_as_ctrl_c(), asyncio.Runner(loop_factory=server_loop_factory()) as runner:
            runner.run(main)
    except KeyboardInterrupt:
        console.print("stopped")
    except (HubStartError, BusError) as exc:
        console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(1) from None


def server_loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop's event loop for the hub where it is installed (not on Windows), else asyncio's.

    The hub is an event loop of sockets: HTTP requests, WebSocket frames to every live client,
    MQTT from every device. uvloop runs the loop and its transports in C (libuv); with httptools
    parsing HTTP it is what uvicorn's own "standard" install uses (docs/benchmarks.md: its
    effect on commands and live push). The agent does not use it: on the Pi its memory counts
    more than its speed.
    """
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop.new_event_loop


def cli_actor() -> str:
    """How the audit log names whoever runs the command: ``cli:<os user>``."""
    return f"cli:{getpass.getuser()}"
