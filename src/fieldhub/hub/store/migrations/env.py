"""Alembic environment: runs on the connection the hub hands over (see store/database.py)."""

from __future__ import annotations

from alembic import context

from fieldhub.hub.store.schema import metadata

connection = context.config.attributes["connection"]
context.configure(connection=connection, target_metadata=metadata, render_as_batch=True)
with context.begin_transaction():
    context.run_migrations()
