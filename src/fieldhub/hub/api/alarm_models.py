"""Bodies and answers of the alarm routes.

A rule's body is only a wrapper: the fields' shapes and bounds for the OpenAPI document, and
the rest (hysteresis, what a condition holds, what a target may be) is checked by
``hub/alarms/rules.py``, the one home of what makes a rule valid.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from fieldhub.hub.alarms import AlarmChangeRecord, AlarmRecord, StoredRule
from fieldhub.hub.alarms.rules import MAX_NAME, MAX_SECONDS, RULE_ID_PATTERN
from fieldhub.hub.api.fields import EpochMs, JsonObject, StoredValue

Seconds = Annotated[int, Field(ge=0, le=MAX_SECONDS, description="whole seconds")]
Comment = Annotated[str, Field(max_length=1024)]
MAX_ASSIGN_COMMENT = 900
"""An assignment's history entry says "to <name>: <comment>" in the 1,024 characters of a
history comment, so its own comment leaves room for the name (at most 64)."""
AlarmCursor = Annotated[str, Field(pattern=r"^[0-9]{1,16}$", max_length=16)]
"""The ``next_cursor`` of a page of alarms (an alarm id)."""


class AlarmRuleIn(BaseModel):
    """A rule as sent (see docs/alarms.md for every condition)."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "id": "over-temp",
                    "name": "Cabinet too hot",
                    "severity": "major",
                    "target": {"labels": {"site": "berlin"}},
                    "condition": {
                        "kind": "threshold",
                        "key": "temperature",
                        "direction": "above",
                        "raise": 50,
                        "clear": 45,
                    },
                    "for_s": 60,
                }
            ]
        },
    )

    id: Annotated[str | None, Field(pattern=RULE_ID_PATTERN)] = None
    name: Annotated[str | None, Field(min_length=1, max_length=MAX_NAME)] = None
    enabled: bool = True
    severity: Literal["critical", "major", "minor", "warning", "info"] = "warning"
    target: Annotated[
        JsonObject, Field(description='{"all": true}, {"devices": [...]} or {"labels": {...}}')
    ] = {"all": True}
    condition: Annotated[
        JsonObject, Field(description="kind: threshold, event, presence, state or absence")
    ]
    for_s: Seconds = 0
    keep_firing_for_s: Seconds = 0
    clearable_by_user: bool | None = None
    auto_clear_s: Seconds | None = None
    escalation: Annotated[
        str | None, Field(pattern=RULE_ID_PATTERN, description="an escalation policy's id")
    ] = None
    flapping: Annotated[
        JsonObject | None,
        Field(description='{"changes": K, "window_s": W}: more changes than K in W s flap'),
    ] = None

    def raw(self) -> dict[str, Any]:
        """The dict form ``rules.parse_rule`` reads (unset fields take its defaults)."""
        return self.model_dump(exclude_none=True)


class AlarmRuleOut(BaseModel):
    """A stored rule."""

    id: str
    name: str
    enabled: bool
    severity: str
    target: dict[str, Any]
    condition: dict[str, Any]
    for_s: int
    keep_firing_for_s: int
    clearable_by_user: bool
    auto_clear_s: int | None
    flapping: dict[str, int]
    escalation: str | None = None
    created_at: int
    updated_at: int
    updated_by: str

    @classmethod
    def of(cls, stored: StoredRule) -> AlarmRuleOut:
        """The answer for ``stored``."""
        return cls(
            **stored.rule.to_dict(),
            created_at=stored.created_at,
            updated_at=stored.updated_at,
            updated_by=stored.updated_by,
        )


class AlarmOut(BaseModel):
    """One alarm."""

    id: int
    rule_id: str
    device_id: str
    severity: str
    state: Literal["active", "acknowledged", "cleared"]
    condition_active: bool = Field(description="false: the condition is gone (latched if active)")
    latched: bool = Field(description="active, its condition gone: acknowledging clears it")
    raised_at: int
    value: StoredValue = None
    message: str
    acknowledged_by: str | None
    acknowledged_at: int | None
    ack_comment: str | None
    cleared_at: int | None
    cleared_by: str | None
    clear_reason: str | None
    shelved_until: int | None
    assignee: str | None
    updated_at: int
    in_maintenance: bool = Field(
        description="raised while a maintenance window covers it: notifications held"
    )
    flapping: bool = Field(description="it changes too often: notifications held until it settles")

    @classmethod
    def of(cls, record: AlarmRecord) -> AlarmOut:
        """The answer for ``record``."""
        values = {name: getattr(record, name) for name in AlarmRecord.__slots__}
        latched = record.state == "active" and not record.condition_active
        return cls(**values, latched=latched)


class AlarmChangeOut(BaseModel):
    """One entry of an alarm's history."""

    at: int
    actor: str
    kind: str
    from_state: str | None
    to_state: str
    comment: str

    @classmethod
    def of(cls, record: AlarmChangeRecord) -> AlarmChangeOut:
        """The answer for ``record``."""
        return cls(**{name: getattr(record, name) for name in AlarmChangeRecord.__slots__})


class AlarmDetail(AlarmOut):
    """One alarm with its history, oldest first."""

    history: list[AlarmChangeOut]


class AlarmPage(BaseModel):
    """Alarms newest first, and the cursor of the next (older) page."""

    alarms: list[AlarmOut]
    next_cursor: str | None


class AlarmComment(BaseModel):
    """An acknowledgement or a clear, with an optional comment."""

    model_config = ConfigDict(extra="forbid")
    comment: Comment = ""


class AlarmAssign(BaseModel):
    """Give an alarm to a user (None: to nobody), with an optional comment."""

    model_config = ConfigDict(extra="forbid")
    assignee: Annotated[str | None, Field(max_length=64, description="a user's name; null: nobody")]
    comment: Annotated[str, Field(max_length=MAX_ASSIGN_COMMENT)] = ""


class AlarmNote(BaseModel):
    """A comment added to an alarm's history."""

    model_config = ConfigDict(extra="forbid")
    comment: Annotated[str, Field(min_length=1, max_length=1024)]


class AlarmShelve(BaseModel):
    """Shelve an alarm until a time (at most 30 days ahead)."""

    model_config = ConfigDict(extra="forbid")
    until: EpochMs
    comment: Comment = ""


class DeviceAlarmCount(BaseModel):
    """One device's open alarms, for a badge."""

    open: int = Field(description="open alarms not shelved")
    severity: str | None = Field(description="the highest severity of those (null: none)")
    shelved: int = Field(description="open alarms shelved now")


class AlarmSummary(BaseModel):
    """The caller's open alarms counted: the dashboard's badges read this in one request."""

    open: int = Field(description="open alarms not shelved")
    shelved: int
    shelved_until: int | None = Field(
        description="when the first shelving ends (the counts change then without an alarm"
        " change): epoch ms, null when nothing is shelved"
    )
    by_severity: dict[str, int] = Field(description="open alarms not shelved, by severity")
    devices: dict[str, DeviceAlarmCount] = Field(description="device id → its open alarms")
