"""The SQLAlchemy metadata every table of the hub belongs to (``store/schema.py``)."""

from __future__ import annotations

from sqlalchemy import MetaData

metadata = MetaData()
