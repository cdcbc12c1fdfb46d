"""What a ``camera`` unit's YAML may say (its part of the units' schema, ``units/__init__.py``).

Apart from the unit itself (``camera.py``) because the schema is read by every agent, while
the unit, the media spool and the uploader behind it are imported only by an agent that has a
camera: a plain agent's memory budget (30 MB, docs/agent.md) has no room for code it never
runs. What the fields mean is in ``camera.py``'s docstring.
"""

from __future__ import annotations

import re
import time
from collections.abc import Mapping
from typing import Annotated, Any

import msgspec

from fieldhub.agent.units.base import UnitConfigBase, UnitName
from fieldhub.protocol.media import MEDIA_TYPE_PATTERN
from fieldhub.protocol.messages import Severity

__all__ = ["CameraConfig", "CaptureTrigger"]

_EVENT_TYPE = r"^[a-z][a-z0-9_.-]{0,63}$"
_HOURS = r"^([01][0-9]|2[0-3]):[0-5][0-9]-([01][0-9]|2[0-3]):[0-5][0-9]$"


class CaptureTrigger(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """Events of other units that take a picture (see ``camera.py``'s docstring).

    Attributes:
        event: the event type (``door.opened``).
        unit: only this unit's events; any unit's when None.
        outside_hours: ``HH:MM-HH:MM`` local time (``07:00-19:00``; may wrap midnight): only
            events outside these hours take a picture.
        report: report this event type with the picture, the trigger going out at once as it
            is; None: the trigger itself carries the picture.
        severity: of the ``report`` event.
    """

    event: Annotated[str, msgspec.Meta(pattern=_EVENT_TYPE)]
    unit: UnitName | None = None
    outside_hours: Annotated[str, msgspec.Meta(pattern=_HOURS)] | None = None
    report: Annotated[str, msgspec.Meta(pattern=_EVENT_TYPE)] | None = None
    severity: Severity = "warning"

    def __post_init__(self) -> None:
        if self.outside_hours is not None:
            start, end = self.outside_hours.split("-")
            if start == end:
                raise ValueError("outside_hours: start and end are the same time")

    def matches(self, type: str, data: Mapping[str, Any] | None, when: float) -> bool:
        """Whether an event of ``type`` with ``data`` at ``when`` (epoch s) takes a picture."""
        if type != self.event or (self.unit is not None and (data or {}).get("unit") != self.unit):
            return False
        return self.outside_hours is None or not _within(self.outside_hours, when)


class CameraConfig(UnitConfigBase, frozen=True, tag="camera"):
    """A still camera.

    Attributes:
        command: the capture program and its arguments, ``{path}``, ``{width}`` and
            ``{height}`` filled in; by default the first of ``rpicam-still`` and
            ``libcamera-still`` found, writing a JPEG without a preview.
        media_type: MIME type of what the program writes.
        width: of the picture, in pixels.
        height: of the picture, in pixels.
        timeout_s: a capture taking longer is killed and counts as failed.
        capture_on: events of other units that take a picture.
    """

    command: list[str] | None = None
    media_type: Annotated[str, msgspec.Meta(pattern=MEDIA_TYPE_PATTERN)] = "image/jpeg"
    width: Annotated[int, msgspec.Meta(ge=16, le=9152)] = 1280
    height: Annotated[int, msgspec.Meta(ge=16, le=6944)] = 720
    timeout_s: Annotated[float, msgspec.Meta(gt=0, le=120)] = 10.0
    capture_on: list[CaptureTrigger] = []


def _within(hours: str, when: float) -> bool:
    """Whether local time ``when`` (epoch s) is inside ``HH:MM-HH:MM`` (which may wrap)."""
    start, end = (int(h) * 60 + int(m) for h, m in re.findall(r"(\d\d):(\d\d)", hours))
    local = time.localtime(when)
    minute = local.tm_hour * 60 + local.tm_min
    return start <= minute < end if start < end else minute >= start or minute < end
