"""Storage of the hub: one schema (SQLAlchemy Core) for SQLite and PostgreSQL."""
