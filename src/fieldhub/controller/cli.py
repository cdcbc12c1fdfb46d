"""``fieldhub controller``: run a controller, or forget its pairing (standard library only).

::

    fieldhub controller --config /etc/fieldhub/controller.yaml [--verbose]
    fieldhub controller unpair --config /etc/fieldhub/controller.yaml

Run straight from ``fieldhub.cli.main`` with argparse, before typer is imported: a controller
is a small board's program, and typer, rich and pydantic would be most of its memory.
Exit codes: 2 the file is wrong, 1 it could not start (port taken), 0 stopped.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Sequence
from pathlib import Path

from fieldhub.cli.plain import configure_logging, sigterm_as_ctrl_c
from fieldhub.controller.config import ConfigError, load_config

__all__ = ["main"]

DEFAULT_CONFIG = Path("/etc/fieldhub/controller.yaml")


def main(argv: Sequence[str]) -> int:
    """Run ``fieldhub controller`` with the arguments after ``controller``; the exit code."""
    parser = argparse.ArgumentParser(
        prog="fieldhub controller", description="The reference LAN controller (docs/gateway.md)."
    )
    parser.add_argument("action", nargs="?", choices=["run", "unpair"], default="run")
    parser.add_argument("--config", "-c", type=Path, default=DEFAULT_CONFIG)
    parser.add_argument("--verbose", "-v", action="store_true")
    options = parser.parse_args(argv)
    configure_logging(options.verbose)
    try:
        config = load_config(options.config)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    from fieldhub.lan.keys import KeyFile

    key_file = KeyFile(config.data_dir / "gateway.key")
    if options.action == "unpair":
        forgotten = key_file.forget()
        print("pairing forgotten" if forgotten else "not paired")
        return 0
    from fieldhub.controller.service import Controller

    async def run() -> None:
        controller = Controller(config)
        await controller.start()
        print(
            f"controller {config.controller_id} listening on port {controller.port}",
            flush=True,
        )
        await controller.run()

    try:
        with sigterm_as_ctrl_c():
            asyncio.run(run())
    except OSError as exc:
        print(
            f"error: cannot listen on {config.listen_host}:{config.listen_port}: {exc}",
            file=sys.stderr,
        )
        return 1
    except KeyboardInterrupt:
        print("stopped", file=sys.stderr)
    return 0
