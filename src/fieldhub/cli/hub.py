"""``fieldhub demo`` and ``fieldhub hub``: run the hub (with a fleet of real agents on simulated
hardware for the demo), back it up and restore it."""

from __future__ import annotations

import asyncio
import gc
import socket
from pathlib import Path
from typing import Annotated, Any

import typer

from fieldhub import __version__
from fieldhub.cli.common import (
    BrokerOpt,
    DataOpt,
    DbOpt,
    HttpOpt,
    MqttOpt,
    console,
    hub_settings,
    run_until_stopped,
)
from fieldhub.cli.plain import configure_logging
from fieldhub.private_files import private_dir
from fieldhub.systemd import notify, pet_watchdog, watchdog_interval_s

hub_app = typer.Typer(
    help="Run the hub, or back it up and restore it.", invoke_without_command=True
)


async def _serve(
    settings: Any,
    *,
    listener: socket.socket | None = None,
    fleet_size: int = 0,
    door_every_s: float = 0.0,
    login_hint: str = "",
    mail: str = "",
) -> None:
    import uvicorn  # here, not at the top: ``fieldhub --help`` and the CLI stay light

    from fieldhub.hub.api import create_app
    from fieldhub.hub.app import Hub

    async with Hub(settings) as hub:
        host, port = settings.http_address
        server = uvicorn.Server(
            uvicorn.Config(
                create_app(hub),
                host=host,
                port=port,
                log_level="warning",
                # uvicorn's loggers then go to ours: one line per record (``configure_logging``)
                log_config=None,
                # /api/live sends every frame to many clients: compressing it per connection
                # cost a quarter of the hub's CPU with 100 clients (docs/benchmarks.md, live).
                ws_per_message_deflate=False,
                # X-Forwarded-For/-Proto only from the configured proxies; uvicorn's default
                # trusts 127.0.0.1, so any local process could pick the address the login
                # throttle and the audit log count by.
                proxy_headers=bool(settings.trusted_proxies),
                forwarded_allow_ips=list(settings.trusted_proxies),
            )
        )
        # A worker of --workers serves the socket its parent bound (cli/workers.py).
        sockets = [listener] if listener is not None else None
        serving = asyncio.create_task(server.serve(sockets=sockets), name="http")
        while not server.started:
            if serving.done():  # could not bind: uvicorn has said why
                await serving
                raise typer.Exit(1)
            await asyncio.sleep(0.02)
        # Everything made while starting (modules, the API's models, compiled statements)
        # lives as long as the process: out of the collector's sight, a full collection no
        # longer walks it. Such a collection stopped the event loop for 48-93 ms, five times a
        # minute, under the live benchmark's load (docs/benchmarks.md, Live).
        gc.collect()
        gc.freeze()
        port = server.servers[0].sockets[0].getsockname()[1]
        shown = "localhost" if host in ("127.0.0.1", "0.0.0.0") else host
        console.print(
            f"[bold green]fieldhub {__version__}[/bold green] hub at "
            f"[bold]http://{shown}:{port}/[/bold]  (API docs /docs, health /api/health, "
            f"metrics /metrics); MQTT {hub.bus.address} ({_BROKER_SAID[hub.broker_kind]})"
        )
        if login_hint:
            console.print(login_hint.replace("{url}", f"http://{shown}:{port}/"))
        watchdog = _tell_systemd_ready()
        fleet: asyncio.Task[None] | None = None
        if fleet_size:
            fleet = asyncio.create_task(
                _start_fleet(hub, fleet_size, door_every_s, mail), name="demo-fleet"
            )
            fleet.add_done_callback(_say_if_failed)
        try:
            await serving
        finally:
            notify("STOPPING=1")
            for task in (fleet, watchdog):
                if task is not None:
                    task.cancel()
                    await asyncio.gather(task, return_exceptions=True)


def _tell_systemd_ready() -> asyncio.Task[None] | None:
    """Under systemd (``Type=notify``, deploy/fieldhub-hub.service): the hub serves now, and
    its event loop pets the watchdog from here on; the petting task, or None without one."""
    notify("READY=1")
    interval = watchdog_interval_s()
    if interval is None:
        return None
    return asyncio.create_task(pet_watchdog(interval), name="systemd-watchdog")


_BROKER_SAID = {
    "managed-mosquitto": "the hub's Mosquitto",
    "embedded": "embedded amqtt broker; install mosquitto for speed",
    "external": "external broker",
}
"""Which broker runs, as the start line says it."""


async def _start_fleet(hub: Any, size: int, door_every_s: float, mail: str) -> None:
    """The demo's own part: default alarm rules, the console's webhook and mail channels,
    then the fleet. ``mail`` says where its e-mail goes (``demo_mail.DemoMail``)."""
    from fieldhub.cli.demo_alarms import install_default_rules
    from fieldhub.cli.demo_console import DemoConsole, point_channel
    from fieldhub.cli.demo_fleet import hub_url, run_demo_fleet
    from fieldhub.cli.demo_mail import DEMO_ADDRESS, DemoMail, point_mail_channel

    await install_default_rules(hub, hub.settings.data)
    async with DemoConsole(_say_plain) as receiver:
        shown = await point_channel(hub, receiver.url, receiver.secret)
        mailed = mail == DemoMail.RUNNING and await point_mail_channel(hub)
        console.print(f"demo fleet: {size} agents on simulated hardware, reporting over MQTT")
        url = hub_url(hub).rstrip("/") if hub.settings.http_address[1] else ""
        told = "; notifications of raised and cleared alarms print here" if shown else ""
        if mailed:
            told += f", and the mail to {DEMO_ADDRESS} too"
        console.print(
            f"alarms: [bold]{url}/alarms[/bold] (API {url}/api/alarms, rules "
            f"{url}/api/alarm-rules, docs/alarms.md){told}"
        )
        if mail == DemoMail.MISSING:
            console.print(
                "e-mail: not shown here; the demo's mail server comes with "
                "`pip install 'fieldhub[demo]'` (scripts/setup installs it)"
            )
        await run_demo_fleet(hub, size, hub.settings.data, door_every_s=door_every_s)


def _say_plain(line: str) -> None:
    """Print as is: a notification's subject starts with ``[MAJOR]``, no markup."""
    console.print(line, markup=False, highlight=False)


def _say_if_failed(task: asyncio.Task[None]) -> None:
    """The fleet runs beside the server: if it fails, say so now, not at Ctrl-C."""
    if not task.cancelled() and task.exception() is not None:
        console.print(f"[red]error:[/red] the demo fleet stopped: {task.exception()!r}")


def demo(
    devices: Annotated[int, typer.Option("--devices", min=0, max=10_000, help="fleet size")] = 20,
    door_every: Annotated[
        float,
        typer.Option(
            "--door-every", min=1.0, help="mean seconds between door openings, per device"
        ),
    ] = 600.0,
    data: DataOpt = None,
    http: HttpOpt = None,
    mqtt: MqttOpt = None,
    verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False,
) -> None:
    """Run a hub (its own Mosquitto where installed, else the embedded broker) and SQLite, plus
    a fleet of agents on simulated hardware (their files in DATA/demo-agents/), default alarm
    rules (installed once), and a local webhook receiver and mail server that print each alarm
    notification (docs/alarms.md).

    On a data folder without users it makes the user ``admin`` with a generated password and
    prints it once; afterwards it says how to reset it.
    """
    configure_logging(verbose)
    settings = hub_settings(data=data, http=http, mqtt=mqtt, broker=None)
    if settings.public_url is None:  # alarm notifications link to the demo's own dashboard
        host, port = settings.http_address
        shown = "localhost" if host in ("127.0.0.1", "0.0.0.0") else host
        settings = settings.model_copy(update={"public_url": f"http://{shown}:{port}"})

    async def run() -> None:
        from fieldhub.cli.demo_mail import demo_mail
        from fieldhub.hub.auth.offline import DEMO_ADMIN, demo_admin, open_auth

        private_dir(settings.data)
        async with open_auth(settings.db_url) as auth:
            password = await demo_admin(auth)
        if password is not None:
            hint = (
                f"log in at {{url}}login as [bold]{DEMO_ADMIN}[/bold] with password "
                f"[bold]{password}[/bold] (shown only now; reset it with "
                f"`fieldhub user passwd {DEMO_ADMIN} --data {settings.data}`)"
            )
        else:
            hint = (
                f"log in at {{url}}login with your user (demo admin: {DEMO_ADMIN}; "
                f"forgot the password? `fieldhub user passwd {DEMO_ADMIN} --data {settings.data}`)"
            )
        async with demo_mail(settings, _say_plain) as (demo_settings, mail):
            await _serve(
                demo_settings, fleet_size=devices, door_every_s=door_every, login_hint=hint,
                mail=mail,
            )  # fmt: skip

    run_until_stopped(run())


@hub_app.callback()
def hub(
    ctx: typer.Context,
    data: DataOpt = None,
    broker: BrokerOpt = None,
    db: DbOpt = None,
    http: HttpOpt = None,
    mqtt: MqttOpt = None,
    instance: Annotated[str | None, typer.Option(help="name of this hub process")] = None,
    cluster: Annotated[
        str | None,
        typer.Option(
            help="GROUP: share ingest with the other hubs of GROUP (PostgreSQL, Mosquitto; "
            "each its own --instance) [env FIELDHUB_CLUSTER_GROUP]"
        ),
    ] = None,
    local_broker: Annotated[
        str | None,
        typer.Option(
            "--local-broker",
            help="without --broker: auto (Mosquitto where installed, else embedded), mosquitto "
            "or embedded [env FIELDHUB_LOCAL_BROKER]",
        ),
    ] = None,
    stale_after: Annotated[
        float | None, typer.Option("--stale-after", help="seconds of silence before stale")
    ] = None,
    trusted_proxies: Annotated[
        str | None,
        typer.Option(
            "--trusted-proxies",
            help="comma-separated addresses/networks of reverse proxies whose X-Forwarded-For "
            "and -Proto are believed (none by default) [env FIELDHUB_TRUSTED_PROXIES]",
        ),
    ] = None,
    mqtts: Annotated[
        str | None,
        typer.Option(help="HOST:PORT of the hub's broker's TLS listener [env FIELDHUB_MQTTS]"),
    ] = None,
    mqtt_ws: Annotated[
        str | None,
        typer.Option(
            "--mqtt-ws",
            help="HOST:PORT of its MQTT-over-WebSocket listener, ws:// (nginx's /mqtt: "
            "127.0.0.1:9001) [env FIELDHUB_MQTT_WS]",
        ),
    ] = None,
    mqtt_wss: Annotated[
        str | None,
        typer.Option(
            "--mqtt-wss",
            help="HOST:PORT of its MQTT-over-WebSocket listener in TLS, wss:// (with "
            "--mqtt-cert/--mqtt-key) [env FIELDHUB_MQTT_WSS]",
        ),
    ] = None,
    mqtt_client_certs: Annotated[
        str | None,
        typer.Option(
            "--mqtt-client-certs",
            help="off, optional or required: device certificates of the hub's device CA on "
            "the --mqtts listener (embedded broker) [env FIELDHUB_MQTT_CLIENT_CERTS]",
        ),
    ] = None,
    mqtt_cert: Annotated[
        Path | None, typer.Option(help="its certificate chain, PEM [env FIELDHUB_MQTT_CERT]")
    ] = None,
    mqtt_key: Annotated[
        Path | None, typer.Option(help="its private key, PEM [env FIELDHUB_MQTT_KEY]")
    ] = None,
    broker_ca: Annotated[
        Path | None,
        typer.Option(help="mqtts:// --broker: a private CA, PEM [env FIELDHUB_BROKER_CA]"),
    ] = None,
    broker_pin: Annotated[
        str | None,
        typer.Option(
            help="mqtts:// --broker: SHA-256 of its public key, hex [env FIELDHUB_BROKER_PIN]"
        ),
    ] = None,
    broker_crl: Annotated[
        Path | None,
        typer.Option(help="mqtts:// --broker: its CA's revocation list [env FIELDHUB_BROKER_CRL]"),
    ] = None,
    workers: Annotated[
        int,
        typer.Option(
            "--workers",
            min=1,
            max=64,
            help="N hub processes on this machine sharing the HTTP port, --broker and a "
            "PostgreSQL --db (docs/scaling.md)",
        ),
    ] = 1,
    verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False,
) -> None:
    """Run the hub (its own Mosquitto, or the embedded broker, unless --broker is given)."""
    if ctx.invoked_subcommand is not None:
        return
    configure_logging(verbose)
    settings = hub_settings(
        data=data,
        broker=broker,
        db=db,
        http=http,
        mqtt=mqtt,
        instance=instance,
        cluster_group=cluster,
        local_broker=local_broker,
        stale_after_s=stale_after,
        trusted_proxies=trusted_proxies,
        mqtts=mqtts,
        mqtt_ws=mqtt_ws,
        mqtt_wss=mqtt_wss,
        mqtt_client_certs=mqtt_client_certs,
        mqtt_cert=mqtt_cert,
        mqtt_key=mqtt_key,
        broker_ca=broker_ca,
        broker_pin=broker_pin,
        broker_crl=broker_crl,
    )
    if workers == 1:
        run_until_stopped(_serve(settings))
        return
    from fieldhub.cli.workers import WorkersRefused, check, supervise

    try:
        check(settings, workers)
    except WorkersRefused as exc:
        console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(2) from None
    try:
        supervise(
            settings, workers, lambda worker, sock: run_until_stopped(_serve(worker, listener=sock))
        )
    except OSError as exc:  # the HTTP port: in use, or not this machine's address
        console.print(f"[red]error:[/red] cannot listen on {settings.http}: {exc.strerror}")
        raise typer.Exit(1) from None


@hub_app.command("backup")
def backup_cmd(
    file: Annotated[Path, typer.Argument(help="backup file to write (.zip)")],
    data: DataOpt = None,
    db: DbOpt = None,
) -> None:
    """Write a consistent snapshot of registry, state, history and media (the hub may keep
    running)."""
    from fieldhub.hub.media.files import backup_elsewhere, backup_folders
    from fieldhub.hub.store.backup import backup
    from fieldhub.hub.store.database import create_engine, migrate

    settings = hub_settings(data=data, db=db)

    async def run() -> Any:
        engine = create_engine(settings.db_url)
        try:
            await migrate(engine)
            return await backup(engine, file, backup_folders(settings), backup_elsewhere(settings))
        finally:
            await engine.dispose()

    summary = asyncio.run(run())
    rows = ", ".join(f"{n} {t}" for t, n in summary.rows.items())
    console.print(f"backup written to {summary.path}: {rows}")
    for name, where in backup_elsewhere(settings).items():
        console.print(f"{name} not copied: they stay in {where} (back the bucket up there)")


@hub_app.command("restore")
def restore_cmd(
    file: Annotated[Path, typer.Argument(help="backup file written by `hub backup`")],
    data: DataOpt = None,
    db: DbOpt = None,
) -> None:
    """Restore a backup into an empty data folder or database (media into the data folder)."""
    from fieldhub.hub.media.files import backup_folders
    from fieldhub.hub.store.backup import BackupError, restore
    from fieldhub.hub.store.database import create_engine

    settings = hub_settings(data=data, db=db)
    if settings.db is None:
        private_dir(settings.data)

    async def run() -> Any:
        engine = create_engine(settings.db_url)
        try:
            return await restore(engine, file, backup_folders(settings))
        finally:
            await engine.dispose()

    try:
        summary = asyncio.run(run())
    except BackupError as exc:
        console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(1) from None
    rows = ", ".join(f"{n} {t}" for t, n in summary.rows.items())
    console.print(f"restored {file}: {rows}")
