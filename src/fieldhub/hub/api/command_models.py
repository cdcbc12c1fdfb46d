"""Request and response bodies of the command routes."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from fieldhub.hub.api.fields import JsonObject, StoredJson, StoredValue
from fieldhub.hub.commands import BatchRecord, CommandRecord
from fieldhub.hub.commands.view import command_view
from fieldhub.protocol.actions import ACTION_NAME_PATTERN
from fieldhub.protocol.topics import DEVICE_ID_PATTERN

MAX_ARGS = 32
MAX_GROUP = 10_000


class CommandRequest(BaseModel):
    """Run ``action`` on a device."""

    model_config = ConfigDict(extra="forbid")

    action: Annotated[str, Field(pattern=ACTION_NAME_PATTERN, examples=["lock.unlock"])]
    args: Annotated[JsonObject, Field(max_length=MAX_ARGS)] = {}
    timeout_s: Annotated[
        float | None,
        Field(
            gt=0,
            le=3600,
            description="how long to wait for the outcome once it is taken; left out: the "
            "action's declared duration and a margin (10 s when it declares none); one not "
            "longer than the declared duration is refused",
        ),
    ] = None
    ttl_s: Annotated[
        float,
        Field(
            ge=0,
            le=7 * 86400,
            description="how long it may wait to be taken (offline device, message lost); "
            "not started after that",
        ),
    ] = 300.0


class GroupCommandRequest(CommandRequest):
    """Run ``action`` on many devices: a list, every device carrying some labels, or all."""

    devices: Annotated[
        list[Annotated[str, Field(pattern=DEVICE_ID_PATTERN)]] | None,
        Field(min_length=1, max_length=MAX_GROUP),
    ] = None
    labels: Annotated[
        dict[str, str] | None,
        Field(min_length=1, description='every label must match, e.g. {"site": "berlin"}'),
    ] = None
    all: bool = Field(False, description="every device the caller may command")
    per_second: Annotated[
        float | None,
        Field(gt=0, le=1000, description="send to at most this many devices per second"),
    ] = None
    abort_failure_ratio: Annotated[
        float | None,
        Field(
            ge=0,
            lt=1,
            description="once more than this share of the devices that offer the action "
            "failed, the commands not sent yet end `aborted`",
        ),
    ] = None

    @model_validator(mode="after")
    def _one_target(self) -> GroupCommandRequest:
        chosen = [self.devices is not None, self.labels is not None, self.all]
        if sum(chosen) != 1:
            raise ValueError("give exactly one of `devices`, `labels` or `all: true`")
        return self

    def target(self) -> dict[str, Any]:
        """How the devices were chosen, as stored with the batch."""
        if self.devices is not None:
            return {"devices": sorted(set(self.devices))}
        if self.labels is not None:
            return {"labels": self.labels}
        return {"all": True}


CommandStatus = Literal[
    "queued",
    "sent",
    "acknowledged",
    "succeeded",
    "failed",
    "timed_out",
    "expired",
    "unsupported",
    "aborted",
]


class CommandOut(BaseModel):
    """A command and where it is in its life."""

    id: str
    device_id: str
    batch_id: str | None
    action: str
    args: StoredJson
    status: CommandStatus
    finished: bool = Field(description="reached a final state")
    late: bool = Field(description="the device's outcome came after the command timed out")
    result: StoredValue = None
    adjusted: dict[str, Any] = Field(
        description="arguments the device changed before it ran the action, each with "
        "`requested`, `used` and `why` (also in `result`)"
    )
    error: str = ""
    created_by: str
    created_at: int
    expires_at: int
    timeout_s: float
    not_before: int | None = Field(description="a paced group command is not sent before this")
    sent_at: int | None
    acknowledged_at: int | None
    finished_at: int | None
    deliveries: int = Field(description="how often it was sent (a device runs it once)")

    @classmethod
    def from_record(cls, record: CommandRecord) -> CommandOut:
        """The API view of a command (``commands/view.py``, shared with the live API)."""
        return cls.model_validate(command_view(record))


class BatchOut(BaseModel):
    """A group command with a result per device: the caller's devices only."""

    id: str
    action: str
    args: StoredJson
    target: dict[str, Any] = Field(
        description="how the devices were chosen; a list names only the caller's devices"
    )
    size: int = Field(description="the caller's devices in the group command")
    created_by: str
    created_at: int
    per_second: float | None
    abort_failure_ratio: float | None
    counts: dict[str, int] = Field(description="commands by status")
    finished: bool = Field(description="every command reached a final state")
    commands: list[CommandOut]

    @classmethod
    def from_records(
        cls, batch: BatchRecord, records: list[CommandRecord], sees: Callable[[str], bool]
    ) -> BatchOut:
        """The caller's share of a batch: ``sees`` (``api.security.device_filter``) decides
        which devices appear, in every field. A batch may span sites; an operator of one must
        learn neither the ids nor the number of the others' devices in it."""
        mine = [record for record in records if sees(record.device_id)]
        target = dict(batch.target)
        if "devices" in target:
            target["devices"] = [device_id for device_id in target["devices"] if sees(device_id)]
        return cls(
            id=batch.id,
            action=batch.action,
            args=batch.args,
            target=target,
            size=len(mine),
            created_by=batch.created_by,
            created_at=batch.created_at,
            per_second=batch.per_second,
            abort_failure_ratio=batch.abort_failure_ratio,
            counts=dict(Counter(record.status for record in mine)),
            finished=all(record.finished for record in mine),
            commands=[CommandOut.from_record(record) for record in mine],
        )
