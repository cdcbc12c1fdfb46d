"""``fieldhub device``: register devices and manage their MQTT credentials."""

from __future__ import annotations

import asyncio
from typing import Annotated, Any

import typer
from rich.console import Console

from fieldhub.cli.common import BrokerOpt, DataOpt, DbOpt, cli_actor, console, hub_settings
from fieldhub.private_files import private_dir

device_app = typer.Typer(
    help="Register devices and manage their MQTT credentials (also while the hub runs).",
    no_args_is_help=True,
)
LabelOpt = Annotated[
    list[str] | None, typer.Option("--label", help="KEY=VALUE (site=berlin); repeat")
]
DeviceIdArg = Annotated[str, typer.Argument(help="the device id")]


def _device_command(settings: Any, work: Any, *, broker: bool = True) -> Any:
    """Run ``work(devices, certificates)`` with the hub's own device service
    (``DeviceLifecycle``) and device certificates on its database, broker and device CA,
    with errors as one line each. With Mosquitto the CLI tells its
    dynamic security itself (only it knows a new secret); next to the embedded broker the
    running hub adopts the device within a second (``fieldhub.hub.broker.identities``)."""
    from contextlib import AsyncExitStack

    from fieldhub.hub.broker.device_ca import DeviceCa, DeviceCertificates
    from fieldhub.hub.broker.identities import CredentialsError, DeviceIdentities, StoreOnlyAccess
    from fieldhub.hub.broker.selection import BrokerStartError, open_access
    from fieldhub.hub.devices.lifecycle import DeviceLifecycle
    from fieldhub.hub.store.audit import AuditLog
    from fieldhub.hub.store.claims import ClaimStore
    from fieldhub.hub.store.credentials import CredentialStore
    from fieldhub.hub.store.database import create_engine, migrate
    from fieldhub.hub.store.devices import DeviceRegistry, RegistryError

    if settings.db is None:
        private_dir(settings.data)

    async def run() -> Any:
        engine = create_engine(settings.db_url)
        try:
            await migrate(engine)
            audit = AuditLog(engine)
            async with AsyncExitStack() as stack:
                access = await open_access(settings, stack) if broker else StoreOnlyAccess()
                credentials = CredentialStore(engine)
                identities = DeviceIdentities(credentials, audit, access)
                devices = DeviceLifecycle(
                    DeviceRegistry(engine), credentials, ClaimStore(engine), identities=identities
                )
                certificates = DeviceCertificates(DeviceCa(settings.device_ca_folder), audit)
                return await work(devices, certificates)
        finally:
            await engine.dispose()

    try:
        return asyncio.run(run())
    except (RegistryError, BrokerStartError, CredentialsError) as exc:
        console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(1) from None


def _print_credentials(issued: Any) -> None:
    """The secret goes to standard output (to pipe it into the device's setup), once."""
    typer.echo(f"client_id: {issued.client_id}")
    typer.echo(f"username: {issued.username}")
    typer.echo(f"secret: {issued.secret}")


def _picked_up(settings: Any) -> str:
    from fieldhub.hub.broker.selection import manages_mosquitto

    if settings.broker is None and not manages_mosquitto(settings):
        return "a running hub with the embedded broker applies it within a second"
    return "Mosquitto applied it"


@device_app.command("add")
def device_add(
    device_id: DeviceIdArg,
    name: Annotated[str, typer.Option("--name", help="a name people recognise")] = "",
    label: LabelOpt = None,
    parent: Annotated[
        str | None,
        typer.Option(
            "--parent",
            help="the gateway it speaks through: no credentials of its own (docs/gateway.md)",
        ),
    ] = None,
    data: DataOpt = None,
    db: DbOpt = None,
    broker: BrokerOpt = None,
) -> None:
    """Register a device and print its MQTT credentials (the secret is shown only now); with
    --parent, a child behind a gateway, which has none."""
    from fieldhub.protocol import TopicError, check_device_id

    settings = hub_settings(data=data, db=db, broker=broker)
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

    if parent is not None:

        async def child(devices: Any, _certificates: Any) -> Any:
            return await devices.create_child(device_id, parent, name=name, labels=labels or None)

        _device_command(settings, child, broker=False)
        console.print(
            f"device {device_id} registered behind gateway {parent}; a running hub lets the "
            "gateway speak for it within a second"
        )
        return

    async def work(devices: Any, _certificates: Any) -> Any:
        new = await devices.create(device_id, name=name, labels=labels, actor=cli_actor())
        return new.credentials

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
    settings = hub_settings(data=data, db=db, broker=broker)

    async def work(devices: Any, _certificates: Any) -> Any:
        return await devices.rotate_credentials(device_id, grace, actor=cli_actor())

    issued = _device_command(settings, work)
    console.print(
        f"new credentials for {device_id}, the old ones end in {grace:g} s; "
        f"{_picked_up(settings)}. Shown only now:"
    )
    _print_credentials(issued)


@device_app.command("revoke")
def device_revoke(
    device_id: DeviceIdArg,
    cert: Annotated[
        bool, typer.Option("--cert", help="revoke its client certificates only, not its keys")
    ] = False,
    data: DataOpt = None,
    db: DbOpt = None,
    broker: BrokerOpt = None,
) -> None:
    """Revoke every credential of a device (keys and client certificates): it is disconnected
    and cannot log in again."""
    settings = hub_settings(data=data, db=db, broker=broker)

    async def work(devices: Any, certificates: Any) -> Any:
        await devices.get(device_id)  # registered, or the error says so
        usernames = None if cert else await devices.revoke_credentials(device_id, actor=cli_actor())
        return usernames, await certificates.revoke(device_id, actor=cli_actor())

    usernames, serials = _device_command(settings, work, broker=not cert)
    if usernames is not None:
        console.print(
            f"revoked {len(usernames)} key(s) of {device_id} "
            f"({', '.join(usernames) or 'it had none'}); {_picked_up(settings)}."
        )
    if cert or serials:
        console.print(
            f"revoked {len(serials)} client certificate(s) of {device_id} "
            f"({', '.join(f'{s:x}' for s in serials) or 'it had none'}); a running hub "
            "applies the revocation list within a second."
        )


@device_app.command("cert")
def device_cert(
    device_id: DeviceIdArg,
    days: Annotated[int, typer.Option("--days", min=1, max=3650, help="valid for")] = 365,
    data: DataOpt = None,
    db: DbOpt = None,
) -> None:
    """Issue a client certificate (CN = the device id) from the hub's device CA and print it
    with its key and the CA (PEM): the key is shown only now."""
    settings = hub_settings(data=data, db=db)

    async def work(devices: Any, certificates: Any) -> Any:
        await devices.get(device_id)  # registered, or the error says so
        return await certificates.issue(device_id, days, actor=cli_actor())

    issued = _device_command(settings, work, broker=False)
    console.print(
        f"client certificate for {device_id}: serial {issued.serial:x}, valid until "
        f"{issued.not_after:%Y-%m-%d %H:%M} UTC. Its key, certificate and the device CA, "
        "shown only now (client_key, client_cert: docs/agent.md, TLS):"
    )
    typer.echo(issued.key + issued.certificate + issued.ca, nl=False)


@device_app.command("delete")
def device_delete(
    device_id: DeviceIdArg,
    data: DataOpt = None,
    db: DbOpt = None,
    broker: BrokerOpt = None,
) -> None:
    """Delete a device with its data and credentials (a gateway only once its children are
    gone)."""
    settings = hub_settings(data=data, db=db, broker=broker)

    async def work(devices: Any, _certificates: Any) -> Any:
        record = await devices.get(device_id)
        await devices.delete(device_id, actor=cli_actor())
        return record

    record = _device_command(settings, work)
    if record.parent_id is not None:
        console.print(
            f"deleted device {device_id} (behind gateway {record.parent_id}); a running hub "
            "forgets it within a second"
        )
    else:
        console.print(f"deleted device {device_id} and its keys; {_picked_up(settings)}")


@device_app.command("list")
def device_list(data: DataOpt = None, db: DbOpt = None) -> None:
    """Registered devices with their presence and MQTT user names (never secrets)."""
    from datetime import UTC, datetime

    from rich.table import Table

    settings = hub_settings(data=data, db=db)

    async def work(devices: Any, _certificates: Any) -> Any:
        return await devices.registry.list(), await devices.identities.keys()

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
