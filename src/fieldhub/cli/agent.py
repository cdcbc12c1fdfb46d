"""``fieldhub agent``: run the agent of one device, or make its page's password hash."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Annotated

import typer

from fieldhub.cli.common import configure_logging, console

agent_app = typer.Typer(
    help="Run the agent of a device (on its Raspberry Pi, or simulated).",
    invoke_without_command=True,
)


@agent_app.callback()
def agent(
    ctx: typer.Context,
    config: Annotated[Path, typer.Option("--config", "-c", help="the agent's YAML file")] = Path(
        "/etc/fieldhub/agent.yaml"
    ),
    simulate: Annotated[
        bool, typer.Option("--simulate", help="made-up hardware with plausible physics")
    ] = False,
    verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False,
) -> None:
    """Run the agent described by --config until stopped (SIGTERM or Ctrl-C)."""
    if ctx.invoked_subcommand is not None:
        return
    from fieldhub.agent.config import ConfigError, load_config
    from fieldhub.agent.service import AgentStartError, run_agent
    from fieldhub.agent.units import UnitError

    configure_logging(verbose)
    try:
        checked = load_config(config)
        asyncio.run(run_agent(checked, config, simulate=simulate))
    except ConfigError as exc:
        console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(2) from None
    except (UnitError, AgentStartError) as exc:
        console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(1) from None
    except KeyboardInterrupt:
        console.print("stopped")


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
