"""The ``fieldhub`` command: ``demo``, ``hub``, ``user``, ``device``, ``agent``, ``gateway``,
``send``, ...

Each group lives in its own module; the hub's machinery is imported inside the commands, so
``fieldhub --help`` and ``fieldhub version`` answer at once. A plain ``fieldhub agent --config
X`` is run by ``fieldhub.cli.plain`` before typer is even imported: on the Pi, typer, rich and
pydantic would be a third of the agent's memory. ``fieldhub controller ...`` (a small board's
program) never meets typer either: ``fieldhub.controller.cli`` parses it with argparse.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING

from fieldhub.cli import plain
from fieldhub.private_files import restrict_umask

if TYPE_CHECKING:
    import typer


def build_app() -> typer.Typer:
    """The typer application with every command group."""
    import typer

    from fieldhub import __version__
    from fieldhub.cli.agent import agent_app
    from fieldhub.cli.bundle import bundle_app
    from fieldhub.cli.devices import device_app
    from fieldhub.cli.gateway import gateway_app
    from fieldhub.cli.hub import demo, hub_app
    from fieldhub.cli.rollout import rollout_app, upload
    from fieldhub.cli.rules import rules_app
    from fieldhub.cli.send import send
    from fieldhub.cli.users import user_app

    app = typer.Typer(
        help="fieldhub: monitor and control devices in the field.",
        no_args_is_help=True,
        pretty_exceptions_enable=False,
    )
    app.command()(demo)
    app.command()(send)
    app.add_typer(hub_app, name="hub")
    app.add_typer(user_app, name="user")
    app.add_typer(device_app, name="device")
    app.add_typer(agent_app, name="agent")
    app.add_typer(rules_app, name="rules")
    bundle_app.command()(upload)  # to a hub; the signer's commands are cli/bundle.py's
    app.add_typer(bundle_app, name="bundle")
    app.add_typer(rollout_app, name="rollout")
    app.add_typer(gateway_app, name="gateway")

    @app.command()
    def version() -> None:
        """Print the version."""
        typer.echo(__version__)

    return app


def main() -> None:
    """Entry point of the ``fieldhub`` command."""
    restrict_umask()  # whatever the hub or an agent writes is its user's alone (private_files)
    if sys.argv[1:2] == ["controller"]:  # a small board's program: no typer (controller/cli.py)
        from fieldhub.controller.cli import main as controller_main

        sys.exit(controller_main(sys.argv[2:]))
    code = plain.main()
    if code is not None:
        sys.exit(code)
    build_app()()
