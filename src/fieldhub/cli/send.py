"""``fieldhub send``: run an action on a device or a group, through a running hub's REST API.

The CLI is a client like any other: it authenticates with an API token (``fieldhub`` users
make one with ``POST /api/tokens``, scope ``command``), so the hub checks the same rights and
writes the same audit entries as for the dashboard. Results are printed as a table; a group
command shows its progress while the devices answer, then a line counting the devices by
outcome; devices that do not offer the action are listed ``unsupported``, with the reason.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from typing import Annotated, Any

import typer

from fieldhub.cli.common import console

FINISHED = frozenset({"succeeded", "failed", "timed_out", "expired", "unsupported", "aborted"})
FINE = frozenset({"succeeded", "unsupported"})
"""Outcomes that leave the exit status 0: a device of the group without the action was not
asked to do anything (``fieldhub send --all lock.lock`` on a fleet where some have no lock)."""
EXIT_FAILED = 1  # at least one device that offers the action did not succeed
EXIT_PENDING = 3  # at least one command was still under way when the CLI stopped waiting

HubOpt = Annotated[
    str,
    typer.Option("--hub", envvar="FIELDHUB_URL", help="the hub's address [env FIELDHUB_URL]"),
]
TokenOpt = Annotated[
    str,
    typer.Option(
        "--token",
        envvar="FIELDHUB_TOKEN",
        help="an API token with the command scope [env FIELDHUB_TOKEN]",
        show_default=False,
    ),
]


def parse_args(items: list[str]) -> dict[str, Any]:
    """``["on=true", "off_s=5", "note=hello"]`` → ``{"on": True, "off_s": 5, "note": "hello"}``.

    A value that reads as JSON (``true``, ``5``, ``2.5``, ``"5"``) is taken as such, any other
    as text.

    Raises:
        typer.BadParameter: an item without ``=``.
    """
    args: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise typer.BadParameter(f"{item!r}: give arguments as KEY=VALUE")
        try:
            args[key] = json.loads(raw)
        except ValueError:
            args[key] = raw
    return args


def send(
    words: Annotated[
        list[str],
        typer.Argument(
            help="DEVICE ACTION [KEY=VALUE ...], or with --group/--devices/--all: "
            "ACTION [KEY=VALUE ...]",
            show_default=False,
        ),
    ],
    token: TokenOpt,
    hub: HubOpt = "http://localhost:8080",
    group: Annotated[
        list[str] | None,
        typer.Option("--group", help="every device with this label KEY=VALUE; repeat"),
    ] = None,
    devices: Annotated[
        str | None, typer.Option("--devices", help="comma-separated device ids")
    ] = None,
    all_devices: Annotated[
        bool, typer.Option("--all", help="every device you may command")
    ] = False,
    timeout: Annotated[
        float | None,
        typer.Option(
            "--timeout",
            help="seconds to wait for each outcome once taken [default: the action's "
            "duration and a margin, 10 s when it declares none]",
            show_default=False,
        ),
    ] = None,
    ttl: Annotated[
        float, typer.Option("--ttl", help="seconds a command may wait to be taken")
    ] = 300.0,
    wait: Annotated[bool, typer.Option("--wait/--no-wait", help="wait for the outcome")] = True,
    per_second: Annotated[
        float | None,
        typer.Option("--per-second", help="a group: send to at most this many devices a second"),
    ] = None,
    abort_failure_ratio: Annotated[
        float | None,
        typer.Option(
            "--abort-failure-ratio",
            help="a group: abort what is not sent yet once more than this share failed",
        ),
    ] = None,
) -> None:
    """Run ACTION on one device or a group and print what each device answered.

    Examples: ``fieldhub send atm-1 lock.unlock``, ``fieldhub send atm-1 socket.cycle off_s=5``,
    ``fieldhub send --group site=berlin lock.lock``.

    Exit status: 0 every device that offers the action succeeded, 1 a device failed (or timed
    out, or the command expired or was aborted), 3 still under way when waiting ended, 2 bad
    usage or refused by the hub.
    """
    import httpx

    targets = sum([bool(group), devices is not None, all_devices])
    if targets > 1:
        raise typer.BadParameter("give only one of --group, --devices and --all")
    needed = 1 if targets else 2
    if len(words) < needed:
        raise typer.BadParameter(
            "name the device and the action" if needed == 2 else "name the action"
        )
    if not targets and (per_second is not None or abort_failure_ratio is not None):
        raise typer.BadParameter("--per-second and --abort-failure-ratio are for a group")
    body: dict[str, Any] = {"ttl_s": ttl}
    if timeout is not None:
        body["timeout_s"] = timeout
    if targets:
        action, rest = words[0], words[1:]
    else:
        device, action, rest = words[0], words[1], words[2:]
    body.update(action=action, args=parse_args(rest))
    headers = {"Authorization": f"Bearer {token}"}
    # The hub's own wait decides how long a single command's request takes: no limit here.
    with httpx.Client(base_url=hub.rstrip("/"), headers=headers, timeout=None) as client:
        try:
            if not targets:
                answer = client.post(
                    f"/api/devices/{device}/commands", params={"wait": wait}, json=body
                )
                _check(answer)
                commands = [answer.json()]
            else:
                if group:
                    body["labels"] = dict(_label(item) for item in group)
                elif devices is not None:
                    body["devices"] = [d.strip() for d in devices.split(",") if d.strip()]
                else:
                    body["all"] = True
                pace = {"per_second": per_second, "abort_failure_ratio": abort_failure_ratio}
                body.update({key: value for key, value in pace.items() if value is not None})
                answer = client.post("/api/commands", params={"wait": False}, json=body)
                _check(answer)
                batch = answer.json()
                commands = _follow(client, batch) if wait else batch["commands"]
        except httpx.HTTPError as exc:
            console.print(f"[red]error:[/red] cannot reach the hub at {hub}: {exc}")
            raise typer.Exit(2) from None
    statuses = Counter(command["status"] for command in commands)
    _print(commands, statuses if targets else None)
    if set(statuses) - FINISHED:
        raise typer.Exit(EXIT_PENDING if wait else 0)
    if set(statuses) - FINE or not statuses["succeeded"]:
        raise typer.Exit(EXIT_FAILED)


def _label(item: str) -> tuple[str, str]:
    key, sep, value = item.partition("=")
    if not sep or not key:
        raise typer.BadParameter(f"--group {item!r}: use KEY=VALUE, e.g. site=berlin")
    return key, value


def _check(answer: Any) -> None:
    """Stop with the hub's own words when it refused the request."""
    if answer.status_code < 400:
        return
    try:
        detail = answer.json().get("detail", answer.text)
    except ValueError:
        detail = answer.text
    if isinstance(detail, list):  # validation errors: one line each
        detail = "; ".join(str(item.get("msg", item)) for item in detail)
    console.print(f"[red]error:[/red] the hub answered {answer.status_code}: {detail}")
    raise typer.Exit(2)


def _follow(client: Any, batch: dict[str, Any]) -> list[dict[str, Any]]:
    """Poll the batch with a progress bar until every command finished or time is up: the
    last device's turn (a paced batch), its timeout, and a few seconds more."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    last_turn_ms = max(
        (c["not_before"] or c["created_at"]) - c["created_at"] for c in batch["commands"]
    )
    longest_s = max(command["timeout_s"] for command in batch["commands"])
    deadline = time.monotonic() + last_turn_ms / 1000 + longest_s + 5
    commands: list[dict[str, Any]] = batch["commands"]
    with Progress(
        TextColumn(f"{batch['action']} on {batch['size']} devices"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[counts]}"),
        console=console,
        transient=True,
    ) as progress:
        task = progress.add_task("", total=batch["size"], counts="")
        while True:
            done = sum(command["status"] in FINISHED for command in commands)
            counts = ", ".join(f"{n} {status}" for status, n in sorted(batch["counts"].items()))
            progress.update(task, completed=done, counts=counts)
            if done == len(commands) or time.monotonic() >= deadline:
                return commands
            answer = client.get(f"/api/command-batches/{batch['id']}", params={"wait_s": 1})
            _check(answer)
            batch = answer.json()
            commands = batch["commands"]


def _print(commands: list[dict[str, Any]], summary: Counter[str] | None) -> None:
    """The table of outcomes, and for a group the devices counted by outcome."""
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    colour = {
        "succeeded": "green",
        "failed": "red",
        "timed_out": "red",
        "expired": "red",
        "aborted": "red",
        "unsupported": "dim",
    }
    table = Table("device", "action", "status", "result / error", "ms")
    for command in sorted(commands, key=lambda c: c["device_id"]):
        status = command["status"]
        shown = command["error"] if command["error"] else json.dumps(command["result"])
        for arg, change in command.get("adjusted", {}).items():  # the device changed it
            shown += (
                f"\n{arg} {change.get('requested')} → {change.get('used')}: {change.get('why')}"
            )
        took = ""
        if command["finished_at"] and command["status"] in ("succeeded", "failed"):
            took = str(command["finished_at"] - command["created_at"])
        table.add_row(
            escape(command["device_id"]),
            command["action"],
            f"[{colour.get(status, 'yellow')}]{status}[/]" + (" (late)" if command["late"] else ""),
            escape(shown),
            took,
        )
    out = Console(soft_wrap=True)
    out.print(table)
    if summary is not None:
        out.print(", ".join(f"{n} {status}" for status, n in sorted(summary.items())))
