"""Migrations: Alembic builds exactly the tables ``store/schema.py`` declares, and running them
again (every hub start does) changes nothing and loses nothing."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import text
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncEngine

import fieldhub.hub.store
from fieldhub.hub.app import Hub, HubStartError
from fieldhub.hub.config import HubSettings
from fieldhub.hub.store.database import SchemaTooNew, migrate
from fieldhub.hub.store.devices import DeviceRegistry
from fieldhub.hub.store.schema import metadata


def _differences(connection: Connection) -> list[Any]:
    context = MigrationContext.configure(connection, opts={"compare_type": True})
    return list(compare_metadata(context, metadata))


async def _schema_differences(engine: AsyncEngine) -> list[Any]:
    async with engine.connect() as conn:
        return await conn.run_sync(_differences)


def _head_revision() -> str:
    config = Config()
    config.set_main_option(
        "script_location", str(Path(fieldhub.hub.store.__file__).parent / "migrations")
    )
    head = ScriptDirectory.from_config(config).get_current_head()
    assert head is not None
    return head


@pytest.fixture
def engine(empty_engine: AsyncEngine) -> AsyncEngine:
    """An engine on a new, empty database (both engines, see conftest)."""
    return empty_engine


async def test_migrations_create_exactly_the_declared_schema(engine: AsyncEngine):
    # The comparison sees a difference where there is one: every table is missing at first.
    missing = await _schema_differences(engine)
    added = sorted(diff[1].name for diff in missing if diff[0] == "add_table")
    assert added == sorted(metadata.tables)

    await migrate(engine)
    assert await _schema_differences(engine) == []


async def test_migrating_again_is_harmless(engine: AsyncEngine):
    await migrate(engine)
    registry = DeviceRegistry(engine)
    await registry.create("atm-1", labels={"site": "berlin"})

    await migrate(engine)
    await migrate(engine)

    assert await _schema_differences(engine) == []
    device = await registry.get("atm-1")
    assert device.labels == {"site": "berlin"}
    async with engine.connect() as conn:
        versions = (await conn.execute(text("SELECT version_num FROM alembic_version"))).all()
    assert [row.version_num for row in versions] == [_head_revision()]


async def test_a_database_of_a_newer_fieldhub_is_refused_and_left_alone(
    engine: AsyncEngine, tmp_path: Path
):
    """A downgrade (an older fieldhub started on what a newer one migrated) stops with a
    clear message instead of misreading the schema, and changes nothing."""
    await migrate(engine)
    async with engine.begin() as conn:
        await conn.execute(text("UPDATE alembic_version SET version_num = '9999_future'"))
    with pytest.raises(SchemaTooNew, match=r"revision 9999_future, which this fieldhub"):
        await migrate(engine)
    async with engine.connect() as conn:
        versions = (await conn.execute(text("SELECT version_num FROM alembic_version"))).all()
    assert [row.version_num for row in versions] == ["9999_future"]
    settings = HubSettings(
        data=tmp_path / "hub",
        db=engine.url.render_as_string(hide_password=False),
        mqtt="127.0.0.1:0",
        http="127.0.0.1:0",
    )
    with pytest.raises(HubStartError, match="a newer fieldhub upgraded it"):
        async with Hub(settings):
            pass


async def test_samples_of_a_first_install_survive_the_keyed_layout(engine: AsyncEngine):
    # A data folder made by the first release: samples without a key, one instant stored twice.
    await migrate(engine, "0001")
    async with engine.begin() as conn:
        await conn.execute(
            text(
                "INSERT INTO samples (series_id, ts, num, txt) VALUES"
                " (1, 1000, 1.0, NULL), (1, 2000, 2.0, NULL), (1, 2000, 3.0, NULL),"
                " (2, 1000, NULL, 'open')"
            )
        )

    await migrate(engine)

    assert await _schema_differences(engine) == []
    async with engine.connect() as conn:
        rows = (
            await conn.execute(
                text("SELECT series_id, ts, num, txt FROM samples ORDER BY series_id, ts")
            )
        ).all()
    assert [tuple(row) for row in rows] == [
        (1, 1000, 1.0, None),
        (1, 2000, 3.0, None),  # the value stored last wins
        (2, 1000, None, "open"),
    ]


async def test_rollups_are_built_from_the_samples_already_stored(engine: AsyncEngine):
    # A data folder of the release before rollups: numbers, booleans (0/1), text, and a minute
    # whose newest value is text.
    await migrate(engine, "0004")
    async with engine.begin() as conn:
        await conn.execute(
            text(
                "INSERT INTO samples (series_id, ts, num, txt) VALUES"
                " (1, 60000, 2.0, NULL), (1, 60500, 5.0, NULL), (1, 119999, 3.0, NULL),"
                " (1, 120000, 7.5, NULL), (2, 60001, 1.0, NULL), (2, 60002, 0.0, NULL),"
                " (3, 61000, NULL, 'open'), (4, 180000, 4.0, NULL), (4, 180001, NULL, 'fault')"
            )
        )

    await migrate(engine)

    async with engine.connect() as conn:
        rows = (
            await conn.execute(
                text(
                    "SELECT series_id, minute, count_num, sum_num, min_num, max_num, last_ts,"
                    " last_num FROM rollups ORDER BY series_id, minute"
                )
            )
        ).all()
    assert [tuple(row) for row in rows] == [
        (1, 60000, 3, 10.0, 2.0, 5.0, 119999, 3.0),
        (1, 120000, 1, 7.5, 7.5, 7.5, 120000, 7.5),
        (2, 60000, 2, 1.0, 0.0, 1.0, 60002, 0.0),
        (3, 60000, 0, 0.0, None, None, 61000, None),
        (4, 180000, 1, 4.0, 4.0, 4.0, 180001, None),
    ]
