"""``fieldhub user``: manage the hub's users on its database (also while the hub runs)."""

from __future__ import annotations

import asyncio
from typing import Annotated, Any

import typer
from rich.console import Console

from fieldhub.cli.common import DataOpt, DbOpt, cli_actor, console, hub_settings
from fieldhub.private_files import private_dir

user_app = typer.Typer(
    help="Manage the hub's users (also while the hub runs).", no_args_is_help=True
)
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
        private_dir(settings.data)

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
    settings = hub_settings(data=data, db=db)
    password = _read_password(password_stdin)
    user = _users(
        settings,
        lambda auth: auth.accounts.create_user(
            name, role=Role(role), sites=site or [], password=password, actor=cli_actor()
        ),
    )
    sites = "every site" if user.role == "admin" else (", ".join(user.sites) or "no site yet")
    console.print(f"user {user.name!r} added: {user.role}, {sites}")


@user_app.command("list")
def user_list(data: DataOpt = None, db: DbOpt = None) -> None:
    """List users: name, role, sites, whether they can log in."""
    from rich.table import Table

    settings = hub_settings(data=data, db=db)
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
    settings = hub_settings(data=data, db=db)
    password = _read_password(password_stdin)

    async def work(auth: Any) -> None:
        from fieldhub.hub.auth.errors import AuthError

        found = await auth.users.by_name(name.strip().lower())
        if found is None:
            raise AuthError(f"no user {name!r}")
        await auth.accounts.set_password(found[0].id, password, actor=cli_actor())

    _users(settings, work)
    console.print(f"password of {name.strip().lower()!r} set; its sessions have ended")
