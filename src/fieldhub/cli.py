"""The ``fieldhub`` command: ``demo``, ``hub`` (run, backup, restore)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from pathlib import Path
from typing import Annotated, Any

import typer
import uvicorn
from pydantic import ValidationError
from rich.console import Console

from fieldhub import __version__

app = typer.Typer(
    help="fieldhub: monitor and control devices in the field.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
hub_app = typer.Typer(
    help="Run the hub, or back it up and restore it.", invoke_without_command=True
)
app.add_typer(hub_app, name="hub")
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


def _settings(**options: Any) -> Any:
    """HubSettings from the environment, overridden by the options that were given."""
    from fieldhub.hub.config import HubSettings

    given = {k: v for k, v in options.items() if v is not None}
    try:
        return HubSettings(**given)
    except ValidationError as exc:
        for error in exc.errors():
            field = ".".join(str(p) for p in error["loc"])
            message = str(error["msg"]).removeprefix("Value error, ")
            console.print(f"[red]error:[/red] setting {field!r}: {message}")
        raise typer.Exit(2) from None


def _logging(verbose: bool) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s",
    )
    for noisy in ("amqtt", "transitions", "alembic", "uvicorn.access"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


async def _serve(settings: Any, *, fleet_size: int = 0) -> None:
    from fieldhub.hub.api import create_app
    from fieldhub.hub.service import Hub

    async with Hub(settings) as hub:
        host, port = settings.http_address
        server = uvicorn.Server(
            uvicorn.Config(create_app(hub), host=host, port=port, log_level="warning")
        )
        serving = asyncio.create_task(server.serve(), name="http")
        while not server.started:
            if serving.done():  # could not bind: uvicorn has said why
                await serving
                raise typer.Exit(1)
            await asyncio.sleep(0.02)
        port = server.servers[0].sockets[0].getsockname()[1]
        shown = "localhost" if host in ("127.0.0.1", "0.0.0.0") else host
        console.print(
            f"[bold green]fieldhub {__version__}[/bold green] hub at "
            f"[bold]http://{shown}:{port}/[/bold]  (API docs /docs, health /api/health, "
            f"metrics /metrics); MQTT {hub.bus.address}"
        )
        fleet: asyncio.Task[None] | None = None
        if fleet_size:
            fleet = asyncio.create_task(_start_fleet(hub, fleet_size), name="demo-fleet")
        try:
            await serving
        finally:
            if fleet is not None:
                fleet.cancel()
                await asyncio.gather(fleet, return_exceptions=True)


async def _start_fleet(hub: Any, size: int) -> None:
    from fieldhub.hub.store.devices import DeviceNotFound
    from fieldhub.sim.fleet import DeviceSpec, run_fleet

    sites = ["berlin", "paris", "madrid", "warsaw"]
    kinds = ["atm", "terminal", "locker"]
    specs = []
    for n in range(1, size + 1):
        device_id = f"demo-{n:03d}"
        try:
            await hub.registry.get(device_id)
        except DeviceNotFound:
            await hub.create_device(
                device_id,
                name=f"{kinds[n % len(kinds)].upper()} {n}",
                labels={"site": sites[n % len(sites)], "group": kinds[n % len(kinds)]},
            )
        # The simulator keeps no outbox on disk: it goes on after what the hub holds.
        specs.append(DeviceSpec(device_id, start_seq=hub.ingest.acked_seq(device_id) or 0))
    console.print(f"simulated fleet: {size} devices publishing over MQTT")
    await run_fleet(specs, hub.broker_url)


def _run(main: Coroutine[Any, Any, None]) -> None:
    """Run until done or Ctrl-C; the hub shuts down cleanly either way, and Ctrl-C is no error."""
    from fieldhub.hub.bus import BusError
    from fieldhub.hub.service import HubStartError

    try:
        asyncio.run(main)
    except KeyboardInterrupt:
        console.print("stopped")
    except (HubStartError, BusError) as exc:
        console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(1) from None


@app.command()
def demo(
    devices: Annotated[int, typer.Option("--devices", min=0, max=10_000, help="fleet size")] = 20,
    data: DataOpt = None,
    http: HttpOpt = None,
    mqtt: MqttOpt = None,
    verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False,
) -> None:
    """Run a hub with its embedded broker and SQLite, plus a simulated fleet."""
    _logging(verbose)
    settings = _settings(data=data, http=http, mqtt=mqtt, broker=None)
    _run(_serve(settings, fleet_size=devices))


@hub_app.callback()
def hub(
    ctx: typer.Context,
    data: DataOpt = None,
    broker: BrokerOpt = None,
    db: DbOpt = None,
    http: HttpOpt = None,
    mqtt: MqttOpt = None,
    instance: Annotated[str | None, typer.Option(help="name of this hub process")] = None,
    stale_after: Annotated[
        float | None, typer.Option("--stale-after", help="seconds of silence before stale")
    ] = None,
    verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False,
) -> None:
    """Run the hub (embedded broker unless --broker is given)."""
    if ctx.invoked_subcommand is not None:
        return
    _logging(verbose)
    settings = _settings(
        data=data,
        broker=broker,
        db=db,
        http=http,
        mqtt=mqtt,
        instance=instance,
        stale_after_s=stale_after,
    )
    _run(_serve(settings))


@hub_app.command("backup")
def backup_cmd(
    file: Annotated[Path, typer.Argument(help="backup file to write (.zip)")],
    data: DataOpt = None,
    db: DbOpt = None,
) -> None:
    """Write a consistent snapshot of registry, state and history (the hub may keep running)."""
    from fieldhub.hub.backup import backup
    from fieldhub.hub.store.database import create_engine, migrate

    settings = _settings(data=data, db=db)

    async def run() -> Any:
        engine = create_engine(settings.db_url)
        try:
            await migrate(engine)
            return await backup(engine, file)
        finally:
            await engine.dispose()

    summary = asyncio.run(run())
    rows = ", ".join(f"{n} {t}" for t, n in summary.rows.items())
    console.print(f"backup written to {summary.path}: {rows}")


@hub_app.command("restore")
def restore_cmd(
    file: Annotated[Path, typer.Argument(help="backup file written by `hub backup`")],
    data: DataOpt = None,
    db: DbOpt = None,
) -> None:
    """Restore a backup into an empty data folder or database."""
    from fieldhub.hub.backup import BackupError, restore
    from fieldhub.hub.store.database import create_engine

    settings = _settings(data=data, db=db)
    if settings.db is None:
        settings.data.mkdir(parents=True, exist_ok=True)

    async def run() -> Any:
        engine = create_engine(settings.db_url)
        try:
            return await restore(engine, file)
        finally:
            await engine.dispose()

    try:
        summary = asyncio.run(run())
    except BackupError as exc:
        console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(1) from None
    rows = ", ".join(f"{n} {t}" for t, n in summary.rows.items())
    console.print(f"restored {file}: {rows}")


@app.command()
def version() -> None:
    """Print the version."""
    typer.echo(__version__)


def main() -> None:
    """Entry point of the ``fieldhub`` command."""
    app()
