"""The ``fieldhub`` command: ``demo``, ``hub`` (run, backup, restore), ``user``."""

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


async def _serve(settings: Any, *, fleet_size: int = 0, login_hint: str = "") -> None:
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
        if login_hint:
            console.print(login_hint.replace("{url}", f"http://{shown}:{port}/"))
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
            new = await hub.create_device(
                device_id,
                name=f"{kinds[n % len(kinds)].upper()} {n}",
                labels={"site": sites[n % len(sites)], "group": kinds[n % len(kinds)]},
                actor="demo",
            )
            issued = new.credentials
        else:  # only hashes are stored: a restarted demo gives its devices new secrets
            issued = await hub.rotate_device_credentials(device_id, 0, actor="demo")
        # The simulator keeps no outbox on disk: it goes on after what the hub holds.
        start_seq = hub.ingest.acked_seq(device_id) or 0
        specs.append(DeviceSpec(device_id, issued.username, issued.secret, start_seq=start_seq))
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
    """Run a hub with its embedded broker and SQLite, plus a simulated fleet.

    On a data folder without users it makes the user ``admin`` with a generated password and
    prints it once; afterwards it says how to reset it.
    """
    _logging(verbose)
    settings = _settings(data=data, http=http, mqtt=mqtt, broker=None)

    async def run() -> None:
        from fieldhub.hub.auth.offline import DEMO_ADMIN, demo_admin, open_auth

        settings.data.mkdir(parents=True, exist_ok=True)
        async with open_auth(settings.db_url) as auth:
            password = await demo_admin(auth)
        if password is not None:
            hint = (
                f"log in at {{url}} as [bold]{DEMO_ADMIN}[/bold] with password "
                f"[bold]{password}[/bold] (shown only now; reset it with "
                f"`fieldhub user passwd {DEMO_ADMIN} --data {settings.data}`)"
            )
        else:
            hint = (
                f"log in at {{url}} with your user (demo admin: {DEMO_ADMIN}; forgot the "
                f"password? `fieldhub user passwd {DEMO_ADMIN} --data {settings.data}`)"
            )
        await _serve(settings, fleet_size=devices, login_hint=hint)

    _run(run())


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


user_app = typer.Typer(
    help="Manage the hub's users (also while the hub runs).", no_args_is_help=True
)
app.add_typer(user_app, name="user")
RoleOpt = Annotated[str, typer.Option("--role", help="admin, operator or viewer")]
SiteOpt = Annotated[
    list[str] | None, typer.Option("--site", help="a site the user sees; repeat for several")
]
PasswordStdinOpt = Annotated[
    bool, typer.Option("--password-stdin", help="read the password from standard input")
]


def _read_password(from_stdin: bool) -> str:
    """The new password: one line of stdin, or typed twice at a prompt (never an argument)."""
    import sys

    from fieldhub.hub.auth import PasswordRejected
    from fieldhub.hub.auth.passwords import check_policy

    if from_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    else:
        password = str(typer.prompt("password", hide_input=True, confirmation_prompt=True))
    try:
        check_policy(password)
    except PasswordRejected as exc:
        console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(1) from None
    return password


def _users(settings: Any, work: Any) -> Any:
    """Run ``work(auth)`` on the hub's database; account errors end the command with 1."""
    from fieldhub.hub.auth import AuthError
    from fieldhub.hub.auth.offline import open_auth
    from fieldhub.hub.store.users import UserStoreError

    if settings.db is None:
        settings.data.mkdir(parents=True, exist_ok=True)

    async def run() -> Any:
        async with open_auth(settings.db_url) as auth:
            return await work(auth)

    try:
        return asyncio.run(run())
    except (AuthError, UserStoreError) as exc:
        console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(1) from None


@user_app.command("add")
def user_add(
    name: Annotated[str, typer.Argument(help="user name (stored in lower case)")],
    role: RoleOpt = "viewer",
    site: SiteOpt = None,
    password_stdin: PasswordStdinOpt = False,
    data: DataOpt = None,
    db: DbOpt = None,
) -> None:
    """Add a user with a password (prompted twice, or --password-stdin)."""
    from fieldhub.hub.auth import Role

    if role not in {r.value for r in Role}:
        console.print(f"[red]error:[/red] --role {role!r}: use admin, operator or viewer")
        raise typer.Exit(2)
    settings = _settings(data=data, db=db)
    password = _read_password(password_stdin)
    user = _users(
        settings,
        lambda auth: auth.accounts.create_user(
            name, role=Role(role), sites=site or [], password=password, actor="cli"
        ),
    )
    sites = "every site" if user.role == "admin" else (", ".join(user.sites) or "no site yet")
    console.print(f"user {user.name!r} added: {user.role}, {sites}")


@user_app.command("list")
def user_list(data: DataOpt = None, db: DbOpt = None) -> None:
    """List users: name, role, sites, whether they can log in."""
    from rich.table import Table

    settings = _settings(data=data, db=db)
    users = _users(settings, lambda auth: auth.users.list_users())
    table = Table("name", "role", "sites", "password", "disabled")
    for user in users:
        sites = "all" if user.role == "admin" else ", ".join(user.sites)
        table.add_row(
            user.name,
            user.role,
            sites,
            "set" if user.has_password else "none",
            "yes" if user.disabled else "",
        )
    Console(soft_wrap=True).print(table)


@user_app.command("passwd")
def user_passwd(
    name: Annotated[str, typer.Argument(help="user name")],
    password_stdin: PasswordStdinOpt = False,
    data: DataOpt = None,
    db: DbOpt = None,
) -> None:
    """Set a user's password (prompted twice, or --password-stdin); its sessions end."""
    settings = _settings(data=data, db=db)
    password = _read_password(password_stdin)

    async def work(auth: Any) -> None:
        from fieldhub.hub.auth.errors import AuthError

        found = await auth.users.by_name(name.strip().lower())
        if found is None:
            raise AuthError(f"no user {name!r}")
        await auth.accounts.set_password(found[0].id, password, actor="cli")

    _users(settings, work)
    console.print(f"password of {name.strip().lower()!r} set; its sessions have ended")


device_app = typer.Typer(
    help="Register devices and manage their MQTT credentials (also while the hub runs).",
    no_args_is_help=True,
)
app.add_typer(device_app, name="device")
LabelOpt = Annotated[
    list[str] | None, typer.Option("--label", help="KEY=VALUE (site=berlin); repeat")
]
DeviceIdArg = Annotated[str, typer.Argument(help="the device id")]


def _device_command(settings: Any, work: Any, *, broker: bool = True) -> Any:
    """Run ``work(registry, identities)`` on the hub's database and broker, with errors as
    one line each. With Mosquitto the CLI tells its dynamic security itself (only it knows a
    new secret); next to the embedded broker the running hub picks the change up within a
    second (``fieldhub.hub.identity``)."""
    from contextlib import AsyncExitStack

    from fieldhub.hub.brokers import BrokerStartError, open_access
    from fieldhub.hub.identity import CredentialsError, DeviceIdentities, StoreOnlyAccess
    from fieldhub.hub.store.audit import AuditLog
    from fieldhub.hub.store.credentials import DeviceCredentials
    from fieldhub.hub.store.database import create_engine, migrate
    from fieldhub.hub.store.devices import DeviceRegistry, RegistryError

    if settings.db is None:
        settings.data.mkdir(parents=True, exist_ok=True)

    async def run() -> Any:
        engine = create_engine(settings.db_url)
        try:
            await migrate(engine)
            async with AsyncExitStack() as stack:
                access = await open_access(settings, stack) if broker else StoreOnlyAccess()
                identities = DeviceIdentities(DeviceCredentials(engine), AuditLog(engine), access)
                return await work(DeviceRegistry(engine), identities)
        finally:
            await engine.dispose()

    try:
        return asyncio.run(run())
    except (RegistryError, BrokerStartError, CredentialsError) as exc:
        console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(1) from None


def _cli_actor() -> str:
    import getpass

    return f"cli:{getpass.getuser()}"


def _print_credentials(issued: Any) -> None:
    """The secret goes to standard output (to pipe it into the device's setup), once."""
    typer.echo(f"client_id: {issued.client_id}")
    typer.echo(f"username: {issued.username}")
    typer.echo(f"secret: {issued.secret}")


def _picked_up(settings: Any) -> str:
    if settings.broker is None:
        return "a running hub with the embedded broker applies it within a second"
    return "Mosquitto applied it"


@device_app.command("add")
def device_add(
    device_id: DeviceIdArg,
    name: Annotated[str, typer.Option("--name", help="a name people recognise")] = "",
    label: LabelOpt = None,
    data: DataOpt = None,
    db: DbOpt = None,
    broker: BrokerOpt = None,
) -> None:
    """Register a device and print its MQTT credentials (the secret is shown only now)."""
    from fieldhub.protocol import TopicError, check_device_id

    settings = _settings(data=data, db=db, broker=broker)
    labels = {}
    for item in label or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            console.print(f"[red]error:[/red] --label {item!r}: use KEY=VALUE")
            raise typer.Exit(2)
        labels[key] = value
    try:
        check_device_id(device_id)
    except TopicError as exc:
        console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(2) from None

    async def work(registry: Any, identities: Any) -> Any:
        await registry.create(device_id, name=name, labels=labels)
        try:
            return await identities.issue(device_id, actor=_cli_actor())
        except BaseException:
            await registry.delete(device_id)  # nothing half made
            raise

    issued = _device_command(settings, work)
    console.print(
        f"device {device_id} registered; {_picked_up(settings)}. Its MQTT credentials, "
        "shown only now:"
    )
    _print_credentials(issued)


@device_app.command("rotate")
def device_rotate(
    device_id: DeviceIdArg,
    grace: Annotated[
        float, typer.Option("--grace", min=0, help="seconds the old secret keeps working")
    ] = 3600,
    data: DataOpt = None,
    db: DbOpt = None,
    broker: BrokerOpt = None,
) -> None:
    """Give a device a new secret; the old one works for --grace seconds more."""
    settings = _settings(data=data, db=db, broker=broker)

    async def work(registry: Any, identities: Any) -> Any:
        await registry.get(device_id)
        return await identities.rotate(device_id, grace, actor=_cli_actor())

    issued = _device_command(settings, work)
    console.print(
        f"new credentials for {device_id}, the old ones end in {grace:g} s; "
        f"{_picked_up(settings)}. Shown only now:"
    )
    _print_credentials(issued)


@device_app.command("revoke")
def device_revoke(
    device_id: DeviceIdArg, data: DataOpt = None, db: DbOpt = None, broker: BrokerOpt = None
) -> None:
    """Revoke every credential of a device: it is disconnected and cannot log in again."""
    settings = _settings(data=data, db=db, broker=broker)

    async def work(registry: Any, identities: Any) -> Any:
        await registry.get(device_id)
        return await identities.revoke(device_id, actor=_cli_actor())

    usernames = _device_command(settings, work)
    console.print(
        f"revoked {len(usernames)} key(s) of {device_id} "
        f"({', '.join(usernames) or 'it had none'}); {_picked_up(settings)}."
    )


@device_app.command("list")
def device_list(data: DataOpt = None, db: DbOpt = None) -> None:
    """Registered devices with their presence and MQTT user names (never secrets)."""
    from datetime import UTC, datetime

    from rich.table import Table

    settings = _settings(data=data, db=db)

    async def work(registry: Any, identities: Any) -> Any:
        return await registry.list(), await identities.keys()

    records, keys = _device_command(settings, work, broker=False)
    table = Table("id", "name", "labels", "presence", "MQTT user names")
    for record in records:
        names = []
        for key in keys:
            if key.device_id != record.id:
                continue
            if key.expires_at is None:
                names.append(key.username)
            else:
                end = datetime.fromtimestamp(key.expires_at / 1000, UTC)
                names.append(f"{key.username} (ends {end:%Y-%m-%d %H:%M:%S} UTC)")
        labels = ", ".join(f"{k}={v}" for k, v in sorted(record.labels.items()))
        table.add_row(record.id, record.name, labels, record.presence, "\n".join(names) or "-")
    Console(soft_wrap=True).print(table)


@app.command()
def version() -> None:
    """Print the version."""
    typer.echo(__version__)


def main() -> None:
    """Entry point of the ``fieldhub`` command."""
    app()
