"""``fieldhub gateway``: run a gateway (LAN controllers bridged to the hub, docs/gateway.md)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from fieldhub.cli.plain import configure_logging, sigterm_as_ctrl_c

DEFAULT_CONFIG = Path("/etc/fieldhub/gateway.yaml")

gateway_app = typer.Typer(
    help="Run a gateway: LAN controllers found, paired and bridged to the hub.",
    invoke_without_command=True,
)


@gateway_app.callback()
def gateway(
    config: Annotated[
        Path, typer.Option("--config", "-c", help="the gateway's YAML file")
    ] = DEFAULT_CONFIG,
    verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False,
) -> None:
    """Run the gateway described by --config until stopped (SIGTERM or Ctrl-C: exit 0).

    Exit 2: the file is wrong; 1: the gateway could not start.
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
        print(f"error: {exc}", file=sys.stderr)
        raise typer.Exit(2) from None
    except GatewayStartError as exc:
        print(f"error: {exc}", file=sys.stderr)
        raise typer.Exit(1) from None
    except KeyboardInterrupt:
        print("stopped", file=sys.stderr)
