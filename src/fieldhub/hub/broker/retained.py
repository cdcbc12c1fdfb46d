"""The embedded broker's retained messages on disk, so retained desired state survives a
restart (``retained.json`` in the hub's data folder, private to the hub's user)."""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from fieldhub.private_files import private_dir, write_private

__all__ = ["BrokerStateError", "Retained", "load_retained", "save_retained"]

_RETAINED_FILE: Final = "retained.json"


class BrokerStateError(ValueError):
    """The broker's saved state (``retained.json`` in ``data_dir``) cannot be read."""


@dataclass(frozen=True, slots=True)
class Retained:
    """One retained message."""

    topic: str
    data: bytes
    qos: int


def load_retained(data_dir: Path | None) -> list[Retained]:
    """What :func:`save_retained` kept; nothing without a data folder or a file.

    Raises:
        BrokerStateError: the file is not what this module writes.
    """
    if data_dir is None:
        return []
    path = data_dir / _RETAINED_FILE
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return []
    try:
        return [
            Retained(str(item["topic"]), base64.b64decode(item["data"]), int(item["qos"]))
            for item in json.loads(text)
        ]
    except (ValueError, KeyError, TypeError, binascii.Error) as exc:
        raise BrokerStateError(
            f"retained messages file {path} is not valid: {exc!r}; move it away to start empty"
        ) from exc


def save_retained(data_dir: Path | None, messages: list[Retained]) -> None:
    """Replace the file with ``messages`` (nothing without a data folder)."""
    if data_dir is None:
        return
    private_dir(data_dir)
    items = [
        {"topic": m.topic, "qos": m.qos, "data": base64.b64encode(m.data).decode("ascii")}
        for m in messages
    ]
    write_private(data_dir / _RETAINED_FILE, json.dumps(items).encode("utf-8"))
