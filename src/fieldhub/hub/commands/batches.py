"""The records of a command request, and group commands: paced, and aborted when too many fail.

Every request (to one device or a group) becomes one record per device, with its audit rows,
here (:func:`plan_records`, :func:`audit_rows`); the service stores and follows them. A group
goes to every device that offers the action; the others get a record too, already
finished as ``unsupported`` with the reason, so that the batch's answer has a result for
every device chosen and counts them. Pacing (``per_second``) gives the n-th device that offers
the action the send time ``created_at + n / per_second``, stored with its command
(``not_before``), so that pacing survives a hub restart like the rest of the queue.

**Abort.** With ``abort_failure_ratio`` r, once more than r times as many commands of the
batch have failed, timed out or expired as it has devices that offer the action, every command
of the batch not sent yet ends ``aborted``; those already sent run to their end. r = 0 aborts
at the first failure; 0.1 of 100 devices at the eleventh.
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from fieldhub.hub.commands.check import Fit
from fieldhub.hub.store.audit import audit_row
from fieldhub.hub.store.commands import FAILURES, BatchRecord, CommandRecord

__all__ = [
    "AbortGuard",
    "Pace",
    "Request",
    "audit_rows",
    "new_batch_id",
    "new_command_id",
    "plan_records",
]


@dataclass(frozen=True, slots=True)
class Pace:
    """How a group command goes out: devices per second, and when to give up on the rest."""

    per_second: float | None = None
    abort_failure_ratio: float | None = None


def new_command_id() -> str:
    """A command id: unique per hub without coordination, short enough for the wire (≤ 64)."""
    return "c-" + secrets.token_hex(12)


def new_batch_id() -> str:
    """A batch id, as :func:`new_command_id`."""
    return "b-" + secrets.token_hex(12)


@dataclass(frozen=True, slots=True)
class Request:
    """What every command of one request shares."""

    action: str
    actor: str
    source: str
    hub: str
    ttl_ms: int
    now: int


def plan_records(
    request: Request,
    batch: BatchRecord | None,
    fits: Sequence[Fit],
    unsupported: Mapping[str, str],
) -> list[CommandRecord]:
    """The records of a request: ``fits`` to be sent (paced as ``batch`` says), and one
    finished ``unsupported`` record per device of ``unsupported`` (id → reason)."""
    per_second = batch.per_second if batch is not None else None
    now = request.now

    def record(device_id: str, args: dict[str, Any], **fields: Any) -> CommandRecord:
        return CommandRecord(
            id=new_command_id(),
            device_id=device_id,
            batch_id=batch.id if batch is not None else None,
            hub=request.hub,
            action=request.action,
            args=args,
            created_by=request.actor,
            created_at=now,
            **fields,
        )

    records = []
    for n, fit in enumerate(fits):
        not_before = now + round(n * 1000 / per_second) if per_second else None
        records.append(
            record(
                fit.device_id,
                fit.args,
                status="queued",
                expires_at=(not_before or now) + request.ttl_ms,
                timeout_ms=round(fit.timeout_s * 1000),
                not_before=not_before,
            )
        )
    for device_id, reason in sorted(unsupported.items()):
        args = dict(batch.args) if batch is not None else {}
        records.append(
            record(
                device_id,
                args,
                status="unsupported",
                expires_at=now,
                timeout_ms=0,
                finished_at=now,
                error=reason[:1024],
            )
        )
    return records


def audit_rows(
    request: Request,
    records: Sequence[CommandRecord],
    batch: BatchRecord | None,
    args: Mapping[str, Any],
) -> list[dict[str, Any]]:
    """The audit entries of a request, written with its commands: one per command, or one for
    a batch (how many devices, how many of them unsupported, how they were chosen)."""
    detail: dict[str, Any] = {"action": request.action, "args": sorted(args)}
    if batch is None:
        return [
            audit_row(
                request.actor,
                "device.command",
                record.device_id,
                "ok",
                request.source,
                {**detail, "command": record.id},
                ts=request.now,
            )
            for record in records
        ]
    detail.update(
        batch=batch.id,
        devices=len(records),
        unsupported=sum(record.status == "unsupported" for record in records),
        target=dict(batch.target),
    )
    return [
        audit_row(
            request.actor, "device.command", batch.id, "ok", request.source, detail, ts=request.now
        )
    ]


class AbortGuard:
    """Counts the failures of the batches that have an ``abort_failure_ratio`` and says when
    one of them crosses it (once)."""

    def __init__(self) -> None:
        self._limits: dict[str, float] = {}  # batch id → failures allowed
        self._failures: dict[str, int] = {}

    def watch(self, batch: BatchRecord, records: Sequence[CommandRecord]) -> None:
        """Follow ``batch`` given its commands so far (all of them: after a restart, the
        failures before it count)."""
        if batch.abort_failure_ratio is None:
            return
        offered = sum(record.status != "unsupported" for record in records)
        self._limits[batch.id] = batch.abort_failure_ratio * offered
        self._failures[batch.id] = sum(record.status in FAILURES for record in records)

    def ended(self, record: CommandRecord) -> bool:
        """``record`` finished; True when its batch must now be aborted."""
        batch_id = record.batch_id
        if batch_id is None or batch_id not in self._limits or record.status not in FAILURES:
            return False
        self._failures[batch_id] += 1
        if self._failures[batch_id] <= self._limits[batch_id]:
            return False
        del self._limits[batch_id], self._failures[batch_id]  # aborted once
        return True
