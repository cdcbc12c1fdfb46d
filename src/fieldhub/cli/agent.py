"""``fieldhub agent``: run the agent of one device, or make its page's password hash.

A plain ``fieldhub agent --config X`` never reaches this module: ``fieldhub.cli.plain`` runs it
without typer, to keep the agent's memory small. This is the same command for everything else
(``--help``, ``hash-password``, a wrong option), and runs the agent the same way.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from fieldhub.cli.common import console
from fieldhub.cli.plain import DEFAULT_CONFIG, run_agent_command

agent_app = typer.Typer(
    help="Run the agent of a device (on its Raspberry Pi, or simulated).",
    invoke_without_command=True,
)


@agent_app.callback()
def agent(
    ctx: typer.Context,
    config: Annotated[
        Path, typer.Option("--config", "-c", help="the agent's YAML file")
    ] = DEFAULT_CONFIG,
    simulate: Annotated[
        bool, typer.Option("--simulate", help="made-up hardware with plausible physics")
    ] = False,
    verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False,
) -> None:
    """Run the agent described by --config until stopped (SIGTERM or Ctrl-C)."""
    if ctx.invoked_subcommand is not None:
        return
    code = run_agent_command(config, simulate=simulate, verbose=verbose)
    if code:
        raise typer.Exit(code)


@agent_app.command("hash-password")
def hash_password_cmd() -> None:
    """Ask for the technician page's password (twice) and print its hash for agent.yaml."""
    from fieldhub.agent.web import WeakPassword, hash_password

    password = str(typer.prompt("password", hide_input=True, confirmation_prompt=True))
    try:
        typer.echo(hash_password(password))
    except WeakPassword as exc:
        console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(1) from None
