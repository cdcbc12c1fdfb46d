"""Value types of the API's parameters and bodies: bounded integers, free-form JSON.

Every integer a client sends is bounded here, once: the database stores 64-bit integers, and
an unbounded one (``?end=9223372036854775808``) reached SQLite as an overflow, a 500. The types
are plain pydantic ``Annotated`` constraints, so one type serves a query parameter, a path
parameter and a body field alike, and the OpenAPI document shows each bound
(``tests/test_input_bounds.py`` walks it and fails on an integer without both).

Free-form JSON (device attributes, desired state, command arguments, claim info) follows the
wire contract's nesting limit (``fieldhub.protocol.nesting``) on the way in, and is clipped
to it on the way out, so that one value stored before the limit cannot fail a whole list.
"""

from __future__ import annotations

from typing import Annotated, Any, Final

from pydantic import AfterValidator, BeforeValidator, Field, ValidationInfo

from fieldhub.protocol.messages import MAX_MILLIS
from fieldhub.protocol.nesting import MAX_NESTING, check_nesting, clip_nesting

MAX_INT: Final = 2**53
"""The largest integer the API takes: exact in a JSON number (a double, for JavaScript and for
the OpenAPI document, whose bounds FastAPI writes as floats), and far within a 64-bit column."""

EpochMs = Annotated[int, Field(ge=0, le=MAX_MILLIS, description="epoch ms")]
"""A time, as the wire contract bounds device timestamps."""
RowId = Annotated[int, Field(ge=1, le=MAX_INT)]
"""The id of a stored row (a user, an API token, a claim token)."""
Count = Annotated[int, Field(ge=0, le=MAX_INT)]
"""A non-negative integer stored or compared as a 64-bit one (an offset, a version)."""

EventCursor = Annotated[str, Field(pattern=r"^[0-9]{1,16}:[0-9]{1,16}$", max_length=33)]
"""The ``next_cursor`` of a page of events (``ts:id``); anything else is refused, 422."""
AuditCursor = Annotated[str, Field(pattern=r"^[0-9]{1,16}$", max_length=16)]
"""The ``next_cursor`` of a page of the audit log (an entry id)."""


def _within_nesting(value: Any, info: ValidationInfo) -> Any:
    check_nesting(value, info.field_name or "value")
    return value


_NESTING_RULE = f"objects and arrays nest at most {MAX_NESTING} levels"
JsonObject = Annotated[
    dict[str, Any], AfterValidator(_within_nesting), Field(description=_NESTING_RULE)
]
"""A free-form JSON object a client sends: refused (422) when nested too deep."""
StoredJson = Annotated[dict[str, Any], BeforeValidator(clip_nesting)]
"""A free-form JSON object the API answers with: parts nested too deep are clipped."""
StoredValue = Annotated[Any, BeforeValidator(clip_nesting)]
"""Any stored JSON value the API answers with, clipped like :data:`StoredJson`."""
