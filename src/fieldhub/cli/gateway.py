"""``fieldhub gateway``: run a gateway (LAN controllers bridged to the hub, docs/gateway.md).

systemd's command line is run by ``fieldhub.cli.plain`` without typer; this is the same command
for every other command line (``--help``, a typo), through the same
:func:`~fieldhub.cli.plain.run_gateway_command`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from fieldhub.cli.plain import GATEWAY_CONFIG, run_gateway_command

gateway_app = typer.Typer(
    help="Run a gateway: LAN controllers found, paired and bridged to the hub.",
    invoke_without_command=True,
)


@gateway_app.callback()
def gateway(
    config: Annotated[
        Path, typer.Option("--config", "-c", help="the gateway's YAML file")
    ] = GATEWAY_CONFIG,
    verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False,
) -> None:
    """Run the gateway described by --config until stopped (SIGTERM or Ctrl-C: exit 0).

    Exit 2: the file is wrong; 1: the gateway could not start.
    """
    code = run_gateway_command(config, verbose=verbose)
    if code:
        raise typer.Exit(code)
