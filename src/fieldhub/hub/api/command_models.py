"""Request and response bodies of the command routes."""

from __future__ import annotations

from collections import Counter
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from fieldhub.hub.store.commands import BatchRecord, CommandRecord
from fieldhub.protocol.topics import DEVICE_ID_PATTERN

ACTION_PATTERN = r"^[a-z][a-z0-9_.-]{0,63}$"  # as the wire contract's Command.action
MAX_ARGS = 32
MAX_GROUP = 10_000


class CommandRequest(BaseModel):
    """Run ``action`` on a device."""

    model_config = ConfigDict(extra="forbid")

    action: Annotated[str, Field(pattern=ACTION_PATTERN, examples=["lock.unlock"])]
    args: Annotated[dict[str, Any], Field(max_length=MAX_ARGS)] = {}
    timeout_s: Annotated[
        float,
        Field(gt=0, le=3600, description="how long to wait for the outcome once it is taken"),
    ] = 10.0
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
    "queued", "sent", "acknowledged", "succeeded", "failed", "timed_out", "expired"
]


class CommandOut(BaseModel):
    """A command and where it is in its life."""

    id: str
    device_id: str
    batch_id: str | None
    action: str
    args: dict[str, Any]
    status: CommandStatus
    finished: bool = Field(description="reached a final state")
    late: bool = Field(description="the device's outcome came after the command timed out")
    result: Any = None
    error: str = ""
    created_by: str
    created_at: int
    expires_at: int
    timeout_s: float
    sent_at: int | None
    acknowledged_at: int | None
    finished_at: int | None
    deliveries: int = Field(description="how often it was sent (a device runs it once)")

    @classmethod
    def from_record(cls, record: CommandRecord) -> CommandOut:
        """The API view of a command."""
        return cls(
            id=record.id,
            device_id=record.device_id,
            batch_id=record.batch_id,
            action=record.action,
            args=record.args,
            status=record.status,
            finished=record.finished,
            late=record.late,
            result=record.result,
            error=record.error,
            created_by=record.created_by,
            created_at=record.created_at,
            expires_at=record.expires_at,
            timeout_s=record.timeout_ms / 1000,
            sent_at=record.sent_at,
            acknowledged_at=record.acknowledged_at,
            finished_at=record.finished_at,
            deliveries=record.deliveries,
        )


class BatchOut(BaseModel):
    """A group command with a result per device."""

    id: str
    action: str
    args: dict[str, Any]
    target: dict[str, Any]
    size: int
    created_by: str
    created_at: int
    counts: dict[str, int] = Field(description="commands by status")
    finished: bool = Field(description="every command reached a final state")
    commands: list[CommandOut]

    @classmethod
    def from_records(cls, batch: BatchRecord, records: list[CommandRecord]) -> BatchOut:
        """The API view of a batch and (the caller's share of) its commands."""
        return cls(
            id=batch.id,
            action=batch.action,
            args=batch.args,
            target=batch.target,
            size=batch.size,
            created_by=batch.created_by,
            created_at=batch.created_at,
            counts=dict(Counter(record.status for record in records)),
            finished=all(record.finished for record in records),
            commands=[CommandOut.from_record(record) for record in records],
        )
