"""Bodies and answers of ``/api/escalation-policies``.

The shape and bounds of a policy live here (the OpenAPI document shows them); what the fields
say together (steps in time order, reminders need an interval) and what needs the database
(channels that exist) is ``hub/notify/escalation_policies.py``'s.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

from fieldhub.hub.alarms.rules import MAX_NAME, MAX_SECONDS, RULE_ID_PATTERN
from fieldhub.hub.api.fields import RowId
from fieldhub.hub.notify.escalation import MAX_CHANNELS, MAX_REPEATS, MAX_STEPS, Policy, Step

PolicyId = Annotated[
    str, Field(pattern=RULE_ID_PATTERN, max_length=64, description="1-64 of a-z 0-9 _ . -")
]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class StepIn(_Strict):
    """Tell ``channels`` when the alarm is still unacknowledged ``after_s`` after its raise."""

    after_s: Annotated[int, Field(ge=0, le=MAX_SECONDS)]
    channels: Annotated[list[RowId], Field(min_length=1, max_length=MAX_CHANNELS)]


class PolicyIn(_Strict):
    """A policy as sent: steps in time order; after the last, a reminder to its channels every
    ``repeat_every_s`` while nobody acknowledges, at most ``repeat_limit`` times."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "id": "night-shift",
                    "name": "Night shift",
                    "steps": [
                        {"after_s": 600, "channels": [2]},
                        {"after_s": 1800, "channels": [2, 3]},
                    ],
                    "repeat_every_s": 3600,
                    "repeat_limit": 5,
                }
            ]
        },
    )

    id: PolicyId | None = Field(None, description="required when creating")
    name: Annotated[str | None, Field(min_length=1, max_length=MAX_NAME)] = None
    steps: Annotated[list[StepIn], Field(min_length=1, max_length=MAX_STEPS)]
    repeat_every_s: Annotated[int | None, Field(ge=1, le=MAX_SECONDS)] = None
    repeat_limit: Annotated[int, Field(ge=0, le=MAX_REPEATS)] = 0

    def policy(self, policy_id: str) -> Policy:
        """The policy ``policy_id`` this body describes."""
        return Policy(
            id=policy_id,
            name=self.name or policy_id,
            steps=tuple(Step(s.after_s, tuple(s.channels)) for s in self.steps),
            repeat_every_s=self.repeat_every_s,
            repeat_limit=self.repeat_limit,
        )


class StepOut(BaseModel):
    """One step."""

    after_s: int
    channels: list[int]


class PolicyOut(BaseModel):
    """A stored policy."""

    id: str
    name: str
    steps: list[StepOut]
    repeat_every_s: int | None
    repeat_limit: int
    created_at: int
    updated_at: int
    updated_by: str

    @classmethod
    def of(cls, policy: Policy) -> PolicyOut:
        """The answer for ``policy``."""
        return cls(
            id=policy.id,
            name=policy.name,
            steps=[StepOut(after_s=s.after_s, channels=list(s.channels)) for s in policy.steps],
            repeat_every_s=policy.repeat_every_s,
            repeat_limit=policy.repeat_limit,
            created_at=policy.created_at,
            updated_at=policy.updated_at,
            updated_by=policy.updated_by,
        )
