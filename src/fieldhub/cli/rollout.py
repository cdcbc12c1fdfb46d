"""``fieldhub rollout`` and ``fieldhub bundle upload``: clients of a running hub's API.

``bundle upload`` sends a signed ``.fhb`` to the hub (an admin's token with the ``write``
scope); ``rollout start|list|show|approve|pause|resume|abort|retry`` start and steer rollouts
(a token with the ``command`` scope; ``list`` and ``show`` need ``read``). The hub does the
checking: what it refuses is printed in its own words, exit status 2 (docs/rollouts.md).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from fieldhub.cli.common import console
from fieldhub.cli.send import HubOpt, TokenOpt, _check, _label

rollout_app = typer.Typer(help="Send a signed bundle to devices in waves, and steer it.")
results = Console(soft_wrap=True)
"""What the hub answered goes to stdout (errors to stderr, ``common.console``)."""


def _client(hub: str, token: str) -> Any:
    import httpx

    headers = {"Authorization": f"Bearer {token}"}
    return httpx.Client(base_url=hub.rstrip("/"), headers=headers, timeout=60)


def _call(hub: str, token: str, method: str, path: str, **options: Any) -> Any:
    """The hub's answer as JSON; stops with status 2 when it refused or cannot be reached."""
    import httpx

    try:
        with _client(hub, token) as client:
            answer = client.request(method, path, **options)
    except httpx.HTTPError as exc:
        console.print(f"[red]error:[/red] cannot reach the hub at {hub}: {exc}")
        raise typer.Exit(2) from None
    _check(answer)
    return answer.json()


def upload(
    bundle: Annotated[
        Path, typer.Argument(help="the signed .fhb file", exists=True, dir_okay=False)
    ],
    token: TokenOpt,
    hub: HubOpt = "http://localhost:8080",
) -> None:
    """Upload a signed bundle to the hub, which checks it against its registered keys."""
    shown = _call(hub, token, "POST", "/api/bundles", content=bundle.read_bytes())
    results.print(f"{shown['name']} {shown['version']}: {shown['id']} ({shown['size']} bytes)")


@rollout_app.command()
def start(
    bundle: Annotated[str, typer.Argument(help="the bundle's id (from bundle upload)")],
    token: TokenOpt,
    hub: HubOpt = "http://localhost:8080",
    group: Annotated[
        list[str] | None, typer.Option("--group", help="devices with this label KEY=VALUE")
    ] = None,
    devices: Annotated[str | None, typer.Option("--devices", help="comma-separated ids")] = None,
    all_devices: Annotated[
        bool, typer.Option("--all", help="every device you may command")
    ] = False,
    below: Annotated[
        str | None, typer.Option("--below", help="only devices running a lower version")
    ] = None,
    canary: Annotated[int, typer.Option("--canary", help="devices in the first wave")] = 1,
    waves: Annotated[
        str, typer.Option("--waves", help="cumulative percentages after the canary")
    ] = "100",
    per_minute: Annotated[
        float | None, typer.Option("--per-minute", help="devices sent to per minute")
    ] = None,
    promote_at: Annotated[float, typer.Option("--promote-at", help="success ratio to go on")] = 1.0,
    abort_below: Annotated[
        float, typer.Option("--abort-below", help="success ratio to abort")
    ] = 0.5,
    approval: Annotated[
        bool, typer.Option("--approval", help="wait for approval between waves")
    ] = False,
    no_rollback: Annotated[
        bool, typer.Option("--no-rollback", help="on abort, leave updated devices as they are")
    ] = False,
) -> None:
    """Start a rollout, e.g. ``fieldhub rollout start 3f1c… --group site=berlin --canary 2
    --waves 25,100 --per-minute 30``."""
    if sum([bool(group), devices is not None, all_devices]) != 1:
        raise typer.BadParameter("give exactly one of --group, --devices and --all")
    target: dict[str, Any] = {}
    if group:
        target["labels"] = dict(_label(item) for item in group)
    elif devices is not None:
        target["devices"] = [d.strip() for d in devices.split(",") if d.strip()]
    else:
        target["all"] = True
    if below is not None:
        target["below"] = below
    try:
        percentages = [float(part) for part in waves.split(",")]
    except ValueError:
        raise typer.BadParameter(f"--waves {waves!r}: percentages, e.g. 25,100") from None
    body = {
        "bundle": bundle,
        "target": target,
        "canary": canary,
        "waves": percentages,
        "per_minute": per_minute,
        "promote_at": promote_at,
        "abort_below": abort_below,
        "approval": approval,
        "rollback_on_abort": not no_rollback,
    }
    _show(_call(hub, token, "POST", "/api/rollouts", json=body))


@rollout_app.command(name="list")
def list_rollouts(token: TokenOpt, hub: HubOpt = "http://localhost:8080") -> None:
    """Rollouts, newest first, with a count of devices per state."""
    from rich.table import Table

    table = Table("id", "bundle", "status", "wave", "devices")
    for shown in _call(hub, token, "GET", "/api/rollouts"):
        bundle = shown["bundle"]
        table.add_row(
            shown["id"],
            f"{bundle['name']} {bundle['version']}",
            shown["status"],
            f"{shown['wave'] + 1}/{shown['waves']}",
            _counts(shown["counts"]),
        )
    results.print(table)


@rollout_app.command()
def show(
    rollout_id: Annotated[str, typer.Argument(help="the rollout's id")],
    token: TokenOpt,
    hub: HubOpt = "http://localhost:8080",
) -> None:
    """A rollout and each device: wave, state, attempts, why it failed."""
    _show(_call(hub, token, "GET", f"/api/rollouts/{rollout_id}"))


def _action(name: str, doc: str) -> None:
    def act(
        rollout_id: Annotated[str, typer.Argument(help="the rollout's id")],
        token: TokenOpt,
        hub: HubOpt = "http://localhost:8080",
    ) -> None:
        _show(_call(hub, token, "POST", f"/api/rollouts/{rollout_id}/{name}"))

    act.__doc__ = doc
    rollout_app.command(name=name)(act)


_action("approve", "Start the next wave of a rollout that waits for approval.")
_action("pause", "Send to no more devices; those under way run to their end.")
_action("resume", "Go on with a paused rollout.")
_action("retry", "Send the bundle once more to every failed device.")


@rollout_app.command()
def abort(
    rollout_id: Annotated[str, typer.Argument(help="the rollout's id")],
    token: TokenOpt,
    hub: HubOpt = "http://localhost:8080",
    rollback: Annotated[
        bool | None,
        typer.Option("--rollback/--no-rollback", help="undo the updated devices [as planned]"),
    ] = None,
) -> None:
    """Abort a rollout, rolling back the devices already updated (as planned, or as told)."""
    body = {} if rollback is None else {"rollback": rollback}
    _show(_call(hub, token, "POST", f"/api/rollouts/{rollout_id}/abort", json=body))


def _counts(counts: dict[str, int]) -> str:
    return ", ".join(f"{n} {state}" for state, n in sorted(counts.items())) or "none"


def _show(shown: dict[str, Any]) -> None:
    from rich.table import Table

    bundle = shown["bundle"]
    results.print(
        f"rollout {shown['id']}: {bundle['name']} {bundle['version']}, {shown['status']}, "
        f"wave {shown['wave'] + 1} of {shown['waves']}: {_counts(shown['counts'])}"
    )
    if shown["reason"]:
        results.print(f"  {shown['reason']}")
    table = Table("device", "wave", "state", "attempts", "reason")
    for device in shown.get("devices") or []:
        table.add_row(
            device["device_id"],
            str(device["wave"] + 1),
            device["state"],
            str(device["attempts"]),
            device["reason"],
        )
    results.print(table)
