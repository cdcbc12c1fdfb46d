"""``fieldhub rules``: alarm rules from a YAML file, into the hub's database, or previewed
against its stored history.

Every rule of the file is checked first, by the same function the REST API uses
(``hub/alarms/rules.py``); one bad rule stops the whole file before anything is written. A
running hub reads the changed rules within seconds (its engine watches the rules' table).
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from fieldhub.cli.common import DataOpt, DbOpt, cli_actor, console, hub_settings
from fieldhub.private_files import private_dir

if TYPE_CHECKING:
    from fieldhub.hub.alarms.preview import Preview

rules_app = typer.Typer(help="Alarm rules (docs/alarms.md).", no_args_is_help=True)
MAX_FILE_BYTES = 4 * 1024 * 1024


def _fail(message: str, code: int = 1) -> typer.Exit:
    console.print(f"[red]error:[/red] {message}")
    return typer.Exit(code)


def load_rules(path: Path) -> list[dict[str, Any]]:
    """The rules of a file (``rules:`` list, or a bare list), each checked.

    Raises:
        typer.Exit: unreadable, not YAML, or a bad rule (named by index, id and field).
    """
    import yaml

    from fieldhub.hub.alarms.rules import parse_rule
    from fieldhub.hub.errors import Invalid

    try:
        if path.stat().st_size > MAX_FILE_BYTES:
            raise _fail(f"{path}: larger than {MAX_FILE_BYTES} bytes")
        document = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise _fail(f"{path}: {exc.strerror or exc}") from None
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise _fail(f"{path}: not YAML: {exc}") from None
    items = document.get("rules") if isinstance(document, dict) else document
    if not isinstance(items, list):
        raise _fail(f"{path}: expected a list of rules under 'rules:'")
    seen: set[str] = set()
    for number, raw in enumerate(items):
        where = f"{path}: rules[{number}]"
        if not isinstance(raw, dict) or "id" not in raw:
            raise _fail(f"{where}: a rule in a file needs an id (applying again replaces it)")
        where += f" (id {raw['id']!r})"
        try:
            parse_rule(raw)
        except Invalid as exc:
            field = ".".join(str(part) for part in exc.loc) or "rule"
            raise _fail(f"{where}: {field}: {exc}") from None
        if raw["id"] in seen:
            raise _fail(f"{where}: the id appears twice in the file")
        seen.add(raw["id"])
    return items


@rules_app.command("apply")
def rules_apply(
    file: Annotated[Path, typer.Argument(help="a YAML file with a list of rules under 'rules:'")],
    data: DataOpt = None,
    db: DbOpt = None,
) -> None:
    """Create or replace (by id) every rule of FILE; rules not in the file stay as they are."""
    rules = load_rules(file)
    settings = hub_settings(data=data, db=db)
    if settings.db is None:
        private_dir(settings.data)
    outcomes = asyncio.run(_apply(settings.db_url, rules))
    for rule_id, created in outcomes:
        console.print(f"rule {rule_id!r} {'created' if created else 'replaced'}")


async def _check_escalations(engine: Any, writes: Any, rules: list[dict[str, Any]]) -> None:
    """Every policy the file names must exist: a bad rule stops the file before any write."""
    from fieldhub.hub.notify.escalation_policies import EscalationPolicies

    known = {policy.id for policy in await EscalationPolicies(engine, writes).list()}
    for raw in rules:
        named = raw.get("escalation")
        if named is not None and named not in known:
            raise _fail(f"rule {raw['id']!r}: escalation: no escalation policy {named!r}")


async def _apply(db_url: str, rules: list[dict[str, Any]]) -> list[tuple[str, bool]]:
    from fieldhub.hub.alarms import AlarmEngine, AlarmService
    from fieldhub.hub.devices.directory import DeviceDirectory
    from fieldhub.hub.store.alarms import AlarmStore
    from fieldhub.hub.store.database import create_engine, migrate
    from fieldhub.hub.store.writes import EngineWrites

    engine = create_engine(db_url)
    try:
        await migrate(engine)
        store, writes, directory = AlarmStore(engine), EngineWrites(engine), DeviceDirectory()
        service = AlarmService(AlarmEngine(store, writes, directory), writes, directory)
        existing = {row.id for row in await store.rules()}
        await _check_escalations(engine, writes, rules)
        outcomes = []
        for raw in rules:
            created = raw["id"] not in existing
            await service.put_rule(raw, actor=cli_actor(), rule_id=raw["id"], create=created)
            outcomes.append((raw["id"], created))
        return outcomes
    finally:
        await engine.dispose()


@rules_app.command("preview")
def rules_preview(
    file: Annotated[Path, typer.Argument(help="a YAML file with a list of rules under 'rules:'")],
    hours: Annotated[
        int, typer.Option(min=1, max=7 * 24, help="how far back to look, in hours")
    ] = 24,
    data: DataOpt = None,
    db: DbOpt = None,
) -> None:
    """Show the alarms every rule of FILE would have raised over the last HOURS of stored
    history (of every device); nothing is stored. See docs/alarms.md, "Preview"."""
    rules = load_rules(file)
    settings = hub_settings(data=data, db=db)
    if settings.db is None and not settings.data.is_dir():
        raise _fail(f"{settings.data}: no hub data here (--data DIR or --db URL)")
    for preview in asyncio.run(_preview(settings.db_url, rules, hours)):
        _print_preview(preview)


async def _preview(db_url: str, rules: list[dict[str, Any]], hours: int) -> list[Preview]:
    from fieldhub.clock import now_ms
    from fieldhub.hub.alarms.preview import PreviewSource, preview_rule
    from fieldhub.hub.alarms.rules import parse_rule
    from fieldhub.hub.store.database import create_engine, migrate
    from fieldhub.hub.store.devices import DeviceRegistry

    engine = create_engine(db_url)
    try:
        await migrate(engine)
        devices = await DeviceRegistry(engine).list()
        source = PreviewSource.of(engine)
        until = now_ms()
        since = until - hours * 3_600_000
        return [
            await preview_rule(parse_rule(raw), devices, source, since=since, until=until)
            for raw in rules
        ]
    finally:
        await engine.dispose()


def _print_preview(preview: Preview) -> None:
    from rich.markup import escape
    from rich.table import Table

    table = Table(
        "device", "raised", "cleared", "value", "message", title=f"rule {preview.rule_id}"
    )
    for alarm in preview.alarms:
        cleared = "open" if alarm.cleared_at is None else _when(alarm.cleared_at)
        table.add_row(
            escape(alarm.device_id),
            _when(alarm.raised_at),
            cleared,
            escape(repr(alarm.value)),
            escape(alarm.message),
        )
    console.print(table)
    console.print(
        f"{len(preview.alarms)} raised, {preview.open} open; {preview.devices} devices,"
        f" {preview.rows} stored rows; {_when(preview.since)} to {_when(preview.until)} UTC"
    )
    if preview.cut:
        console.print(f"[yellow]cut:[/yellow] {escape(preview.cut)}")
    for note in preview.notes:
        console.print(f"note: {escape(note)}")


def _when(ms: int) -> str:
    from datetime import UTC, datetime

    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%d %H:%M:%S")
